"""A double of the platform's SP payment API (telecom_pay/merchants/README.md)
for the sample shop's tests: a real HTTP server that verifies every request
with telecom_pay.merchants.signing.verify (its own nonce memory), keeps
payments and refunds in memory, records what it was sent, and sends signed
callbacks to a notify URL as the platform does."""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import treq
from klein import Klein
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.web.server import Site

from telecom_pay.merchants import signing


@dataclass
class Seen:
    """One request as it arrived (header names in lower case), and what the double answered."""
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    code: int = 0
    error: str | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class PlatformDouble:
    key_id: str
    secret: str
    merchant_code: str = "SHOP1"
    refuse_msisdns: dict[str, str] = field(default_factory=dict)    # msisdn -> a 422 error
    seen: list[Seen] = field(default_factory=list)
    payments: dict[str, dict] = field(default_factory=dict)
    refunds: dict[str, dict] = field(default_factory=dict)        # rf id -> refund object
    nonces: set = field(default_factory=set)
    app = Klein()

    def __post_init__(self):
        self._ids = itertools.count(1)
        self.port = None
        self.hold: defer.Deferred | None = None    # set: the next creation is answered once it fires

    # ------------------------------------------------------------ serving

    def listen(self, reactor) -> defer.Deferred:
        d = serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Site(self.app.resource()))

        def keep(port):
            self.port = port
            return self
        return d.addCallback(keep)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"

    def stop(self) -> defer.Deferred:
        return defer.maybeDeferred(self.port.stopListening)

    async def _secret_for(self, key_id: str) -> str | None:
        return self.secret if key_id == self.key_id else None

    async def _remember(self, key_id: str, nonce: str, ttl: float) -> bool:
        if (key_id, nonce) in self.nonces:
            return False
        self.nonces.add((key_id, nonce))
        return True

    async def _signed(self, request) -> Seen:
        body = request.content.read() if request.content is not None else b""
        seen = Seen(request.method.decode(), request.uri.decode(),
                    {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}, body)
        self.seen.append(seen)
        await signing.verify(seen.headers, seen.method, seen.target, body, secret_for=self._secret_for,
                             remember_nonce=self._remember, now=time.time())
        return seen

    def _answer(self, request, seen: Seen | None, body: dict, code: int) -> bytes:
        if seen is not None:
            seen.code, seen.error = code, body.get("error")
        request.setResponseCode(code)
        request.setHeader("content-type", "application/json")
        return json.dumps(body).encode()

    @app.handle_errors(signing.SignatureRefused)
    def _refused(self, request, failure):
        return self._answer(request, self.seen[-1], {"error": failure.value.code}, 401)

    # ------------------------------------------------------------ the API

    @app.route("/api/v1/payments", methods=["POST"])
    async def create_payment(self, request):
        seen = await self._signed(request)
        data = seen.json
        if data["msisdn"] in self.refuse_msisdns:
            return self._answer(request, seen, {"error": self.refuse_msisdns[data["msisdn"]]}, 422)
        for p in self.payments.values():
            if p["order_id"] == data["order_id"]:
                same = all(p["_request"].get(k) == data.get(k) for k in ("msisdn", "amount", "description"))
                if not same:
                    return self._answer(request, seen, {"error": "order_id_conflict", "fields": ["amount"]}, 409)
                return self._answer(request, seen, _public(p), 200)
        pid = f"pay_{next(self._ids):06d}"
        msisdn = "".join(c for c in data["msisdn"] if c.isdigit())[-11:]
        self.payments[pid] = {"id": pid, "order_id": data["order_id"], "merchant_code": self.merchant_code,
                              "msisdn": msisdn[:3] + "****" + msisdn[-4:], "amount": data["amount"],
                              "description": data["description"], "status": "pending", "decline_reason": None,
                              "ref": None, "fee": 0, "refunded": 0, "created_at": _now(), "expires_at": _now(300),
                              "resolved_at": None, "_request": data}
        answer = _public(self.payments[pid])
        if self.hold is not None:
            hold, self.hold = self.hold, None
            await hold
        return self._answer(request, seen, answer, 201)

    @app.route("/api/v1/payments/<pid>", methods=["GET"])
    async def payment(self, request, pid):
        seen = await self._signed(request)
        if pid not in self.payments:
            return self._answer(request, seen, {"error": "not_found"}, 404)
        return self._answer(request, seen, _public(self.payments[pid]), 200)

    @app.route("/api/v1/payments/<pid>/refunds", methods=["POST"])
    async def create_refund(self, request, pid):
        seen = await self._signed(request)
        payment = self.payments.get(pid)
        if payment is None:
            return self._answer(request, seen, {"error": "not_found"}, 404)
        data = seen.json
        for r in self.refunds.values():
            if r["payment_id"] == pid and r["refund_id"] == data["refund_id"]:
                return self._answer(request, seen, r, 200)
        held = sum(r["amount"] for r in self.refunds.values() if r["payment_id"] == pid and r["status"] != "rejected")
        refundable = payment["amount"] - held
        amount = data.get("amount", refundable)
        if amount > refundable or amount <= 0:
            return self._answer(request, seen, {"error": "exceeds_refundable", "refundable": refundable}, 422)
        rid = f"rf_{next(self._ids):06d}"
        self.refunds[rid] = {"id": rid, "refund_id": data["refund_id"], "payment_id": pid, "amount": amount,
                             "fee_refunded": 0, "status": "pending_review", "reason": data.get("reason"),
                             "decision_reason": None, "ref": None, "created_at": _now(), "decided_at": None}
        return self._answer(request, seen, self.refunds[rid], 201)

    @app.route("/api/v1/payments/<pid>/refunds/<rid>", methods=["GET"])
    async def refund(self, request, pid, rid):
        seen = await self._signed(request)
        r = self.refunds.get(rid)
        if r is None or r["payment_id"] != pid:
            return self._answer(request, seen, {"error": "not_found"}, 404)
        return self._answer(request, seen, r, 200)

    # ------------------------------------------------------------ the platform's side

    def by_order(self, order_id: str) -> dict:
        return next(p for p in self.payments.values() if p["order_id"] == order_id)

    def resolve(self, order_id: str, status: str = "confirmed", reason: str | None = None) -> dict:
        p = self.by_order(order_id)
        p.update(status=status, decline_reason=reason, resolved_at=_now(),
                 ref=f"sp:{p['id']}" if status == "confirmed" else None, fee=8 if status == "confirmed" else 0)
        return _public(p)

    def decide_refund(self, refund_id: str, status: str, reason: str | None = None) -> dict:
        r = next(r for r in self.refunds.values() if r["refund_id"] == refund_id)
        r.update(status=status, decision_reason=reason, decided_at=_now())
        if status == "succeeded":
            r["ref"] = f"rf:{r['id']}"
            self.payments[r["payment_id"]]["refunded"] += r["amount"]
        return dict(r)

    @defer.inlineCallbacks
    def callback(self, notify_url: str, kind: str, data: dict, *, event_id: str | None = None,
                 secret: str | None = None, nonce: str | None = None, now: float | None = None,
                 tamper=None):
        """POST a signed event; `tamper(body) -> body` changes it after signing.
        Returns (status, JSON answer, the event id)."""
        event_id = event_id or f"evt_{next(self._ids):08d}"
        body = json.dumps({"event_id": event_id, "type": kind, "created_at": _now(), "data": data}).encode()
        parts = urlsplit(notify_url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = signing.sign_headers(self.key_id, secret or self.secret, "POST", target, body, now=now, nonce=nonce)
        headers[signing.EVENT_HEADER] = event_id
        headers["Content-Type"] = "application/json"
        if tamper is not None:
            body = tamper(body)
        response = yield treq.post(notify_url, data=body, headers={k: [v] for k, v in headers.items()})
        answer = yield response.json()
        return response.code, answer, event_id


def _public(payment: dict) -> dict:
    return {k: v for k, v in payment.items() if not k.startswith("_")}


def _now(ahead: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + ahead))
