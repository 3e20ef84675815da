"""Operators' review of risk cases (role ops_admin on the web, or the
`telecom-pay risk` command): list the held and alerted operations, release
a held one (its pending transaction is posted: the payee is paid), refuse
it (voided: the payer's money is free again), or close an alert as
reviewed. A reason is required for each.

One decision is one write job: the ledger change, the case's new status,
the audit row (actor, role, address, before and after) and the SMS to the
payer (and, for a released transfer, to the recipient, who is told of
money received as after any transfer) commit together. The case row is
locked and its status checked inside that job, so of two operators (or two
instances) deciding one case at once exactly one decides; the other is
told it was decided already.

A part of PaymentService (a mixin over the one ServiceCore, like the
audience parts).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from telecom_pay import accounts as acct
from telecom_pay.ledger.ledger import LedgerError
from telecom_pay.ledger.tables import MERCHANT, WALLET, accounts
from telecom_pay.notices import queue_notice
from telecom_pay.outcomes import Outcome, Result
from telecom_pay.risk.cases import DECIDED_STATES, DECISIONS, OPEN_STATES, RELEASE, REVIEW, risk_cases
from telecom_pay.risk.screen import release_request

from .base import ServiceCore, _masked_local

#: what a case's operation kind is called in replies (the spends' actions)
ACTION_OF_KIND = {"payment": "pay", "p2p": "send", "airtime": "airtime"}
MAX_REASON = 200


class RiskCaseError(Exception):
    """A decision refused: `status` is the HTTP-like class of the refusal
    (400 bad input, 404 no such case, 409 decided already or the wrong
    decision for the case's kind)."""

    def __init__(self, status: int, message: str, case: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.case = status, message, case


@dataclass(frozen=True)
class Reviewer:
    """Who decides: the web user (or CLI operator), their role and address."""
    name: str
    role: str
    address: str
    channel: str = "web"


def case_view(row, names: dict[int, Any] | None = None) -> dict:
    names = names or {}
    payer, other = names.get(row.account_id), names.get(row.counterparty_id)
    return {"case_id": row.id, "ref": row.ref, "operation": row.op_kind, "channel": row.channel,
            "amount": row.amount, "kind": row.kind, "status": row.status, "rules": list(row.rules or []),
            "figures": list(row.figures or []), "created_at": row.created_at.isoformat(),
            "decided_at": row.decided_at.isoformat() if row.decided_at else None,
            "decided_by": row.decided_by, "reason": row.reason,
            "payer": _party(payer), "payee": _party(other)}


def _party(row) -> str | None:
    if row is None:
        return None
    if row.kind == WALLET:
        return _masked_local(row.msisdn)
    return f"{row.code} {row.name}".strip() if row.kind == MERCHANT else (row.name or row.code)


class RiskReview(ServiceCore):
    """Operators deciding held and alerted operations."""

    async def risk_cases(self, *, open_only: bool = False, decided_limit: int = 50) -> dict[str, list[dict]]:
        """Open cases (oldest first: they have waited longest) and the latest decided ones."""
        async def q(conn):
            open_rows = (await conn.execute(sa.select(risk_cases).where(risk_cases.c.status.in_(OPEN_STATES))
                                            .order_by(risk_cases.c.id))).all()
            decided = [] if open_only else (await conn.execute(
                sa.select(risk_cases).where(risk_cases.c.status.in_(DECIDED_STATES))
                .order_by(risk_cases.c.decided_at.desc(), risk_cases.c.id.desc()).limit(decided_limit))).all()
            names = await _names(conn, open_rows + decided)
            return {"open": [case_view(r, names) for r in open_rows],
                    "decided": [case_view(r, names) for r in decided]}
        return await self.ledger.read(q)

    async def risk_case(self, case_id: int) -> dict | None:
        async def q(conn):
            row = (await conn.execute(sa.select(risk_cases).where(risk_cases.c.id == case_id))).first()
            return None if row is None else case_view(row, await _names(conn, [row]))
        return await self.ledger.read(q)

    async def decide_risk_case(self, case_id: int, decision: str, *, reason: str, by: Reviewer) -> dict:
        """Release, refuse or (an alert) review a case; returns the case as
        decided, or raises RiskCaseError."""
        if decision not in DECISIONS:
            raise RiskCaseError(400, f"decision must be one of {', '.join(DECISIONS)}")
        reason = " ".join((reason or "").split())
        if not reason:
            raise RiskCaseError(400, "a reason is required")
        if not _printable(reason):
            raise RiskCaseError(400, "the reason must be printable text")
        if len(reason) > MAX_REASON:
            raise RiskCaseError(400, f"the reason is longer than {MAX_REASON} characters")
        kind, new_status = DECISIONS[decision]

        async def job(conn):
            q = sa.select(risk_cases).where(risk_cases.c.id == case_id)
            if conn.dialect.name != "sqlite":
                q = q.with_for_update()
            row = (await conn.execute(q)).first()
            if row is None:
                raise RiskCaseError(404, f"no risk case {case_id}")
            names = await _names(conn, [row])
            before = case_view(row, names)
            if row.status not in OPEN_STATES:
                raise RiskCaseError(409, f"case {case_id} was {row.status} already by {row.decided_by}", before)
            if row.kind != kind:
                what = "closed as reviewed (decision review)" if row.kind == "alert" else "released or refused"
                raise RiskCaseError(409, f"case {case_id} is {'an' if row.kind == 'alert' else 'a'} {row.kind}: "
                                         f"it can only be {what}", before)
            now = self.clock()
            done = await conn.execute(risk_cases.update().where(
                risk_cases.c.id == case_id, risk_cases.c.status == row.status).values(
                status=new_status, decided_at=now, decided_by=by.name[:64], reason=reason))
            if done.rowcount != 1:        # decided meanwhile (cannot happen under the lock; kept as the proof)
                raise RiskCaseError(409, f"case {case_id} was decided already", before)
            rec = None
            if decision != REVIEW:
                # the held reservation is freed; a release books the payment whole (see release_request)
                rec = await self.ledger.resolve_in(conn, row.operation_key, post=False)
                if decision == RELEASE:
                    try:
                        rec = await self.ledger.book(conn, release_request(rec))
                    except LedgerError as exc:
                        raise RiskCaseError(409, f"case {case_id} cannot be released: {type(exc).__name__} "
                                                 "(the payer or payee can no longer take it); refuse it", before)
            after_row = (await conn.execute(sa.select(risk_cases).where(risk_cases.c.id == case_id))).first()
            after = case_view(after_row, names)
            if rec is not None:
                after["paid_ref" if decision == RELEASE else "voided_ref"] = rec.ref
            await acct.audit(conn, actor=by.name[:64], channel=by.channel, action=f"risk_{decision}"[:32],
                             account_id=row.account_id, role=by.role, address=by.address, case_id=case_id,
                             ref=row.ref, reason=reason, before=_brief(before), after=_brief(after))
            if rec is not None:
                await self._tell_decision(conn, row, rec, decision)
            return after
        return await self.ledger.write(job)

    async def _tell_decision(self, conn, row, rec, decision: str) -> None:
        names = await _names(conn, [row])
        payer, payee = names.get(row.account_id), names.get(row.counterparty_id)
        action = ACTION_OF_KIND.get(row.op_kind, row.op_kind)
        params: dict[str, Any] = {"action": action}
        if row.op_kind == "payment" and payee is not None:
            params.update(merchant_code=payee.code,
                          merchant_name=self.merchant_display(payee.code, payee.name, payer.language))
        elif payee is not None and payee.kind == WALLET:
            params["counterparty"] = _masked_local(payee.msisdn)
        elif row.op_kind == "airtime":
            target = (rec.request.get("details") or {}).get("for")
            if target:
                params["counterparty"] = _masked_local(target)
            if decision == RELEASE and target:      # paid now: the carrier tops the number up
                await self.order_airtime(conn, rec, target)
        bal = rec.balance_of(row.account_id)
        outcome = Outcome.OK if decision == RELEASE else Outcome.RISK_REFUSED
        if payer is not None and payer.msisdn:
            await queue_notice(conn, payer.msisdn, payer.language,
                               Result(outcome, ref=rec.ref, amount=rec.amount, fee=rec.fee or None,
                                      balance=bal.available if bal else None, params=params),
                               key=f"risk-{decision}:{row.operation_key}")
        if decision == RELEASE and row.op_kind == "p2p" and payee is not None and payee.msisdn:
            got = rec.balance_of(payee.id)
            await queue_notice(conn, payee.msisdn, payee.language,
                               Result(Outcome.OK, ref=rec.ref, amount=rec.amount,
                                      balance=got.available if got else None,
                                      params={"action": "receive", "counterparty": _masked_local(payer.msisdn)}),
                               key=f"risk-received:{row.operation_key}")


async def _names(conn, rows) -> dict[int, Any]:
    ids = {i for r in rows for i in (r.account_id, r.counterparty_id) if i is not None}
    if not ids:
        return {}
    return {a.id: a for a in (await conn.execute(sa.select(accounts).where(accounts.c.id.in_(ids)))).all()}


def _printable(text: str) -> bool:
    """No control characters (PostgreSQL stores no NUL) and no lone surrogates (not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in text)


def _brief(view: dict) -> dict:
    return {k: view[k] for k in ("status", "decided_by", "reason", "paid_ref", "voided_ref") if k in view}
