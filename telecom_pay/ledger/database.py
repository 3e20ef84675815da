"""Database engines for the ledger: one writer path and one reader path.

SQLite (the embedded default) runs in WAL mode with full fsync on commit,
writers take the write lock at BEGIN (IMMEDIATE) so a transaction never
fails half-way on a lock upgrade, and savepoints work (pysqlite's own
transaction handling is switched off, as SQLAlchemy's docs advise).
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from telecom_pay import perfstats
from telecom_pay.ledger.schema import async_url, prepare_sqlite_file, sync_url


@dataclass
class Database:
    """`write`/`read`: asyncio engines for the reactor thread. `sync_write`:
    the blocking engine the ledger's writer thread commits batches with."""
    url: str
    write: AsyncEngine
    read: AsyncEngine
    sync_write: Engine

    @property
    def is_sqlite(self) -> bool:
        return self.write.dialect.name == "sqlite"

    async def dispose(self) -> None:
        await self.write.dispose()
        if self.read is not self.write:
            await self.read.dispose()
        self.sync_write.dispose()


def _sqlite_engine(url: str, begin: str, *, blocking: bool = False, pool_size: int = 5):
    # No overflow connections: opening one (a thread, the file, the pragmas)
    # costs far more than waiting a moment for a pooled one.
    kw = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": 60}
    engine = (create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kw) if blocking
              else create_async_engine(url, connect_args={"timeout": 30}, **kw))
    target = engine if blocking else engine.sync_engine

    @event.listens_for(target, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(target, "begin")
    def _begin(conn):
        conn.exec_driver_sql(begin)

    return engine


def open_database(url: str, *, pool_size: int = 16) -> Database:
    url, blocking_url = async_url(url), sync_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        prepare_sqlite_file(url)
        db = Database(url, _sqlite_engine(url, "BEGIN IMMEDIATE", pool_size=2),
                      _sqlite_engine(url, "BEGIN", pool_size=pool_size),
                      _sqlite_engine(blocking_url, "BEGIN IMMEDIATE", blocking=True, pool_size=1))
    else:
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=60, pool_pre_ping=True)
        db = Database(url, engine, engine, create_engine(blocking_url, pool_size=2, pool_pre_ping=True))
    _instrument(db)
    return db


def _instrument(db: Database) -> None:
    # writer thread (group commit) apart from the reactor's own reads and writes
    perfstats.instrument_engine(db.sync_write, "db_writer")
    perfstats.instrument_engine(db.read, "db_reader")
    if db.write is not db.read:
        perfstats.instrument_engine(db.write, "db_reader")
