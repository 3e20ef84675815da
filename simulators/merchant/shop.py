"""The sample shop's web side (Klein): the catalogue, orders, refunds, the
callback receiver and the listing testers read.

    GET  /                                   the catalogue: pick an item, type a phone number
    POST /orders                             order it: POST /api/v1/payments on the platform
    GET  /orders                             every order and every callback received
    GET  /orders/{id}                        the order: its state, refunds, callbacks (refreshes itself)
    GET  /orders/{id}/state                  {"status", "revision"}: what the page polls
    POST /orders/{id}/check                  GET /api/v1/payments/{id} (or the request again: unanswered, refused)
    POST /orders/{id}/refunds                {amount (yuan, empty: all that is left), reason}
    POST /orders/{id}/refunds/{rid}/check    GET the refund (or the request again, unanswered)
    POST /notify                             the platform's signed callbacks
    GET  /static/shop.js, /static/shop.css

Pages work without JavaScript; shop.js only reloads the order page when the
order changed. Forms are refused when they come from another site (their
Origin), the Host must be one the shop is served under (DNS rebinding), and
the pages carry a Content-Security-Policy that allows nothing inline.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from klein import Klein
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site
from werkzeug.exceptions import HTTPException

from simulators.control_guard import endpoint_hosts, host_refusal
from simulators.merchant.platform import Answer, PlatformClient
from simulators.merchant.store import ShopStore
from telecom_pay.merchants import signing
from telecom_pay.money import AmountError, format_amount, parse_amount

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
STATIC_TYPES = {"shop.js": "text/javascript; charset=utf-8", "shop.css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
MSISDN_RE = re.compile(r"^\+?[0-9][0-9 -]{4,31}$")
MAX_NOTIFY_BODY = 64 * 1024
log = Logger(namespace="simulators.merchant")


@dataclass(frozen=True)
class Item:
    code: str
    name: str
    name_en: str
    price: int                    # fen

    @property
    def description(self) -> str:
        return f"{self.name} {self.name_en}"


CATALOGUE = (Item("lottery", "福利彩票一注", "Lottery ticket", 200),
             Item("credits", "游戏点数", "Game credits", 1250),
             Item("tshirt", "文化衫", "T-shirt", 5900))


@dataclass
class ShopConfig:
    api_base: str                 # the platform, e.g. http://127.0.0.1:8080
    key_id: str
    secret: str
    public_url: str               # where the platform reaches the shop: its notify URL is this + /notify
    handset_url: str = "http://127.0.0.1:8025/"
    window: int = signing.DEFAULT_WINDOW
    host_names: tuple[str, ...] = ()

    @property
    def notify_url(self) -> str:
        return self.public_url.rstrip("/") + "/notify"


class _Refusal(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class Shop:
    app = Klein()

    def __init__(self, config: ShopConfig, store: ShopStore, *, reactor=None, catalogue=CATALOGUE):
        self.config = config
        self.store = store
        self.reactor = reactor
        self.catalogue = {item.code: item for item in catalogue}
        self.platform = PlatformClient(config.api_base, config.key_id, config.secret, reactor=reactor)
        self.env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters["yuan"] = lambda fen: "" if fen is None else format_amount(int(fen))
        self.env.filters["when"] = lambda t: "" if not t else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    def _db(self, fn, *args, **kwargs) -> defer.Deferred:
        return threads.deferToThread(fn, *args, **kwargs)

    # ------------------------------------------------------------ plumbing

    def render(self, request, template: str, code: int = 200, **values) -> bytes:
        request.setResponseCode(code)
        request.setHeader("content-type", "text/html; charset=utf-8")
        request.setHeader("content-security-policy", CSP)
        request.setHeader("x-content-type-options", "nosniff")
        request.setHeader("referrer-policy", "same-origin")
        request.setHeader("cache-control", "no-store")
        return self.env.get_template(template).render(config=self.config, **values).encode("utf-8")

    @staticmethod
    def _json(request, body: Any, code: int = 200) -> bytes:
        request.setResponseCode(code)
        request.setHeader("content-type", "application/json; charset=utf-8")
        request.setHeader("cache-control", "no-store")
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    @staticmethod
    def _redirect(request, location: str) -> bytes:
        request.setResponseCode(303)
        request.setHeader("location", location)
        return b""

    @staticmethod
    def _form(request, name: str) -> str:
        values = request.args.get(name.encode()) or [b""]
        return values[0].decode("utf-8", "replace").strip()

    @app.handle_errors(_Refusal)
    def _refused(self, request, failure):
        return self.render(request, "error.html", failure.value.code, message=failure.value.message)

    @app.handle_errors(HTTPException)
    def _no_route(self, request, failure):
        """No such page (404) or method (405): routing's own answers, not failures."""
        return self.render(request, "error.html", failure.value.code, message=failure.value.name + ".")

    @app.handle_errors(Exception)
    def _failed(self, request, failure):
        log.failure("{method} {path} failed", failure, method=request.method, path=request.path)
        return self.render(request, "error.html", 500, message="Something went wrong in the shop (see its log).")

    async def _order(self, order_id: str) -> dict[str, Any]:
        order = await self._db(self.store.order, order_id)
        if order is None:
            raise _Refusal(404, f"No order {order_id} here.")
        return order

    # ------------------------------------------------------------ pages

    @app.route("/", methods=["GET"])
    def index(self, request):
        return self.render(request, "index.html", items=list(self.catalogue.values()))

    @app.route("/orders", methods=["POST"])
    async def create_order(self, request):
        item = self.catalogue.get(self._form(request, "item"))
        msisdn = self._form(request, "msisdn")
        if item is None or not MSISDN_RE.match(msisdn):
            return self.render(request, "index.html", 400, items=list(self.catalogue.values()), msisdn=msisdn,
                               error="Pick an item and type a mobile number (digits, + and spaces).")
        order_id = await self._db(self.store.new_order, item.code, item.description, item.price, msisdn,
                                  time.strftime("%Y%m%d"))
        await self._send_order(order_id)
        return self._redirect(request, f"/orders/{order_id}")

    async def _send_order(self, order_id: str) -> None:
        """The order's creation at the platform; sent again with the same
        order id until answered (the platform answers a retry with 200)."""
        order = await self._db(self.store.order, order_id)
        answer: Answer = await self.platform.create_payment(order_id, order["msisdn"], order["amount"],
                                                            order["description"], self.config.notify_url)
        if answer.ok:
            await self._db(self.store.payment_answer, order_id, answer.body, None, definite=True)
        else:
            await self._db(self.store.payment_answer, order_id, None, answer.describe(), definite=answer.definite)

    @app.route("/orders", methods=["GET"])
    async def list_orders(self, request):
        orders = await self._db(self.store.orders)
        callbacks = await self._db(self.store.callbacks)
        return self.render(request, "orders.html", orders=orders, callbacks=callbacks)

    @app.route("/orders/<order_id>", methods=["GET"])
    async def show_order(self, request, order_id):
        order = await self._order(order_id)
        refundable = 0
        if order["status"] == "confirmed":
            refundable = max(order["amount"] - order["refunded"] - order["refund_pending"], 0)
        waiting = order["status"] in ("new", "pending") or any(
            r["status"] in ("requested", "pending_review") for r in order["refunds"])
        return self.render(request, "order.html", order=order, refundable=refundable, waiting=waiting,
                           status_label=_status_label(order))

    @app.route("/orders/<order_id>/state", methods=["GET"])
    async def order_state(self, request, order_id):
        order = await self._db(self.store.order, order_id)
        if order is None:
            return self._json(request, {"error": "no such order"}, 404)
        return self._json(request, {"order_id": order_id, "status": order["status"], "revision": order["revision"]})

    @app.route("/orders/<order_id>/check", methods=["POST"])
    async def check_order(self, request, order_id):
        order = await self._order(order_id)
        if order["payment_id"]:
            answer = await self.platform.payment(order["payment_id"])
            await self._db(self.store.payment_answer, order_id, answer.body if answer.ok else None,
                           None if answer.ok else f"status check: {answer.describe()}", definite=False)
        else:                     # unanswered, or refused (no account yet, say): the same order id again
            await self._send_order(order_id)
        return self._redirect(request, f"/orders/{order_id}")

    @app.route("/orders/<order_id>/refunds", methods=["POST"])
    async def ask_refund(self, request, order_id):
        order = await self._order(order_id)
        if order["status"] != "confirmed" or not order["payment_id"]:
            raise _Refusal(409, "Only a paid order can be refunded.")
        text = self._form(request, "amount")
        try:
            amount = parse_amount(text) if text else None
        except AmountError:
            raise _Refusal(400, f"Not an amount: {text!r} (yuan, e.g. 1.50; empty for all that is left).") from None
        reason = self._form(request, "reason")[:100] or "customer request"
        refund_id = await self._db(self.store.new_refund, order_id, amount, reason)
        await self._send_refund(order["payment_id"], refund_id)
        return self._redirect(request, f"/orders/{order_id}")

    async def _send_refund(self, payment_id: str, refund_id: str) -> None:
        refund = await self._db(self.store.refund, refund_id)
        answer = await self.platform.create_refund(payment_id, refund_id, refund["amount"], refund["reason"])
        await self._db(self.store.refund_answer, refund_id, answer.body if answer.ok else None,
                       None if answer.ok else answer.describe(), definite=answer.definite)

    @app.route("/orders/<order_id>/refunds/<refund_id>/check", methods=["POST"])
    async def check_refund(self, request, order_id, refund_id):
        order = await self._order(order_id)
        refund = next((r for r in order["refunds"] if r["refund_id"] == refund_id), None)
        if refund is None:
            raise _Refusal(404, f"No refund {refund_id} for this order.")
        if refund["status"] == "requested":
            await self._send_refund(order["payment_id"], refund_id)
        elif refund["refund"]:
            answer = await self.platform.refund(order["payment_id"], refund["refund"]["id"])
            await self._db(self.store.refund_answer, refund_id, answer.body if answer.ok else None,
                           None if answer.ok else f"status check: {answer.describe()}", definite=False)
        return self._redirect(request, f"/orders/{order_id}")

    @app.route("/static/<name>", methods=["GET"])
    def static(self, request, name):
        if name not in STATIC_TYPES:
            raise _Refusal(404, "No such file.")
        request.setHeader("content-type", STATIC_TYPES[name])
        request.setHeader("x-content-type-options", "nosniff")
        request.setHeader("cache-control", "no-cache")
        return (STATIC / name).read_bytes()

    # ------------------------------------------------------------ callbacks

    @app.route("/notify", methods=["POST"])
    async def notify(self, request):
        """Verified, then recorded and applied in one transaction before the
        2xx, so the platform stops retrying only once the shop has it."""
        body = request.content.read(MAX_NOTIFY_BODY + 1) if request.content is not None else b""
        if len(body) > MAX_NOTIFY_BODY:
            return self._json(request, {"error": "too_large"}, 413)
        headers = {k.decode("latin-1"): v[0].decode("latin-1") for k, v in request.requestHeaders.getAllRawHeaders()}
        event_header = (request.getHeader(signing.EVENT_HEADER.encode()) or b"").decode("latin-1") or None
        try:
            await signing.verify(headers, "POST", request.uri.decode("latin-1"), body,
                                 secret_for=self._secret_for, remember_nonce=self._remember_nonce,
                                 now=time.time(), window=self.config.window)
        except signing.SignatureRefused as refused:
            await self._db(self.store.refused_callback, refused.code, body, _event_id(body, event_header))
            return self._json(request, {"error": refused.code}, 401)
        try:
            event = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            event = None
        if not isinstance(event, dict):
            await self._db(self.store.refused_callback, "not_json", body, event_header)
            return self._json(request, {"error": "the body is not a JSON object"}, 400)
        outcome = await self._db(self.store.apply_callback, event, body)
        log.info("callback {event} {type}: {outcome}", event=event.get("event_id"), type=event.get("type"),
                 outcome=outcome.outcome)
        return self._json(request, {"received": event.get("event_id"), "outcome": outcome.outcome})

    async def _secret_for(self, key_id: str) -> str | None:
        return self.config.secret if key_id == self.config.key_id else None

    async def _remember_nonce(self, key_id: str, nonce: str, ttl: float) -> bool:
        return await self._db(self.store.remember_nonce, key_id, nonce, ttl)


