"""The subscriber's web self-service: opening on the web with an SMS code,
the forgotten password, and, logged in, the own wallet (balance,
statement, payments with the PIN, the bank card, the PIN, freezing).

Who is who: a subscriber's web login is their number (E.164 digits, the
`web_users` row's `username` and `msisdn`); their password is the one on
their account (`credentials.password_hash`, see
telecom_pay/service/selfservice.py), so a subscriber opened by SMS or by
an agent logs in with the password from the opening SMS (and must change
it first), a web-opened one with the password chosen on the page. The
`web_users` row carries the role, the throttling and lock state and the
session stamp, so login throttling, the CAPTCHA, the lock and "a changed
password ends the other sessions" are the staff's, not a second copy.

Ownership: every subscriber operation acts on the number of the logged-in
user's row, never on one a request names. One table of operations
(OPERATIONS) serves the API routes and the page forms. Money moves only
through the PaymentService calls every channel makes (same limits, same
PIN lockout), with the idempotency key the form or the client sends.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import sqlalchemy as sa

from channels.web.api import _session_view
from channels.web.console import amount_of, audit_web, card_fields, printable, result_view, snapshot, status_of
from channels.web.http import Body, Field, HttpError
from channels.web.routes import ApiRoute
from telecom_pay.accounts import active_card, audit
from telecom_pay.ledger.tables import ACTIVE, FROZEN
from telecom_pay.money import format_amount
from telecom_pay.msisdn import MsisdnError, local_form, mask, normalize
from telecom_pay.otp import OPEN, RESET, OneTimeCodes, OtpSettings
from telecom_pay.outcomes import Outcome, Result
from telecom_pay.webusers import MAX_PASSWORD, SUBSCRIBER, UserError, check_password_length, web_users

if TYPE_CHECKING:
    from channels.web.app import WebApp, WebContext

SELF = (SUBSCRIBER,)
MIN_PASSWORD = 8

AGREEMENT_VERSION = "2026-01"
AGREEMENT_TEXT = (
    "Mobile payment service agreement (version 2026-01). The wallet is kept in fen by the operator; payments "
    "need your 6-digit payment PIN, which comes by SMS and must be changed before first use; three wrong PINs "
    "lock payments for a while on every channel; limits per payment, day and month follow your KYC tier; you "
    "can freeze the wallet at any time on the web or by SMS (DJ); the operator never asks for your PIN.")
AGREEMENT_SHA256 = hashlib.sha256(AGREEMENT_TEXT.encode("utf-8")).hexdigest()

CODE_SENT = {OPEN: "If this number can open an account, a code was sent to it by SMS.",
             RESET: "If this number has an account, a code was sent to it by SMS."}
WRONG_CODE = "the code is wrong, used or expired; ask for a new one"

#: refusals the console's table does not place
_SELF_STATUS = {Outcome.UNKNOWN_MERCHANT: 404, Outcome.MERCHANT_INACTIVE: 409, Outcome.UNKNOWN_RECIPIENT: 404,
                Outcome.SELF_TRANSFER: 400, Outcome.FREEZE_LIMIT: 429, Outcome.PIN_FORMAT: 400}
_IDEMPOTENCY_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def self_status(result: Result) -> int:
    return _SELF_STATUS.get(result.outcome) or status_of(result)


def self_refusal(result: Result) -> HttpError:
    view = result_view(result)
    return HttpError(self_status(result), view.pop("message"), **view)


def check_subscriber_password(password: Any, *, msisdn: str | None) -> str:
    """Shorter than the staff's minimum (typed on phones), but never digits
    only (a PIN-like password) and never the number itself."""
    check_password_length(password, MIN_PASSWORD)
    if password.isdigit():
        raise UserError("the password must not be all digits")
    if msisdn and (msisdn in password or msisdn[-11:] in password):
        raise UserError("the password must not contain the number")
    return password


class SubscriberPasswords:
    """WebUsers' view of subscribers (`WebUsers.subscriber_passwords`): the
    login name of a typed number, and the password on the account."""

    def __init__(self, web: "WebApp"):
        self.web = web

    @property
    def service(self):
        return self.web.core.service

    def number(self, typed: str) -> str | None:
        try:
            return normalize(typed, self.web.core.settings.region)
        except MsisdnError:
            return None

    async def login_name(self, typed: str) -> str:
        """A typed number (local or E.164) is the subscriber's login; the row
        is made at the first login of an account opened by SMS or an agent
        (its password came by SMS: it must be changed first). A number
        without an account gets no row and the same answer as a wrong
        password. Anything that is not a number is a staff username."""
        msisdn = self.number(typed) if isinstance(typed, str) and len(typed) <= 32 else None
        if msisdn is None:
            return typed
        await self.ensure_row(msisdn, must_change=True)
        return msisdn

    async def ensure_row(self, msisdn: str, *, must_change: bool) -> bool:
        """The subscriber's web user row exists (True) when the number has an
        active or frozen account."""
        w = await self.service.account_info(msisdn)
        if w is None or w.status not in (ACTIVE, FROZEN):
            return False
        row = await login_row(self.web, msisdn)
        if row is not None:
            if former_holder(row, w):
                await self.reassign(row, must_change=must_change)
            return True
        try:
            await self.web.users.create(msisdn, SUBSCRIBER, actor="system", actor_role="system", address=None,
                                        msisdn=msisdn, must_change_password=must_change)
        except UserError:
            pass                        # a concurrent first login made it
        return True

    async def reassign(self, row, *, must_change: bool) -> None:
        """The row was made for an earlier account of the number (before an
        ownership transfer, or a close and a new opening): it starts again
        for the new one, and the password stamp ends the former holder's
        sessions."""
        now = self.web.users.clock()

        async def write(conn):
            await conn.execute(web_users.update().where(web_users.c.id == row.id).values(
                must_change_password=must_change, password_changed_at=now, failed_logins=0, locked_until=None,
                created_at=now, updated_at=now))
            await audit(conn, actor="system", channel="web", action="web_login_reassigned", account_id=None,
                        role=SUBSCRIBER, address=None, msisdn=mask(row.msisdn or ""),
                        before={"created_at": row.created_at.isoformat()}, after={"created_at": now.isoformat()})
        await self.web.core.ledger.write(write)

    async def verify(self, row, password: str) -> bool:
        return bool(row.msisdn) and await self.service.verify_password(row.msisdn, password)

    def check_rules(self, password: str, *, msisdn: str | None) -> None:
        check_subscriber_password(password, msisdn=msisdn)

    async def store(self, conn, msisdn: str, password_hash: str) -> None:
        if not await self.service.store_login_password(conn, msisdn, password_hash):
            raise UserError("this number has no open account")


async def login_row(web: "WebApp", username: str):
    async def read(conn):
        return (await conn.execute(sa.select(web_users).where(web_users.c.username == username))).first()
    return await web.core.ledger.read(read)


def former_holder(row, wallet) -> bool:
    """The number's account is newer than its web login row."""
    return wallet.created_at > row.created_at


