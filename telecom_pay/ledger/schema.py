"""Schema management: Alembic is the only way the schema is created or
changed (`telecom-pay db upgrade`; the embedded default upgrades on start)."""
from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).with_name("migrations")


def sync_url(url: str) -> str:
    """The blocking driver for an async URL (Alembic runs synchronously)."""
    u = make_url(url)
    if u.drivername in ("sqlite+aiosqlite", "sqlite"):
        u = u.set(drivername="sqlite")
    elif u.drivername.startswith("postgresql"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def async_url(url: str) -> str:
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    elif u.drivername in ("postgresql", "postgresql+psycopg2", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def prepare_sqlite_file(url: str) -> None:
    """Create an embedded database's file private (0600) and the directories
    leading to it private (0700), before SQLite creates them with the umask's
    permissions (usually world-readable): the file holds the ledger, PIN
    hashes and messages. SQLite gives its -wal and -shm files the database
    file's permissions. Files and directories that exist already are left as
    they are (the directory may be shared, such as /tmp)."""
    u = make_url(sync_url(url))
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:") \
            or u.database.startswith("file:"):
        return
    path = Path(u.database).absolute()
    missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.fchmod(fd, 0o600)
    os.close(fd)


def upgrade(url: str, revision: str = "heads") -> None:
    """Bring the database at `url` to the latest schema (blocking)."""
    prepare_sqlite_file(url)
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> set[str]:
    import sqlalchemy as sa
    from alembic.runtime.migration import MigrationContext
    prepare_sqlite_file(url)
    eng = sa.create_engine(sync_url(url))
    try:
        with eng.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())
    finally:
        eng.dispose()
