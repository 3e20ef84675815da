"""Refunds a merchant gives back against a payment it received, by the SP
API, the back office or a ZF payment's ledger reference (README.md here,
"Refunds").

One module decides what a refund may be and books it, whoever asks: the
request, the policy (automatic or four eyes), the booking with its share
of the merchant's fee, the subscriber's SMS and the merchant's callback
all commit in one transaction or not at all. What is refundable is read
under a lock on the payment's operation row, so refunds racing on several
instances never give back more than was paid.
"""
from __future__ import annotations

import secrets
from typing import Any

import sqlalchemy as sa

from telecom_pay import accounts as acct
from telecom_pay.ledger.ledger import AccountUnavailable, Leg, OperationRequest
from telecom_pay.ledger.tables import T_POSTED, T_VOIDED, operations, transfers
from telecom_pay.notices import queue_notice
from telecom_pay.outcomes import Outcome, Result
from telecom_pay.webusers import MERCHANT_ADMIN

from . import directory, events
from .objects import refund_object
from .tables import AUTOMATIC, P_CONFIRMED, R_REJECTED, R_REVIEW, R_SUCCEEDED, merchant_refunds, sp_payments

VIAS = ("api", "web")
KEY_MAX, REASON_MAX, ACTOR_MAX = 64, 200, 64


class RefundError(Exception):
    """A refused request; `message` is a sentence safe to show the merchant,
    `code` what a program tests, `extra` the details it needs."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


# ---------------------------------------------------------------- what was paid and given back

async def refund_totals(conn, payment_operation_id: int) -> tuple[int, int, int]:
    """(refunded, of which given back consumption-only, fee refunded) by the
    refunds booked against the payment. Read from the ledger, so refunds of
    every origin count (the SP API, the back office, `PaymentService.refund`)."""
    t, o = transfers, operations
    rows = (await conn.execute(
        sa.select(t.c.kind, t.c.consumption_credit, sa.func.sum(t.c.amount))
        .join(o, o.c.id == t.c.operation_id)
        .where(o.c.parent_id == payment_operation_id, o.c.kind == "refund", t.c.state != T_VOIDED)
        .group_by(t.c.kind, t.c.consumption_credit))).all()
    refunded = sum(int(n) for kind, _c, n in rows if kind == "refund")
    consumption = sum(int(n) for kind, c, n in rows if kind == "refund" and c)
    fee_back = sum(int(n) for kind, _c, n in rows if kind == "fee_refund")
    return refunded, consumption, fee_back


async def refunded_amount(conn, payment_operation_id: int) -> int:
    """Fen given back so far by succeeded refunds of the payment."""
    return (await refund_totals(conn, payment_operation_id))[0]


async def reserved_amount(conn, payment_operation_id: int, *, besides: int | None = None) -> int:
    """Fen asked for by refunds still waiting for review: promised, so no
    other refund may take them."""
    r = merchant_refunds
    q = sa.select(sa.func.coalesce(sa.func.sum(r.c.amount), 0)).where(
        r.c.payment_operation_id == payment_operation_id, r.c.status == R_REVIEW)
    if besides is not None:
        q = q.where(r.c.id != besides)
    return int((await conn.execute(q)).scalar_one())


async def _merchant_fee(conn, op) -> int:
    """The fee the merchant paid on the payment (its fee legs); a fee the
    subscriber paid is not the merchant's to give back."""
    t = transfers
    return int((await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(t.c.amount), 0)).where(
        t.c.operation_id == op.id, t.c.kind == "fee", t.c.debit_account_id == op.counterparty_id))).scalar_one())


