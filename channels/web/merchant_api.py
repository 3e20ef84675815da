"""The SP payment API (telecom_pay/merchants/README.md): merchants' signed
requests to ask a subscriber for a payment, read it, and refund it.

No session and no CSRF token: each request is signed with the merchant's
API secret, and the dispatcher (app.py) checks the signature on the raw
body before the body is parsed, so nothing of an unsigned request reaches
a handler. Handlers get the merchant's profile as `ctx`. Refusals carry a
machine-readable `code` beside the sentence.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from channels.web.http import Body, Field, HttpError
from channels.web.routes import ApiRoute
from telecom_pay.ledger.tables import ACTIVE
from telecom_pay.merchants import directory, payments, signing
from telecom_pay.merchants.api_settings import MerchantApiSettings

if TYPE_CHECKING:
    from channels.web.app import WebApp

ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
PAYMENT_ID_PATTERN = r"^pay_[0-9a-f]{24}$"
REFUND_ID_PATTERN = r"^rf_[0-9a-zA-Z]{1,40}$"
MAX_AMOUNT = 100_000_000           # fen; the subscriber's limits decide at confirmation
EXAMPLE_MSISDN = "13900139000"

PAYMENT_BODY = Body({
    "order_id": Field("string", min_length=1, max_length=64, pattern=ID_PATTERN, example="8812",
                      description="the merchant's order id: 1-64 of A-Z a-z 0-9 _ . : - (its idempotency key)"),
    "msisdn": Field("string", min_length=5, max_length=32, pattern=r"^\+?[0-9][0-9 -]*$", example=EXAMPLE_MSISDN,
                    description="the payer's mobile number"),
    "amount": Field("integer", minimum=1, maximum=MAX_AMOUNT, example=1250, description="fen"),
    "description": Field("string", min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$",
                         example="Lottery ticket", description="1-100 characters, no control characters"),
    "notify_url": Field("string", required=False, max_length=500, pattern=r"^https?://[^\s]+$",
                        example="http://127.0.0.1:9/notify",
                        description="http or https; the profile's notify URL otherwise"),
})
REFUND_BODY = Body({
    "refund_id": Field("string", min_length=1, max_length=64, pattern=ID_PATTERN, example="r-8812-1",
                       description="the merchant's refund id (its idempotency key)"),
    "amount": Field("integer", required=False, minimum=1, maximum=MAX_AMOUNT, example=100,
                    description="fen; what is left to refund when absent"),
    "reason": Field("string", required=False, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$", example="returned"),
})


def _path_param(name: str, pattern: str, example: str) -> dict:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "pattern": pattern, "maxLength": 48, "examples": [example]}}


PAYMENT_ID_PARAM = _path_param("payment_id", PAYMENT_ID_PATTERN, "pay_" + "0" * 24)
REFUND_ID_PARAM = _path_param("refund_id", REFUND_ID_PATTERN, "rf_0")


# ------------------------------------------------------------ authentication

def _headers(request) -> dict[str, str]:
    out = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        if values:
            out[name.decode("latin-1")] = values[0].decode("latin-1")
    return out


async def authenticate(web: "WebApp", request) -> directory.MerchantProfile:
    """The merchant who signed the request, or HttpError 401/403. The body
    is read raw for the signature and rewound for Body.parse."""
    raw = b""
    if request.content is not None:
        raw = request.content.read()
        request.content.seek(0)
    svc = web.core.service
    cfg = MerchantApiSettings.of(svc.settings)
    profiles: dict[str, directory.MerchantProfile] = {}

    async def secret_for(key_id: str) -> str | None:
        p = await svc.ledger.read(lambda conn: directory.get_profile(conn, key_id=key_id))
        if p is None:
            return None
        profiles[key_id] = p
        return directory.secret_for(svc.settings.pin_key, key_id)

    async def remember_nonce(key_id: str, nonce: str, ttl: float) -> bool:
        return await web.core.sessions.put_if_absent(f"mapi-nonce:{key_id}:{nonce}", {"seen": 1}, ttl)
    try:
        who = await signing.verify(_headers(request), request.method.decode("ascii"),
                                   request.uri.decode("latin-1"), raw, secret_for=secret_for,
                                   remember_nonce=remember_nonce, now=svc.clock().timestamp(), window=cfg.window)
    except signing.SignatureRefused as exc:
        raise HttpError(401, exc.message, code=exc.code)
    profile = profiles[who.key_id]
    if profile.status != ACTIVE:
        raise HttpError(403, "this merchant is disabled", code="merchant_disabled")
    return profile


def _refused(exc: payments.PaymentRefused) -> HttpError:
    return HttpError(exc.status, exc.message, code=exc.code, **exc.extra)


# ------------------------------------------------------------ handlers

def _refunds():
    """The refunds module (written beside this one), imported when used."""
    try:
        from telecom_pay.merchants import refunds
    except ImportError:
        raise HttpError(404, "refunds are not available on this server", code="not_found")
    return refunds


async def sp_create_payment(web: "WebApp", request, ctx: directory.MerchantProfile, body) -> tuple[int, Any]:
    try:
        obj, created = await payments.create(web.core.service, ctx, order_id=body["order_id"], msisdn=body["msisdn"],
                                             amount=body["amount"], description=body["description"],
                                             notify_url=body.get("notify_url"))
    except payments.PaymentRefused as exc:
        raise _refused(exc)
    return (201 if created else 200), obj


async def sp_get_payment(web: "WebApp", request, ctx: directory.MerchantProfile, body, payment_id: str
                         ) -> tuple[int, Any]:
    obj = await payments.get(web.core.service, ctx, payment_id) if len(payment_id) <= 32 else None
    if obj is None:
        raise HttpError(404, "no such payment", code="not_found")
    return 200, obj


async def sp_create_refund(web: "WebApp", request, ctx: directory.MerchantProfile, body, payment_id: str
                           ) -> tuple[int, Any]:
    refunds = _refunds()
    svc = web.core.service
    if len(payment_id) > 32 or await payments.find_own(svc, ctx.account_id, payment_id) is None:
        raise HttpError(404, "no such payment", code="not_found")
    try:
        obj, created = await refunds.request_refund(
            svc, merchant_id=ctx.account_id, sp_payment_id=payment_id, payment_ref=None, amount=body.get("amount"),
            refund_key=body["refund_id"], reason=body.get("reason") or "", requested_by=f"api:{ctx.api_key_id}",
            via="api")
    except refunds.RefundError as exc:
        raise HttpError(exc.status, exc.message, code=exc.code, **(exc.extra or {}))
    return (201 if created else 200), obj


async def sp_get_refund(web: "WebApp", request, ctx: directory.MerchantProfile, body, payment_id: str,
                        refund_id: str) -> tuple[int, Any]:
    refunds = _refunds()
    obj = None
    if len(refund_id) <= 32 and len(payment_id) <= 32:
        obj = await refunds.get_refund(web.core.service, merchant_id=ctx.account_id, refund_id=refund_id)
    if obj is None or obj.get("payment_id") != payment_id:
        raise HttpError(404, "no such refund of this payment", code="not_found")
    return 200, obj


# ------------------------------------------------------------ the worker beside the web server

def start_worker(app: "WebApp", reactor):
    """The callback sender and the expiry sweep run where the web server
    runs (`[merchant_api] enabled`, default on)."""
    from telecom_pay.merchants.worker import MerchantWorker
    cfg = MerchantApiSettings.of(app.core.settings)
    if not cfg.enabled:
        return None
    worker = MerchantWorker(app.core.service, cfg, reactor)
    worker.start()
    return worker


_SIGNED = {401: "not signed, or the signature refused (`code` says why)", 403: "the merchant is disabled"}
_PAYMENT_SCHEMA = {"type": "object", "required": ["id", "order_id", "status", "amount"],
                   "properties": {"id": {"type": "string"}, "order_id": {"type": "string"},
                                  "status": {"type": "string", "enum": ["pending", "confirmed", "declined", "expired"]},
                                  "amount": {"type": "integer"}}}
_REFUND_SCHEMA = {"type": "object", "required": ["id", "refund_id", "status", "amount"],
                  "properties": {"id": {"type": "string"}, "refund_id": {"type": "string"},
                                 "status": {"type": "string"}, "amount": {"type": "integer"}}}

ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("POST", "/api/v1/payments", sp_create_payment,
             "A merchant asks a subscriber to pay: the subscriber confirms with the payment PIN by SMS.",
             body=PAYMENT_BODY, signed=True, response_schema=_PAYMENT_SCHEMA,
             responses={201: "new: the subscriber is asked to confirm", 200: "the same order id and content again",
                        409: "the order id was used with other content (`code` order_id_conflict, `fields`)",
                        422: "no wallet at the number (`code` no_account) or it is not active (account_not_active)",
                        **_SIGNED}),
    ApiRoute("GET", "/api/v1/payments/<payment_id>", sp_get_payment, "One of the merchant's payment requests.",
             signed=True, parameters=(PAYMENT_ID_PARAM,), response_schema=_PAYMENT_SCHEMA,
             responses={404: "no such payment of this merchant", **_SIGNED}),
    ApiRoute("POST", "/api/v1/payments/<payment_id>/refunds", sp_create_refund,
             "Refund a confirmed payment, whole or in part (the merchant's refund policy decides).",
             body=REFUND_BODY, signed=True, parameters=(PAYMENT_ID_PARAM,), response_schema=_REFUND_SCHEMA,
             responses={201: "a new refund", 200: "the same refund id and content again",
                        404: "no such payment of this merchant",
                        409: "the refund id was used with other content (`code` refund_id_conflict)",
                        422: "more than is refundable (`code` exceeds_refundable, `refundable`) or the payment "
                             "is not confirmed (not_refundable)", **_SIGNED}),
    ApiRoute("GET", "/api/v1/payments/<payment_id>/refunds/<refund_id>", sp_get_refund, "One refund of a payment.",
             signed=True, parameters=(PAYMENT_ID_PARAM, REFUND_ID_PARAM), response_schema=_REFUND_SCHEMA,
             responses={404: "no such refund of this payment", **_SIGNED}),
)
