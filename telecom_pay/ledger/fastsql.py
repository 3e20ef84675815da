"""SQLAlchemy Core statements run on the raw driver inside a write job.

Per statement, SQLAlchemy's execution (compiled-cache lookup, execution
context, parameter and result processing in Python) cost the ledger's writer
thread several times what sqlite3 or psycopg take to run it. A `Fast`
statement is still written once in Core, next to the tables, so it follows
the schema; it is compiled once per dialect, and in a write job (the
writer's connection, which offers the raw cursor) it runs on that cursor
with the same type processing SQLAlchemy would apply (UtcStamp, JSON,
booleans: the stored form is identical either way). On any other
connection (the reactor's async reads, a test's connection) it simply goes
through SQLAlchemy, so callers need not care which connection they hold.

Only plain bind parameters are supported (no expanding IN lists).
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any


class _Compiled:
    __slots__ = ("sql", "names", "positional", "binds", "defaults", "row", "results")

    def __init__(self, statement, dialect):
        compiled = statement.compile(dialect=dialect)
        if "POSTCOMPILE" in compiled.string:
            raise ValueError("a Fast statement takes plain bind parameters, not an expanding IN list")
        self.sql = compiled.string
        self.positional = dialect.positional
        self.names = list(compiled.positiontup or ()) if self.positional else None
        self.binds = {}
        self.defaults = {}      # values written into the statement (`state="processed"`)
        for name, bind in compiled.binds.items():
            proc = bind.type._cached_bind_processor(dialect)
            if proc is not None:
                self.binds[name] = proc
            if not bind.required:
                self.defaults[name] = bind.effective_value
        columns = getattr(compiled, "_result_columns", None) or []
        if columns:
            keys = [c[0] for c in columns]
            self.row = namedtuple("Row", keys, rename=True)
            self.results = [c[3]._cached_result_processor(dialect, None) for c in columns]
        else:
            self.row = None
            self.results = []

    def params(self, values: dict[str, Any]):
        if self.defaults:
            values = {**self.defaults, **values}
        binds = self.binds
        if binds:
            values = {k: (binds[k](v) if k in binds else v) for k, v in values.items()}
        if self.positional:
            return tuple(values[n] for n in self.names)
        return values

    def rows(self, raw_rows) -> list:
        procs, make = self.results, self.row
        if any(procs):
            return [make(*[(p(v) if p is not None else v) for p, v in zip(procs, r)]) for r in raw_rows]
        return [make(*r) for r in raw_rows]


class Fast:
    """One Core statement with named bind parameters (see module docstring)."""

    def __init__(self, statement):
        self.statement = statement
        self._by_dialect: dict[str, _Compiled] = {}

    def _compiled(self, dialect) -> _Compiled:
        c = self._by_dialect.get(dialect.name)
        if c is None:
            c = self._by_dialect[dialect.name] = _Compiled(self.statement, dialect)
        return c

    async def all(self, conn, **params) -> list:
        if not hasattr(conn, "run"):
            return list(await conn.execute(self.statement, params))
        c = self._compiled(conn.dialect)
        return c.rows(conn.run(c.sql, c.params(params)).fetchall())

    async def first(self, conn, **params):
        if not hasattr(conn, "run"):
            return (await conn.execute(self.statement, params)).first()
        c = self._compiled(conn.dialect)
        raw = conn.run(c.sql, c.params(params)).fetchone()
        return None if raw is None else c.rows([raw])[0]

    async def execute(self, conn, **params) -> None:
        if not hasattr(conn, "run"):
            await conn.execute(self.statement, params)
            return
        c = self._compiled(conn.dialect)
        conn.run(c.sql, c.params(params))

    async def execute_many(self, conn, rows: list[dict]) -> None:
        if not rows:
            return
        if not hasattr(conn, "run"):
            await conn.execute(self.statement, rows)
            return
        c = self._compiled(conn.dialect)
        conn.run_many(c.sql, [c.params(r) for r in rows])

    async def insert_returning(self, conn, rows: list[dict]) -> list:
        """An INSERT ... RETURNING for each row, in order (one statement per
        row on SQLite, in process; one executemany on PostgreSQL); None for
        a row that returned nothing (ON CONFLICT DO NOTHING)."""
        if not rows:
            return []
        if not hasattr(conn, "run"):
            return [(await conn.execute(self.statement, r)).first() for r in rows]
        c = self._compiled(conn.dialect)
        if conn.dialect.name == "sqlite":
            out = []
            for r in rows:
                raw = conn.run(c.sql, c.params(r)).fetchone()
                out.append(None if raw is None else c.rows([raw])[0])
            return out
        cur = conn.cursor()
        cur.executemany(c.sql, [c.params(r) for r in rows], returning=True)
        out = []
        while True:
            got = cur.fetchall()
            out.append(c.rows(got)[0] if got else None)
            if not cur.nextset():
                break
        return out


class PerDialect:
    """A Fast statement whose Core form differs by backend (INSERT ... ON
    CONFLICT comes from each dialect's own `insert`): `build(name)` makes it."""

    def __init__(self, build):
        self._build = build
        self._fast: dict[str, Fast] = {}

    def on(self, conn) -> Fast:
        name = conn.dialect.name
        fast = self._fast.get(name)
        if fast is None:
            fast = self._fast[name] = Fast(self._build(name))
        return fast