async def refund_legs(conn, op, amount: int | None, *, fee_income_id: int,
                      reserved: int = 0) -> tuple[int, int, list[Leg]]:
    """(amount, fee refunded, legs) of a refund of `op` (a posted payment,
    its row locked by the caller): `amount` None is what is left after the
    refunds booked and the `reserved` ones. Consumption-only money that paid
    comes back consumption-only, first; the merchant's fee comes back in
    proportion (floor of fee x refunded after / paid, less what came back
    before), so refunds adding up to the payment return the whole fee."""
    refunded, consumption_back, fee_back_before = await refund_totals(conn, op.id)
    left = op.amount - refunded - reserved
    value = left if amount is None else amount
    if value <= 0 or value > left:
        raise RefundError(422, "exceeds_refundable",
                          f"at most {max(0, left)} fen of this payment can still be refunded",
                          refundable=max(0, left))
    leg0 = (await conn.execute(sa.select(transfers.c.consumption_part).where(
        transfers.c.operation_id == op.id, transfers.c.leg == 0))).scalar_one()
    back_consumption = min(value, max(0, leg0 - consumption_back))
    m, wallet = op.counterparty_id, op.account_id
    legs = []
    if back_consumption:
        legs.append(Leg(m, wallet, back_consumption, "refund", consumption_credit=True))
    if value - back_consumption:
        legs.append(Leg(m, wallet, value - back_consumption, "refund"))
    fee = await _merchant_fee(conn, op)
    fee_back = max(0, fee * (refunded + value) // op.amount - fee_back_before) if fee else 0
    if fee_back:
        legs.append(Leg(fee_income_id, m, fee_back, "fee_refund"))
    return value, fee_back, legs


# ---------------------------------------------------------------- reads

def _refund_query():
    r, p, o = merchant_refunds, sp_payments, operations
    return (sa.select(r, p.c.public_id.label("payment_public_id"), o.c.ref.label("payment_ref"))
            .select_from(r.join(o, o.c.id == r.c.payment_operation_id).outerjoin(p, p.c.id == r.c.sp_payment_id)))


def _object(row) -> dict[str, Any]:
    return refund_object(row, payment_id=row.payment_public_id, payment_ref=row.payment_ref)


async def _row(conn, *, merchant_id: int, refund_id: str | None = None, row_id: int | None = None):
    q = _refund_query().where(merchant_refunds.c.merchant_id == merchant_id)
    if refund_id is not None:
        q = q.where(merchant_refunds.c.public_id == refund_id)
    if row_id is not None:
        q = q.where(merchant_refunds.c.id == row_id)
    return (await conn.execute(q)).first()


async def get_refund(service, *, merchant_id: int, refund_id: str) -> dict | None:
    row = await service.ledger.read(lambda conn: _row(conn, merchant_id=merchant_id, refund_id=str(refund_id)))
    return None if row is None else _object(row)


async def list_refunds(service, *, merchant_id: int, status: str | None = None, limit: int = 200) -> list[dict]:
    """The merchant's refunds, newest first."""
    r = merchant_refunds
    q = _refund_query().where(r.c.merchant_id == merchant_id)
    if status is not None:
        q = q.where(r.c.status == status)
    q = q.order_by(r.c.created_at.desc(), r.c.id.desc()).limit(max(1, min(int(limit), 1000)))

    async def read(conn):
        return [_object(row) for row in (await conn.execute(q)).all()]
    return await service.ledger.read(read)


# ---------------------------------------------------------------- the payment

def _locked(conn, q):
    # refunds of one payment queue on its operation row (SQLite has one writer)
    return q if conn.dialect.name == "sqlite" else q.with_for_update()


async def _payment(conn, merchant_id: int, sp_payment_id: str | None, payment_ref: str | None):
    """(sp_payments row or None, the payment's operations row locked, or
    None for an SP payment not confirmed). Another merchant's is not found."""
    not_found = RefundError(404, "not_found", "no such payment of this merchant")
    if sp_payment_id is not None:
        sp = (await conn.execute(sa.select(sp_payments).where(
            sp_payments.c.public_id == sp_payment_id, sp_payments.c.merchant_id == merchant_id))).first()
        if sp is None:
            raise not_found
        if sp.status != P_CONFIRMED:
            return sp, None
        op = (await conn.execute(_locked(conn, sa.select(operations).where(
            operations.c.idempotency_key == sp.operation_key)))).first()
        return sp, op
    op = (await conn.execute(_locked(conn, sa.select(operations).where(operations.c.ref == payment_ref)))).first()
    if op is None or op.kind != "payment" or op.counterparty_id != merchant_id:
        raise not_found
    sp = (await conn.execute(sa.select(sp_payments).where(
        sp_payments.c.operation_key == op.idempotency_key, sp_payments.c.merchant_id == merchant_id))).first()
    return sp, op


def _check_request(sp_payment_id, payment_ref, amount, refund_key, reason, requested_by, via) -> str:
    if via not in VIAS:
        raise ValueError(f"via must be one of {VIAS}")
    bad = []
    if (sp_payment_id is None) == (payment_ref is None):
        bad += ["payment_id", "payment_ref"]
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0):
        bad.append("amount")
    if not isinstance(refund_key, str) or not (1 <= len(refund_key) <= KEY_MAX):
        bad.append("refund_id")
    if reason is None:
        reason = ""
    if not isinstance(reason, str) or len(reason.strip()) > REASON_MAX:
        bad.append("reason")
    if not isinstance(requested_by, str) or not (1 <= len(requested_by) <= ACTOR_MAX):
        bad.append("requested_by")
    if bad:
        raise RefundError(422, "invalid_request", f"invalid {', '.join(bad)}", fields=bad)
    return reason.strip()


