"""Finishing ledger operations whose bank answer is known.

A pending top-up, withdrawal, close refund or payout waits on the bank. If
the post or void after the answer failed (a database error) or the process
died there, nothing else would ever look at it again. On start the service
asks the bank port what it recorded for each such operation and finishes
it: approved -> post, declined or reversed -> void; still unknown -> left to
the port's reversal queue or to manual review; nothing ever sent (the
process stopped between booking and sending) -> void, once the operation is
older than `NEVER_SENT_GRACE`, so an operation another process is about to
send is never touched.
"""
from __future__ import annotations

from datetime import timedelta, timezone
from typing import TYPE_CHECKING

import sqlalchemy as sa
from twisted.logger import Logger

from telecom_pay.bank_port import BankResult, BankStatus
from telecom_pay.ledger.tables import T_PENDING, operations

if TYPE_CHECKING:
    from telecom_pay.service import PaymentService

log = Logger(namespace="telecom_pay.bank_recovery")

BANK_KINDS = ("topup", "withdrawal", "close_refund", "settlement")
NEVER_SENT_GRACE = timedelta(minutes=10)


async def finish_from_bank(service: "PaymentService", key: str, created_at) -> BankResult | None:
    """Drive one pending bank operation to the end the bank's recorded answer
    says; returns that answer (None: never sent)."""
    known = getattr(service.bank, "known_outcome", None)
    if known is None:
        return None
    answer = await known(key)
    if answer is None:
        created = created_at if created_at.tzinfo else created_at.replace(tzinfo=timezone.utc)
        if created < service.clock() - NEVER_SENT_GRACE:
            log.warn("bank operation {key} was booked but never sent: voided", key=key)
            await service.resolve_in_doubt(key, approved=False)
        return None
    if answer.status is BankStatus.APPROVED:
        log.info("bank operation {key}: approved, posting it", key=key)
        await service.resolve_in_doubt(key, approved=True)
    elif answer.status is BankStatus.DECLINED:
        log.info("bank operation {key}: declined, voiding it", key=key)
        await service.resolve_in_doubt(key, approved=False)
    return answer


async def recover_bank_operations(service: "PaymentService") -> int:
    """Every pending bank operation gets `finish_from_bank`; one failing does
    not stop the others (or the start). Returns how many were finished."""
    if service.bank is None or getattr(service.bank, "known_outcome", None) is None:
        return 0
    rows = await service.ledger.read(lambda conn: _pending(conn))
    finished = 0
    for r in rows:
        try:
            answer = await finish_from_bank(service, r.idempotency_key, r.created_at)
        except Exception:
            log.failure("recovery of bank operation {key} failed; it stays pending", key=r.idempotency_key)
            continue
        finished += answer is not None and answer.status is not BankStatus.UNKNOWN
    return finished


async def _pending(conn):
    return (await conn.execute(
        sa.select(operations.c.idempotency_key, operations.c.created_at)
        .where(operations.c.state == T_PENDING, operations.c.kind.in_(BANK_KINDS))
        .order_by(operations.c.id))).all()
