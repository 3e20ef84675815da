"""The Alembic migrations are the only way the schema is made; the table
definitions the code uses must match what they create, on both backends."""
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bank_bridge.tables import metadata as bank_metadata
from telecom_pay.ledger import schema
from tests.aio import aio_test
from telecom_pay.ledger.tables import metadata as core_metadata
from telecom_pay.messaging import metadata as messaging_metadata
from telecom_pay.settlement import metadata as settlement_metadata
from telecom_pay.calls import metadata as calls_metadata
from telecom_pay.webusers import metadata as webusers_metadata
from telecom_pay.risk.cases import metadata as risk_metadata
from telecom_pay.merchants.tables import metadata as merchants_metadata


@pytest.mark.parametrize("metadata", [core_metadata, messaging_metadata, settlement_metadata, bank_metadata,
                                      calls_metadata, webusers_metadata, risk_metadata, merchants_metadata],
                         ids=["core", "messaging", "settlement", "bank", "calls", "webusers", "risk", "merchants"])
def test_migrations_match_tables(database_url, metadata):
    schema.upgrade(database_url)
    eng = sa.create_engine(schema.sync_url(database_url))
    with eng.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    eng.dispose()
    # tables of other revisions (bank, messaging) are compared by their own tests
    def ours(d):
        obj = d[1]
        table = getattr(obj, "table", obj)
        return getattr(table, "name", None) in metadata.tables
    assert [d for d in diff if ours(d)] == []
    assert schema.current(database_url)


def test_upgrade_is_repeatable(sqlite_url):
    schema.upgrade(sqlite_url)
    first = schema.current(sqlite_url)
    schema.upgrade(sqlite_url)
    assert schema.current(sqlite_url) == first


def _mode(path) -> int:
    import stat
    return stat.S_IMODE(path.stat().st_mode)


def test_the_cli_creates_the_sqlite_file_and_its_directories_private(tmp_path):
    """`db upgrade` under a permissive umask (022): the new directories are
    0700, the database file 0600."""
    import os
    import subprocess
    import sys

    from telecom_pay.config import DEFAULT_CONFIG
    db = tmp_path / "var" / "data" / "tp.sqlite3"
    cfg = tmp_path / "tp.toml"
    cfg.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8").replace(
        'url = "sqlite+aiosqlite:///var/telecom-pay.sqlite3"', f'url = "sqlite+aiosqlite:///{db}"').replace(
        "[security]\n", "[security]\nallow_development_keys = true\n", 1), encoding="utf-8")
    assert str(db) in cfg.read_text(encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "telecom_pay.cli", "db", "upgrade", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(0o022))
    assert out.returncode == 0, out.stderr
    assert (_mode(db), _mode(db.parent), _mode(db.parent.parent)) == (0o600, 0o700, 0o700)


@aio_test
async def test_the_daemon_creates_the_sqlite_file_and_its_journal_private(tmp_path):
    """The core opening a new database (no upgrade run before it) under
    umask 022: file, -wal and -shm are 0600, its new directory 0700."""
    import os
    from telecom_pay.ledger.chart import ensure_system_accounts
    from telecom_pay.ledger.database import open_database
    from telecom_pay.ledger.ledger import Ledger
    db = tmp_path / "fresh" / "ledger.sqlite3"
    old = os.umask(0o022)
    try:
        ledger = Ledger(open_database(f"sqlite+aiosqlite:///{db}"))
        assert (_mode(db), _mode(db.parent)) == (0o600, 0o700)
        schema.upgrade(f"sqlite+aiosqlite:///{db}")
        await ensure_system_accounts(ledger)                 # writes: the WAL and its index exist now
        wal, shm = db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")
        assert wal.exists() and shm.exists()
        assert (_mode(db), _mode(wal), _mode(shm)) == (0o600, 0o600, 0o600)
        await ledger.close()
        await ledger.db.dispose()
    finally:
        os.umask(old)


@aio_test
async def test_a_call_event_heard_by_two_instances_is_recorded_once(database_url):
    from telecom_pay.calls import CallLog
    from tests.ledgerkit import make_ledger
    ledger = await make_ledger(database_url)
    try:
        log = CallLog(ledger)
        for _ in range(2):                      # two instances logged into one switch
            await log.record_event("1796178469.0", "hangup", channel="PJSIP/trunk-0001", cause="16")
        await log.record_event("1796178469.0", "hangup", channel="PJSIP/trunk-0002", cause="16")
        events = await log.events("1796178469.0")
        assert [(e["event"], e["channel"]) for e in events] == [("hangup", "PJSIP/trunk-0001"),
                                                                 ("hangup", "PJSIP/trunk-0002")]
    finally:
        await ledger.close()
        await ledger.db.dispose()
