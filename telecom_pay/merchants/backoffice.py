"""What a merchant's back office reads: its orders (SP payment requests and
the ZF payments subscribers made to it, in one list), their refunds and
callbacks, its settlement batches and its notification log.

Every query here takes the merchant's account id and filters on it, so a
merchant's user can only ever be shown that merchant's rows: an id of
another merchant's order, batch or notification finds nothing (the web
answers 404), the same as an id that does not exist.

An SP payment is listed by its `sp_payments` row (its ledger operation,
key `sp:<id>`, is not listed twice); a ZF payment by its ledger operation
(kind payment, the merchant as counterparty, a subscriber channel). The
amounts refunded come from the ledger (posted refund operations whose
parent is the payment), not from the refund requests, so they agree with
the settlement.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any

import sqlalchemy as sa

from telecom_pay import business_time
from telecom_pay.ledger.tables import T_PENDING, T_POSTED, T_VOIDED, accounts, operations, transfers
from telecom_pay.money import AmountError, parse_amount
from telecom_pay.msisdn import mask
from telecom_pay.settlement import settlement_batches

from .events import iso
from .tables import (PAYMENT_STATES, merchant_notifications, merchant_refunds, notification_attempts,
                     sp_payments)

#: the channels a subscriber pays a merchant by (ZF / PAY); "api" is an SP payment request
ZF_CHANNELS = ("sms", "ussd", "ivr", "web")
ORDER_TYPES = ("api", *ZF_CHANNELS)
MAX_PER_PAGE = 200
MAX_PAGE = 500                     # a bounded offset: narrow the filter to look further back
NOTIFICATION_STATES = ("pending", "delivered", "failed")


class QueryError(ValueError):
    """A filter the back office cannot read; `field` names it."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class OrderQuery:
    date_from: date | None = None          # business days (local), inclusive
    date_to: date | None = None
    status: str | None = None              # pending | confirmed | declined | expired
    type: str | None = None                # api | sms | ussd | ivr | web
    amount_min: int | None = None          # fen
    amount_max: int | None = None
    number: str | None = None              # order id, ledger ref or pay_ id

    @classmethod
    def from_form(cls, form: dict[str, str]) -> "OrderQuery":
        """The list's filter as typed (dates YYYY-MM-DD, amounts in yuan)."""
        def day(name):
            text = form.get(name, "").strip()
            if not text:
                return None
            try:
                return date.fromisoformat(text)
            except ValueError:
                raise QueryError(f"{name.replace('_', ' ')} must be a date YYYY-MM-DD", name)

        def amount(name):
            text = form.get(name, "").strip()
            if not text:
                return None
            try:
                return parse_amount(text)
            except AmountError:
                raise QueryError(f"{name.replace('_', ' ')} must be an amount in yuan, like 12.50", name)
        status = form.get("status", "").strip() or None
        if status is not None and status not in PAYMENT_STATES:
            raise QueryError(f"status must be one of {', '.join(PAYMENT_STATES)}", "status")
        kind = form.get("type", "").strip() or None
        if kind is not None and kind not in ORDER_TYPES:
            raise QueryError(f"type must be one of {', '.join(ORDER_TYPES)}", "type")
        number = form.get("number", "").strip() or None
        if number is not None and len(number) > 64:
            raise QueryError("the order number is longer than 64 characters", "number")
        q = cls(day("date_from"), day("date_to"), status, kind, amount("amount_min"), amount("amount_max"), number)
        if q.date_from and q.date_to and q.date_from > q.date_to:
            raise QueryError("the first day is after the last", "date_from")
        if q.amount_min is not None and q.amount_max is not None and q.amount_min > q.amount_max:
            raise QueryError("the smallest amount is above the largest", "amount_min")
        return q

    def as_form(self) -> dict[str, str]:
        """The filter as the form's fields (for the next page's and the CSV's links)."""
        from telecom_pay.money import format_amount
        out = {"date_from": self.date_from.isoformat() if self.date_from else "",
               "date_to": self.date_to.isoformat() if self.date_to else "",
               "status": self.status or "", "type": self.type or "",
               "amount_min": format_amount(self.amount_min) if self.amount_min is not None else "",
               "amount_max": format_amount(self.amount_max) if self.amount_max is not None else "",
               "number": self.number or ""}
        return {k: v for k, v in out.items() if v}