def codes(web: "WebApp") -> OneTimeCodes:
    return OneTimeCodes(web.core.sessions, web.core.settings.pin_key, OtpSettings.from_config(web.config))


def number_of(web: "WebApp", text: str, field: str = "msisdn") -> str:
    try:
        return normalize(printable({field: text})[field], web.core.settings.region)
    except MsisdnError:
        raise HttpError(400, f"{field} is not a mobile number", field=field, outcome=Outcome.INVALID_NUMBER.value)


async def audit_public(web: "WebApp", request, action: str, msisdn: str, **details) -> None:
    """Before a login there is no web user: the actor is the number, masked."""
    async def write(conn):
        await audit(conn, actor=f"web:{mask(msisdn)}", channel="web", action=action, account_id=None,
                    role=None, address=web.address(request), msisdn=mask(msisdn), **details)
    await web.core.ledger.write(write)


# ------------------------------------------------------------ codes, opening, reset (no login)

async def request_code(web: "WebApp", request, purpose: str, typed: str) -> str:
    """Sends a code when the number qualifies; the answer is the same when
    it does not (whether a number has an account is not told)."""
    msisdn = number_of(web, typed)
    otp = codes(web)
    if not await otp.may_send(msisdn, web.address(request)):
        await audit_public(web, request, "web_self_code_refused", msisdn, purpose=purpose, reason="send_limit")
        raise HttpError(429, "too many codes asked for; try again later")
    sent = await web.core.service.code_may_go_to(msisdn, purpose)
    if sent:
        code = await otp.issue(purpose, msisdn)
        await web.core.service.send_code(msisdn, purpose, code, minutes=max(1, int(otp.settings.ttl // 60)))
    await audit_public(web, request, "web_self_code", msisdn, purpose=purpose, sent=sent)
    return CODE_SENT[purpose]


async def proven(web: "WebApp", request, purpose: str, msisdn: str, body: dict, password_field: str) -> None:
    """The new password is strong enough (checked first: a weak one does not
    spend a try of the code), then the code proves the phone."""
    try:
        check_subscriber_password(body[password_field], msisdn=msisdn)
    except UserError as exc:
        raise HttpError(400, str(exc), field=password_field)
    if not await codes(web).check(purpose, msisdn, body["code"]):
        await audit_public(web, request, f"web_self_{purpose}_refused", msisdn, reason="code")
        raise HttpError(400, WRONG_CODE, field="code")


async def open_on_web(web: "WebApp", request, body: dict) -> tuple[str, "Result"]:
    """Checks the code, the agreement and the password, then opens; returns
    the number and the service's result."""
    printable({k: v for k, v in body.items() if k not in ("password", "code")})
    msisdn = number_of(web, body["msisdn"])
    if body.get("accept_agreement") is not True:
        raise HttpError(400, "accept the agreement to open an account", field="accept_agreement")
    if body.get("agreement_version", AGREEMENT_VERSION) != AGREEMENT_VERSION:
        raise HttpError(409, f"the agreement changed; read version {AGREEMENT_VERSION}", field="agreement_version")
    await proven(web, request, OPEN, msisdn, body, "password")
    password_hash = await web.users.hasher.hash(body["password"])
    result = await web.core.service.web_open(msisdn, password_hash, agreement_version=AGREEMENT_VERSION,
                                             agreement_sha256=AGREEMENT_SHA256, language=body.get("language"))
    await audit_public(web, request, "web_self_open", msisdn, outcome=result.outcome.value,
                       agreement_version=AGREEMENT_VERSION, before=None,
                       after={"status": "active"} if result.ok else None)
    if not result.ok:
        raise self_refusal(result)
    await web.users.subscriber_passwords.ensure_row(msisdn, must_change=False)
    return msisdn, result


async def reset_password(web: "WebApp", request, body: dict) -> str:
    """The forgotten password: code + new password. The row's password stamp
    changes, so every web session of the number ends; a lock from failed
    logins is lifted (the code proved the phone)."""
    msisdn = number_of(web, body["msisdn"])
    await proven(web, request, RESET, msisdn, body, "new_password")
    if not await web.users.subscriber_passwords.ensure_row(msisdn, must_change=False):
        raise HttpError(400, WRONG_CODE, field="code")      # closed since the code was sent
    row = await web.users.get(msisdn)
    new_hash = await web.users.hasher.hash(body["new_password"])
    now = web.users.clock()
    address = web.address(request)

    async def write(conn):
        if not await web.core.service.store_login_password(conn, msisdn, new_hash):
            raise HttpError(400, WRONG_CODE, field="code")
        await conn.execute(web_users.update().where(web_users.c.id == row.id).values(
            must_change_password=False, password_changed_at=now, failed_logins=0, locked_until=None, updated_at=now))
        await audit(conn, actor=msisdn, channel="web", action="web_password_reset", account_id=None,
                    role=SUBSCRIBER, address=address, msisdn=mask(msisdn),
                    before={"password_changed_at": row.password_stamp,
                            "locked_until": row.locked_until.isoformat() if row.locked_until else None},
                    after={"password_changed_at": now.isoformat(), "locked_until": None})
    await web.core.ledger.write(write)
    await web.users.forget_failures(msisdn)
    return msisdn


# ------------------------------------------------------------ the logged-in subscriber

async def own_number(web: "WebApp", ctx: "WebContext") -> str:
    """The number of the logged-in subscriber's row: never one a request names."""
    row = await login_row(web, ctx.username)
    if row is None or not row.msisdn:
        raise HttpError(403, "this login has no number")
    w = await web.core.service.account_info(row.msisdn)
    if w is not None and former_holder(row, w):
        # the number has a new account (an ownership transfer): not this session's
        await web.sessions.delete(ctx.token)
        raise HttpError(401, "the number's account changed; log in again")
    return row.msisdn


async def overview(web: "WebApp", msisdn: str) -> dict[str, Any]:
    svc = web.core.service
    w = await svc.account_info(msisdn)
    if w is None or w.status not in (ACTIVE, FROZEN):
        raise HttpError(404, "this number has no open account", outcome=Outcome.NO_ACCOUNT.value)
    bal = await svc.balance(msisdn, channel="web")
    card = await web.core.ledger.read(lambda conn: _card_of(conn, w.id))
    return {"msisdn": msisdn, "number": local_form(msisdn), "status": w.status, "balance": bal.balance,
            "withdrawable": bal.params.get("withdrawable", 0), "pending_in": bal.params.get("pending_in", 0),
            "kyc_tier": w.kyc_tier, "card": card, "pin_change_required": await svc.pin_change_required(msisdn),
            "language": w.language}


async def _card_of(conn, account_id: int) -> dict | None:
    card = await active_card(conn, account_id)
    return None if card is None else {"last4": card.last4, "card_type": card.card_type, "bank_code": card.bank_code}


async def statement_page(web: "WebApp", msisdn: str, page: int, per_page: int = 20) -> dict[str, Any]:
    result = await web.core.service.statement(msisdn, channel="web", page=page, per_page=per_page, lang="en")
    if not result.ok:
        raise self_refusal(result)
    return {"page": result.params["page"], "pages": result.params["pages"], "balance": result.balance,
            "lines": [line_view(line) for line in result.params["lines"]]}


def line_view(line) -> dict[str, Any]:
    return {"ref": line.ref, "kind": line.kind, "amount": line.amount, "at": line.at,
            "counterparty": line.counterparty, "state": line.state}


CSV_MAX_PAGES = 50


async def statement_csv(web: "WebApp", msisdn: str) -> bytes:
    """Newest first, amounts in yuan with two decimals from integer fen; the
    csv module quotes what needs quoting (a merchant name with a comma)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["ref", "at", "kind", "counterparty", "amount_yuan", "state"])
    page, pages = 1, 1
    while page <= min(pages, CSV_MAX_PAGES):
        chunk = await statement_page(web, msisdn, page, per_page=200)
        for line in chunk["lines"]:
            writer.writerow([line["ref"], line["at"], line["kind"], _csv_text(line["counterparty"]),
                             format_amount(line["amount"]), line["state"]])
        pages, page = chunk["pages"], page + 1
    return out.getvalue().encode("utf-8")


def _csv_text(value: Any) -> str:
    """A cell a spreadsheet would run as a formula (=, +, -, @) starts with a quote."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


@dataclass(frozen=True)
class SelfOperation:
    name: str                        # the path segment and the audit action's tail
    title: str
    body: Body | None
    run: Callable[["WebApp", str, dict], Awaitable[Result]]
    summary: str
    page: str                        # the page whose form runs it


def idempotency(body: dict, msisdn: str, kind: str) -> str:
    key = body["idempotency_key"]
    if not _IDEMPOTENCY_RE.match(key):
        raise HttpError(400, "idempotency_key: 8 to 64 letters, digits, '-' or '_'", field="idempotency_key")
    return f"web:{kind}:{msisdn}:{key}"


def pin_of(body: dict, field: str = "pin") -> str:
    pin = body[field]
    if not (len(pin) == 6 and pin.isascii() and pin.isdigit()):
        raise HttpError(400, f"{field}: the payment PIN is 6 digits", field=field, outcome=Outcome.PIN_FORMAT.value)
    return pin


async def _pay(web, msisdn, b):
    code = printable({"merchant_code": b["merchant_code"]})["merchant_code"].strip().upper()
    if not code:
        raise HttpError(400, "merchant_code is required", field="merchant_code")
    return await web.core.service.pay(msisdn, code, amount_of(b["amount"]), pin_of(b), channel="web",
                                      key=idempotency(b, msisdn, "pay"), reference=b.get("reference"), lang="en")


async def _send(web, msisdn, b):
    to = number_of(web, b["to_msisdn"], "to_msisdn")
    return await web.core.service.send(msisdn, to, amount_of(b["amount"]), pin_of(b), channel="web",
                                       key=idempotency(b, msisdn, "send"))


async def _card(web, msisdn, b):
    pan, expiry = card_fields(b)
    return await web.core.service.bind_card(msisdn, pan, expiry, channel="web")


async def _pin(web, msisdn, b):
    return await web.core.service.change_pin(msisdn, pin_of(b, "current_pin"), pin_of(b, "new_pin"), channel="web")


async def _freeze(web, msisdn, b):
    return await web.core.service.freeze(msisdn, channel="web")


async def _unfreeze(web, msisdn, b):
    # as JD by SMS: the PIN unfreezes (an agent can too)
    return await web.core.service.unfreeze(msisdn, pin_of(b), channel="web")


_AMOUNT = Field("string", max_length=24, description="yuan as text: 20, 20.5, 20.50 (never fractional fen)")
_PIN = Field("string", max_length=6, description="the 6-digit payment PIN")
_IDEM = Field("string", max_length=64, description="a random token per form (8-64 of A-Z a-z 0-9 - _): "
                                                    "a repeated submit with it pays once")

OPERATIONS: tuple[SelfOperation, ...] = (
    SelfOperation("pay", "Pay a merchant", Body({
        "merchant_code": Field("string", max_length=16), "amount": _AMOUNT, "pin": _PIN, "idempotency_key": _IDEM,
        "reference": Field("string", required=False, max_length=32, description="the merchant's order number")}),
        _pay, "Pay a merchant with the payment PIN (the limits and the PIN lockout of every channel).", "pay"),
    SelfOperation("send", "Send to another number", Body({
        "to_msisdn": Field("string", max_length=32), "amount": _AMOUNT, "pin": _PIN, "idempotency_key": _IDEM}),
        _send, "Send money to another subscriber with the payment PIN (withdrawable money only).", "pay"),
    SelfOperation("card", "Bind or replace the bank card", Body({
        "pan": Field("string", max_length=23), "expiry": Field("string", max_length=4, description="YYMM")}),
        _card, "Bind the bank card (verified by the bank), replacing any card bound before; only the last 4 "
               "digits are shown.", "card"),
    SelfOperation("pin", "Change the payment PIN", Body({"current_pin": _PIN, "new_pin": _PIN}), _pin,
                  "Change the payment PIN (due first of all: the initial PIN came by SMS).", "settings"),
    SelfOperation("freeze", "Freeze the wallet", None, _freeze,
                  "Freeze at once (a lost phone); unfreezing needs the PIN or an agent.", "settings"),
    SelfOperation("unfreeze", "Unfreeze the wallet", Body({"pin": _PIN}), _unfreeze,
                  "Unfreeze with the payment PIN, as JD by SMS.", "settings"),
)
BY_NAME = {op.name: op for op in OPERATIONS}
_SECRET_FIELDS = frozenset({"pin", "current_pin", "new_pin", "pan", "expiry"})


async def perform(web: "WebApp", ctx: "WebContext", op: SelfOperation, body: dict) -> Result:
    """Runs one operation on the subscriber's own number, audited with the
    web user, role and address, before and after."""
    printable({k: v for k, v in body.items() if k not in _SECRET_FIELDS})
    msisdn = await own_number(web, ctx)
    before = await snapshot(web, msisdn)
    result = await op.run(web, msisdn, body)
    shown = {k: v for k, v in body.items() if k not in _SECRET_FIELDS}
    if "pan" in body:
        shown["pan_last4"] = body["pan"].replace(" ", "")[-4:]
    await audit_web(web, ctx, "", f"web_self_{op.name}", msisdn, outcome=result.outcome.value, request=shown,
                    before=before, after=await snapshot(web, msisdn))
    return result


# ------------------------------------------------------------ API handlers

async def api_agreement(web, request, ctx, body):
    return 200, {"version": AGREEMENT_VERSION, "sha256": AGREEMENT_SHA256, "text": AGREEMENT_TEXT}


async def api_open_code(web, request, ctx, body):
    return 202, {"message": await request_code(web, request, OPEN, body["msisdn"])}


async def api_open(web, request, ctx, body):
    msisdn, result = await open_on_web(web, request, body)
    token, session = await web.sessions.create(await web.users.get(msisdn))
    web.set_session_cookie(request, token)
    return 201, {**_session_view(session), "message": "Your wallet is open; your payment PIN comes by SMS."}


async def api_reset_code(web, request, ctx, body):
    return 202, {"message": await request_code(web, request, RESET, body["msisdn"])}


async def api_reset(web, request, ctx, body):
    await reset_password(web, request, body)
    return 200, {"message": "Password changed; log in with it. Every other web session of the number ended."}


async def api_me(web, request, ctx, body):
    return 200, await overview(web, await own_number(web, ctx))


async def api_statement(web, request, ctx, body):
    raw = request.args.get(b"page", [b"1"])[0]
    try:
        page = int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "page must be a whole number", field="page")
    if not 1 <= page <= 100_000:
        raise HttpError(400, "page must be between 1 and 100000", field="page")
    return 200, await statement_page(web, await own_number(web, ctx), page)


def _operation_handler(op: SelfOperation):
    async def handler(web: "WebApp", request, ctx: "WebContext", body) -> tuple[int, Any]:
        result = await perform(web, ctx, op, body or {})
        if not result.ok:
            raise self_refusal(result)
        return self_status(result), result_view(result)
    handler.__name__ = "self_" + op.name
    return handler


_MSISDN = Field("string", max_length=32, description="the number, local (13800138000) or E.164")
_CODE = Field("string", max_length=12, description="the 6-digit code from the SMS")
CODE_BODY = Body({"msisdn": _MSISDN})
OPEN_BODY = Body({"msisdn": _MSISDN, "code": _CODE,
                  "password": Field("string", max_length=MAX_PASSWORD,
                                    description="the login password: 8+ characters, not all digits, not the number"),
                  "accept_agreement": Field("boolean", description="true: the agreement (GET /api/v1/self/agreement) "
                                                                   "is accepted"),
                  "agreement_version": Field("string", required=False, max_length=16),
                  "language": Field("string", required=False, enum=("zh", "en"))})
RESET_BODY = Body({"msisdn": _MSISDN, "code": _CODE, "new_password": Field("string", max_length=MAX_PASSWORD)})
_MESSAGE_SCHEMA = {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}
_RESULT_SCHEMA = {"type": "object", "required": ["outcome", "message"],
                  "properties": {"outcome": {"type": "string"}, "message": {"type": "string"},
                                 "ref": {"type": "string"}, "amount": {"type": "integer", "description": "fen"},
                                 "balance": {"type": "integer", "description": "fen"}}}
_OP_ERRORS = {400: "bad input (missing field, wrong type, a negative or fractional-fen amount, a PIN that is not "
                   "6 digits, a bad idempotency key)",
              401: "not logged in", 403: "not a subscriber, a wrong PIN, or CSRF",
              404: "no account, unknown merchant or recipient",
              409: "the account's state (frozen, the initial PIN not changed yet), or the idempotency key was used "
                   "for another payment",
              422: "refused by limits, funds or the bank", 423: "the PIN is locked", 429: "too many freezes today",
              503: "the bank is unavailable"}

ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/v1/self/agreement", api_agreement, "The service agreement a web opening accepts.",
             response_schema={"type": "object", "required": ["version", "sha256", "text"],
                              "properties": {"version": {"type": "string"}, "sha256": {"type": "string"},
                                             "text": {"type": "string"}}}),
    ApiRoute("POST", "/api/v1/self/open/code", api_open_code,
             "Web opening, step 1: a one-time code by SMS to a number without an account (the answer is the same "
             "either way).", body=CODE_BODY, response_schema=_MESSAGE_SCHEMA,
             responses={202: "a code was sent if the number can open an account", 400: "not a mobile number",
                        429: "too many codes for this number or from this address"}),
    ApiRoute("POST", "/api/v1/self/open", api_open, "Web opening, step 2: the code, the agreement and the login "
             "password; the wallet opens, the PIN comes by SMS, and the answer logs in.", body=OPEN_BODY,
             response_schema={"type": "object", "required": ["username", "role", "csrf_token"],
                              "properties": {"username": {"type": "string"}, "role": {"type": "string"},
                                             "csrf_token": {"type": "string"}, "message": {"type": "string"}}},
             responses={201: "opened and logged in", 400: "wrong or expired code, the agreement not accepted, a weak "
                        "password", 409: "an account exists, or the agreement changed"}),
    ApiRoute("POST", "/api/v1/self/password-reset/code", api_reset_code,
             "Forgotten password, step 1: a one-time code by SMS to a number with an account (the answer is the "
             "same either way).", body=CODE_BODY, response_schema=_MESSAGE_SCHEMA,
             responses={202: "a code was sent if the number has an account", 400: "not a mobile number",
                        429: "too many codes for this number or from this address"}),
    ApiRoute("POST", "/api/v1/self/password-reset", api_reset,
             "Forgotten password, step 2: the code and a new login password; every web session of the number ends.",
             body=RESET_BODY, response_schema=_MESSAGE_SCHEMA,
             responses={400: "wrong or expired code, or a weak password"}),
    ApiRoute("GET", "/api/v1/self", api_me, "The own wallet: status, balance, card (last 4), whether the PIN must "
             "be changed.", roles=SELF, responses={401: _OP_ERRORS[401], 403: "not a subscriber",
                                                  404: "the number has no open account (closed)"},
             response_schema={"type": "object", "required": ["msisdn", "status", "balance", "card"],
                              "properties": {"msisdn": {"type": "string"}, "status": {"type": "string"},
                                             "balance": {"type": "integer", "description": "fen, available"},
                                             "card": {"type": ["object", "null"]},
                                             "pin_change_required": {"type": "boolean"}}}),
    ApiRoute("GET", "/api/v1/self/statement", api_statement, "The own statement, newest first, 20 a page.",
             roles=SELF, parameters=({"name": "page", "in": "query", "required": False,
                                      "schema": {"type": "integer", "minimum": 1, "maximum": 100000}},),
             responses={400: "page is not a whole number", 401: _OP_ERRORS[401], 403: "not a subscriber",
                        404: "the number has no open account (closed)"},
             response_schema={"type": "object", "required": ["page", "pages", "lines"],
                              "properties": {"page": {"type": "integer"}, "pages": {"type": "integer"},
                                             "lines": {"type": "array", "items": {"type": "object"}}}}),
    *(ApiRoute("POST", f"/api/v1/self/{op.name}", _operation_handler(op), op.summary, roles=SELF, body=op.body,
               response_schema=_RESULT_SCHEMA, responses=_OP_ERRORS) for op in OPERATIONS),
)


def install(web: "WebApp") -> None:
    """Subscribers log in through WebUsers with the account's password."""
    web.users.subscriber_passwords = SubscriberPasswords(web)

