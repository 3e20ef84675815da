"""The chart of accounts: the system accounts that balance the books, and
the one way any account row is inserted."""
from __future__ import annotations

import sqlalchemy as sa

from telecom_pay.ledger.ledger import Ledger, utcnow
from telecom_pay.ledger.tables import ACTIVE, SYSTEM, accounts

# code -> display name. System accounts may go negative: bank settlement is
# negative by the money subscribers hold, and so on.
SYSTEM_ACCOUNTS = {
    "bank_settlement": "Bank settlement",
    "fee_income": "Fee income",
    "sp_payables": "SP payables",
    "suspense": "Suspense",
    "airtime": "Airtime sales",
    "cash": "Cash at counters",
}


async def insert_account(conn, *, kind: str, status: str = ACTIVE, name: str = "", code: str | None = None,
                         msisdn: str | None = None, allow_negative: bool = False, **extra) -> int:
    now = utcnow()
    return (await conn.execute(accounts.insert().values(
        kind=kind, status=status, name=name, code=code, msisdn=msisdn, allow_negative=allow_negative,
        created_at=now, updated_at=now, **extra).returning(accounts.c.id))).scalar_one()


async def ensure_system_accounts(ledger: Ledger) -> dict[str, int]:
    """Create missing system accounts; return code -> id."""
    async def job(conn):
        have = {r.code: r.id for r in (await conn.execute(
            sa.select(accounts.c.code, accounts.c.id).where(accounts.c.kind == SYSTEM)))}
        for code, name in SYSTEM_ACCOUNTS.items():
            if code not in have:
                have[code] = await insert_account(conn, kind=SYSTEM, code=code, name=name, allow_negative=True)
        return have
    return await ledger.write(job)
