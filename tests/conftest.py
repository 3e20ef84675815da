"""Shared fixtures: real PostgreSQL and Redis servers, one throwaway database
per test, cleaned up afterwards.

`make test` makes sure both servers are reachable (scripts/ensure-services.sh)
before pytest starts; a test that needs one fails loudly when it is not.
"""
from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

PG_SERVER_URL = os.environ.get(
    "TELECOM_PAY_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_SERVER_URL = os.environ.get("TELECOM_PAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _admin_engine():
    return sa.create_engine(make_url(PG_SERVER_URL), isolation_level="AUTOCOMMIT")


@pytest.fixture
def pg_database_factory():
    """Creates uniquely named PostgreSQL databases; drops them at teardown.
    Returns the SQLAlchemy URL (psycopg driver) of each new database."""
    created: list[str] = []
    admin = _admin_engine()

    def make() -> str:
        name = f"tp_test_{os.getpid()}_{uuid.uuid4().hex[:10]}"
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as c:
        for name in created:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_url(pg_database_factory) -> str:
    return pg_database_factory()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """Every ledger test runs on both backends."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def redis_url() -> str:
    return REDIS_SERVER_URL


@pytest.fixture
def redis_prefix(redis_url):
    """A unique key namespace on the shared Redis; its keys are deleted after."""
    import redis as redis_sync
    prefix = f"tp-test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    r = redis_sync.Redis.from_url(redis_url)
    keys = list(r.scan_iter(match=prefix + "*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


@pytest.fixture(params=["sqlite+memory", "postgres+redis"])
def stack(request) -> dict:
    """The two deployments the platform supports: the embedded default
    (SQLite file, in-process sessions) and production (PostgreSQL, Redis)."""
    if request.param == "sqlite+memory":
        return {"database_url": request.getfixturevalue("sqlite_url"), "sessions_url": "memory://",
                "prefix": "tp:"}
    return {"database_url": request.getfixturevalue("pg_url"), "sessions_url": request.getfixturevalue("redis_url"),
            "prefix": request.getfixturevalue("redis_prefix")}


@pytest.fixture(params=["00:30", "23:30"], ids=["local-00:30", "local-23:30"])
def local_clock(request):
    """A tests.clockkit.TestClock starting at 00:30 or 23:30 Asia/Shanghai
    (2026-06-15), for tests that depend on the local day."""
    from tests.clockkit import LOCAL_INSTANTS, TestClock
    return TestClock(LOCAL_INSTANTS[request.param])
