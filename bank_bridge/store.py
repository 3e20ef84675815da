"""Durable state of the bridge over SQLAlchemy asyncio (SQLite or PostgreSQL):
number allocation (STAN, RRN), operation records, the reversal queue and the
message journal. Tables: `bank_bridge.tables`."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from bank_bridge.tables import bank_journal, bank_operations, bank_reversals, bank_reviews, bank_sequences


def utcnow(now: float | None = None) -> datetime:
    return datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)


class ReviewError(ValueError):
    """A manual decision that cannot be taken (unknown key, not in review)."""


class BankStore:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    # -- sequences ------------------------------------------------------------

    async def reserve(self, name: str, count: int) -> int:
        """Reserve `count` numbers of sequence `name`; returns the last one
        reserved (the block is last-count+1 .. last). Committed before use, so
        a restart never hands out a number twice."""
        for _ in range(3):
            async with self.engine.begin() as conn:
                row = (await conn.execute(
                    sa.update(bank_sequences).where(bank_sequences.c.name == name)
                    .values(value=bank_sequences.c.value + count)
                    .returning(bank_sequences.c.value))).first()
                if row is not None:
                    return int(row[0])
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(sa.insert(bank_sequences).values(name=name, value=count))
                return count
            except IntegrityError:      # created concurrently: update again
                continue
        raise RuntimeError(f"could not reserve numbers of sequence {name}")

    # -- operations -----------------------------------------------------------

    async def get_operation(self, operation_key: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(bank_operations)
                                      .where(bank_operations.c.operation_key == operation_key))).first()
        return dict(row._mapping) if row is not None else None

    async def operation_by_rrn(self, rrn: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(bank_operations)
                                      .where(bank_operations.c.rrn == rrn))).first()
        return dict(row._mapping) if row is not None else None

    async def operations_by_rrn(self, rrns: list[str]) -> list[dict[str, Any]]:
        if not rrns:
            return []
        found: list[dict[str, Any]] = []
        async with self.engine.connect() as conn:
            for i in range(0, len(rrns), 500):
                rows = (await conn.execute(sa.select(bank_operations)
                                           .where(bank_operations.c.rrn.in_(rrns[i:i + 500])))).all()
                found.extend(dict(r._mapping) for r in rows)
        return found

    async def operations_created_between(self, bank_code: str, start: datetime,
                                         end: datetime) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(bank_operations)
                .where(bank_operations.c.bank_code == bank_code, bank_operations.c.created_at >= start,
                       bank_operations.c.created_at < end)
                .order_by(bank_operations.c.created_at))).all()
        return [dict(r._mapping) for r in rows]

    async def insert_operation(self, operation: dict[str, Any], journal: dict[str, Any]) -> bool:
        """Record a new operation (and its journal line) before anything is
        sent. False if the operation_key is already known."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(sa.insert(bank_operations).values(**operation))
                await conn.execute(sa.insert(bank_journal).values(**journal))
            return True
        except IntegrityError:
            return False

    async def finish_operation(self, operation_key: str, *, status: str, response_code: str | None,
                               decline: str | None, journal: dict[str, Any], now: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(bank_operations).where(bank_operations.c.operation_key == operation_key)
                .values(status=status, response_code=response_code, decline=decline, updated_at=utcnow(now)))
            await conn.execute(sa.insert(bank_journal).values(**journal))

    async def operations_in_state(self, status: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(bank_operations)
                                       .where(bank_operations.c.status == status))).all()
        return [dict(r._mapping) for r in rows]

    # -- reversal queue -------------------------------------------------------

    async def queue_reversal(self, reversal: dict[str, Any], journal: dict[str, Any], now: float) -> None:
        """Mark the operation in doubt and queue its reversal, atomically."""
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(bank_operations)
                .where(bank_operations.c.operation_key == reversal["operation_key"])
                .values(status="reversing", updated_at=utcnow(now)))
            exists = (await conn.execute(
                sa.select(bank_reversals.c.operation_key)
                .where(bank_reversals.c.operation_key == reversal["operation_key"]))).first()
            if exists is None:
                await conn.execute(sa.insert(bank_reversals).values(**reversal))
            await conn.execute(sa.insert(bank_journal).values(**journal))

    async def open_reversals(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(bank_reversals).where(bank_reversals.c.state.in_(("pending", "acknowledged")))
                .order_by(bank_reversals.c.next_attempt_at))).all()
        return [dict(r._mapping) for r in rows]

    async def get_reversal(self, operation_key: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(bank_reversals)
                                      .where(bank_reversals.c.operation_key == operation_key))).first()
        return dict(row._mapping) if row is not None else None

    async def reversal_attempted(self, operation_key: str, *, attempts: int, next_attempt_at: float,
                                 journal: dict[str, Any] | None, now: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(bank_reversals).where(bank_reversals.c.operation_key == operation_key)
                .values(attempts=attempts, next_attempt_at=next_attempt_at, updated_at=utcnow(now)))
            if journal is not None:
                await conn.execute(sa.insert(bank_journal).values(**journal))

    async def reversal_acknowledged(self, operation_key: str, *, response_code: str | None,
                                    journal: dict[str, Any], now: float) -> bool:
        """A final 0430: reversed, or nothing to reverse. False (nothing
        changed but the journal) if the reversal is no longer pending, e.g.
        an operator decided it meanwhile."""
        async with self.engine.begin() as conn:
            changed = (await conn.execute(
                sa.update(bank_reversals).where(bank_reversals.c.operation_key == operation_key,
                                                bank_reversals.c.state == "pending")
                .values(state="acknowledged", response_code=response_code, resolution="declined",
                        updated_at=utcnow(now)))).rowcount
            if changed:
                await conn.execute(
                    sa.update(bank_operations).where(bank_operations.c.operation_key == operation_key)
                    .values(status="reversed", updated_at=utcnow(now)))
            await conn.execute(sa.insert(bank_journal).values(**journal))
        return bool(changed)

    async def reversal_unanswered(self, operation_key: str, *, response_code: str | None, review: bool,
                                  journal: dict[str, Any], now: float) -> None:
        """A 0430 that does not end the reversal (or none at all): journalled;
        with `review` the repeats stop and the operation waits for an operator."""
        async with self.engine.begin() as conn:
            values: dict[str, Any] = dict(updated_at=utcnow(now))
            if response_code is not None:
                values["response_code"] = response_code
            if review:
                values["state"] = "review"
            changed = (await conn.execute(
                sa.update(bank_reversals).where(bank_reversals.c.operation_key == operation_key,
                                                bank_reversals.c.state == "pending").values(**values))).rowcount
            if review and changed:
                await conn.execute(
                    sa.update(bank_operations).where(bank_operations.c.operation_key == operation_key)
                    .values(status="review", updated_at=utcnow(now)))
            await conn.execute(sa.insert(bank_journal).values(**journal))

    async def in_doubt(self) -> list[dict[str, Any]]:
        """Every operation whose reversal is not resolved yet, oldest first,
        with its operation's kind, amount and status."""
        o, r = bank_operations, bank_reversals
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(r.c.operation_key, r.c.state, r.c.attempts, r.c.response_code, r.c.resolution,
                          r.c.created_at, r.c.updated_at, o.c.kind, o.c.bank_code, o.c.amount, o.c.currency,
                          o.c.last4, o.c.stan, o.c.rrn, o.c.status)
                .join(o, o.c.operation_key == r.c.operation_key)
                .where(r.c.state != "resolved").order_by(r.c.created_at, r.c.operation_key))).all()
        return [dict(x._mapping) for x in rows]

    async def decide(self, operation_key: str, *, outcome: str, actor: str, reason: str,
                     journal: dict[str, Any], now: float,
                     also: Callable[[Any, dict[str, Any]], Awaitable[None]] | None = None) -> dict[str, Any]:
        """An operator's decision on an operation in review, with its audit
        row, atomically. Returns the review row; raises ReviewError if the
        operation is not waiting for one. `also(conn, review)` runs in the
        same transaction (the web's own audit row commits with the decision)."""
        if outcome not in ("approved", "declined"):
            raise ReviewError("outcome must be approved or declined")
        if not actor.strip() or not reason.strip():
            raise ReviewError("who decided (--by) and why (--reason) are required")
        async with self.engine.begin() as conn:
            rq = sa.select(bank_reversals).where(bank_reversals.c.operation_key == operation_key)
            oq = sa.select(bank_operations).where(bank_operations.c.operation_key == operation_key)
            if conn.dialect.name != "sqlite":
                rq, oq = rq.with_for_update(), oq.with_for_update()
            reversal = (await conn.execute(rq)).first()
            operation = (await conn.execute(oq)).first()
            if reversal is None or operation is None:
                raise ReviewError(f"no reversal for operation {operation_key!r}")
            if reversal.state != "review":
                raise ReviewError(f"operation {operation_key!r} is not in review (reversal {reversal.state})")
            status = "approved" if outcome == "approved" else "reversed"
            before = {"operation": operation.status, "reversal": reversal.state,
                      "response_code": reversal.response_code, "attempts": reversal.attempts}
            after = {"operation": status, "reversal": "acknowledged", "resolution": outcome}
            await conn.execute(
                sa.update(bank_reversals).where(bank_reversals.c.operation_key == operation_key)
                .values(state="acknowledged", resolution=outcome, updated_at=utcnow(now)))
            await conn.execute(
                sa.update(bank_operations).where(bank_operations.c.operation_key == operation_key)
                .values(status=status, updated_at=utcnow(now)))
            review = dict(at=utcnow(now), operation_key=operation_key, actor=actor.strip()[:64], outcome=outcome,
                          reason=reason.strip()[:500], before=before, after=after)
            await conn.execute(sa.insert(bank_reviews).values(**review))
            await conn.execute(sa.insert(bank_journal).values(**journal))
            if also is not None:
                await also(conn, review)
        return review

    async def reviews_for(self, operation_key: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(bank_reviews)
                                       .where(bank_reviews.c.operation_key == operation_key)
                                       .order_by(bank_reviews.c.id))).all()
        return [dict(r._mapping) for r in rows]

    async def recent_reviews(self, limit: int = 50) -> list[dict[str, Any]]:
        """The last manual decisions, newest first, with their operation's
        kind, amount and card."""
        v, o = bank_reviews, bank_operations
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(v, o.c.kind, o.c.bank_code, o.c.amount, o.c.currency, o.c.last4, o.c.status)
                .join(o, o.c.operation_key == v.c.operation_key, isouter=True)
                .order_by(v.c.id.desc()).limit(limit))).all()
        return [dict(r._mapping) for r in rows]

    async def reversal_resolved(self, operation_key: str, now: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(bank_reversals).where(bank_reversals.c.operation_key == operation_key,
                                                bank_reversals.c.state == "acknowledged")
                .values(state="resolved", updated_at=utcnow(now)))

    # -- journal --------------------------------------------------------------

    async def journal(self, entry: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.insert(bank_journal).values(**entry))

    async def journal_for(self, operation_key: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(bank_journal)
                                       .where(bank_journal.c.operation_key == operation_key)
                                       .order_by(bank_journal.c.id))).all()
        return [dict(r._mapping) for r in rows]

    async def journal_entries(self, *, event: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(bank_journal).order_by(bank_journal.c.id)
        if event is not None:
            query = query.where(bank_journal.c.event == event)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [dict(r._mapping) for r in rows]


class NumberBlocks:
    """Hands out numbers of one sequence from blocks reserved in the database.

    `take_nowait` serves the link's network messages, which cannot wait; it
    returns None only when the block ran dry faster than it is refilled
    (refill starts when half of it is used). `next` waits for a refill."""

    def __init__(self, store: BankStore, name: str, *, block: int = 500):
        self.store = store
        self.name = name
        self.block = block
        self._next = 0
        self._last = -1
        self._spare: tuple[int, int] | None = None
        self._refill: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    async def prime(self) -> None:
        if self._last < self._next:
            await self._reserve_into_current()

    async def next(self) -> int:
        value = self.take_nowait()
        while value is None:
            if self._refill is not None:
                await asyncio.shield(self._refill)
            else:
                await self._reserve_into_current()
            value = self.take_nowait()
        return value

    def take_nowait(self) -> int | None:
        if self._next > self._last and self._spare is not None:
            self._next, self._last = self._spare
            self._spare = None
        if self._next > self._last:
            self._start_refill()
            return None
        value = self._next
        self._next += 1
        if self._spare is None and self._last - self._next < self.block // 2:
            self._start_refill()
        return value

    def _start_refill(self) -> None:
        if self._refill is None or self._refill.done():
            try:
                self._refill = asyncio.ensure_future(self._reserve_spare())
            except RuntimeError:        # no running loop (plain unit use): caller retries
                self._refill = None

    async def _reserve_spare(self) -> None:
        async with self._lock:
            if self._spare is None:
                last = await self.store.reserve(self.name, self.block)
                self._spare = (last - self.block + 1, last)

    async def _reserve_into_current(self) -> None:
        async with self._lock:
            if self._next > self._last and self._spare is None:
                last = await self.store.reserve(self.name, self.block)
                self._next, self._last = last - self.block + 1, last


class StanSource:
    """STANs (field 11) for one terminal: 000001..999999, then wrap. A
    counter that never restarts is unique within a day at any volume below a
    million messages per terminal per day, and needs no daily reset."""

    def __init__(self, store: BankStore, terminal_id: str):
        self.blocks = NumberBlocks(store, f"stan:{terminal_id}")

    @staticmethod
    def format(value: int) -> str:
        return f"{(value - 1) % 999999 + 1:06d}"

    async def prime(self) -> None:
        await self.blocks.prime()

    async def next(self) -> str:
        return self.format(await self.blocks.next())

    def take_nowait(self) -> str | None:
        value = self.blocks.take_nowait()
        return None if value is None else self.format(value)


class RrnSource:
    """RRNs (field 37): 'YDDD' (last digit of the year, day of year) and an
    8-digit counter shared by all banks, unique at below 10^8 per day."""

    def __init__(self, store: BankStore):
        self.blocks = NumberBlocks(store, "rrn")

    async def prime(self) -> None:
        await self.blocks.prime()

    async def next(self, now: float) -> str:
        value = await self.blocks.next()
        t = time.gmtime(now)
        return f"{t.tm_year % 10}{t.tm_yday:03d}{value % 100_000_000:08d}"
