"""The agent console (call center 10086, business hall): find a subscriber
by number, the counter operations, and callers handed over by the IVR.

One table of operations (OPERATIONS) serves both the JSON API and the
page forms, so the two cannot disagree about what an operation needs or
how a refusal reads. Each operation acts as the web user's own agent code
(its `agent_code` row), never one the request names: the service checks
that code, the console checks that the user has one.

Every operation and every look-up is audited with the person behind the
agent code: the service writes its own row (actor `agent:CODE`), and the
console adds `web_agent_<op>` with the web user, role, address and the
account's state before and after. Secrets typed here (the caller's PIN
for a close, a card number) never reach a log or an audit row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from channels.web.http import Body, Field, HttpError
from channels.web.routes import ApiRoute
from telecom_pay.accounts import audit
from telecom_pay.agent_view import Looker, lookup
from telecom_pay.calls import CallLog
from telecom_pay.commands.replies import render
from telecom_pay.money import AmountError, parse_amount
from telecom_pay.msisdn import MsisdnError, mask, normalize
from telecom_pay.outcomes import Outcome, Result
from telecom_pay.webusers import AGENT, AGENT_SUPERVISOR

if TYPE_CHECKING:
    from channels.web.app import WebApp, WebContext

CONSOLE_ROLES = (AGENT, AGENT_SUPERVISOR)
ID_TYPES = ("ID", "passport", "HK_MO_pass", "TW_pass", "military", "residence_permit")

#: how a refused operation answers over HTTP
_STATUS = {
    Outcome.INVALID_NUMBER: 400, Outcome.INVALID_AMOUNT: 400, Outcome.MALFORMED: 400, Outcome.PIN_FORMAT: 400,
    Outcome.NOT_AUTHORIZED: 403, Outcome.PIN_WRONG: 403,
    Outcome.NO_ACCOUNT: 404, Outcome.NOT_FOUND: 404,
    Outcome.ACCOUNT_EXISTS: 409, Outcome.ACCOUNT_PENDING: 409, Outcome.ACCOUNT_FROZEN: 409,
    Outcome.ACCOUNT_CLOSED: 409, Outcome.ALREADY_ACTIVE: 409, Outcome.BALANCE_NOT_ZERO: 409,
    Outcome.IDEMPOTENCY_CONFLICT: 409, Outcome.NO_CARD: 409, Outcome.PIN_CHANGE_REQUIRED: 409,
    Outcome.NOTHING_PENDING: 409,
    Outcome.PIN_LOCKED: 423,
    Outcome.INSUFFICIENT_FUNDS: 422, Outcome.NOT_WITHDRAWABLE: 422, Outcome.LIMIT_PER_TXN: 422,
    Outcome.LIMIT_DAILY: 422, Outcome.LIMIT_MONTHLY: 422, Outcome.BANK_DECLINED: 422,
    Outcome.BANK_UNAVAILABLE: 503,
}
#: result params that are fine to show an agent (never a PIN or password)
_SHOWN = ("action", "what", "msisdn", "tier", "last4", "card_type", "held", "reason", "limit",
          "differs", "agent_balance", "withdrawable")
_SECRET_FIELDS = frozenset({"pin", "pan", "expiry"})


def status_of(result: Result) -> int:
    if result.outcome.ok:
        # accepted, not done: the bank's answer, or an operator's review, follows
        return 202 if result.outcome in (Outcome.IN_PROGRESS, Outcome.RISK_HELD) else 200
    return _STATUS.get(result.outcome, 409)


#: refusals whose subscriber wording ("You have no mobile wallet. Send OPEN
#: ...") would tell the agent at the counter to do what the caller does
_AGENT_WORDING = {
    Outcome.NO_ACCOUNT: "This number has no mobile wallet account: open one for the caller after the ID check.",
}


def message_of(result: Result) -> str:
    return _AGENT_WORDING.get(result.outcome) or " ".join(render(result, "en")) or result.outcome.value


def result_view(result: Result) -> dict[str, Any]:
    out: dict[str, Any] = {"outcome": result.outcome.value, "message": message_of(result)}
    for name in ("ref", "amount", "balance"):
        if getattr(result, name, None) is not None:
            out[name] = getattr(result, name)
    out.update({k: v for k, v in result.params.items() if k in _SHOWN})
    if "status" in result.params:
        out["account_status"] = result.params["status"]
    return out


def refusal(result: Result, field: str | None = None) -> HttpError:
    """`field`: the body member to blame (a client shows the error beside it)."""
    view = result_view(result)
    if field is not None:
        view["field"] = field
    return HttpError(status_of(result), view.pop("message"), **view)


# ------------------------------------------------------------ who acts

async def agent_code_of(web: "WebApp", ctx: "WebContext") -> str:
    user = await web.users.get(ctx.username)
    if user is None or not user.agent_code:
        raise HttpError(403, "this user has no agent code; an operations admin sets one")
    return user.agent_code


def looker(ctx: "WebContext", code: str) -> Looker:
    return Looker(agent_code=code, username=ctx.username, role=ctx.role, address=ctx.address)


def number(web: "WebApp", text: str, field: str = "msisdn") -> str:
    try:
        return normalize(text, web.core.settings.region)
    except MsisdnError:
        raise HttpError(400, f"{field} is not a mobile number", field=field, outcome=Outcome.INVALID_NUMBER.value)


def amount_of(text: str, field: str = "amount") -> int:
    """Yuan as text (`20`, `20.5`, `¥20.50`) to integer fen; negative,
    zero and fractional-fen amounts are refused, never rounded."""
    try:
        return parse_amount(text)
    except AmountError as exc:
        raise HttpError(400, f"{field}: {exc}", field=field, outcome=Outcome.INVALID_AMOUNT.value)


async def snapshot(web: "WebApp", msisdn: str) -> dict | None:
    w = await web.core.service.account_info(msisdn)
    if w is None:
        return None
    return {"status": w.status, "balance": w.balance - w.pending_out, "kyc_tier": w.kyc_tier,
            "holder_name": w.holder_name}


async def audit_web(web: "WebApp", ctx: "WebContext", code: str, action: str, msisdn: str | None, *,
                    account_id: int | None = None, **details) -> None:
    async def write(conn):
        await audit(conn, actor=ctx.username[:64], channel="web", action=action[:32], account_id=account_id,
                    role=ctx.role, address=ctx.address, agent_code=code,
                    msisdn=mask(msisdn) if msisdn else None, **details)
    await web.core.ledger.write(write)


# ------------------------------------------------------------ the operations

@dataclass(frozen=True)
class Operation:
    name: str                     # the path segment and the audit action's tail
    title: str
    body: Body
    run: Callable[["WebApp", str, dict], Awaitable[Result]]
    summary: str
    new_number: str | None = None     # the field naming the number the account has afterwards


#: a number as typed: digits, spaces and dashes, an optional + (the service checks that it is a mobile number)
NUMBER_PATTERN = r"^\+?[0-9][0-9 -]*$"
MSISDN_FIELD = Field("string", max_length=32, min_length=5, pattern=NUMBER_PATTERN,
                     description="the subscriber's number", example="13900139000")


def msisdn_body(**more: Field) -> Body:
    return Body({"msisdn": MSISDN_FIELD, **more})


TAKE_BODY = Body({"handoff_id": Field("integer", minimum=1, maximum=2 ** 62 - 1,
                                       description="the id from GET /api/v1/agent/handoffs")})
_ID = {"holder_name": Field("string", max_length=100, min_length=1), "id_type": Field("string", enum=ID_TYPES),
       "id_number": Field("string", max_length=64, min_length=1)}


def _identity(b: dict) -> tuple[str, str]:
    name, id_number = b["holder_name"].strip(), b["id_number"].strip()
    if not name:
        raise HttpError(400, "holder_name: the name on the ID is required", field="holder_name")
    if not id_number:
        raise HttpError(400, "id_number: the ID's number is required", field="id_number")
    return name, id_number


async def _open(web, code, b):
    _identity(b)
    return await web.core.service.agent_open(code, number(web, b["msisdn"]), holder_name=b["holder_name"].strip(),
                                             id_type=b["id_type"], id_number=b["id_number"].strip(),
                                             language=b.get("language"))


async def _kyc(web, code, b):
    return await web.core.service.set_kyc_tier(code, number(web, b["msisdn"]), b["tier"])


async def _freeze(web, code, b):
    return await web.core.service.agent_freeze(code, number(web, b["msisdn"]))


async def _unfreeze(web, code, b):
    return await web.core.service.agent_unfreeze(code, number(web, b["msisdn"]))


async def _pin_reset(web, code, b):
    return await web.core.service.reset_pin(code, number(web, b["msisdn"]))


async def _cash_in(web, code, b):
    receipt = b["receipt"].strip()
    if not receipt:
        raise HttpError(400, "receipt: the counter receipt's number is required", field="receipt")
    # the receipt is the idempotency key: a double click or a retried request books once
    return await web.core.service.cash_in(code, number(web, b["msisdn"]), amount_of(b["amount"]),
                                          key=f"cashin-receipt:{code}:{receipt}")


def card_fields(b: dict) -> tuple[str, str]:
    """The card number and expiry of a card form (the console's, the
    subscriber's own), checked before the bank is asked."""
    pan, expiry = b["pan"].replace(" ", ""), b["expiry"].strip()
    if not (pan.isascii() and pan.isdigit() and 12 <= len(pan) <= 19):
        raise HttpError(400, "pan: a card number is 12 to 19 digits", field="pan")
    if not (len(expiry) == 4 and expiry.isascii() and expiry.isdigit()):
        raise HttpError(400, "expiry: YYMM, four digits", field="expiry")
    return pan, expiry


async def _card(web, code, b):
    pan, expiry = card_fields(b)
    return await web.core.service.bind_card(number(web, b["msisdn"]), pan, expiry, channel="agent",
                                            actor=f"agent:{code}")


async def _number_change(web, code, b):
    return await web.core.service.change_number(code, number(web, b["msisdn"]),
                                                number(web, b["new_msisdn"], "new_msisdn"))


async def _ownership(web, code, b):
    _identity(b)
    return await web.core.service.transfer_ownership(code, number(web, b["msisdn"]),
                                                     holder_name=b["holder_name"].strip(), id_type=b["id_type"],
                                                     id_number=b["id_number"].strip())


async def _cancel_number(web, code, b):
    return await web.core.service.cancel_number(code, number(web, b["msisdn"]))


async def _close(web, code, b):
    # the service closes only with the holder's PIN (typed by the caller at
    # the counter's PIN pad) and refunds the balance to the bound card
    return await web.core.service.close(number(web, b["msisdn"]), b["pin"], channel="agent")


OPERATIONS: tuple[Operation, ...] = (
    Operation("open", "Open an account",
              msisdn_body(**_ID, language=Field("string", required=False, enum=("zh", "en"))),
              _open, "Open an account for a caller after the ID check: the agreement goes by SMS and the caller "
                     "confirms with A on the phone."),
    Operation("kyc", "Set the KYC tier", msisdn_body(tier=Field("integer", minimum=0, maximum=99,
                                                               description="a tier from [limits]")),
              _kyc, "Set the subscriber's KYC tier (its limits)."),
    Operation("freeze", "Freeze", msisdn_body(), _freeze, "Freeze the account; the subscriber is told by SMS."),
    Operation("unfreeze", "Unfreeze", msisdn_body(), _unfreeze, "Unfreeze the account; the subscriber is told by SMS."),
    Operation("pin-reset", "Reset the PIN", msisdn_body(), _pin_reset,
              "A new random PIN, sent by SMS to the phone only (never shown here); it must be changed before use."),
    Operation("cash-in", "Cash in", msisdn_body(
        amount=Field("string", max_length=24, pattern=r"^[¥￥]?[0-9]{1,12}(\.[0-9]{1,2})?元?$",
                     description="yuan as text: 20, 20.5, 20.50 (more than zero, whole fen)", example="20.50"),
        receipt=Field("string", max_length=64, min_length=1,
                      description="the counter receipt's number: the idempotency key")),
        _cash_in, "Cash at the counter, paid from the agent's float; the same receipt number books once."),
    Operation("card", "Bind or replace the bank card", msisdn_body(
        pan=Field("string", max_length=23, pattern=r"^[0-9 ]{12,23}$", description="12 to 19 digits"),
        expiry=Field("string", max_length=4, pattern=r"^[0-9]{4}$", description="YYMM")),
        _card, "Bind the caller's bank card (verified by the bank), replacing any card bound before."),
    Operation("number-change", "Change the number", msisdn_body(new_msisdn=MSISDN_FIELD),
              _number_change, "The account moves to the subscriber's new number; both numbers are told.",
              new_number="new_msisdn"),
    Operation("ownership", "Transfer the ownership", msisdn_body(**_ID), _ownership,
              "The number has a new holder: the old account closes with its balance held in suspense, a new "
              "account opens and its PIN goes by SMS."),
    Operation("number-cancel", "Cancel the number", msisdn_body(), _cancel_number,
              "The number is cancelled: the account is frozen and its balance kept for refund."),
    Operation("close", "Close the account",
              msisdn_body(pin=Field("string", max_length=6, description="the holder's PIN")),
              _close, "Close with the holder's PIN: the balance is refunded to the bound card first."),
)
BY_NAME = {op.name: op for op in OPERATIONS}


def printable(body: dict) -> dict:
    """Names, ID numbers and receipts end up in rows and on screens:
    control characters (a NUL PostgreSQL refuses, a newline forging a log
    line) are refused, not stored."""
    for name, value in body.items():
        if isinstance(value, str) and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise HttpError(400, f"{name} contains control characters", field=name)
    return body


async def perform(web: "WebApp", ctx: "WebContext", op: Operation, body: dict) -> tuple[Result, str]:
    """Runs one operation as the user's agent code and audits it with the
    person behind the code; returns the result and the number the account
    has afterwards."""
    printable(body)
    code = await agent_code_of(web, ctx)
    msisdn = number(web, body["msisdn"])
    before = await snapshot(web, msisdn)
    result = await op.run(web, code, body)
    after_number = number(web, body[op.new_number], op.new_number) if op.new_number and result.ok else msisdn
    after = await snapshot(web, after_number)
    shown = {k: v for k, v in body.items() if k not in _SECRET_FIELDS and k != "msisdn"}
    if "pan" in body:
        shown["pan_last4"] = body["pan"].replace(" ", "")[-4:]
    await audit_web(web, ctx, code, f"web_agent_{op.name.replace('-', '_')}", msisdn, outcome=result.outcome.value,
                    request=shown, before=before, after=after)
    return result, after_number


# ------------------------------------------------------------ API handlers

async def subscriber_lookup(web: "WebApp", request, ctx: "WebContext", body) -> tuple[int, Any]:
    code = await agent_code_of(web, ctx)
    result = await lookup(web.core.service, printable(body)["msisdn"], looker(ctx, code))
    if not result.ok:
        raise refusal(result, "msisdn" if result.outcome is Outcome.INVALID_NUMBER else None)
    return 200, result.params["subscriber"]


def _operation_handler(op: Operation):
    async def handler(web: "WebApp", request, ctx: "WebContext", body) -> tuple[int, Any]:
        result, _ = await perform(web, ctx, op, body)
        if not result.ok:
            raise refusal(result)
        return status_of(result), result_view(result)
    handler.__name__ = "agent_" + op.name.replace("-", "_")
    return handler


def call_log(web: "WebApp") -> CallLog:
    return CallLog(web.core.ledger)


def handoff_view(row: dict) -> dict:
    return {"id": row["id"], "msisdn": row["msisdn"], "caller_id": row["caller_id"], "menu_path": row["menu_path"],
            "pin_verified": bool(row["pin_verified"]), "state": row["state"], "at": row["at"].isoformat()}


async def waiting_handoffs(web: "WebApp", ctx: "WebContext") -> list[dict]:
    await agent_code_of(web, ctx)
    return [handoff_view(r) for r in await call_log(web).handoffs(state="waiting")]


async def take(web: "WebApp", ctx: "WebContext", handoff_id: int) -> dict:
    """Marks a waiting hand-off taken by this agent: 409 when another agent
    was first (or it is not waiting), 404 when there is no such hand-off."""
    code = await agent_code_of(web, ctx)
    if not 0 < handoff_id < 2 ** 62:
        raise HttpError(404, "no such hand-off", field="handoff_id")
    row, taken = await call_log(web).take_handoff(handoff_id, taken_by=f"agent:{code}",
                                                  details={"username": ctx.username, "role": ctx.role,
                                                           "address": ctx.address})
    if row is None:
        raise HttpError(404, "no such hand-off", field="handoff_id")
    if not taken:
        raise HttpError(409, "this caller was already taken by another agent", field="handoff_id")
    return handoff_view(row)


async def list_handoffs(web: "WebApp", request, ctx: "WebContext", body) -> tuple[int, Any]:
    return 200, {"handoffs": await waiting_handoffs(web, ctx)}


async def take_handoff(web: "WebApp", request, ctx: "WebContext", body) -> tuple[int, Any]:
    taken = await take(web, ctx, body["handoff_id"])
    out: dict[str, Any] = {"handoff": taken, "subscriber": None}
    if taken["msisdn"]:
        code = await agent_code_of(web, ctx)
        result = await lookup(web.core.service, taken["msisdn"], looker(ctx, code))
        if result.ok:
            out["subscriber"] = result.params["subscriber"]
    return 200, out


# ------------------------------------------------------------ suspense payback (supervisors, four eyes)

SUPERVISORS = (AGENT_SUPERVISOR,)
REF_BODY = Body({"ref": Field("string", max_length=12, min_length=1,
                               description="the hold's ref (from /suspense)")})
_SUSPENSE_MESSAGES = {
    "requested": "Payback requested; a second supervisor approves it.",
    "paid": "Paid back: hand the cash to the former holder.",
    Outcome.IDEMPOTENCY_CONFLICT: "A payback of this hold is already waiting for a second person's approval.",
    Outcome.NOTHING_PENDING: "Nothing to approve: not requested yet, or paid back already.",
    Outcome.NOT_FOUND: "No such hold.",
    Outcome.NOT_AUTHORIZED: "Not allowed: the one who asked cannot approve, and the counter's agent code must be "
                            "active.",
    Outcome.INSUFFICIENT_FUNDS: "The suspense account does not hold that much.",
}


def suspense_answer(result: Result) -> tuple[int, dict]:
    message = _SUSPENSE_MESSAGES.get(result.params.get("state") if result.ok else result.outcome,
                                     message_of(result))
    view = {**result_view(result), "message": message}
    for name in ("state", "requested_by"):
        if name in result.params:
            view[name] = result.params[name]
    if not result.ok:
        view.pop("message")
        raise HttpError(status_of(result), message, **view)
    return 200, view


async def suspense_holds(web: "WebApp", ctx: "WebContext", msisdn: str) -> list[dict]:
    holds = await web.core.service.suspense_holds(msisdn)
    await audit_web(web, ctx, "", "web_suspense_lookup", msisdn, holds=len(holds))
    return holds


async def suspense_list(web: "WebApp", request, ctx: "WebContext", body) -> tuple[int, Any]:
    return 200, {"holds": await suspense_holds(web, ctx, number(web, printable(body)["msisdn"]))}


async def suspense_request(web: "WebApp", ctx: "WebContext", ref: str) -> Result:
    code = await agent_code_of(web, ctx)
    return await web.core.service.request_suspense_payback(
        printable({"ref": ref})["ref"], requested_by=ctx.username, agent_code=code, role=ctx.role,
        address=ctx.address)


async def suspense_approve(web: "WebApp", ctx: "WebContext", ref: str) -> Result:
    # the approver is a console user too (an agent code of its own, audited)
    code = await agent_code_of(web, ctx)
    return await web.core.service.approve_suspense_payback(printable({"ref": ref})["ref"], approved_by=ctx.username,
                                                           role=ctx.role, address=ctx.address,
                                                           approver_agent_code=code)


async def request_payback(web: "WebApp", request, ctx: "WebContext", body) -> tuple[int, Any]:
    return suspense_answer(await suspense_request(web, ctx, body["ref"]))


async def approve_payback(web: "WebApp", request, ctx: "WebContext", body) -> tuple[int, Any]:
    return suspense_answer(await suspense_approve(web, ctx, body["ref"]))


_RESULT_SCHEMA = {"type": "object", "required": ["outcome", "message"],
                  "properties": {"outcome": {"type": "string"}, "message": {"type": "string"},
                                 "ref": {"type": "string"}, "amount": {"type": "integer", "description": "fen"},
                                 "balance": {"type": "integer", "description": "fen"}}}
_SUBSCRIBER_SCHEMA = {"type": "object", "required": ["msisdn", "status", "balance", "card", "operations", "audit"],
                      "properties": {"msisdn": {"type": "string"}, "status": {"type": "string"},
                                     "balance": {"type": "integer", "description": "fen, available"},
                                     "kyc_tier": {"type": "integer"},
                                     "card": {"type": ["object", "null"]},
                                     "operations": {"type": "array", "items": {"type": "object"}},
                                     "audit": {"type": "array", "items": {"type": "object"}}}}
_OP_ERRORS = {400: "bad input (missing field, wrong type, not a number, a negative or fractional-fen amount)",
              403: "wrong role, no agent code, the agent code not active, a wrong PIN, or CSRF",
              404: "no account for this number", 409: "the account's state does not allow it, or the receipt "
              "number was used for another amount", 422: "refused by limits, funds or the bank",
              423: "the PIN is locked", 503: "the bank is unavailable; try again"}

ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("POST", "/api/v1/agent/lookup", subscriber_lookup,
             "Find a subscriber by number (audited): status, balance, last operations, card, audit trail.",
             roles=CONSOLE_ROLES, body=msisdn_body(), response_schema=_SUBSCRIBER_SCHEMA,
             responses={403: _OP_ERRORS[403], 404: _OP_ERRORS[404]}),
    *(ApiRoute("POST", f"/api/v1/agent/{op.name}", _operation_handler(op), op.summary, roles=CONSOLE_ROLES,
               body=op.body, response_schema=_RESULT_SCHEMA,
               responses={**_OP_ERRORS, **({202: "the bank's answer is not known yet"} if op.name == "close" else {})})
      for op in OPERATIONS),
    ApiRoute("GET", "/api/v1/agent/handoffs", list_handoffs,
             "Callers the IVR handed to an agent and still waiting: number, menu path, PIN checked or not.",
             roles=CONSOLE_ROLES, responses={403: _OP_ERRORS[403]},
             response_schema={"type": "object", "required": ["handoffs"],
                              "properties": {"handoffs": {"type": "array", "items": {"type": "object"}}}}),
    ApiRoute("POST", "/api/v1/agent/handoffs/take", take_handoff,
             "Take a waiting caller: marked taken (once), with the caller's subscriber view when the number is known.",
             roles=CONSOLE_ROLES, body=TAKE_BODY,
             responses={403: _OP_ERRORS[403], 404: "no such hand-off", 409: "already taken"},
             response_schema={"type": "object", "required": ["handoff", "subscriber"],
                              "properties": {"handoff": {"type": "object"},
                                             "subscriber": {"type": ["object", "null"]}}}),
    ApiRoute("POST", "/api/v1/agent/suspense", suspense_list,
             "Money held in suspense for former holders of this number (ownership transfers), with its payback "
             "state (supervisors).", roles=SUPERVISORS, body=msisdn_body(),
             responses={400: _OP_ERRORS[400]},
             response_schema={"type": "object", "required": ["holds"],
                              "properties": {"holds": {"type": "array", "items": {"type": "object"}}}}),
    ApiRoute("POST", "/api/v1/agent/suspense/request", request_payback,
             "Ask to pay a hold back in cash at this supervisor's counter; a second supervisor approves.",
             roles=SUPERVISORS, body=REF_BODY, response_schema=_RESULT_SCHEMA,
             responses={403: _OP_ERRORS[403], 404: "no such hold", 409: "already requested or paid"}),
    ApiRoute("POST", "/api/v1/agent/suspense/approve", approve_payback,
             "Approve (as a second person) and pay out a requested payback, once.",
             roles=SUPERVISORS, body=REF_BODY, response_schema=_RESULT_SCHEMA,
             responses={403: "the one who asked cannot approve; no agent code; the role; CSRF", 404: "no such hold",
                        409: "not requested, or paid already", 422: "the suspense account does not hold that much"}),
)
