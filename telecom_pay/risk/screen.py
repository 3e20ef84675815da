"""Screening a spend against the rules inside the booking's own write job.

The windows are counted in SQL on the booked operations (indexed by
`ix_operations_account_created` and `ix_operations_counterparty_created`),
not in volatile counters: a restart or a second instance forgets nothing.
Held operations count (they are money the subscriber tried to move);
voided ones do not. On PostgreSQL the wallets a rule counts for are locked
first (in id order, as the booking locks them), so two instances screening
the same wallet at once count one another's booking instead of both
passing on the same figures.

A hit with `hold` books the operation pending (the payer's money is
reserved: it is out of the available balance and cannot be spent twice)
and opens a `held` case; a hit with `alert` books it as usual and opens an
`alert` case. Either way the case row is written in the booking's
transaction: a crash leaves both or neither.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from telecom_pay.ledger.ledger import Leg, OperationRecord, OperationRequest
from telecom_pay.ledger.tables import T_PENDING, T_VOIDED, accounts, operations
from telecom_pay.outcomes import Outcome, Result

from .cases import ALERT, HELD, HOLD, OPEN_ALERT, RELEASED, risk_cases
from .rules import COUNTED_KINDS, SCREENED_KINDS, RiskRules

_o = operations.c
#: where a held operation's request keeps the legs others pay (see held_request)
DEFERRED = "deferred_legs"


@dataclass(frozen=True)
class Hit:
    rule: str
    action: str
    figures: dict

    def as_json(self) -> dict:
        return {"rule": self.rule, "action": self.action, **self.figures}


def _spends(account_id: int, since: datetime):
    return sa.and_(_o.account_id == account_id, _o.kind.in_(COUNTED_KINDS), _o.state != T_VOIDED,
                   _o.created_at >= since)


async def _scalar(conn, q) -> int:
    return int((await conn.execute(q)).scalar_one() or 0)


async def assess(conn, rules: RiskRules, req: OperationRequest, now: datetime) -> list[Hit]:
    """The rules `req` (not booked yet) hits, with the figures of each."""
    if not rules.active or req.kind not in SCREENED_KINDS or req.account_id is None:
        return []
    payer, amount = req.account_id, req.amount
    fan_in = rules.fan_in if req.kind == "p2p" and req.counterparty_id is not None else None
    if conn.dialect.name != "sqlite":
        ids = sorted({payer} | ({req.counterparty_id} if fan_in else set()))
        await conn.execute(sa.select(accounts.c.id).where(accounts.c.id.in_(ids)).order_by(accounts.c.id)
                           .with_for_update())
    hits: list[Hit] = []
    r = rules.large_amount
    if r is not None and amount >= r.amount:
        hits.append(Hit(r.name, r.action, {"amount": amount, "threshold": r.amount}))
    r = rules.velocity
    if r is not None:
        n = 1 + await _scalar(conn, sa.select(sa.func.count()).where(
            _spends(payer, now - timedelta(minutes=r.window_minutes))))
        if n > r.max_count:
            hits.append(Hit(r.name, r.action, {"spends": n, "max_count": r.max_count,
                                               "window_minutes": r.window_minutes}))
    r = rules.structuring
    if r is not None and r.lower <= amount < r.limit:
        n = 1 + await _scalar(conn, sa.select(sa.func.count()).where(
            _spends(payer, now - timedelta(minutes=r.window_minutes)), _o.amount >= r.lower, _o.amount < r.limit))
        if n >= r.count:
            hits.append(Hit(r.name, r.action, {"just_under": n, "count": r.count, "limit": r.limit,
                                               "from": r.lower, "window_minutes": r.window_minutes}))
    r = fan_in
    if r is not None:
        since = now - timedelta(minutes=r.window_minutes)
        senders = {row[0] for row in (await conn.execute(sa.select(_o.account_id).distinct().where(
            _o.counterparty_id == req.counterparty_id, _o.kind == "p2p", _o.state != T_VOIDED,
            _o.created_at >= since))).all()} | {payer}
        if len(senders) >= r.senders:
            hits.append(Hit(r.name, r.action, {"senders": len(senders), "threshold": r.senders,
                                               "window_minutes": r.window_minutes,
                                               "recipient_account": req.counterparty_id}))
    r = rules.new_account
    if r is not None:
        opened = (await conn.execute(sa.select(accounts.c.created_at).where(accounts.c.id == payer))).scalar_one()
        if opened > now - timedelta(days=r.days):
            moved = amount + await _scalar(conn, sa.select(sa.func.coalesce(sa.func.sum(_o.amount), 0)).where(
                _spends(payer, now - timedelta(minutes=r.window_minutes))))
            if moved > r.amount:
                hits.append(Hit(r.name, r.action, {"moved": moved, "threshold": r.amount, "days": r.days,
                                                   "account_age_hours": int((now - opened).total_seconds() // 3600),
                                                   "window_minutes": r.window_minutes}))
    return hits


async def book_screened(ledger, conn, rules: RiskRules, req: OperationRequest, now: datetime
                        ) -> tuple[OperationRecord, str | None]:
    """Screen and book `req` in the running write job: (the record, the
    case's status: `held`, `alert`, or None when no rule hit)."""
    hits = await assess(conn, rules, req, now)
    if not hits:
        return await ledger.book(conn, req), None
    kind = HOLD if any(h.action == HOLD for h in hits) else ALERT
    if kind == HOLD:
        req = held_request(req)
    rec = await ledger.book(conn, req)
    status = HELD if kind == HOLD else OPEN_ALERT
    await conn.execute(risk_cases.insert().values(
        operation_id=rec.id, operation_key=rec.key, ref=rec.ref, op_kind=req.kind, channel=req.channel,
        account_id=req.account_id, counterparty_id=req.counterparty_id, amount=req.amount, kind=kind,
        status=status, rules=[h.rule for h in hits], figures=[h.as_json() for h in hits], created_at=now))
    return rec, status


async def as_first_booked(conn, req: OperationRequest) -> tuple[OperationRequest, str | None]:
    """A replayed request as its key was first booked: pending when a rule
    held it (else the ledger would see a different request), with its
    case's current status."""
    row = (await conn.execute(sa.select(risk_cases.c.kind, risk_cases.c.status)
                              .where(risk_cases.c.operation_key == req.key))).first()
    if row is None:
        return req, None
    if row.kind == HOLD:
        req = held_request(req)
    return req, row.status


def held_request(req: OperationRequest) -> OperationRequest:
    """What a hold books: the payer's own legs, pending (their money
    reserved). Legs others pay (a merchant's fee) wait in `details`: a
    pending debit needs the debtor's available funds, and a merchant's
    come only with the payment itself."""
    own = tuple(leg for leg in req.legs if leg.debit == req.account_id)
    deferred = [leg.as_json() for leg in req.legs if leg.debit != req.account_id]
    return dataclasses.replace(req, pending=True, legs=own, details={**req.details, DEFERRED: deferred})


def release_request(held: OperationRecord) -> OperationRequest:
    """The payment a release books, whole (the held legs and the deferred
    ones), posted, under its own key with the held operation as parent.
    Booked anew rather than posting the held one so that it is settled
    with the merchant on the day it is paid, with its fee, like any
    payment of that day (settlement reads a day's posted payments)."""
    r = held.request
    legs = tuple(Leg(**leg) for leg in list(r["legs"]) + list(r["details"].get(DEFERRED, [])))
    details = {k: v for k, v in r["details"].items() if k != DEFERRED}
    key = f"risk-release:{held.key}"
    if len(key) > 160:
        key = "risk-release:" + hashlib.sha256(held.key.encode()).hexdigest()
    return OperationRequest(key=key, kind=r["kind"], legs=legs, channel=r["channel"], actor=r["actor"],
                            account_id=r["account"], counterparty_id=r["counterparty"], memo=r["memo"],
                            parent_id=held.id, fee=r["fee"], details={**details, "released_from": held.ref})


def screened_result(result: Result, state: str) -> Result:
    """A spend's answer for the state its operation is in: held (pending
    under a hold), refused after review (voided), or the result as is."""
    if state == T_PENDING:
        return dataclasses.replace(result, outcome=Outcome.RISK_HELD,
                                   params={**result.params, "review": "risk"})
    if state == T_VOIDED:
        return dataclasses.replace(result, outcome=Outcome.RISK_REFUSED)
    return result
