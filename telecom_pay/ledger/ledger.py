"""The double-entry ledger with group commit.

Every money movement is an *operation* (one idempotency key, one public
reference) made of one or more *transfers* (legs), each debiting one account
and crediting another. All legs of an operation commit together or not at all.

Group commit: writes are queued and a writer task commits whatever has
accumulated in one database transaction, each job inside its own savepoint,
so one refused job never spoils its neighbours and each stays atomic. A job's
caller is answered only after the shared COMMIT returned, so nothing is
reported that is not durable. A COMMIT whose answer was lost (the connection
dropped during it) is looked up by the batch's marker row before anything is
redone, so no job is applied twice.

Idempotency (as Mojaloop and TigerBeetle do): a key already used with the
same content returns the original operation (`replayed=True`); used with
different content (channel and actor included) it is refused, naming the
fields that differ. A replay answers with the balances stored with the
operation when it was booked or resolved, not today's.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from twisted.logger import Logger

from telecom_pay import crashpoints
from telecom_pay.ledger.database import Database
from telecom_pay.ledger.tables import (
    ACTIVE, CLOSED, SYSTEM, T_PENDING, T_POSTED, T_VOIDED, WALLET, Stamp, accounts, ledger_batches, operations)

log = Logger(namespace="telecom_pay.ledger")

REF_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
# A batch's marker row is only read right after its COMMIT failed; older ones
# are deleted now and then by a later batch.
BATCH_MARKS_KEPT = timedelta(hours=1)
BATCH_MARKS_PRUNED_EVERY = 1000


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_ref() -> str:
    """A short public reference subscribers can read out: T + 7 symbols."""
    bits = secrets.randbits(35)           # 7 symbols of 5 bits: the alphabet has 32, so each is uniform
    return "T" + "".join(REF_ALPHABET[(bits >> (5 * i)) & 31] for i in range(7))


# ---------------------------------------------------------------- errors

class LedgerError(Exception):
    """A refusal: the ledger is unchanged."""
    code = "ledger_error"


class InsufficientFunds(LedgerError):
    code = "insufficient_funds"

    def __init__(self, account_id: int, available: int, amount: int):
        super().__init__(f"account {account_id}: available {available} < {amount}")
        self.account_id, self.available, self.amount = account_id, available, amount


class NotWithdrawable(LedgerError):
    """Consumption-only funds (from credit cards) cannot leave to a person."""
    code = "not_withdrawable"

    def __init__(self, account_id: int, withdrawable: int, amount: int):
        super().__init__(f"account {account_id}: withdrawable {withdrawable} < {amount}")
        self.account_id, self.withdrawable, self.amount = account_id, withdrawable, amount


class AccountUnavailable(LedgerError):
    code = "account_unavailable"

    def __init__(self, account_id: int, status: str):
        super().__init__(f"account {account_id} is {status}")
        self.account_id, self.status = account_id, status


class UnknownAccount(LedgerError):
    code = "unknown_account"


class IdempotencyConflict(LedgerError):
    code = "idempotency_conflict"

    def __init__(self, key: str, differs: list[str]):
        super().__init__(f"idempotency key {key!r} was used with different {', '.join(differs)}")
        self.key, self.differs = key, differs


class UnknownOperation(LedgerError):
    code = "unknown_operation"


class AlreadyResolved(LedgerError):
    """A pending operation is posted or voided once, never both."""
    code = "already_resolved"

    def __init__(self, key: str, state: str):
        super().__init__(f"operation {key!r} is already {state}")
        self.key, self.state = key, state


# ---------------------------------------------------------------- values

@dataclass(frozen=True)
class Leg:
    debit: int
    credit: int
    amount: int
    kind: str
    withdraw: bool = False            # leaves to a person or card: consumption-only funds excluded
    consumption_credit: bool = False  # credited funds are consumption-only (credit-card top-up)

    def __post_init__(self):
        if not isinstance(self.amount, int) or isinstance(self.amount, bool) or self.amount <= 0:
            raise ValueError("a leg's amount is a positive int in minor units")
        if self.debit == self.credit:
            raise ValueError("a leg needs two different accounts")

    def as_json(self) -> dict:
        return {"debit": self.debit, "credit": self.credit, "amount": self.amount, "kind": self.kind,
                "withdraw": self.withdraw, "consumption_credit": self.consumption_credit}


@dataclass(frozen=True)
class OperationRequest:
    key: str
    kind: str
    legs: tuple[Leg, ...]
    channel: str = "system"
    actor: str = "system"
    account_id: int | None = None        # the subscriber side (statements)
    counterparty_id: int | None = None
    pending: bool = False                # two-phase: reserve now, post or void later
    memo: str | None = None
    parent_id: int | None = None
    fee: int = 0
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.key or len(self.key) > 160:
            raise ValueError("an idempotency key of 1..160 characters is required")
        if not self.legs:
            raise ValueError("an operation needs at least one leg")

    @property
    def amount(self) -> int:
        return self.legs[0].amount

    def content(self) -> dict:
        """What the idempotency key stands for; compared on replays."""
        return {"kind": self.kind, "channel": self.channel, "actor": self.actor,
                "amount": self.amount, "fee": self.fee,
                "account": self.account_id, "counterparty": self.counterparty_id,
                "pending": self.pending, "memo": self.memo, "parent": self.parent_id,
                "legs": [leg.as_json() for leg in self.legs], "details": self.details}


@dataclass(frozen=True)
class Balance:
    account_id: int
    balance: int          # posted
    available: int        # balance minus pending debits: what can be spent
    withdrawable: int     # available minus consumption-only funds
    pending_in: int


@dataclass(frozen=True)
class OperationRecord:
    id: int
    ref: str
    key: str
    kind: str
    state: str
    amount: int
    fee: int
    account_id: int | None
    counterparty_id: int | None
    created_at: datetime
    request: dict
    replayed: bool = False
    balances: dict[int, Balance] = field(default_factory=dict)

    def balance_of(self, account_id: int | None) -> Balance | None:
        return self.balances.get(account_id) if account_id is not None else None


# Where an operation's request JSON keeps the balances right after it, per
# account: [balance, pending_out, pending_in, consumption].
AFTER = "after"


def _after(rows) -> dict:
    return {str(a["id"]): [a["balance"], a["pending_out"], a["pending_in"], a["consumption"]] for a in rows}


def balance_after(rec: "OperationRecord", account_id: int) -> Balance | None:
    """An account's balance right after `rec` was booked or resolved (stored
    with the operation), or None for operations stored before that."""
    after = ((rec.request or {}).get(AFTER) or {}).get(str(account_id))
    if after is None:
        return None
    b, po, pi, c = after
    return Balance(account_id, b, b - po, max(0, b - po - c), pi)


def balance_from_row(row) -> Balance:
    available = row.balance - row.pending_out
    return Balance(row.id, row.balance, available, max(0, available - row.consumption), row.pending_in)


def _balance_of(a: dict) -> Balance:
    """balance_from_row over an account dict of the booking path."""
    available = a["balance"] - a["pending_out"]
    return Balance(a["id"], a["balance"], available, max(0, available - a["consumption"]), a["pending_in"])


def _differs(old: dict, new: dict) -> list[str]:
    names = [k for k in new if k != "legs" and old.get(k) != new.get(k)]
    if not names and old.get("legs") != new.get("legs"):
        names = ["legs"]
    return names


# ---------------------------------------------------------------- ledger

class _CommitAmbiguous(Exception):
    """COMMIT raised: the batch may or may not have committed."""

    def __init__(self, cause: Exception, token: str, outcomes: list):
        super().__init__(repr(cause))
        self.cause, self.token, self.outcomes = cause, token, outcomes


@dataclass
class _Job:
    apply: Callable[[AsyncConnection], Awaitable[Any]]
    future: asyncio.Future
    savepoint: bool = True
    req: "OperationRequest | None" = None    # a plain `execute`: may be booked with its neighbours at once


class Ledger:
    """Owns the write path. `execute`, `post`, `void` and `write` are safe to
    call concurrently; they are committed in groups."""

    def __init__(self, db: Database, *, max_batch: int = 256, clock: Callable[[], datetime] = utcnow):
        self.db = db
        self.max_batch = max_batch
        self.clock = clock
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-writer")
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ledger-reader")
        self._hot_engine = None      # read_hot's autocommit connections (PostgreSQL)
        self._in_flight = 0
        self._marks = 0
        self.batches = 0
        self.jobs = 0
        self.raw_statements = 0      # statements sent on the raw driver (benchmarks count them)
        self.writer_cpu_s = 0.0      # CPU time of the writer thread committing batches
        self._sql = _Sql(db.is_sqlite)

    # -- public API

    async def execute(self, req: OperationRequest) -> OperationRecord:
        """Book an operation (posted, or pending if req.pending)."""
        return await self._enqueue(_Job(lambda conn: self.book(conn, req), None, True, req))

    async def post(self, key: str) -> OperationRecord:
        """Post a pending operation (idempotent: posting twice is fine)."""
        return await self.write(lambda conn: self._resolve(conn, key, T_POSTED))

    async def void(self, key: str) -> OperationRecord:
        """Void a pending operation, releasing its reservations (idempotent)."""
        return await self.write(lambda conn: self._resolve(conn, key, T_VOIDED))

    async def resolve_in(self, conn: "_WriterConnection", key: str, *, post: bool) -> OperationRecord:
        """Post or void a pending operation inside a running write job (see
        `write`), so the resolution commits with the job's other writes (a
        review decision, its audit row and its SMS) or not at all."""
        return await self._resolve(conn, key, T_POSTED if post else T_VOIDED)

    async def write(self, fn: Callable[[AsyncConnection], Awaitable[Any]], *, refuses: bool = True) -> Any:
        """Run `fn(conn)` atomically inside the next group commit; its result
        is returned after COMMIT. A refusal raised by fn rolls back fn only
        (a savepoint per job). `refuses=False` declares that fn raises only
        when the database fails: it then runs without a savepoint (two fewer
        statements) and a failure redoes the batch job by job."""
        return await self._enqueue(_Job(fn, None, savepoint=refuses))

    async def _enqueue(self, job: _Job) -> Any:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._run())
        job.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(job)
        return await job.future

    async def read(self, fn: Callable[[AsyncConnection], Awaitable[Any]]) -> Any:
        async with self.db.read.connect() as conn:
            return await fn(conn)

    async def read_hot(self, fn: Callable[[AsyncConnection], Awaitable[Any]]) -> Any:
        """A short read on the message path (a wallet, a merchant: `Fast`
        statements). On SQLite it runs in the writer thread on the raw
        driver, inside the next group commit: no thread hop and no async
        SQLAlchemy, which cost the reactor several times the read itself. On
        PostgreSQL (where the writer's round trips are what is scarce) it runs
        on a reader thread's own autocommit connection, on the raw driver too:
        one round trip. A refusal fn raises reaches the caller; on SQLite a
        database error fails the batch like any write job's."""
        if not self.db.is_sqlite:
            ok, value = await asyncio.get_running_loop().run_in_executor(self._readers, self._read_blocking, fn)
            if ok:
                return value
            raise value

        async def job(conn):
            try:
                return True, await fn(conn)
            except (sa.exc.DBAPIError, *_DRIVER_ERRORS):
                raise
            except Exception as exc:       # a refusal: nothing was written
                return False, exc
        ok, value = await self.write(job, refuses=False)
        if ok:
            return value
        raise value

    def _read_blocking(self, fn):
        """In a reader thread: fn driven on an autocommit connection (no
        BEGIN or ROLLBACK round trip; each statement sees committed data)."""
        if self._hot_engine is None:
            self._hot_engine = sa.create_engine(self.db.sync_write.url, pool_size=2, max_overflow=0,
                                                pool_pre_ping=True, isolation_level="AUTOCOMMIT")
        with self._hot_engine.connect() as raw:
            conn = _WriterConnection(raw, self)
            try:
                return True, _drive(fn(conn))
            except (sa.exc.DBAPIError, *_DRIVER_ERRORS):
                raise
            except Exception as exc:       # a refusal
                return False, exc
            finally:
                conn.close()

    async def balance(self, account_id: int) -> Balance:
        async def q(conn):
            row = (await conn.execute(sa.select(accounts).where(accounts.c.id == account_id))).first()
            if row is None:
                raise UnknownAccount(f"no account {account_id}")
            return balance_from_row(row)
        return await self.read(q)

    async def get_operation(self, key: str) -> OperationRecord | None:
        async def q(conn):
            row = (await conn.execute(_OPERATION_BY_KEY, {"key": key})).first()
            return None if row is None else _record(row)
        return await self.read(q)

    async def close(self) -> None:
        """Finish what was queued (every caller gets its answer), then stop and
        release the writer thread (a later write starts a new one)."""
        if self._worker is not None:
            while (self._queue is not None and not self._queue.empty()) or self._in_flight:
                await asyncio.sleep(0.001)
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None
        self._executor.shutdown(wait=False)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-writer")
        if self._hot_engine is not None:
            engine, self._hot_engine = self._hot_engine, None
            self._readers.shutdown(wait=True)
            engine.dispose()
            self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ledger-reader")

    # -- group commit

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            batch = [job]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._in_flight = len(batch)
            try:
                await self._commit(batch)
            except Exception as exc:  # the database itself failed: retry alone, then give up
                if len(batch) > 1:
                    log.warn("group commit of {n} failed ({exc!r}); retrying one by one", n=len(batch), exc=exc)
                    for j in batch:
                        try:
                            await self._commit([j])
                        except Exception as exc1:
                            if not j.future.done():
                                j.future.set_exception(exc1)
                else:
                    if not job.future.done():
                        job.future.set_exception(exc)
            finally:
                self._in_flight = 0

    async def _commit(self, batch: list[_Job]) -> None:
        """Commit `batch` and answer its callers. Raises only when nothing
        of the batch committed, so a redo cannot apply anything twice."""
        loop = asyncio.get_running_loop()
        try:
            outcomes = await loop.run_in_executor(self._executor, self._commit_blocking, batch)
        except _CommitAmbiguous as amb:
            # The COMMIT's answer was lost: it may have taken effect. Only the
            # batch's marker row tells; a batch that committed is answered with
            # what its jobs returned, one that did not may be redone.
            try:
                committed = await loop.run_in_executor(self._executor, self._batch_committed, amb.token)
            except Exception as exc:
                log.failure("cannot tell whether a batch of {n} committed", n=len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                return
            if not committed:
                raise amb.cause
            log.warn("COMMIT of a batch of {n} failed after taking effect ({exc!r})", n=len(batch), exc=amb.cause)
            outcomes = amb.outcomes
        # COMMIT has returned: the results are durable, answer the callers.
        self.batches += 1
        self.jobs += len(batch)
        for job, result, exc in outcomes:
            if job.future.done():
                continue
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

    def _commit_blocking(self, batch: list[_Job]) -> list[tuple[_Job, Any, BaseException | None]]:
        """In the writer thread: one transaction, a savepoint per job. A job
        is a coroutine over the connection; here its awaits on the connection
        complete at once, so it is driven to its end without an event loop
        and the reactor thread never waits on the database."""
        cpu0 = time.thread_time()
        try:
            return self._commit_transaction(batch)
        finally:
            self.writer_cpu_s += time.thread_time() - cpu0

    def _commit_transaction(self, batch: list[_Job]) -> list[tuple[_Job, Any, BaseException | None]]:
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        token = secrets.token_hex(16)
        with self.db.sync_write.connect() as raw:
            tx = raw.begin()
            conn = _WriterConnection(raw, self)
            try:
                i = 0
                while i < len(batch):
                    j = i
                    while j < len(batch) and batch[j].req is not None:
                        j += 1
                    if j - i >= 2:      # a run of plain executes: multi-row statements for all of them
                        booked = self._book_together(conn, batch[i:j])
                        if booked is not None:
                            outcomes.extend(booked)
                            i = j
                            continue
                    self._one_by_one(raw, conn, batch[i:max(j, i + 1)], outcomes)
                    i = max(j, i + 1)
                self._mark_batch(raw, token)
            except BaseException:
                conn.close()
                tx.rollback()
                raise
            conn.close()
            try:
                tx.commit()
            except Exception as exc:
                raw.invalidate()     # its state is unknown: never hand it out again
                raise _CommitAmbiguous(exc, token, outcomes) from exc
            if conn.moved_money:
                crashpoints.crash_point("after_ledger_commit")
        return outcomes

    def _one_by_one(self, raw, conn: "_WriterConnection", jobs: list[_Job], outcomes: list) -> None:
        """Each job in its own savepoint (unless it declared it never refuses)."""
        for job in jobs:
            for attempt in range(3):
                sp = raw.begin_nested() if job.savepoint else None
                try:
                    result = _drive(job.apply(conn))
                except _INTEGRITY_ERRORS as exc:
                    if sp is None:
                        raise     # the transaction is spoilt: the batch is retried job by job
                    sp.rollback()
                    if attempt < 2:   # a racing writer took the key or ref: look again
                        continue
                    outcomes.append((job, None, exc))
                except Exception as exc:
                    if sp is None:
                        raise     # its partial writes are in the transaction: redo without it
                    sp.rollback()
                    outcomes.append((job, None, exc))
                else:
                    if sp is not None:
                        sp.commit()
                    outcomes.append((job, result, None))
                break

    def _mark_batch(self, raw, token: str) -> None:
        now = utcnow()
        raw.execute(_INSERT_BATCH, {"token": token, "committed_at": now})
        self._marks += 1
        if self._marks % BATCH_MARKS_PRUNED_EVERY == 0:
            raw.execute(_PRUNE_BATCHES, {"before": now - BATCH_MARKS_KEPT})

    def _batch_committed(self, token: str) -> bool:
        with self.db.sync_write.connect() as raw:
            with raw.begin():
                return raw.execute(_BATCH_BY_TOKEN, {"token": token}).first() is not None

    # -- the jobs

    async def book(self, conn: "_WriterConnection", req: OperationRequest) -> OperationRecord:
        """Book `req` on `conn` inside a running write job (see `write`):
        five prebuilt statements on the raw driver (the key, the accounts
        locked in id order, the operation, its legs, the balances)."""
        [result] = self._book_many(conn, [req])
        if isinstance(result, BaseException):
            raise result
        return result

    def _book_together(self, conn: "_WriterConnection", jobs: list[_Job]) -> list | None:
        """Book a run of plain `execute` jobs with one statement of each kind
        for all of them, in a savepoint. Each job is checked, in queue order,
        against the balances its predecessors left, exactly as job by job,
        so a refused job is answered with its refusal and changes nothing.
        Returns None (nothing written) when the run must go job by job: a
        key twice in it, or the database refused a row (a reference or key
        taken meanwhile by another writer)."""
        reqs = [job.req for job in jobs]
        if len({r.key for r in reqs}) != len(reqs):
            return None
        try:
            results = self._book_many(conn, reqs, savepoint="ledger_batch")
        except _INTEGRITY_ERRORS:
            conn.run("ROLLBACK TO SAVEPOINT ledger_batch")
            conn.run("RELEASE SAVEPOINT ledger_batch")
            return None
        return [(job, None, r) if isinstance(r, BaseException) else (job, r, None) for job, r in zip(jobs, results)]

    def _book_many(self, conn: "_WriterConnection", reqs: list[OperationRequest], *,
                   savepoint: str | None = None) -> list:
        """The requests (distinct keys) booked in order: an OperationRecord or
        the LedgerError refusing it, per request. Raises only when the
        database does; its writes are then in the transaction (the caller's
        savepoint, or `savepoint` opened here and released on success, takes
        them back).

        Two round trips on PostgreSQL (pipeline mode): the reads (existing
        keys, the accounts locked in id order, operation ids drawn from
        their sequence), then every write. SQLite runs in process."""
        sql = self._sql
        results: list = [None] * len(reqs)
        ids = sorted({a for req in reqs for leg in req.legs for a in (leg.debit, leg.credit)})
        with conn.pipeline():
            if savepoint:
                conn.run(f"SAVEPOINT {savepoint}")
            found = sql.operations_by_keys(conn, [r.key for r in reqs])
            locked = sql.accounts(conn, ids, lock=True)
            new_ids = sql.operation_ids(conn, len(reqs))
        existing = {row.idempotency_key: row for row in found()}
        rows = {r["id"]: r for r in locked()}
        todo = []
        for n, req in enumerate(reqs):
            row = existing.get(req.key)
            if row is None:
                todo.append(n)
                continue
            # channel and actor have their own columns (rows booked before they
            # were part of the content lack them in the request JSON)
            differs = _differs({**row.request, "channel": row.channel, "actor": row.actor}, req.content())
            results[n] = IdempotencyConflict(req.key, differs) if differs else self._replay_record(conn, row)

        booked = []          # (n, req, state, ref, now, stored, parts, balances)
        touched: dict[int, datetime] = {}
        for n in todo:
            req = reqs[n]
            try:
                work, parts = _apply_legs(rows, req)
            except LedgerError as exc:
                results[n] = exc
                continue
            rows.update(work)
            now = self.clock()
            for i in work:
                touched[i] = now
            state = T_PENDING if req.pending else T_POSTED
            stored = {**req.content(), AFTER: _after(work.values())}
            balances = {i: _balance_of(a) for i, a in work.items()}
            # 32^7 references: a collision is rare enough to be handled by the
            # unique constraint (the job is retried with a new reference).
            booked.append((n, req, state, new_ref(), now, stored, parts, balances))

        with conn.pipeline():
            if booked:
                op_ids = sql.insert_operations(conn, [
                    (ref, req.key, req.kind, req.channel, req.actor, req.account_id, req.counterparty_id,
                     req.amount, req.fee, state, stored, req.memo, req.parent_id, now,
                     None if req.pending else now)
                    for _n, req, state, ref, now, stored, _p, _b in booked], new_ids())
                conn.moved_money = True
                sql.insert_transfers(conn, [
                    (op_ids[req.key], i, leg.kind, leg.debit, leg.credit, leg.amount, parts[i],
                     leg.consumption_credit, state, now, None if req.pending else now)
                    for _n, req, state, _r, now, _s, parts, _b in booked for i, leg in enumerate(req.legs)])
                sql.store_balances(conn, [rows[i] for i in sorted(touched)], touched)
            if savepoint:
                conn.run(f"RELEASE SAVEPOINT {savepoint}")
        for n, req, state, ref, now, stored, _p, balances in booked:
            results[n] = OperationRecord(op_ids[req.key], ref, req.key, req.kind, state, req.amount, req.fee,
                                         req.account_id, req.counterparty_id, now, stored, balances=balances)
        return results

    async def _resolve(self, conn: "_WriterConnection", key: str, target: str) -> OperationRecord:
        sql = self._sql
        op = sql.operation_by_key(conn, key, lock=True)
        if op is None:
            raise UnknownOperation(f"no operation with key {key!r}")
        if op.state == target:
            return self._replay_record(conn, op)
        if op.state != T_PENDING:
            raise AlreadyResolved(key, op.state)
        now = self.clock()
        legs = sql.legs_of(conn, op.id)
        ids = sorted({l.debit_account_id for l in legs} | {l.credit_account_id for l in legs})
        rows = {r["id"]: r for r in sql.accounts(conn, ids, lock=True)()}
        for leg in legs:
            d, c = rows[leg.debit_account_id], rows[leg.credit_account_id]
            d["pending_out"] -= leg.amount
            c["pending_in"] -= leg.amount
            if target == T_POSTED:
                d["balance"] -= leg.amount
                c["balance"] += leg.amount
                if leg.consumption_credit and c["kind"] == WALLET:
                    c["consumption"] += leg.amount
            else:
                d["consumption"] += leg.consumption_part
        sql.store_balances(conn, list(rows.values()), dict.fromkeys(rows, now))
        sql.resolve_transfers(conn, op.id, target, now)
        stored = {**op.request, AFTER: _after(rows.values())}
        sql.resolve_operation(conn, op.id, target, now, stored)
        conn.moved_money = True
        rec = _record(op)
        rec = OperationRecord(**{**rec.__dict__, "state": target, "request": stored})
        return _with(rec, {i: balance_from_row(_Row(rows[i])) for i in ids})

    async def _replayed(self, conn, row) -> OperationRecord:
        return self._replay_record(conn, row)

    def _replay_record(self, conn, row) -> OperationRecord:
        """A committed operation as it was answered: the balances right after
        it (stored with it), so a replay tells what the original told."""
        after = (row.request or {}).get(AFTER)
        rec = _record(row, replayed=True)
        if after is None:       # booked before balances were stored with operations: today's
            ids = sorted({i for i in (rec.account_id, rec.counterparty_id) if i is not None})
            if not ids:
                return rec
            return _with(rec, {a["id"]: balance_from_row(_Row(a)) for a in self._sql.accounts(conn, ids, lock=False)()})
        return _with(rec, {int(i): balance_after(rec, int(i)) for i in after})


# Statements built once: constructing them per call costs more than running them.
# SQLAlchemy keeps the cold paths (reads, the batch marker); the booking path
# runs on the raw driver with the strings of `_Sql`.
_OPERATION_BY_KEY = sa.select(operations).where(operations.c.idempotency_key == sa.bindparam("key"))
_INSERT_BATCH = ledger_batches.insert()
_BATCH_BY_TOKEN = sa.select(ledger_batches.c.token).where(ledger_batches.c.token == sa.bindparam("token"))
_PRUNE_BATCHES = ledger_batches.delete().where(ledger_batches.c.committed_at < sa.bindparam("before"))

try:
    import psycopg
    _INTEGRITY_ERRORS: tuple = (IntegrityError, sqlite3.IntegrityError, psycopg.IntegrityError)
    _DRIVER_ERRORS: tuple = (sqlite3.Error, psycopg.Error)
except ImportError:  # pragma: no cover - SQLite-only installs
    _INTEGRITY_ERRORS = (IntegrityError, sqlite3.IntegrityError)
    _DRIVER_ERRORS = (sqlite3.Error,)


def _apply_legs(rows: dict[int, dict], req: OperationRequest) -> tuple[dict[int, dict], list[int]]:
    """`req`'s legs applied to copies of the accounts it touches (sorted by
    id), with the consumption-only part each leg spends; raises the refusal,
    leaving `rows` as they were."""
    ids = sorted({leg.debit for leg in req.legs} | {leg.credit for leg in req.legs})
    missing = [i for i in ids if i not in rows]
    if missing:
        raise UnknownAccount(f"no account {missing}")
    work = {i: dict(rows[i]) for i in ids}
    parts: list[int] = []
    for leg in req.legs:
        d, c = work[leg.debit], work[leg.credit]
        if d["status"] != ACTIVE and d["kind"] != SYSTEM:
            raise AccountUnavailable(d["id"], d["status"])
        if c["status"] == CLOSED:
            raise AccountUnavailable(c["id"], c["status"])
        available = d["balance"] - d["pending_out"]
        if not d["allow_negative"]:
            if available < leg.amount:
                raise InsufficientFunds(d["id"], available, leg.amount)
            if leg.withdraw and available - d["consumption"] < leg.amount:
                raise NotWithdrawable(d["id"], max(0, available - d["consumption"]), leg.amount)
        part = 0 if (leg.withdraw or d["allow_negative"]) else min(d["consumption"], leg.amount)
        parts.append(part)
        d["consumption"] -= part
        if req.pending:
            d["pending_out"] += leg.amount
            c["pending_in"] += leg.amount
        else:
            d["balance"] -= leg.amount
            c["balance"] += leg.amount
            if leg.consumption_credit and c["kind"] == WALLET:
                c["consumption"] += leg.amount
    return work, parts


_OP_COLS = ("id", "ref", "idempotency_key", "kind", "channel", "actor", "account_id", "counterparty_id", "amount",
            "fee", "state", "request", "memo", "parent_id", "created_at", "resolved_at")
_OP_INSERT = _OP_COLS[1:]
_OP_PG_INSERT = ("id",) + _OP_INSERT
_ACCOUNT_COLS = ("id", "kind", "status", "balance", "pending_out", "pending_in", "consumption", "allow_negative")
_LEG_COLS = ("operation_id", "leg", "kind", "debit_account_id", "credit_account_id", "amount", "consumption_part",
             "consumption_credit", "state", "created_at", "resolved_at")
_LEG_READ = ("leg", "debit_account_id", "credit_account_id", "amount", "consumption_part", "consumption_credit")
_UTC = timezone.utc


_LAST_ISO: list = [(None, None)]


def _iso(value: datetime | None) -> str | None:
    """An instant as text PostgreSQL reads back to the same microsecond
    (UTC, as UtcStamp binds it). The legs and balances of one operation share
    its instant: the last one converted is remembered (as one pair, swapped
    whole, so writers of other ledgers in other threads cannot mix them)."""
    if value is None:
        return None
    last, text = _LAST_ISO[0]
    if last is value:
        return text
    text = Stamp.process_bind_param(value, None).isoformat()
    _LAST_ISO[0] = (value, text)
    return text


class _Sql:
    """The booking path's statements as prebuilt strings for the raw driver,
    and the values in the exact stored form SQLAlchemy's types write, so rows
    read back through SQLAlchemy are the same either way: instants as UtcStamp
    binds them (UTC; on SQLite the text "YYYY-MM-DD HH:MM:SS.ffffff"), JSON
    as json.dumps writes it (what SQLAlchemy sends on both backends; the
    PostgreSQL json type keeps the text as given), booleans as 0/1 on SQLite.

    SQLite (in process, C bindings) gets multi-row VALUES with one parameter
    per value, built once per row count. PostgreSQL gets each multi-row
    statement as one constant text taking the whole batch as one JSON
    parameter (`json_to_recordset`), or an id array literal: psycopg then
    prepares each statement once, and a batch is dumped by json.dumps in C
    instead of psycopg's per-value Python work (measured: one parameter per
    value, or one array per column, cost this writer more than all its other
    work per operation together)."""

    # SQLite allows 32766 parameters per statement, PostgreSQL 65535.
    MAX_PARAMS = 30000

    def __init__(self, sqlite: bool):
        self.sqlite = sqlite
        self.ph = ph = "?" if sqlite else "%s"
        cols = ", ".join(_OP_COLS)
        self._op_by_key = f"SELECT {cols} FROM operations WHERE idempotency_key = {ph}"
        self._op_by_key_locked = self._op_by_key + ("" if sqlite else " FOR UPDATE")
        self._ops_by_keys = f"SELECT {cols} FROM operations WHERE idempotency_key IN "
        lock = "" if sqlite else " FOR UPDATE"
        self._accounts = f"SELECT {', '.join(_ACCOUNT_COLS)} FROM accounts WHERE id IN {{}} ORDER BY id"
        self._accounts_locked = self._accounts + lock
        self._legs_of = f"SELECT {', '.join(_LEG_READ)} FROM transfers WHERE operation_id = {ph} ORDER BY leg"
        self._resolve_legs = f"UPDATE transfers SET state = {ph}, resolved_at = {ph} WHERE operation_id = {ph}"
        js = "?" if sqlite else "%s::json"
        self._resolve_op = f"UPDATE operations SET state = {ph}, resolved_at = {ph}, request = {js} WHERE id = {ph}"
        op_row = [ph] * len(_OP_INSERT)
        op_row[_OP_INSERT.index("request")] = js
        self._op_row = "(" + ", ".join(op_row) + ")"
        self._insert_ops = f"INSERT INTO operations ({', '.join(_OP_INSERT)}) VALUES {{}} RETURNING id, idempotency_key"
        self._leg_row = "(" + ", ".join([ph] * len(_LEG_COLS)) + ")"
        self._insert_legs = f"INSERT INTO transfers ({', '.join(_LEG_COLS)}) VALUES {{}}"
        if sqlite:
            self._store_row = "(?, ?, ?, ?, ?, ?)"
            v = "v.column"
            self._store = (f"UPDATE accounts SET balance = {v}2, pending_out = {v}3, pending_in = {v}4, "
                           f"consumption = {v}5, updated_at = {v}6 FROM (VALUES {{}}) AS v WHERE accounts.id = {v}1")
        else:
            self._store_row = "(%s::bigint, %s::bigint, %s::bigint, %s::bigint, %s::bigint, %s::timestamptz)"
            self._store = ("UPDATE accounts AS a SET balance = v.balance, pending_out = v.pending_out, "
                           "pending_in = v.pending_in, consumption = v.consumption, updated_at = v.updated_at "
                           "FROM (VALUES {}) AS v(id, balance, pending_out, pending_in, consumption, updated_at) "
                           "WHERE a.id = v.id")
        self._cache: dict[tuple, str] = {}
        if not sqlite:
            def record(cols_types):
                return "json_to_recordset(%s::json) AS v(" + ", ".join(f"{c} {t}" for c, t in cols_types) + ")"
            self._pg_ops_by_keys = (f"SELECT {cols} FROM operations WHERE idempotency_key = "
                                    "ANY(ARRAY(SELECT json_array_elements_text(%s::json)))")
            self._pg_accounts = (f"SELECT {', '.join(_ACCOUNT_COLS)} FROM accounts "
                                 "WHERE id = ANY(%s::bigint[]) ORDER BY id")
            self._pg_accounts_locked = self._pg_accounts + " FOR UPDATE"
            op_types = dict(zip(_OP_PG_INSERT, ("bigint", "text", "text", "text", "text", "text", "bigint", "bigint",
                                                "bigint", "bigint", "text", "json", "text", "bigint", "timestamptz",
                                                "timestamptz")))
            self._pg_insert_ops = (f"INSERT INTO operations ({', '.join(_OP_PG_INSERT)}) SELECT "
                                   + ", ".join(f"v.{c}" for c in _OP_PG_INSERT) + f" FROM {record(op_types.items())}")
            self._pg_op_ids = ("SELECT nextval(pg_get_serial_sequence('operations', 'id')) "
                               "FROM generate_series(1, %s)")
            leg_types = dict(zip(_LEG_COLS, ("bigint", "integer", "text", "bigint", "bigint", "bigint", "bigint",
                                             "boolean", "text", "timestamptz", "timestamptz")))
            self._pg_insert_legs = (f"INSERT INTO transfers ({', '.join(_LEG_COLS)}) SELECT "
                                    + ", ".join(f"v.{c}" for c in _LEG_COLS) + f" FROM {record(leg_types.items())}")
            self._pg_store = ("UPDATE accounts AS a SET balance = v.balance, pending_out = v.pending_out, "
                              "pending_in = v.pending_in, consumption = v.consumption, updated_at = v.updated_at "
                              "FROM " + record([("id", "bigint"), ("balance", "bigint"), ("pending_out", "bigint"),
                                                ("pending_in", "bigint"), ("consumption", "bigint"),
                                                ("updated_at", "timestamptz")]) + " WHERE a.id = v.id")

    # -- values

    def stamp(self, value: datetime):
        value = Stamp.process_bind_param(value, None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if self.sqlite else value

    @staticmethod
    def json(value) -> str:
        return json.dumps(value)

    def _read_stamp(self, value):
        if value is None:
            return None
        if isinstance(value, str):
            return datetime.fromisoformat(value).replace(tzinfo=_UTC)
        return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)

    def _operation(self, t) -> "_Row":
        row = _Row(dict(zip(_OP_COLS, t)))
        if isinstance(row.request, str):
            row.request = json.loads(row.request)
        row.created_at = self._read_stamp(row.created_at)
        row.resolved_at = self._read_stamp(row.resolved_at)
        return row

    def _sized(self, template: str, row: str, n: int) -> str:
        """`template` with n copies of `row` (a VALUES list or an IN list)."""
        sql = self._cache.get((template, n))
        if sql is None:
            sql = self._cache[(template, n)] = template.format(", ".join([row] * n))
        return sql

    def _chunks(self, rows: list, width: int):
        step = max(1, self.MAX_PARAMS // width)
        for i in range(0, len(rows), step):
            yield rows[i:i + step]

    # -- statements

    def operation_by_key(self, conn, key: str, *, lock: bool) -> "_Row | None":
        t = conn.run(self._op_by_key_locked if lock else self._op_by_key, (key,)).fetchone()
        return None if t is None else self._operation(t)

    def operations_by_keys(self, conn, keys: list[str]) -> Callable[[], list["_Row"]]:
        """Sends the query; the returned function reads its rows (after a pipeline)."""
        if not self.sqlite:
            cur = conn.query(self._pg_ops_by_keys, (json.dumps(keys),))
            return lambda: [self._operation(t) for t in cur.fetchall()]
        out = []
        for part in self._chunks(keys, 1):
            sql = self._sized(self._ops_by_keys + "({})", self.ph, len(part))
            out.extend(self._operation(t) for t in conn.run(sql, part).fetchall())
        return lambda: out

    def accounts(self, conn, ids: list[int], *, lock: bool) -> Callable[[], list[dict]]:
        """In id order; locked (FOR UPDATE, in that order, so writers never
        deadlock) on PostgreSQL. SQLite's writer holds the database lock.
        Sends the query; the returned function reads its rows."""
        if not self.sqlite:
            literal = "{" + ",".join(map(str, ids)) + "}"
            cur = conn.query(self._pg_accounts_locked if lock else self._pg_accounts, (literal,))
            return lambda: [dict(zip(_ACCOUNT_COLS, t)) for t in cur.fetchall()]
        template = (self._accounts_locked if lock else self._accounts).replace("IN {}", "IN ({})")
        out = []
        for part in self._chunks(ids, 1):
            out.extend(dict(zip(_ACCOUNT_COLS, t)) for t in conn.run(self._sized(template, self.ph, len(part)),
                                                                     part).fetchall())
        return lambda: out

    def operation_ids(self, conn, n: int) -> Callable[[], list[int] | None]:
        """PostgreSQL: n ids drawn from the operations' sequence, so the
        legs can be written in the same round trip as their operations (an
        unused id is a gap, as a rolled-back insert leaves). SQLite: None
        (ids come back from the insert)."""
        if self.sqlite:
            return lambda: None
        cur = conn.query(self._pg_op_ids, (n,))
        return lambda: [t[0] for t in cur.fetchall()]

    def legs_of(self, conn, op_id: int) -> list["_Row"]:
        return [_Row(dict(zip(_LEG_READ, t))) for t in conn.run(self._legs_of, (op_id,)).fetchall()]

    def insert_operations(self, conn, ops: list[tuple], ids: list[int] | None) -> dict[str, int]:
        """Rows in `_OP_INSERT` order (request a dict, instants datetimes),
        with the ids from `operation_ids`; returns key -> id."""
        stamp, js = self.stamp, self.json
        if not self.sqlite:
            iso = _iso
            # the request nested as JSON: a json column keeps that slice of the text as
            # it is, which json.dumps writes exactly as it writes the object alone
            doc = json.dumps([dict(zip(_OP_PG_INSERT, (op_id, *o[:13], iso(o[13]), iso(o[14]))))
                              for op_id, o in zip(ids, ops)])
            conn.run(self._pg_insert_ops, (doc,))
            return {o[1]: op_id for op_id, o in zip(ids, ops)}
        got = {}
        for part in self._chunks(ops, len(_OP_INSERT)):
            params = []
            for o in part:
                params.extend(o[:10])
                params.extend((js(o[10]), o[11], o[12], stamp(o[13]), None if o[14] is None else stamp(o[14])))
            sql = self._sized(self._insert_ops, self._op_row, len(part))
            got.update((key, op_id) for op_id, key in conn.run(sql, params).fetchall())
        return got

    def insert_transfers(self, conn, legs: list[tuple]) -> None:
        stamp, sqlite = self.stamp, self.sqlite
        if not sqlite:
            iso = _iso
            doc = json.dumps([dict(zip(_LEG_COLS, (*l[:9], iso(l[9]), iso(l[10])))) for l in legs])
            conn.run(self._pg_insert_legs, (doc,))
            return
        for part in self._chunks(legs, len(_LEG_COLS)):
            params = []
            for l in part:
                params.extend(l[:7])
                params.extend((int(l[7]) if sqlite else l[7], l[8], stamp(l[9]),
                               None if l[10] is None else stamp(l[10])))
            conn.run(self._sized(self._insert_legs, self._leg_row, len(part)), params)

    def store_balances(self, conn, rows: list[dict], when: dict[int, datetime]) -> None:
        """The accounts' balance columns as they now stand, each stamped with
        the instant of the last operation that touched it."""
        if not self.sqlite:
            doc = json.dumps([{"id": a["id"], "balance": a["balance"], "pending_out": a["pending_out"],
                               "pending_in": a["pending_in"], "consumption": a["consumption"],
                               "updated_at": _iso(when[a["id"]])} for a in rows])
            conn.run(self._pg_store, (doc,))
            return
        for part in self._chunks(rows, 6):
            params = []
            for a in part:
                params.extend((a["id"], a["balance"], a["pending_out"], a["pending_in"], a["consumption"],
                               self.stamp(when[a["id"]])))
            conn.run(self._sized(self._store, self._store_row, len(part)), params)

    def resolve_transfers(self, conn, op_id: int, state: str, now: datetime) -> None:
        conn.run(self._resolve_legs, (state, self.stamp(now), op_id))

    def resolve_operation(self, conn, op_id: int, state: str, now: datetime, request: dict) -> None:
        conn.run(self._resolve_op, (state, self.stamp(now), self.json(request), op_id))


class _WriterConnection:
    """What a write job sees in the writer thread: the awaitable interface of
    an AsyncConnection (execute, begin_nested, dialect) over a blocking one,
    and the raw driver cursor of the same connection (same transaction) for
    the ledger's own prebuilt statements (`run`, `run_many`)."""

    def __init__(self, conn, ledger: "Ledger"):
        self._conn = conn
        self._ledger = ledger
        self._cursor = None
        self.dialect = conn.dialect
        self.moved_money = False      # an operation was booked, posted or voided (crash points)
        self._savepoints = 0

    def cursor(self):
        """The DB-API cursor (sqlite3 or psycopg 3) of this connection."""
        if self._cursor is None:
            self._cursor = self._conn.connection.dbapi_connection.cursor()
        return self._cursor

    def close(self) -> None:
        """Release the raw cursor (before COMMIT: SQLite keeps a statement
        that was not reset from letting the connection go)."""
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None

    def pipeline(self):
        """psycopg's pipeline mode (statements sent without waiting for each
        answer; the block's end waits once), nothing on SQLite."""
        if self.dialect.name == "sqlite":
            return contextlib.nullcontext()
        return self._conn.connection.dbapi_connection.pipeline()

    def query(self, sql: str, params=()):
        """A statement whose rows are read later (its own cursor)."""
        self._ledger.raw_statements += 1
        cur = self._conn.connection.dbapi_connection.cursor()
        cur.execute(sql, params)
        return cur

    def run(self, sql: str, params=()):
        self._ledger.raw_statements += 1
        cur = self.cursor()
        cur.execute(sql, params)
        return cur

    def run_many(self, sql: str, rows) -> None:
        self._ledger.raw_statements += 1
        self.cursor().executemany(sql, rows)

    async def execute(self, statement, *args, **kwargs):
        if crashpoints.armed is not None and getattr(statement, "table", None) is operations:
            self.moved_money = True
        return self._conn.execute(statement, *args, **kwargs)

    def begin_nested(self) -> "_Savepoint":
        """A savepoint on the raw driver (SQLAlchemy's costs a round of its
        own bookkeeping per statement; nothing here needs it to know)."""
        self._savepoints += 1
        return _Savepoint(self, f"job_sp_{self._savepoints}")


class _Savepoint:
    """Usable as `sp = await conn.begin_nested()` and `async with ...`."""

    def __init__(self, conn: "_WriterConnection", name: str):
        self._conn, self._name = conn, name
        conn.run(f"SAVEPOINT {name}")

    def __await__(self):
        return self
        yield  # noqa: unreachable - makes __await__ a generator

    def _release(self) -> None:
        self._conn.run(f"RELEASE SAVEPOINT {self._name}")

    def _roll_back(self) -> None:
        self._conn.run(f"ROLLBACK TO SAVEPOINT {self._name}")
        self._conn.run(f"RELEASE SAVEPOINT {self._name}")

    async def commit(self) -> None:
        self._release()

    async def rollback(self) -> None:
        self._roll_back()

    async def __aenter__(self) -> "_Savepoint":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self._release()
        else:
            self._roll_back()
        return False


def _drive(coro):
    """Run a write job's coroutine to its end; it may only await its connection."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a ledger write job awaited something other than its connection")


class _Row:
    """Attribute access over a dict, for balance_from_row."""
    def __init__(self, d: dict):
        self.__dict__.update(d)


def _record(row, replayed: bool = False) -> OperationRecord:
    return OperationRecord(row.id, row.ref, row.idempotency_key, row.kind, row.state, row.amount,
                           row.fee, row.account_id, row.counterparty_id, row.created_at, row.request,
                           replayed=replayed)


def _with(rec: OperationRecord, balances: dict[int, Balance]) -> OperationRecord:
    return OperationRecord(**{**rec.__dict__, "balances": balances})
