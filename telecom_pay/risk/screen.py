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

from telecom_pay.ledger.fastsql import Fast
from telecom_pay.ledger.ledger import Leg, OperationRecord, OperationRequest
from telecom_pay.ledger.tables import T_PENDING, T_VOIDED, Stamp, accounts, operations
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


def _spends(since: str, *extra):
    return sa.and_(_o.account_id == sa.bindparam("payer"), sa.or_(*(_o.kind == k for k in COUNTED_KINDS)),
                   _o.state != T_VOIDED, _o.created_at >= sa.bindparam(since, type_=Stamp), *extra)


# Every figure the rules need, in one statement (run on the writer's raw
# cursor: this is the hot path of every spend). A rule that is off binds
# an empty window (since = now) and costs an index probe.
_FIGURES = Fast(sa.select(
    sa.select(sa.func.count()).where(_spends("since_velocity")).scalar_subquery().label("spends"),
    sa.select(sa.func.count()).where(_spends("since_structuring", _o.amount >= sa.bindparam("lower"),
                                             _o.amount < sa.bindparam("upper"))).scalar_subquery().label("just_under"),
    sa.select(sa.func.coalesce(sa.func.sum(_o.amount), 0)).where(_spends("since_new"))
    .scalar_subquery().label("moved"),
    sa.select(sa.func.count(sa.distinct(_o.account_id))).where(
        _o.counterparty_id == sa.bindparam("recipient"), _o.kind == "p2p", _o.state != T_VOIDED,
        _o.account_id != sa.bindparam("payer"), _o.created_at >= sa.bindparam("since_fan_in", type_=Stamp))
    .scalar_subquery().label("other_senders"),
    accounts.c.created_at.label("opened"),
).where(accounts.c.id == sa.bindparam("payer")))
# PostgreSQL: the payer's and the recipient's rows, in id order as the booking takes them
_LOCK = Fast(sa.select(accounts.c.id).where(sa.or_(accounts.c.id == sa.bindparam("a"), accounts.c.id == sa.bindparam("b")))
             .order_by(accounts.c.id).with_for_update())


async def assess(conn, rules: RiskRules, req: OperationRequest, now: datetime) -> list[Hit]:
    """The rules `req` (not booked yet) hits, with the figures of each."""
    if not rules.active or req.kind not in SCREENED_KINDS or req.account_id is None:
        return []
    payer, amount = req.account_id, req.amount
    fan_in = rules.fan_in if req.kind == "p2p" and req.counterparty_id is not None else None
    if conn.dialect.name != "sqlite":
        # the payer's spends are serialised by its credentials lock already; the
        # recipient's row makes two instances count one another's transfers in
        await _LOCK.all(conn, a=payer, b=req.counterparty_id if fan_in else payer)

    def since(rule) -> datetime:
        return now - timedelta(minutes=rule.window_minutes) if rule is not None else now
    s = rules.structuring
    f = await _FIGURES.first(conn, payer=payer, recipient=req.counterparty_id if fan_in else -1,
                             since_velocity=since(rules.velocity), since_structuring=since(s),
                             since_new=since(rules.new_account), since_fan_in=since(fan_in),
                             lower=s.lower if s else 0, upper=s.limit if s else 0)
    # PostgreSQL sums bigints as numeric: figures are ints, as every amount is
    spends, just_under, moved, others = (int(v or 0) for v in (f.spends, f.just_under, f.moved, f.other_senders))
    hits: list[Hit] = []
    r = rules.large_amount
    if r is not None and amount >= r.amount:
        hits.append(Hit(r.name, r.action, {"amount": amount, "threshold": r.amount}))
    r = rules.velocity
    if r is not None and spends + 1 > r.max_count:
        hits.append(Hit(r.name, r.action, {"spends": spends + 1, "max_count": r.max_count,
                                           "window_minutes": r.window_minutes}))
    if s is not None and s.lower <= amount < s.limit and just_under + 1 >= s.count:
        hits.append(Hit(s.name, s.action, {"just_under": just_under + 1, "count": s.count, "limit": s.limit,
                                           "from": s.lower, "window_minutes": s.window_minutes}))
    if fan_in is not None and others + 1 >= fan_in.senders:
        hits.append(Hit(fan_in.name, fan_in.action, {"senders": others + 1, "threshold": fan_in.senders,
                                                     "window_minutes": fan_in.window_minutes,
                                                     "recipient_account": req.counterparty_id}))
    r = rules.new_account
    if r is not None and f.opened > now - timedelta(days=r.days) and moved + amount > r.amount:
        hits.append(Hit(r.name, r.action, {"moved": moved + amount, "threshold": r.amount, "days": r.days,
                                           "account_age_hours": int((now - f.opened).total_seconds() // 3600),
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
