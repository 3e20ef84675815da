"""Manual review of bank operations whose reversal the bank never settled.

The bridge never guesses: after `reversal_max_attempts` answers that do not
end a reversal (or none at all) the operation stops repeating and waits for
an operator, who finds out from the bank what happened and records it here.
The decision and its audit row (who, when, why, before and after) commit
together; then the resolver (the PaymentService) posts or voids the ledger
operation, which also settles a payout's batch. If this process stops in
between, the daemon's reversal worker or the next start's recovery tells
the resolver the recorded decision, so it is acted on exactly as decided.
"""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from bank_bridge.store import BankStore, ReviewError, utcnow
from telecom_pay.bank_port import InDoubtResolver

__all__ = ["ReviewError", "in_doubt", "resolve"]


async def in_doubt(store: BankStore) -> list[dict[str, Any]]:
    """Operations whose bank outcome is still open; state `review` needs an
    operator, `pending` is still being repeated, `acknowledged` is being
    reported to the ledger."""
    return await store.in_doubt()


async def resolve(store: BankStore, resolver: InDoubtResolver, operation_key: str, *, outcome: str,
                  actor: str, reason: str, now: float | None = None,
                  also: Callable[[Any, dict[str, Any]], Awaitable[None]] | None = None) -> dict[str, Any]:
    """Record the operator's decision (`approved`: the bank holds the original
    as done; `declined`: it did not move money, or it was reversed), then
    have the ledger follow it. Returns the audit row. `also(conn, review)`
    joins the decision's transaction (a channel's own audit row)."""
    now = time.time() if now is None else now
    operation = await store.get_operation(operation_key)
    if operation is None:
        raise ReviewError(f"no bank operation {operation_key!r}")
    journal = dict(at=utcnow(now), bank_code=operation["bank_code"], direction="out", event="manual_resolution",
                   operation_key=operation_key, mti=operation["mti"], stan=operation["stan"], rrn=operation["rrn"],
                   terminal_id=operation["terminal_id"], pan_token=operation["pan_token"],
                   last4=operation["last4"], amount=operation["amount"],
                   processing_code=operation["processing_code"], detail=f"{outcome} by {actor}"[:200])
    review = await store.decide(operation_key, outcome=outcome, actor=actor, reason=reason, journal=journal,
                                now=now, also=also)
    await resolver.resolve_in_doubt(operation_key, approved=outcome == "approved")
    await store.reversal_resolved(operation_key, time.time())
    return review
