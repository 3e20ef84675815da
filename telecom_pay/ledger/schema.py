"""Schema management: Alembic is the only way the schema is created or
changed (`telecom-pay db upgrade`; the embedded default upgrades on start)."""
from __future__ import annotations

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


def upgrade(url: str, revision: str = "heads") -> None:
    """Bring the database at `url` to the latest schema (blocking)."""
    u = make_url(sync_url(url))
    if u.drivername == "sqlite" and u.database not in (None, "", ":memory:"):
        Path(u.database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> set[str]:
    import sqlalchemy as sa
    from alembic.runtime.migration import MigrationContext
    eng = sa.create_engine(sync_url(url))
    try:
        with eng.connect() as conn:
            return set(MigrationContext.configure(conn).get_current_heads())
    finally:
        eng.dispose()