# ---------------------------------------------------------------- request and decide

async def request_refund(service, *, merchant_id: int, sp_payment_id: str | None = None,
                         payment_ref: str | None = None, amount: int | None, refund_key: str, reason: str,
                         requested_by: str, via: str) -> tuple[dict, bool]:
    """A refund of (part of) a payment to `merchant_id`: (the refund object,
    whether it was created now). The same `refund_key` with the same content
    is the original; booked at once when the merchant's policy is automatic
    and it came by the API, else waiting for a merchant admin."""
    reason = _check_request(sp_payment_id, payment_ref, amount, refund_key, reason, requested_by, via)
    request = {"payment_id": sp_payment_id, "payment_ref": payment_ref, "amount": amount, "reason": reason}

    async def job(conn):
        now = service.clock()
        sp, op = await _payment(conn, merchant_id, sp_payment_id, payment_ref)
        r = merchant_refunds
        existing = (await conn.execute(sa.select(r.c.id, r.c.request).where(
            r.c.merchant_id == merchant_id, r.c.refund_key == refund_key))).first()
        if existing is not None:
            differs = [k for k in request if (existing.request or {}).get(k) != request[k]]
            if differs:
                raise RefundError(409, "refund_id_conflict",
                                  f"refund id {refund_key} was used for another refund", fields=differs)
            return _object(await _row(conn, merchant_id=merchant_id, row_id=existing.id)), False
        if op is None or op.state != T_POSTED:
            raise RefundError(422, "not_refundable", "the payment is not confirmed, so nothing can be refunded")
        value, _fee, _legs = await refund_legs(conn, op, amount, fee_income_id=service.system["fee_income"],
                                              reserved=await reserved_amount(conn, op.id))
        public_id = "rf_" + secrets.token_hex(12)
        row_id = (await conn.execute(r.insert().values(
            public_id=public_id, merchant_id=merchant_id, payment_operation_id=op.id,
            sp_payment_id=sp.id if sp is not None else None, refund_key=refund_key, amount=value, fee_refunded=0,
            status=R_REVIEW, reason=reason, request=request, requested_by=requested_by, requested_via=via,
            operation_key=f"mrefund:{public_id}", created_at=now, updated_at=now).returning(r.c.id))).scalar_one()
        await acct.audit(conn, actor=requested_by, channel=f"merchant_{via}", action="refund_requested",
                         account_id=merchant_id, refund=public_id, payment_ref=op.ref, amount=value, reason=reason)
        profile = await directory.get_profile(conn, account_id=merchant_id)
        if via == "api" and profile is not None and profile.refund_policy == AUTOMATIC:
            await _book(service, conn, row_id=row_id, merchant_id=merchant_id, op=op, sp=sp, profile=profile,
                        actor=requested_by, decided_by=None, decision_reason=None, now=now)
        return _object(await _row(conn, merchant_id=merchant_id, row_id=row_id)), True
    return await service.ledger.write(job)


