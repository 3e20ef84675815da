"""Bank operations in doubt on the web (operations admins only): the page
`/ops/bank`, `GET /api/v1/ops/bank/in-doubt` and `POST
/api/v1/ops/bank/resolve` (declared in ROUTES).

What `telecom-pay bank in-doubt` / `bank resolve` do, for a person with a
browser: operations whose bank outcome is open (review: an operator
decides; pending: the reversal is still being repeated; acknowledged: the
ledger is being told), the settlement batches whose payout waits for one
of them, and the decisions already taken (who, when, why).

A decision goes through `bank_bridge.review.resolve`, as the command's
does: the bank store records it with its review row, the web's own audit
row (`ops_bank_resolve`: web user, role, address, before and after) joins
that transaction, then the PaymentService posts or voids the ledger
operation and a payout's batch follows. Deciding one already decided is a
409.

Where the bank lives: the bridge keeps its tables in the platform's own
database (`bank_bridge.wiring` opens it on `[database] url`), so this page
reads and decides on the same rows whether the bridge runs in this daemon,
in another daemon on the same database, or nowhere (a web-only instance),
exactly as the command does from its own process. A database without the
bridge's tables (not upgraded) answers 503 with that sentence, not a 500.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from twisted.logger import Logger

from bank_bridge import review
from bank_bridge.store import BankStore
from channels.web.http import Body, Field, HttpError, from_form
from channels.web.routes import ApiRoute
from telecom_pay.accounts import audit
from telecom_pay.ledger.tables import T_PENDING
from telecom_pay.money import format_amount
from telecom_pay.settlement import batches_awaiting_bank
from telecom_pay.webusers import OPS_ADMIN

if TYPE_CHECKING:
    from channels.web.app import WebApp, WebContext

log = Logger(namespace="telecom_pay.web")
OUTCOMES = ("approved", "declined")
RESOLVED_SHOWN = 50

RESOLVE_BODY = Body({
    "operation_key": Field("string", max_length=128, description="the operation's key, as listed"),
    "outcome": Field("string", enum=OUTCOMES,
                     description="approved: the bank holds the original as done (the ledger posts it); "
                                 "declined: no money moved or it was reversed (the ledger voids it)"),
    "reason": Field("string", max_length=500,
                    description="why: what the bank said, e.g. its confirmation reference (required)"),
})


def store_of(web: "WebApp") -> BankStore:
    return BankStore(web.core.ledger.db.write)


def _stamp(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _age_seconds(since: datetime | None, now: datetime) -> int | None:
    return None if since is None else max(0, int((now - since).total_seconds()))


async def board(web: "WebApp") -> dict[str, Any]:
    """Everything the page and the API show, read from the shared database."""
    store = store_of(web)
    now = datetime.now(timezone.utc)
    try:
        open_ops = await review.in_doubt(store)
        resolved = await store.recent_reviews(RESOLVED_SHOWN)
        batches = await batches_awaiting_bank(web.core.ledger)
    except sa.exc.SQLAlchemyError as exc:
        raise HttpError(503, "the bank bridge's records cannot be read from this database "
                             f"(is it upgraded? telecom-pay db upgrade): {type(exc).__name__}")
    by_key = {op["operation_key"]: op for op in open_ops}
    operations = [{"operation_key": op["operation_key"], "state": op["state"], "kind": op["kind"],
                   "bank_code": op["bank_code"], "amount": op["amount"], "currency": op["currency"],
                   "last4": op["last4"], "rrn": op["rrn"], "stan": op["stan"], "status": op["status"],
                   "attempts": op["attempts"], "response_code": op["response_code"],
                   "since": _stamp(op["created_at"]), "age_seconds": _age_seconds(op["created_at"], now),
                   "settlement": op["operation_key"].startswith("settle:")}
                  for op in open_ops]
    return {
        "operations": operations,
        "batches": [{"id": b.id, "merchant_code": b.merchant_code, "merchant_name": b.merchant_name,
                     "business_date": b.business_date.isoformat(), "state": b.state, "net": b.net,
                     "attempts": b.attempts, "operation_key": b.operation_key,
                     "bank_state": by_key[b.operation_key]["state"] if b.operation_key in by_key else None}
                    for b in batches],
        "resolved": [{"operation_key": r["operation_key"], "at": _stamp(r["at"]), "actor": r["actor"],
                      "outcome": r["outcome"], "reason": r["reason"], "kind": r["kind"], "amount": r["amount"],
                      "last4": r["last4"], "before": r["before"], "after": r["after"]} for r in resolved],
        "bank_in_process": web.core.service.bank is not None,
    }


async def decide(web: "WebApp", ctx: "WebContext", body: dict) -> tuple[int, dict[str, Any]]:
    """The decision, its audit rows, then the ledger: 200, or 202 when the
    decision is recorded but the ledger's step failed; HttpError 400/404/409."""
    key, outcome, reason = body["operation_key"], body["outcome"], body["reason"].strip()
    if not reason:
        raise HttpError(400, "reason is required: say what the bank confirmed", field="reason")
    if not key.isprintable():
        raise HttpError(400, "operation_key is not a key of this platform (a control character)",
                        field="operation_key")
    if "\x00" in reason:
        raise HttpError(400, "reason contains a NUL character", field="reason")
    store = store_of(web)
    operation = await store.get_operation(key)
    if operation is None:
        raise HttpError(404, f"no bank operation {key!r}", field="operation_key")
    record = await web.core.ledger.get_operation(key)

    async def audit_row(conn, row: dict) -> None:
        await audit(conn, actor=ctx.username[:64], channel="web", action="ops_bank_resolve",
                    account_id=record.account_id if record is not None else None, role=ctx.role,
                    address=ctx.address, operation_key=key, outcome=outcome, reason=row["reason"],
                    before={**row["before"], "ledger": record.state if record is not None else None},
                    after=row["after"])
    try:
        row = await review.resolve(store, web.core.service, key, outcome=outcome, actor=ctx.username,
                                   reason=reason, also=audit_row)
    except review.ReviewError as exc:
        raise HttpError(409, f"{exc}: it was decided already, or it is not waiting for an operator",
                        operation_key=key)
    except Exception:
        # the decision may be committed and only the ledger's step have
        # failed: then it stands, and the daemon's recovery sweep ([bank]
        # recovery_interval) or the next start books what the bank store holds
        mine = [r for r in await store.reviews_for(key) if r["actor"] == ctx.username[:64]]
        if not mine:
            raise
        log.failure("the decision on {key} is recorded; the ledger did not follow it yet", key=key)
        row = mine[-1]
        return 202, {"operation_key": key, "outcome": row["outcome"], "actor": row["actor"],
                     "reason": row["reason"], "at": _stamp(row["at"]), "ledger_state": T_PENDING,
                     "message": "the decision is recorded; the ledger could not follow it yet, and the "
                                "daemon's recovery sweep or the next start books it"}
    after = await web.core.ledger.get_operation(key)
    return 200, {"operation_key": key, "outcome": row["outcome"], "actor": row["actor"], "reason": row["reason"],
                 "at": _stamp(row["at"]), "ledger_state": after.state if after is not None else None}


