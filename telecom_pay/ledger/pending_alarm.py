"""An alarm for operations left pending too long (`telecom-pay db check`,
`PaymentService.check_books`). A pending operation waits on a bank or a
merchant for seconds or minutes; one older than `[ledger]
pending_alarm_minutes` means recovery did not finish it (the bank answer is
in manual review, or something failed after the answer) and holds money
out of reach: an operator must look at it. Kept apart from the invariant
checker: the books can balance while money is stuck."""
from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from telecom_pay.ledger.tables import T_PENDING, operations


async def stale_pending(conn, older_than: datetime) -> list[str]:
    """One line per operation pending since before `older_than` (aware UTC)."""
    rows = (await conn.execute(
        sa.select(operations.c.ref, operations.c.idempotency_key, operations.c.kind, operations.c.amount,
                  operations.c.created_at)
        .where(operations.c.state == T_PENDING).order_by(operations.c.id))).all()
    problems = []
    for r in rows:
        created = r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=timezone.utc)
        if created < older_than:
            problems.append(f"operation {r.ref} ({r.kind}, key {r.idempotency_key}, amount {r.amount}) "
                            f"pending since {created.isoformat()}")
    return problems
