"""The SP payment API under test: the web section on port 0 with merchants
that have API keys, a client that signs as an integrator would
(telecom_pay.merchants.signing), and a local HTTP server standing in for
the merchants' notify URLs, scripted per path (answer 200, 500, hang past
the timeout, reset the connection), which verifies each callback's
signature as a merchant would."""
from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone

import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from telecom_pay import config
from telecom_pay.aio import wait_deferred
from telecom_pay.daemon import Daemon
from telecom_pay.merchants import directory, signing
from tests.clockkit import TestClock
from tests.servicekit import CHOSEN_PIN
from tests.webkit import Response

KEY_A, KEY_B, KEY_C = "mk_testmerchanta01", "mk_testmerchantb02", "mk_testmerchantc03"
MERCHANTS = (("LT01", "福彩中心", "Lottery Centre", KEY_A), ("GM02", "游戏城", "Game City", KEY_B),
             ("SH03", "小店", "Corner Shop", KEY_C))
PAYER = "8613800138000"
PAYER2 = "8613900139000"
PIN = CHOSEN_PIN


class NotifyServer(Resource):
    """POST /<name>: answers by the script of <name> (a list consumed one
    step per request; the last step repeats): an int status, "hang" (never
    answers), or "reset" (the connection is reset)."""
    isLeaf = True

    def __init__(self, pin_key: bytes, clock):
        super().__init__()
        self.pin_key, self.clock = pin_key, clock
        self.scripts: dict[str, list] = {}
        self.received: list[dict] = []         # every request: path, event, body, signature_ok
        self.hanging: list = []

    def script(self, name: str, *steps) -> str:
        self.scripts[name] = list(steps)
        return f"/{name}"

    def render_POST(self, request):
        name = request.path.decode().strip("/")
        body = request.content.read()
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        key = headers.get(signing.KEY_HEADER.lower(), "")
        expected = signing.signature(directory.secret_for(self.pin_key, key), "POST", request.uri.decode(),
                                     headers.get(signing.TIMESTAMP_HEADER.lower(), ""),
                                     headers.get(signing.NONCE_HEADER.lower(), ""), body) if key else None
        steps = self.scripts.get(name, [200])
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        self.received.append({"path": name, "event": headers.get(signing.EVENT_HEADER.lower()),
                              "body": json.loads(body), "step": step,
                              "signature_ok": expected is not None
                              and expected == headers.get(signing.SIGNATURE_HEADER.lower()),
                              "key": key})
        if step == "hang":
            self.hanging.append(request)
            return NOT_DONE_YET
        if step == "reset":
            sock = request.transport.getHandle()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.transport.abortConnection()
            return NOT_DONE_YET
        request.setResponseCode(int(step))
        return b"ok"

    def delivered(self, name: str) -> list[dict]:
        return [r for r in self.received if r["path"] == name and r["step"] == 200]


async def start_notify_server(pin_key: bytes, clock):
    res = NotifyServer(pin_key, clock)
    port = await wait_deferred(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(res)))
    return res, port, f"http://127.0.0.1:{port.getHost().port}"


@dataclass
class Stack:
    daemon: Daemon
    base: str
    clock: TestClock
    notify: NotifyServer
    notify_base: str
    notify_port: object
    nonces: int = field(default=0)

    @property
    def service(self):
        return self.daemon.core.service

    @property
    def conversation(self):
        return self.daemon.core.conversation

    def secret(self, key_id: str) -> str:
        return directory.secret_for(self.service.settings.pin_key, key_id)

    async def call(self, method: str, path: str, body=None, *, key_id: str = KEY_A, headers: dict | None = None,
                   sign: bool = True, secret: str | None = None, now: float | None = None,
                   nonce: str | None = None, raw: bytes | None = None) -> Response:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json"} if data else {}
        if sign:
            hdrs.update(signing.sign_headers(key_id, secret or self.secret(key_id), method, path, data,
                                             now=self.clock().timestamp() if now is None else now, nonce=nonce))
        hdrs.update(headers or {})
        resp = await wait_deferred(treq.request(method, self.base + path, data=data or None,
                                                headers={k: [v] for k, v in hdrs.items()}, persistent=False))
        content = await wait_deferred(resp.content())
        raw_headers = {k.decode().lower(): [v.decode() for v in vs] for k, vs in resp.headers.getAllRawHeaders()}
        return Response(resp.code, raw_headers, content)

    async def sms(self, msisdn: str, text: str, message_id: int | None = None) -> list[str]:
        return list(await self.conversation.handle(msisdn, text, channel="sms", message_id=message_id))

    async def stop(self) -> None:
        for request in self.notify.hanging:
            if request.transport is not None:
                request.transport.abortConnection()
        await wait_deferred(self.notify_port.stopListening())
        await wait_deferred(self.daemon.stopService())


async def start_stack(database_url: str, *, merchant_api: dict | None = None, notify_paths: dict | None = None,
                      **extra) -> Stack:
    """`notify_paths`: code -> the path of its notify URL on the notify server."""
    clock = TestClock(datetime.now(timezone.utc))
    probe = config.load(None, {"database.url": database_url, "security.allow_development_keys": True})
    notify, port, notify_base = await start_notify_server(probe.pin_key, clock)
    merchants = [{"code": code, "name": zh, "name_en": en, "category": "lottery", "refund_policy": "automatic",
                  "api_key_id": key, "notify_url": notify_base + (notify_paths or {}).get(code, f"/{code.lower()}")}
                 for code, zh, en, key in MERCHANTS]
    api = {"poll_interval": 0.1, "callback_timeout": 1, "retry_schedule": [0.3], **(merchant_api or {})}
    settings = config.load(None, {
        "database.url": database_url, "sessions.url": "memory://", "security.allow_development_keys": True,
        "web.endpoint": "tcp:0:interface=127.0.0.1", "ami.enabled": False, "merchants": merchants,
        **{f"merchant_api.{k}": v for k, v in api.items()}, **extra})
    daemon = Daemon(settings, reactor, sections=("web",), clock=clock)
    daemon.startService()
    await wait_deferred(daemon.ready)
    web_port = await daemon.components["web"].wait_listening()
    return Stack(daemon, f"http://127.0.0.1:{web_port}", clock, notify, notify_base, port)
