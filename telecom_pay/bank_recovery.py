"""Finishing ledger operations whose bank answer is known.

A pending top-up, withdrawal, close refund or payout waits on the bank. If
the post or void after the answer failed (a database error) or the process
died there, nothing else would ever look at it again. On start the service
asks the bank port what it recorded for each such operation and finishes
it: approved -> post, declined or reversed -> void; still unknown -> left to
the port's reversal queue or to manual review; nothing ever sent (the
process stopped between booking and sending) -> claimed at the bridge as
not sent, so nothing can be sent under its key later, then voided, once it
is older than `[bank] unsent_after_seconds` (a port without such a claim
waits `NEVER_SENT_GRACE`). A payout (settlement) never sent is sent by the
next `telecom-pay settle` instead, under its own key. The daemon runs this
at start and every `[bank] recovery_interval` seconds.
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


async def finish_from_bank(service: "PaymentService", key: str, created_at, kind: str | None = None
                           ) -> BankResult | None:
    """Drive one pending bank operation to the end the bank's recorded answer
    says; returns that answer (None: never sent). A payout never sent is
    left to `telecom-pay settle`, which sends it under its own key: voiding
    it here could race a settle run sending it."""
    known = getattr(service.bank, "known_outcome", None)
    if known is None:
        return None
    answer = await known(key)
    if answer is None and kind == "settlement":
        return None
    if answer is None:
        created = created_at if created_at.tzinfo else created_at.replace(tzinfo=timezone.utc)
        abandon = getattr(service.bank, "abandon_unsent", None)
        if abandon is not None:
            # a claim at the bridge: race-free, so a short wait is enough
            if created >= service.clock() - unsent_after(service):
                return None
            rec = await service.ledger.get_operation(key)
            answer = await abandon(key, debit=kind == "topup", amount=rec.amount)
        elif created < service.clock() - NEVER_SENT_GRACE:
            log.warn("bank operation {key} was booked but never sent: voided", key=key)
            await service.resolve_in_doubt(key, approved=False)
            return None
        else:
            return None
    if answer.status is BankStatus.APPROVED:
        log.info("bank operation {key}: approved, posting it", key=key)
        await service.resolve_in_doubt(key, approved=True)
    elif answer.status is BankStatus.DECLINED:
        log.info("bank operation {key}: declined, voiding it", key=key)
        await service.resolve_in_doubt(key, approved=False)
    return answer


def unsent_after(service: "PaymentService") -> timedelta:
    """How old a booked, never-sent operation must be before it is claimed
    as not sent (`[bank] unsent_after_seconds`): long enough for the process
    that booked it to have sent it if it is still running."""
    return timedelta(seconds=float(service.settings.section("bank").get("unsent_after_seconds", 30)))


async def recover_bank_operations(service: "PaymentService") -> int:
    """Every pending bank operation gets `finish_from_bank`; one failing does
    not stop the others (or the start). Returns how many were finished."""
    if service.bank is None or getattr(service.bank, "known_outcome", None) is None:
        return 0
    rows = await service.ledger.read(lambda conn: _pending(conn))
    finished = 0
    for r in rows:
        try:
            answer = await finish_from_bank(service, r.idempotency_key, r.created_at, r.kind)
        except Exception:
            log.failure("recovery of bank operation {key} failed; it stays pending", key=r.idempotency_key)
            continue
        finished += answer is not None and answer.status is not BankStatus.UNKNOWN
    return finished


async def _pending(conn):
    return (await conn.execute(
        sa.select(operations.c.idempotency_key, operations.c.created_at, operations.c.kind)
        .where(operations.c.state == T_PENDING, operations.c.kind.in_(BANK_KINDS))
        .order_by(operations.c.id))).all()