def _orders(merchant_id: int):
    """One list of the merchant's orders, the same columns from both sources."""
    sp, o, a, t = sp_payments, operations, accounts, transfers
    api = sa.select(
        sa.literal("api", sa.String).label("type"), sp.c.public_id.label("id"), sp.c.order_id.label("order_no"),
        sp.c.ref.label("ref"), sp.c.amount.label("amount"), sp.c.fee.label("fee"), sp.c.status.label("status"),
        sp.c.decline_reason.label("decline_reason"), sp.c.msisdn.label("msisdn"),
        sp.c.description.label("description"), sp.c.created_at.label("created_at"),
        sp.c.resolved_at.label("resolved_at"), sp.c.id.label("row_id"),
    ).where(sp.c.merchant_id == merchant_id)
    merchant_fee = (sa.select(sa.func.coalesce(sa.func.sum(t.c.amount), 0))
                    .where(t.c.operation_id == o.c.id, t.c.kind == "fee", t.c.debit_account_id == merchant_id)
                    .scalar_subquery())
    status = sa.case((o.c.state == T_POSTED, "confirmed"), (o.c.state == T_PENDING, "pending"),
                     (o.c.state == T_VOIDED, "declined"), else_=o.c.state)
    zf = sa.select(
        o.c.channel, o.c.ref, sa.func.coalesce(o.c.memo, ""), o.c.ref, o.c.amount, merchant_fee, status,
        sa.cast(sa.null(), sa.String), a.c.msisdn, sa.func.coalesce(o.c.memo, ""), o.c.created_at, o.c.resolved_at,
        o.c.id,
    ).select_from(o.outerjoin(a, a.c.id == o.c.account_id)).where(
        o.c.kind == "payment", o.c.counterparty_id == merchant_id, o.c.channel.in_(ZF_CHANNELS),
        sa.not_(o.c.idempotency_key.like("sp:%")))
    return sa.union_all(api, zf).subquery("orders")


def _filtered(merchant_id: int, q: OrderQuery, tz: tzinfo | None):
    u = _orders(merchant_id)
    where = []
    if q.date_from is not None:
        where.append(u.c.created_at >= business_time.local_midnight(q.date_from, tz))
    if q.date_to is not None:
        where.append(u.c.created_at < business_time.day_window(q.date_to, tz)[1])
    if q.status is not None:
        where.append(u.c.status == q.status)
    if q.type is not None:
        where.append(u.c.type == q.type)
    if q.amount_min is not None:
        where.append(u.c.amount >= q.amount_min)
    if q.amount_max is not None:
        where.append(u.c.amount <= q.amount_max)
    if q.number is not None:
        where.append(sa.or_(u.c.order_no == q.number, u.c.ref == q.number, u.c.id == q.number))
    return u, sa.select(u).where(*where).order_by(u.c.created_at.desc(), u.c.id.desc())


def _order(row, refunded: dict[str, int]) -> dict[str, Any]:
    return {"id": row.id, "type": row.type, "order_no": row.order_no, "ref": row.ref, "amount": row.amount,
            "fee": int(row.fee or 0), "refunded": refunded.get(row.ref, 0) if row.ref else 0,
            "status": row.status, "decline_reason": row.decline_reason,
            "msisdn": mask(row.msisdn) if row.msisdn else "", "description": row.description,
            "created_at": iso(row.created_at), "resolved_at": iso(row.resolved_at), "row_id": row.row_id}


async def refunded_by_ref(conn, merchant_id: int, refs: list[str]) -> dict[str, int]:
    """Fen refunded (posted refund operations) per payment ledger ref."""
    refs = [r for r in refs if r]
    if not refs:
        return {}
    pay, ref = operations.alias("pay"), operations.alias("rf")
    rows = await conn.execute(
        sa.select(pay.c.ref, sa.func.sum(ref.c.amount)).select_from(pay.join(ref, ref.c.parent_id == pay.c.id))
        .where(pay.c.ref.in_(refs), pay.c.counterparty_id == merchant_id, ref.c.kind == "refund",
               ref.c.state == T_POSTED).group_by(pay.c.ref))
    return {r[0]: int(r[1]) for r in rows}


async def list_orders(conn, merchant_id: int, q: OrderQuery, tz: tzinfo | None, *, page: int = 1,
                      per_page: int = 50) -> dict[str, Any]:
    """A page of the merchant's orders, newest first; `more` says whether a
    next page exists (no total: counting a merchant's years is not free)."""
    page = max(1, min(int(page), MAX_PAGE))
    per_page = max(1, min(int(per_page), MAX_PER_PAGE))
    _, sel = _filtered(merchant_id, q, tz)
    rows = (await conn.execute(sel.limit(per_page + 1).offset((page - 1) * per_page))).all()
    more = len(rows) > per_page
    rows = rows[:per_page]
    refunded = await refunded_by_ref(conn, merchant_id, [r.ref for r in rows])
    return {"orders": [_order(r, refunded) for r in rows], "page": page, "per_page": per_page, "more": more,
            "last_page": page >= MAX_PAGE}