async def decide_refund(service, *, merchant_id: int, refund_id: str, approve: bool, reason: str,
                        decided_by: str, decider_role: str) -> dict:
    """A merchant admin's decision on a refund waiting for review: approved,
    it is booked; rejected, nothing moves. Never the requester's own."""
    if decider_role != MERCHANT_ADMIN:
        raise RefundError(403, "forbidden", "only a merchant admin decides refunds")
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason or len(reason) > REASON_MAX:
        raise RefundError(422, "reason_required", f"a reason of 1-{REASON_MAX} characters is required",
                          fields=["reason"])
    if not isinstance(decided_by, str) or not (1 <= len(decided_by) <= ACTOR_MAX):
        raise RefundError(422, "invalid_request", "invalid decided_by", fields=["decided_by"])

    async def job(conn):
        now = service.clock()
        r = merchant_refunds
        first = (await conn.execute(sa.select(r.c.payment_operation_id).where(
            r.c.merchant_id == merchant_id, r.c.public_id == str(refund_id)))).first()
        if first is None:
            raise RefundError(404, "not_found", "no such refund of this merchant")
        # the payment's lock first, as a request takes it: two deciders (or a
        # decider and a request) queue here, and the second reads the first's outcome
        op = (await conn.execute(_locked(conn, sa.select(operations).where(
            operations.c.id == first.payment_operation_id)))).first()
        row = (await conn.execute(_locked(conn, sa.select(r).where(r.c.public_id == str(refund_id))))).first()
        if row.requested_by == decided_by:
            raise RefundError(403, "same_person", "a refund is decided by someone other than its requester")
        if row.status != R_REVIEW:
            raise RefundError(409, "not_pending", f"the refund is already {row.status}")
        sp = None if row.sp_payment_id is None else (await conn.execute(
            sa.select(sp_payments).where(sp_payments.c.id == row.sp_payment_id))).first()
        profile = await directory.get_profile(conn, account_id=merchant_id)
        await acct.audit(conn, actor=decided_by, channel="merchant_web",
                         action="refund_approved" if approve else "refund_rejected", account_id=merchant_id,
                         refund=row.public_id, payment_ref=op.ref, amount=row.amount, reason=reason,
                         requested_by=row.requested_by)
        if approve:
            await _book(service, conn, row_id=row.id, merchant_id=merchant_id, op=op, sp=sp, profile=profile,
                        actor=decided_by, decided_by=decided_by, decision_reason=reason, now=now)
        else:
            done = await conn.execute(r.update().where(r.c.id == row.id, r.c.status == R_REVIEW).values(
                status=R_REJECTED, decided_by=decided_by, decision_reason=reason, decided_at=now, updated_at=now))
            if done.rowcount != 1:
                raise RefundError(409, "not_pending", "the refund was decided meanwhile")
            obj = _object(await _row(conn, merchant_id=merchant_id, row_id=row.id))
            await events.enqueue(conn, merchant_id=merchant_id, event_type="refund.rejected",
                                 subject_id=row.public_id, url=_notify_url(sp, profile), data=obj, now=now)
        return _object(await _row(conn, merchant_id=merchant_id, row_id=row.id))
    return await service.ledger.write(job)


def _notify_url(sp, profile) -> str | None:
    if sp is not None and sp.notify_url:
        return sp.notify_url
    return profile.notify_url if profile is not None else None


async def _book(service, conn, *, row_id: int, merchant_id: int, op, sp, profile, actor: str,
                decided_by: str | None, decision_reason: str | None, now) -> None:
    """Book a refund waiting in `merchant_refunds` (the payment's row locked),
    and, in the same transaction, mark it succeeded, queue the subscriber's
    SMS and owe the merchant its callback."""
    r = merchant_refunds
    row = (await conn.execute(sa.select(r).where(r.c.id == row_id))).first()
    value, fee_back, legs = await refund_legs(conn, op, row.amount, fee_income_id=service.system["fee_income"],
                                              reserved=await reserved_amount(conn, op.id, besides=row.id))
    try:
        rec = await service.ledger.book(conn, OperationRequest(
            key=row.operation_key, kind="refund", legs=tuple(legs), channel="merchant", actor=actor,
            account_id=op.account_id, counterparty_id=merchant_id, parent_id=op.id,
            details={"refund_id": row.public_id, "fee_refunded": fee_back}))
    except AccountUnavailable as exc:
        raise RefundError(422, "not_refundable", "the merchant's or the payer's account is not active") from exc
    done = await conn.execute(r.update().where(r.c.id == row.id, r.c.status == R_REVIEW).values(
        status=R_SUCCEEDED, fee_refunded=fee_back, ref=rec.ref, decided_by=decided_by,
        decision_reason=decision_reason, decided_at=now, updated_at=now))
    if done.rowcount != 1:
        raise RefundError(409, "not_pending", "the refund was decided meanwhile")
    m = await acct.get_account(conn, merchant_id)
    w = await acct.get_account(conn, op.account_id)
    if w is not None and w.msisdn:
        bal = rec.balance_of(op.account_id)
        await queue_notice(conn, w.msisdn, w.language, Result(
            Outcome.OK, ref=rec.ref, amount=value, balance=bal.available if bal else None,
            params={"action": "refund", "merchant_code": m.code,
                    "merchant_name": service.merchant_display(m.code, m.name, w.language or "zh")}),
            key=f"refund:{row.public_id}")
    obj = _object(await _row(conn, merchant_id=merchant_id, row_id=row.id))
    await events.enqueue(conn, merchant_id=merchant_id, event_type="refund.succeeded", subject_id=row.public_id,
                         url=_notify_url(sp, profile), data=obj, now=now)
