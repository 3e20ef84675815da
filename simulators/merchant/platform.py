"""The shop's client of the SP payment API (telecom_pay/merchants/README.md),
signing every request with telecom_pay.merchants.signing as an integrator
would: the signed target is the path and query actually sent, the body
hash is over the exact bytes sent."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import treq
from twisted.internet import defer

from telecom_pay.merchants import signing

TIMEOUT = 15.0                   # seconds for one API call


@dataclass(frozen=True)
class Answer:
    """`code` 0: no answer (`error` says why); otherwise the HTTP status and
    the JSON body (None when it was not JSON)."""
    code: int
    body: Any
    error: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300 and isinstance(self.body, dict)

    @property
    def definite(self) -> bool:
        """The platform decided (a 4xx): sending the same again gets the same."""
        return 400 <= self.code < 500

    def describe(self) -> str:
        if self.code == 0:
            return f"no answer from the platform: {self.error}"
        if isinstance(self.body, dict) and self.body.get("error"):
            extra = {k: v for k, v in self.body.items() if k != "error"}
            return f"{self.code} {self.body['error']}" + (f" {json.dumps(extra, ensure_ascii=False)}" if extra else "")
        return f"{self.code} {str(self.body)[:200]}"


class PlatformClient:
    def __init__(self, api_base: str, key_id: str, secret: str, *, reactor=None, timeout: float = TIMEOUT):
        self.api_base = api_base.rstrip("/")
        self.key_id = key_id
        self.secret = secret
        self.reactor = reactor
        self.timeout = timeout

    def create_payment(self, order_id: str, msisdn: str, amount: int, description: str,
                       notify_url: str | None) -> defer.Deferred:
        body = {"order_id": order_id, "msisdn": msisdn, "amount": amount, "description": description}
        if notify_url:
            body["notify_url"] = notify_url
        return self.call("POST", "/api/v1/payments", body)

    def payment(self, payment_id: str) -> defer.Deferred:
        return self.call("GET", f"/api/v1/payments/{quote(payment_id, safe='')}")

    def create_refund(self, payment_id: str, refund_id: str, amount: int | None, reason: str) -> defer.Deferred:
        body: dict[str, Any] = {"refund_id": refund_id, "reason": reason}
        if amount is not None:
            body["amount"] = amount
        return self.call("POST", f"/api/v1/payments/{quote(payment_id, safe='')}/refunds", body)

    def refund(self, payment_id: str, refund_id: str) -> defer.Deferred:
        return self.call("GET", f"/api/v1/payments/{quote(payment_id, safe='')}/refunds/{quote(refund_id, safe='')}")

    @defer.inlineCallbacks
    def call(self, method: str, path: str, body: dict | None = None):
        url = self.api_base + path
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        raw = b"" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {k: [v] for k, v in signing.sign_headers(self.key_id, self.secret, method, target, raw).items()}
        headers["Accept"] = ["application/json"]
        if body is not None:
            headers["Content-Type"] = ["application/json"]
        kwargs = {"reactor": self.reactor} if self.reactor is not None else {}
        try:
            response = yield treq.request(method, url, data=raw if body is not None else None, headers=headers,
                                          timeout=self.timeout, **kwargs)
            content = yield response.content()
        except Exception as exc:             # refused, reset, timed out: no answer, not a refusal
            return Answer(0, None, f"{type(exc).__name__}: {exc}")
        try:
            parsed = json.loads(content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            parsed = content.decode("utf-8", "replace")[:500]
        return Answer(response.code, parsed)