async def count_orders(conn, merchant_id: int, q: OrderQuery, tz: tzinfo | None, *, cap: int) -> int:
    """How many orders match, counted up to cap + 1 (enough to refuse an export too big)."""
    _, sel = _filtered(merchant_id, q, tz)
    capped = sel.limit(cap + 1).subquery()
    return int((await conn.execute(sa.select(sa.func.count()).select_from(capped))).scalar_one())


async def get_order(conn, merchant_id: int, order_id: str) -> dict[str, Any] | None:
    """One order of this merchant (by its pay_ id or its ledger ref) with its
    refund requests and its notifications; None for any other id."""
    u = _orders(merchant_id)
    row = (await conn.execute(sa.select(u).where(u.c.id == order_id))).first()
    if row is None:
        return None
    out = _order(row, await refunded_by_ref(conn, merchant_id, [row.ref]))
    op_id = None
    if row.ref:
        op_id = (await conn.execute(sa.select(operations.c.id).where(
            operations.c.ref == row.ref, operations.c.counterparty_id == merchant_id))).scalar()
    r = merchant_refunds
    cond = [r.c.payment_operation_id == op_id] if op_id is not None else []
    if row.type == "api":
        cond.append(r.c.sp_payment_id == row.row_id)
    refunds = []
    if cond:
        refunds = [_refund(x, payment_id=row.id if row.type == "api" else None, payment_ref=row.ref)
                   for x in await conn.execute(sa.select(r).where(r.c.merchant_id == merchant_id, sa.or_(*cond))
                                               .order_by(r.c.created_at, r.c.id))]
    subjects = [row.id] + [x["id"] for x in refunds]
    n = merchant_notifications
    out["refunds"] = refunds
    out["notifications"] = [_notification(x) for x in await conn.execute(
        sa.select(n).where(n.c.merchant_id == merchant_id, n.c.subject_id.in_(subjects))
        .order_by(n.c.created_at, n.c.id))]
    pending = sum(x["amount"] for x in refunds if x["status"] == "pending_review")
    out["refundable"] = max(0, out["amount"] - out["refunded"] - pending) if out["status"] == "confirmed" else 0
    out["operation_id"] = op_id
    return out


def _refund(row, *, payment_id: str | None, payment_ref: str | None) -> dict[str, Any]:
    from .objects import refund_object
    return {**refund_object(row, payment_id=payment_id, payment_ref=payment_ref), "via": row.requested_via}


async def list_refunds(conn, merchant_id: int, *, status: str | None = None, limit: int = 100) -> list[dict]:
    """The merchant's refund requests (with the order they refund), newest first."""
    r, sp, o = merchant_refunds, sp_payments, operations
    q = (sa.select(r, sp.c.public_id.label("pay_id"), sp.c.order_id.label("order_no"), o.c.ref.label("pay_ref"),
                   o.c.amount.label("payment_amount"), o.c.memo.label("memo"))
         .select_from(r.outerjoin(sp, sp.c.id == r.c.sp_payment_id).outerjoin(o, o.c.id == r.c.payment_operation_id))
         .where(r.c.merchant_id == merchant_id))
    if status is not None:
        q = q.where(r.c.status == status)
    rows = await conn.execute(q.order_by(r.c.created_at.desc(), r.c.id.desc()).limit(min(limit, MAX_PER_PAGE)))
    return [{**_refund(x, payment_id=x.pay_id, payment_ref=x.pay_ref), "order": x.pay_id or x.pay_ref,
             "order_no": x.order_no or x.memo or "", "payment_amount": x.payment_amount} for x in rows]


async def get_refund(conn, merchant_id: int, public_id: str):
    return (await conn.execute(sa.select(merchant_refunds).where(
        merchant_refunds.c.merchant_id == merchant_id, merchant_refunds.c.public_id == public_id))).first()


# ------------------------------------------------------------ settlement

def batch_view(row) -> dict[str, Any]:
    return {"id": row.id, "business_date": row.business_date.isoformat(), "payments": row.payments,
            "gross": row.gross, "refunds": row.refunds, "fees": row.fees, "fee_refunds": row.fee_refunds,
            "carried_in": row.carried_in, "net": row.net, "state": row.state, "method": row.method,
            "payout_ref": row.payout_ref, "error": row.error, "created_at": iso(row.created_at),
            "refs": list((row.statement or {}).get("refs", []))}