async def get_in_doubt(web: "WebApp", request, ctx, body) -> tuple[int, Any]:
    return 200, await board(web)


async def post_resolve(web: "WebApp", request, ctx, body) -> tuple[int, Any]:
    return await decide(web, ctx, body)


_OPERATION = {"type": "object", "properties": {
    "operation_key": {"type": "string"}, "state": {"type": "string", "enum": ["pending", "review", "acknowledged"]},
    "kind": {"type": "string"}, "amount": {"type": "integer", "description": "minor units (fen)"},
    "last4": {"type": "string"}, "attempts": {"type": "integer"}, "age_seconds": {"type": ["integer", "null"]},
    "settlement": {"type": "boolean", "description": "a merchant payout (its batch follows the decision)"}}}
_BOARD_SCHEMA = {"type": "object", "required": ["operations", "batches", "resolved", "bank_in_process"],
                 "properties": {"operations": {"type": "array", "items": _OPERATION},
                                "batches": {"type": "array", "items": {"type": "object"},
                                            "description": "settlement batches paying or in review"},
                                "resolved": {"type": "array", "items": {"type": "object"},
                                             "description": f"the last {RESOLVED_SHOWN} decisions, newest first"},
                                "bank_in_process": {"type": "boolean"}}}
_RESOLVED_SCHEMA = {"type": "object", "required": ["operation_key", "outcome", "actor", "reason", "at"],
                    "properties": {"operation_key": {"type": "string"}, "outcome": {"type": "string"},
                                   "actor": {"type": "string"}, "reason": {"type": "string"},
                                   "at": {"type": "string", "format": "date-time"},
                                   "ledger_state": {"type": ["string", "null"]},
                                   "message": {"type": "string",
                                               "description": "202 only: what is still to happen"}}}

ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/v1/ops/bank/in-doubt", get_in_doubt,
             "Bank operations whose outcome is open (review: an operator decides), the settlement batches "
             "waiting for them, and the last decisions (operations admins only).",
             roles=(OPS_ADMIN,), responses={503: "the bank bridge's tables are missing from the database"},
             response_schema=_BOARD_SCHEMA),
    ApiRoute("POST", "/api/v1/ops/bank/resolve", post_resolve,
             "Record what the bank says happened to an operation in review; the ledger posts (approved) or "
             "voids (declined) it and a payout's batch follows. Audited as ops_bank_resolve.",
             roles=(OPS_ADMIN,), body=RESOLVE_BODY,
             responses={400: "a missing or empty reason, an outcome other than approved or declined",
                        404: "no bank operation has this key",
                        409: "the operation is not in review: decided already, or still being reversed",
                        202: "the decision is recorded but the ledger could not follow it yet (it will)"},
             response_schema=_RESOLVED_SCHEMA),
)


class BankPages:
    def __init__(self, web: "WebApp"):
        self.web = web
        pages = web.pages
        web.klein.route("/ops/bank", methods=["GET"], endpoint="page bank")(
            pages._page(self.bank_page, roles=(OPS_ADMIN,)))
        web.klein.route("/ops/bank/resolve", methods=["POST"], endpoint="page bank resolve")(
            pages._page(self.resolve, roles=(OPS_ADMIN,), csrf=True))

    async def bank_page(self, request, ctx, form, *, status: int = 200, error: str | None = None,
                        notice: str | None = None) -> bytes:
        pages = self.web.pages
        try:
            values = await board(self.web)
        except HttpError as exc:
            return pages.render(request, "ops_bank.html", exc.status, ctx=ctx, error=exc.message, board=None)
        return pages.render(request, "ops_bank.html", status, ctx=ctx, error=error, notice=notice, board=values,
                            money=format_amount, age=_age_text)

    async def resolve(self, request, ctx, form) -> bytes:
        try:
            status, done = await decide(self.web, ctx, from_form(RESOLVE_BODY, form))
        except HttpError as exc:
            return await self.bank_page(request, ctx, form, status=exc.status, error=exc.message)
        return await self.bank_page(request, ctx, form, status=status, notice=(
            f"{done['operation_key']}: {done['outcome']} by {done['actor']}; "
            + (done["message"] + "." if "message" in done else
               f"the ledger operation is {done['ledger_state'] or 'not in this ledger'}.")))


def _age_text(seconds: int | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"
