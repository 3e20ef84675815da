"""Client of the SMSC simulator's HTTP control API (treq), for the CLI and scripts.

Every method returns a Deferred (from asyncio code: telecom_pay.aio.wait_deferred).

    control = SmscControl("http://127.0.0.1:8025")
    replies = yield control.send_and_wait("8613800138000", "YE", timeout=10)
"""
from __future__ import annotations

import functools
import json
from typing import Any
from urllib.parse import quote, urlencode

import treq
from twisted.internet import defer

__all__ = ["SmscControl", "ControlError"]


class ControlError(Exception):
    """The control API answered with an error."""

    def __init__(self, code: int, message: str):
        super().__init__(f"HTTP {code}: {message}")
        self.code = code
        self.message = message


def _deferred(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(fn(*args, **kwargs))

    return wrapper


class SmscControl:
    """Talks to one simulator's control API at ``base_url``."""

    def __init__(self, base_url: str, http_client=None):
        self.base_url = base_url.rstrip("/")
        self._http = http_client or treq

    async def _call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
                    ok: tuple[int, ...] = (200, 201)) -> tuple[int, Any]:
        url = self.base_url + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {b"content-type": [b"application/json"]} if data is not None else None
        response = await self._http.request(method, url, data=data, headers=headers)
        content = await response.content()
        try:
            parsed = json.loads(content.decode("utf-8")) if content else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            parsed = {"error": content.decode("utf-8", "replace")}
        if response.code not in ok:
            message = parsed.get("error") if isinstance(parsed, dict) else None
            raise ControlError(response.code, message or str(parsed))
        return response.code, parsed

    @staticmethod
    def _handset_path(msisdn: str, tail: str = "") -> str:
        return f"/handsets/{quote(msisdn, safe='')}{tail}"

    @_deferred
    async def send_mo(self, msisdn: str, text: str, wait: float = 10.0,
                      destination_addr: str | None = None) -> dict[str, Any]:
        """Send an SMS from a handset; the answer says whether the platform acked it."""
        body: dict[str, Any] = {"text": text, "wait": wait}
        if destination_addr:
            body["destination_addr"] = destination_addr
        _, data = await self._call("POST", self._handset_path(msisdn, "/mo"), body, ok=(200, 202))
        return data

    @_deferred
    async def inbox(self, msisdn: str, since: int = 0, wait: float = 0.0) -> dict[str, Any]:
        """Inbox from index ``since``; with ``wait``, long-poll until something arrives."""
        _, data = await self._call("GET", self._handset_path(msisdn, "/inbox"), query={"since": since, "wait": wait})
        return data

    @_deferred
    async def send_and_wait(self, msisdn: str, text: str, timeout: float = 10.0, replies: int = 1) -> list[str]:
        """Send an SMS and return the texts of the replies that arrive (up to ``replies``) within ``timeout``."""
        sent = await self.send_mo(msisdn, text, wait=timeout)
        index = sent.get("inbox_index", 0)
        texts: list[str] = []
        while len(texts) < replies:
            data = await self.inbox(msisdn, since=index, wait=timeout)
            if not data["inbox"]:
                break
            texts.extend(m["text"] for m in data["inbox"])
            index = data["next"]
        return texts

    @_deferred
    async def ussd(self, msisdn: str, text: str, wait: float = 10.0, *, dial: bool = False,
                   answer: bool = False) -> dict[str, Any]:
        """Dial a code (no session open, or `dial`) or answer the menu (only
        that, with `answer`); returns {"text", "ended", "reason", "screen"}."""
        body: dict[str, Any] = {"text": text, "wait": wait}
        if dial:
            body["dial"] = True
        elif answer:
            body["answer"] = True
        _, data = await self._call("POST", self._handset_path(msisdn, "/ussd"), body)
        return data

    @_deferred
    async def ussd_screens(self, msisdn: str) -> dict[str, Any]:
        """The handset's USSD screens and session: {"session", "screens"}."""
        _, data = await self._call("GET", self._handset_path(msisdn, "/ussd"))
        return data

    @_deferred
    async def ussd_hangup(self, msisdn: str) -> bool:
        """The phone ends its open USSD session."""
        _, data = await self._call("POST", self._handset_path(msisdn, "/ussd/hangup"), {})
        return bool(data.get("hung_up"))

    @_deferred
    async def handsets(self) -> list[dict[str, Any]]:
        _, data = await self._call("GET", "/handsets")
        return data["handsets"]

    @_deferred
    async def add_handset(self, msisdn: str, language: str | None = None) -> dict[str, Any]:
        body = {"msisdn": msisdn} if language is None else {"msisdn": msisdn, "language": language}
        _, data = await self._call("POST", "/handsets", body)
        return data

    @_deferred
    async def traffic(self, limit: int = 100, **filters: str) -> list[dict[str, Any]]:
        _, data = await self._call("GET", "/traffic", query={"limit": limit, **filters})
        return data["records"]

    @_deferred
    async def add_fault(self, kind: str, **params: Any) -> dict[str, Any]:
        """Switch a fault on (see simulators.smsc.faults); kind "close" cuts connections now."""
        _, data = await self._call("POST", "/faults", {"kind": kind, **params})
        return data

    @_deferred
    async def faults(self) -> list[dict[str, Any]]:
        _, data = await self._call("GET", "/faults")
        return data["faults"]

    @_deferred
    async def clear_faults(self, kind: str | None = None) -> int:
        _, data = await self._call("DELETE", "/faults", query={"kind": kind})
        return data["cleared"]

    @_deferred
    async def set_message_reference(self, on: bool) -> bool:
        """Whether handsets send a TP-MR (user_message_reference) with each MO."""
        _, data = await self._call("POST", "/settings", {"message_reference": bool(on)})
        return data["message_reference"]

    @_deferred
    async def binds(self) -> list[dict[str, Any]]:
        _, data = await self._call("GET", "/binds")
        return data["binds"]
