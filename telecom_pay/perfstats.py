"""Process-wide work counters, so a benchmark can say what one payment costs
(SQL statements and transactions, session-store round trips, messages)
instead of guessing from a profile.

The counters are plain integers bumped on the hot path (a dict lookup, no
lock: the reactor thread and the ledger's writer thread each bump their
own names, and an occasional lost increment in a race would only blur a
figure, never a decision). `[daemon] stats_file` makes the daemon write them
as JSON once a second and at stop; `benchmarks/` reads that file before and
after each run and divides the difference by the payments it confirmed.
"""
from __future__ import annotations

import json
import os
import resource
import time
from collections import defaultdict
from pathlib import Path

counters: defaultdict[str, int] = defaultdict(int)
# TELECOM_PAY_STATEMENT_COUNTS=1: also count statements by their text (to find which ones a path runs)
_TRACE = bool(os.environ.get("TELECOM_PAY_STATEMENT_COUNTS"))


def count(name: str, n: int = 1) -> None:
    counters[name] += n


def snapshot() -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"at": time.time(), "pid": os.getpid(), "cpu_s": usage.ru_utime + usage.ru_stime,
            "counters": dict(counters)}


def write(path: str | os.PathLike) -> None:
    """Atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(snapshot(), sort_keys=True))
    os.replace(tmp, path)


def instrument_engine(engine, prefix: str) -> None:
    """Count statements (executemany counts once: one round trip) and
    transactions on a SQLAlchemy engine (sync, or the sync side of an async one)."""
    from sqlalchemy import event
    target = getattr(engine, "sync_engine", engine)
    stmt_key, commit_key, rollback_key = f"{prefix}_statements", f"{prefix}_commits", f"{prefix}_rollbacks"

    @event.listens_for(target, "before_cursor_execute")
    def _statement(conn, cursor, statement, parameters, context, executemany):
        counters[stmt_key] += 1
        if _TRACE:
            counters[f"{prefix}: {' '.join(statement.split())[:70]}"] += 1

    @event.listens_for(target, "commit")
    def _commit(conn):
        counters[commit_key] += 1

    @event.listens_for(target, "rollback")
    def _rollback(conn):
        counters[rollback_key] += 1