async def list_batches(conn, merchant_id: int, *, limit: int = 100) -> list[dict]:
    b = settlement_batches
    rows = await conn.execute(sa.select(b).where(b.c.merchant_id == merchant_id)
                              .order_by(b.c.business_date.desc()).limit(min(limit, MAX_PER_PAGE)))
    return [batch_view(r) for r in rows]


async def get_batch(conn, merchant_id: int, batch_id: int) -> dict[str, Any] | None:
    b = settlement_batches
    row = (await conn.execute(sa.select(b).where(b.c.merchant_id == merchant_id, b.c.id == batch_id))).first()
    if row is None:
        return None
    out = batch_view(row)
    out["lines"] = await statement_lines(conn, merchant_id, out["refs"])
    return out


async def statement_lines(conn, merchant_id: int, refs: list[str]) -> list[dict]:
    """The operations a statement names, with what each moved for this
    merchant: received (payment), given back (refund), fee paid, fee returned."""
    if not refs:
        return []
    o, t = operations, transfers
    rows = (await conn.execute(
        sa.select(o.c.ref, o.c.kind.label("op_kind"), o.c.memo, o.c.created_at, t.c.kind, t.c.amount,
                  t.c.debit_account_id, t.c.credit_account_id)
        .select_from(o.join(t, t.c.operation_id == o.c.id))
        .where(o.c.ref.in_(refs), t.c.state == T_POSTED,
               sa.or_(t.c.debit_account_id == merchant_id, t.c.credit_account_id == merchant_id))
        .order_by(o.c.created_at, o.c.id, t.c.leg))).all()
    lines: dict[str, dict] = {}
    for r in rows:
        line = lines.setdefault(r.ref, {"ref": r.ref, "kind": r.op_kind, "order_no": r.memo or "",
                                        "at": iso(r.created_at), "amount": 0, "fee": 0})
        sign = 1 if r.credit_account_id == merchant_id else -1
        if r.kind == "fee":
            line["fee"] -= sign * r.amount           # a fee paid is positive, a fee returned negative
        else:
            line["amount"] += sign * r.amount        # received positive, refunded negative
    sp = sp_payments
    orders = dict((await conn.execute(sa.select(sp.c.ref, sp.c.order_id).where(
        sp.c.merchant_id == merchant_id, sp.c.ref.in_(list(lines))))).all())
    for line in lines.values():
        line["order_no"] = orders.get(line["ref"], line["order_no"])
    return list(lines.values())


# ------------------------------------------------------------ notifications

def _notification(row) -> dict[str, Any]:
    return {"event_id": row.event_id, "type": row.event_type, "subject_id": row.subject_id, "url": row.url,
            "status": row.status, "attempts": row.attempts, "last_status": row.last_status,
            "last_error": row.last_error, "next_attempt_at": iso(row.next_attempt_at),
            "created_at": iso(row.created_at), "delivered_at": iso(row.delivered_at)}


async def list_notifications(conn, merchant_id: int, *, status: str | None = None, page: int = 1,
                             per_page: int = 50) -> dict[str, Any]:
    n = merchant_notifications
    page = max(1, min(int(page), MAX_PAGE))
    per_page = max(1, min(int(per_page), MAX_PER_PAGE))
    q = sa.select(n).where(n.c.merchant_id == merchant_id)
    if status is not None:
        q = q.where(n.c.status == status)
    rows = (await conn.execute(q.order_by(n.c.created_at.desc(), n.c.id.desc())
                               .limit(per_page + 1).offset((page - 1) * per_page))).all()
    return {"notifications": [_notification(r) for r in rows[:per_page]], "page": page,
            "more": len(rows) > per_page and page < MAX_PAGE}


async def get_notification(conn, merchant_id: int, event_id: str) -> dict[str, Any] | None:
    n, at = merchant_notifications, notification_attempts
    row = (await conn.execute(sa.select(n).where(n.c.merchant_id == merchant_id, n.c.event_id == event_id))).first()
    if row is None:
        return None
    out = _notification(row)
    out["body"] = row.body
    out["attempt_log"] = [{"at": iso(a.at), "http_status": a.http_status, "error": a.error,
                           "duration_ms": a.duration_ms, "manual": bool(a.manual)}
                          for a in await conn.execute(sa.select(at).where(at.c.notification_id == row.id)
                                                      .order_by(at.c.at, at.c.id))]
    return out


def parse_day(text: str, *, field: str = "day") -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(f"{field} must be a date YYYY-MM-DD", field)


def day_of(instant: datetime, tz: tzinfo | None) -> date:
    return business_time.business_day(instant, tz)