def _status_label(order: dict) -> str:
    reason = (order.get("payment") or {}).get("decline_reason")
    return {"confirmed": "Paid",
            "pending": "Waiting for the subscriber's confirmation",
            "new": "Not yet accepted by the platform",
            "refused": "Refused by the platform",
            "declined": f"Declined ({reason})" if reason else "Declined",
            "expired": "Expired: nobody confirmed it in time"}.get(order["status"], order["status"])


def _event_id(body: bytes, header: str | None) -> str | None:
    """The event id a refused callback claims, for the listing only."""
    try:
        event = json.loads(body.decode("utf-8"))
        claimed = event.get("event_id") if isinstance(event, dict) else None
    except (UnicodeDecodeError, ValueError):
        claimed = None
    return str(claimed)[:80] if claimed else (header[:80] if header else None)


class _Forbidden(Resource):
    isLeaf = True

    def __init__(self, code: int, message: str):
        super().__init__()
        self.code, self.message = code, message

    def render(self, request):
        request.setResponseCode(self.code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self.message.encode("utf-8")


class ShopSite(Site):
    """The Host must be one the shop is served under, and a form must come
    from the shop's own pages: a browser names a cross-site form's Origin."""

    def __init__(self, resource, hosts: frozenset[str], origins: frozenset[str], **kwargs):
        super().__init__(resource, **kwargs)
        self.hosts, self.origins = hosts, origins

    def getResourceFor(self, request):
        refused = host_refusal(request, self.hosts)
        if refused is None and request.method == b"POST" and request.path != b"/notify":
            origin = (request.getHeader(b"origin") or b"").decode("latin-1").lower()
            host = (request.getHeader(b"host") or b"").decode("latin-1").lower()
            fetch_site = (request.getHeader(b"sec-fetch-site") or b"").decode("latin-1").lower()
            if (origin and origin not in self.origins | {f"http://{host}", f"https://{host}"}) \
                    or fetch_site == "cross-site":
                refused = (403, "forms are taken from the shop's own pages only")
        if refused is not None:
            return _Forbidden(*refused)
        return super().getResourceFor(request)


def shop_site(shop: Shop, listen: str) -> ShopSite:
    public = urlsplit(shop.config.public_url)
    hosts = endpoint_hosts(listen, [public.hostname or "", *shop.config.host_names])
    origins = frozenset({f"{public.scheme}://{public.netloc}".lower()})
    return ShopSite(shop.app.resource(), hosts, origins)
