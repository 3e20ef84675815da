"""Builds a migrated ledger on a test database (SQLite file or PostgreSQL)."""
from __future__ import annotations

from telecom_pay.ledger import schema
from telecom_pay.ledger.chart import ensure_system_accounts, insert_account
from telecom_pay.ledger.database import open_database
from telecom_pay.ledger.invariants import check_invariants
from telecom_pay.ledger.ledger import Ledger
from telecom_pay.ledger.tables import ACTIVE, WALLET


async def make_ledger(url: str, **kw) -> Ledger:
    schema.upgrade(url)
    ledger = Ledger(open_database(url), **kw)
    ledger.system = await ensure_system_accounts(ledger)
    return ledger


async def new_account(ledger: Ledger, kind: str = WALLET, **values) -> int:
    values.setdefault("status", ACTIVE)
    return await ledger.write(lambda conn: insert_account(conn, kind=kind, **values))


async def assert_sound(ledger: Ledger) -> None:
    problems = await ledger.read(check_invariants)
    assert problems == [], problems
