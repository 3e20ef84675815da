"""The ledger's invariants, checked by tests, the benchmark and operators
(`telecom-pay db check`). Each returns a list of human-readable violations;
an empty list means the books are sound.

Every derived figure (an account's balance, pending amounts and
consumption-only part) is recomputed from the transfers, and every operation
is checked against its legs. The figures are read in one snapshot (one
REPEATABLE READ transaction on PostgreSQL, one transaction on SQLite), so
payments committing while the check runs never look like a broken book.
"""
from __future__ import annotations

import sqlalchemy as sa

from telecom_pay.ledger.tables import AGENT, SYSTEM, T_PENDING, T_POSTED, T_VOIDED, WALLET, accounts, operations, \
    transfers

# Legs of these kinds leave to a person or a card whatever their destination.
LEAVING_KINDS = ("withdrawal", "p2p", "close_refund")
# System accounts that stand for money outside the platform (cards, banks).
LEAVING_SYSTEM_ACCOUNTS = ("bank_settlement",)
SHOWN = 10


async def check_invariants(conn) -> list[str]:
    """On a connection without a transaction, the check opens its own
    snapshot; inside a caller's transaction it reads what that one sees."""
    if conn.in_transaction():
        return await _check(conn)
    if conn.dialect.name == "postgresql":
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
    async with conn.begin():
        return await _check(conn)


async def _check(conn) -> list[str]:
    problems: list[str] = []
    total = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(accounts.c.balance), 0)))).scalar_one()
    if total != 0:
        problems.append(f"balances sum to {total}, not 0")

    rows = (await conn.execute(sa.select(accounts))).all()
    posted_debits = await _sums(conn, transfers.c.debit_account_id, transfers.c.state == T_POSTED)
    posted_credits = await _sums(conn, transfers.c.credit_account_id, transfers.c.state == T_POSTED)
    pending_debits = await _sums(conn, transfers.c.debit_account_id, transfers.c.state == T_PENDING)
    pending_credits = await _sums(conn, transfers.c.credit_account_id, transfers.c.state == T_PENDING)
    consumption_in = await _sums(conn, transfers.c.credit_account_id,
                                 sa.and_(transfers.c.state == T_POSTED, transfers.c.consumption_credit))
    consumption_out = await _sums(conn, transfers.c.debit_account_id, transfers.c.state != T_VOIDED,
                                  transfers.c.consumption_part)
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
        # consumption-only money comes in by consumption_credit legs (to wallets)
        # and is used up by the consumption_part of the legs that spend it
        consumption = (consumption_in.get(a.id, 0) if a.kind == WALLET else 0) - consumption_out.get(a.id, 0)
        if a.consumption != consumption:
            problems.append(f"account {a.id}: consumption {a.consumption} but transfers say {consumption}")
        if not a.allow_negative and a.balance - a.pending_out < 0:
            problems.append(f"account {a.id}: available {a.balance - a.pending_out} below zero "
                            "(pending amounts spent twice)")
        if a.kind == WALLET and a.balance < 0:
            problems.append(f"wallet {a.id}: balance {a.balance} below zero")
        if a.consumption < 0 or (a.kind == WALLET and a.consumption > max(0, a.balance - a.pending_out)):
            problems.append(f"wallet {a.id}: consumption-only part {a.consumption} outside 0.."
                            f"{a.balance - a.pending_out}")

    # Consumption-only money never leaves to a person or a card: not by a
    # withdrawal-like kind, and not to a wallet, an agent or the bank by any kind.
    to = accounts.alias("to_account")
    leaked = (await conn.execute(
        sa.select(transfers.c.id, transfers.c.kind).select_from(
            transfers.join(to, to.c.id == transfers.c.credit_account_id))
        .where(transfers.c.consumption_part > 0, transfers.c.state != T_VOIDED,
               sa.or_(transfers.c.kind.in_(LEAVING_KINDS), to.c.kind.in_((WALLET, AGENT)),
                      sa.and_(to.c.kind == SYSTEM, to.c.code.in_(LEAVING_SYSTEM_ACCOUNTS))))
        .order_by(transfers.c.id))).all()
    if leaked:
        problems.append(f"{len(leaked)} legs paid consumption-only funds out to a person or card: "
                        f"{[(r.id, r.kind) for r in leaked[:SHOWN]]}")

    legs = (sa.select(transfers.c.operation_id.label("op"), sa.func.count().label("n"),
                      sa.func.sum(sa.case((transfers.c.leg == 0, transfers.c.amount), else_=0)).label("first"),
                      sa.func.sum(sa.case((transfers.c.leg == 0, 1), else_=0)).label("firsts"))
            .group_by(transfers.c.operation_id).subquery())
    bad = (await conn.execute(
        sa.select(operations.c.id, operations.c.amount, operations.c.state, legs.c.n, legs.c.first, legs.c.firsts)
        .select_from(operations.outerjoin(legs, legs.c.op == operations.c.id))
        .where(sa.or_(legs.c.n.is_(None), legs.c.firsts != 1, legs.c.first != operations.c.amount))
        .order_by(operations.c.id))).all()
    without = [r.id for r in bad if r.n is None]
    if without:
        problems.append(f"{len(without)} operations without legs: {without[:SHOWN]}")
    wrong_amount = [(r.id, r.amount, r.first) for r in bad if r.n is not None]
    if wrong_amount:
        problems.append(f"{len(wrong_amount)} operations whose amount is not their first leg's "
                        f"(id, amount, leg): {wrong_amount[:SHOWN]}")

    mismatched = (await conn.execute(
        sa.select(operations.c.id).join(transfers, transfers.c.operation_id == operations.c.id)
        .where(transfers.c.state != operations.c.state).group_by(operations.c.id)
        .order_by(operations.c.id))).all()
    if mismatched:
        problems.append(f"{len(mismatched)} operations with legs in another state: "
                        f"{[r.id for r in mismatched[:SHOWN]]}")
    return problems


async def _sums(conn, column, where, amount=transfers.c.amount) -> dict[int, int]:
    q = sa.select(column, sa.func.sum(amount)).where(where).group_by(column)
    return {k: int(v) for k, v in (await conn.execute(q)).all()}
