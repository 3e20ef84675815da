"""A carrier top-up system double (a real HTTP server): verifies each
callback's signature with the airtime SP's secret, applies each event once
(the platform may deliver one more than once), and can be told to fail the
next N deliveries, so testers see the platform's retries.

    POST /topups            the platform's airtime.ordered callbacks
    GET  /                  the top-ups made (HTML, for testers)
    GET  /topups.json       the same, as JSON
    POST /control/fail      {"count": n}: answer 500 to the next n callbacks
"""
from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field

from twisted.internet.endpoints import serverFromString
from twisted.web import resource, server

from telecom_pay.merchants import signing


@dataclass
class TopUps:
    key_id: str
    secret: str
    window: int = signing.DEFAULT_WINDOW
    made: list[dict] = field(default_factory=list)
    refused: int = 0
    fail_next: int = 0
    _events: set[str] = field(default_factory=set)
    _nonces: dict[str, float] = field(default_factory=dict)

    async def _secret_for(self, key_id: str) -> str | None:
        return self.secret if key_id == self.key_id else None

    async def _remember(self, key_id: str, nonce: str, ttl: float) -> bool:
        now = time.time()
        self._nonces = {n: t for n, t in self._nonces.items() if t > now}
        if nonce in self._nonces:
            return False
        self._nonces[nonce] = now + ttl
        return True

    async def receive(self, headers: dict, target: str, body: bytes) -> tuple[int, dict]:
        if self.fail_next > 0:
            self.fail_next -= 1
            return 500, {"error": "top-up system unavailable (simulated)"}
        try:
            await signing.verify(headers, "POST", target, body, secret_for=self._secret_for,
                                 remember_nonce=self._remember, now=time.time(), window=self.window)
        except signing.SignatureRefused as exc:
            self.refused += 1
            return 401, {"error": exc.message, "code": exc.code}
        try:
            event = json.loads(body)
            data = event["data"]
            assert event["type"] == "airtime.ordered"
            msisdn, amount, ref = str(data["msisdn"]), int(data["amount"]), str(data["ref"])
        except (ValueError, KeyError, TypeError, AssertionError):
            return 400, {"error": "not an airtime.ordered event"}
        if event["event_id"] in self._events:
            return 200, {"duplicate": True}
        self._events.add(event["event_id"])
        topup = {"topup_id": f"T{len(self.made) + 1:06d}", "event_id": event["event_id"], "ref": ref,
                 "msisdn": msisdn, "amount": amount, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.made.append(topup)
        return 200, {"topup_id": topup["topup_id"]}


class _Root(resource.Resource):
    isLeaf = True

    def __init__(self, topups: TopUps):
        super().__init__()
        self.topups = topups

    def render_GET(self, request):
        if request.path == b"/topups.json":
            request.setHeader("content-type", "application/json")
            return json.dumps({"topups": self.topups.made, "refused": self.topups.refused}).encode()
        if request.path != b"/":
            request.setResponseCode(404)
            return b"not found"
        rows = "".join(f"<tr><td>{html.escape(t['topup_id'])}</td><td>{html.escape(t['msisdn'])}</td>"
                       f"<td>{t['amount'] / 100:.2f}</td><td>{html.escape(t['ref'])}</td>"
                       f"<td>{html.escape(t['at'])}</td></tr>" for t in reversed(self.topups.made))
        request.setHeader("content-type", "text/html; charset=utf-8")
        return (f"<!doctype html><meta charset=utf-8><title>Carrier top-ups</title><h1>Carrier top-ups</h1>"
                f"<p>{len(self.topups.made)} made, {self.topups.refused} refused callbacks</p><table>"
                f"<tr><th>top-up</th><th>number</th><th>amount</th><th>platform ref</th><th>at</th></tr>{rows}"
                f"</table>").encode()

    def render_POST(self, request):
        body = request.content.read()
        if request.path == b"/control/fail":
            try:
                self.topups.fail_next = int(json.loads(body or b"{}").get("count", 1))
            except (ValueError, TypeError, AttributeError):
                request.setResponseCode(400)
                return b'{"error": "send {\\"count\\": n}"}'
            return json.dumps({"fail_next": self.topups.fail_next}).encode()
        if request.path != b"/topups":
            request.setResponseCode(404)
            return b'{"error": "no such endpoint"}'
        headers = {k.decode(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        from telecom_pay.aio import as_deferred

        def done(answer):
            status, out = answer
            request.setResponseCode(status)
            request.setHeader("content-type", "application/json")
            request.write(json.dumps(out).encode())
            request.finish()
        d = as_deferred(self.topups.receive(headers, request.uri.decode(), body))
        d.addCallback(done)
        return server.NOT_DONE_YET


async def listen(reactor, endpoint: str, topups: TopUps):
    from telecom_pay.aio import wait_deferred
    site = server.Site(_Root(topups))
    site.displayTracebacks = False
    return await wait_deferred(serverFromString(reactor, endpoint).listen(site))
