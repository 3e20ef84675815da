"""The ledger's invariants, checked by tests, the benchmark and operators
(`telecom-pay db check`). Each returns a list of human-readable violations;
an empty list means the books are sound.
"""
from __future__ import annotations

import sqlalchemy as sa

from telecom_pay.ledger.tables import T_PENDING, T_POSTED, WALLET, accounts, operations, transfers


async def check_invariants(conn) -> list[str]:
    problems: list[str] = []
    total = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(accounts.c.balance), 0)))).scalar_one()
    if total != 0:
        problems.append(f"balances sum to {total}, not 0")

    rows = (await conn.execute(sa.select(accounts))).all()
    posted_debits = await _sums(conn, transfers.c.debit_account_id, T_POSTED)
    posted_credits = await _sums(conn, transfers.c.credit_account_id, T_POSTED)
    pending_debits = await _sums(conn, transfers.c.debit_account_id, T_PENDING)
    pending_credits = await _sums(conn, transfers.c.credit_account_id, T_PENDING)
    for a in rows:
        expect = posted_credits.get(a.id, 0) - posted_debits.get(a.id, 0)
        if a.balance != expect:
            problems.append(f"account {a.id}: balance {a.balance} but transfers say {expect}")
        if a.pending_out != pending_debits.get(a.id, 0):
            problems.append(f"account {a.id}: pending_out {a.pending_out} but pending debits "
                            f"{pending_debits.get(a.id, 0)}")
        if a.pending_in != pending_credits.get(a.id, 0):
            problems.append(f"account {a.id}: pending_in {a.pending_in} but pending credits "
                            f"{pending_credits.get(a.id, 0)}")
        if not a.allow_negative and a.balance - a.pending_out < 0:
            problems.append(f"account {a.id}: available {a.balance - a.pending_out} below zero "
                            "(pending amounts spent twice)")
        if a.kind == WALLET and a.balance < 0:
            problems.append(f"wallet {a.id}: balance {a.balance} below zero")
        if a.consumption < 0 or (a.kind == WALLET and a.consumption > max(0, a.balance - a.pending_out)):
            problems.append(f"wallet {a.id}: consumption-only part {a.consumption} outside 0.."
                            f"{a.balance - a.pending_out}")

    leaked = (await conn.execute(sa.select(sa.func.count()).select_from(transfers).where(
        transfers.c.consumption_part > 0, transfers.c.state != "voided",
        sa.or_(transfers.c.kind.in_(("withdrawal", "p2p")))))).scalar_one()
    if leaked:
        problems.append(f"{leaked} withdrawal/P2P legs spent consumption-only funds")

    mismatched = (await conn.execute(
        sa.select(operations.c.id).join(transfers, transfers.c.operation_id == operations.c.id)
        .where(transfers.c.state != operations.c.state).limit(5))).all()
    if mismatched:
        problems.append(f"operations with legs in another state: {[r.id for r in mismatched]}")
    return problems


async def _sums(conn, column, state) -> dict[int, int]:
    q = sa.select(column, sa.func.sum(transfers.c.amount)).where(transfers.c.state == state).group_by(column)
    return {k: int(v) for k, v in (await conn.execute(q)).all()}
