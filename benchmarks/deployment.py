"""Where one benchmark configuration runs: its database, its session store,
its working directory and the daemon's generated config file.

Two configurations exist:

- ``sqlite``:   the embedded default (SQLite file in a temporary directory,
                in-process ``memory://`` sessions);
- ``postgres``: PostgreSQL and Redis from ``TELECOM_PAY_TEST_DATABASE_URL`` /
                ``TELECOM_PAY_TEST_REDIS_URL`` (what `make bench` exports via
                scripts/ensure-services.sh): a uniquely named database,
                dropped afterwards, and a unique Redis key prefix, deleted
                afterwards.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from telecom_pay.config import DEFAULT_CONFIG

from benchmarks.tomlwriter import dumps

CONFIGS = ("sqlite", "postgres")
PG_SERVER_URL_ENV = "TELECOM_PAY_TEST_DATABASE_URL"
REDIS_URL_ENV = "TELECOM_PAY_TEST_REDIS_URL"
DEFAULT_PG_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

BENCH_MERCHANT = {"code": "M888", "name": "压测商户", "name_en": "Benchmark shop"}
#: Limits far above what a benchmark spends, so no payment is refused by them.
GENEROUS_LIMITS = {"per_txn": 100_000_000, "daily": 10**13, "monthly": 10**14}


@dataclass
class Deployment:
    """One configuration's resources; `close()` releases all of them."""

    name: str
    workdir: Path
    database_url: str
    sessions_url: str
    sessions_prefix: str
    keep_workdir: bool = False
    _pg_admin_url: str | None = None
    _pg_database: str | None = None
    _closers: list = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.workdir / "telecom-pay-bench.toml"

    @property
    def stats_path(self) -> Path:
        """The daemon's work counters (telecom_pay.perfstats), rewritten every second."""
        return self.workdir / "daemon-stats.json"

    def write_config(self, smsc_port: int | None = None, *, binds: int = 1, window: int | None = None,
                     smsc_ports: list[int] | None = None) -> Path:
        """The daemon's config: the shipped default with this deployment's
        database and sessions, the SMSC's port (or the load generator's
        ports, `binds` binds to each), the velocity rule off and limits no
        benchmark reaches."""
        ports = list(smsc_ports or [smsc_port])
        raw = tomllib.loads(DEFAULT_CONFIG.read_text(encoding="utf-8"))
        raw["database"] = {"url": self.database_url, "auto_upgrade": True}
        raw["sessions"] = {"url": self.sessions_url, "prefix": self.sessions_prefix}
        raw["security"]["velocity_payments_per_minute"] = 0
        raw["security"]["allow_development_keys"] = True     # a throwaway database
        raw["security"]["agent_float_max_per_operation"] = raw["security"]["agent_float_max_per_day"] = 10**15
        raw["limits"] = {tier: dict(GENEROUS_LIMITS) for tier in raw.get("limits", {"1": {}})}
        merchants = [m for m in raw.get("merchants", []) if m["code"] != BENCH_MERCHANT["code"]]
        raw["merchants"] = merchants + [dict(BENCH_MERCHANT)]
        template = raw["sms"]["binds"][0]
        raw["sms"]["binds"] = []
        for port in ports:
            for _ in range(binds):
                bind = dict(template, endpoint=f"tcp:host=127.0.0.1:port={port}")
                if window is not None:
                    bind["window"] = window
                raw["sms"]["binds"].append(bind)
        raw.setdefault("daemon", {})["stats_file"] = str(self.stats_path)
        for section in ("demo", "bank", "bank_sim", "ivr", "ami", "ami_sim", "web"):   # the SMS path only: no voice, no web
            raw.pop(section, None)
        self.config_path.write_text(dumps(raw), encoding="utf-8")
        return self.config_path

    def close(self) -> list[str]:
        """Drop the database, delete the Redis keys, remove the directory.
        Returns problems met (cleanup never raises)."""
        problems = []
        if self._pg_database:
            try:
                _drop_pg_database(self._pg_admin_url, self._pg_database)
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                problems.append(f"could not drop database {self._pg_database}: {exc}")
        if self.sessions_url.startswith("redis"):
            try:
                _delete_redis_prefix(self.sessions_url, self.sessions_prefix)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"could not delete Redis keys {self.sessions_prefix}*: {exc}")
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return problems


def prepare(name: str, *, keep_workdir: bool = False) -> Deployment:
    if name not in CONFIGS:
        raise ValueError(f"unknown configuration {name!r} (choose from {', '.join(CONFIGS)})")
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix=f"telecom-pay-bench-{name}-"))
    if name == "sqlite":
        return Deployment(name, workdir, f"sqlite+aiosqlite:///{workdir / 'ledger.sqlite3'}", "memory://",
                          "tp:", keep_workdir)
    admin_url = os.environ.get(PG_SERVER_URL_ENV, DEFAULT_PG_SERVER_URL)
    redis_url = os.environ.get(REDIS_URL_ENV, DEFAULT_REDIS_URL)
    database = f"tp_bench_{tag}"
    try:
        url = _create_pg_database(admin_url, database)
    except Exception:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return Deployment(name, workdir, url, redis_url, f"tp-bench:{tag}:", keep_workdir,
                      _pg_admin_url=admin_url, _pg_database=database)


def _create_pg_database(admin_url: str, database: str) -> str:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    engine = sa.create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{database}"'))
    finally:
        engine.dispose()
    return make_url(admin_url).set(database=database).render_as_string(hide_password=False)


def _drop_pg_database(admin_url: str, database: str) -> None:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    engine = sa.create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    finally:
        engine.dispose()


def _delete_redis_prefix(url: str, prefix: str) -> None:
    import redis
    r = redis.Redis.from_url(url)
    try:
        batch = []
        for key in r.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                r.delete(*batch)
                batch.clear()
        if batch:
            r.delete(*batch)
    finally:
        r.close()
