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
import secrets
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
    ACTIVE, CLOSED, SYSTEM, T_PENDING, T_POSTED, T_VOIDED, WALLET, accounts, ledger_batches, operations,
    transfers)

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
    return "T" + "".join(secrets.choice(REF_ALPHABET) for _ in range(7))


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
        self._in_flight = 0
        self._marks = 0
        self.batches = 0
        self.jobs = 0

    # -- public API

    async def execute(self, req: OperationRequest) -> OperationRecord:
        """Book an operation (posted, or pending if req.pending)."""
        return await self.write(lambda conn: self.book(conn, req))

    async def post(self, key: str) -> OperationRecord:
        """Post a pending operation (idempotent: posting twice is fine)."""
        return await self.write(lambda conn: self._resolve(conn, key, T_POSTED))

    async def void(self, key: str) -> OperationRecord:
        """Void a pending operation, releasing its reservations (idempotent)."""
        return await self.write(lambda conn: self._resolve(conn, key, T_VOIDED))

    async def write(self, fn: Callable[[AsyncConnection], Awaitable[Any]], *, refuses: bool = True) -> Any:
        """Run `fn(conn)` atomically inside the next group commit; its result
        is returned after COMMIT. A refusal raised by fn rolls back fn only
        (a savepoint per job). `refuses=False` declares that fn raises only
        when the database fails: it then runs without a savepoint (two fewer
        statements) and a failure redoes the batch job by job."""
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._run())
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(fn, fut, savepoint=refuses))
        return await fut

    async def read(self, fn: Callable[[AsyncConnection], Awaitable[Any]]) -> Any:
        async with self.db.read.connect() as conn:
            return await fn(conn)

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
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        token = secrets.token_hex(16)
        with self.db.sync_write.connect() as raw:
            tx = raw.begin()
            try:
                conn = _WriterConnection(raw)
                for job in batch:
                    for attempt in range(3):
                        sp = raw.begin_nested() if job.savepoint else None
                        try:
                            result = _drive(job.apply(conn))
                        except IntegrityError as exc:
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
                self._mark_batch(raw, token)
            except BaseException:
                tx.rollback()
                raise
            try:
                tx.commit()
            except Exception as exc:
                raw.invalidate()     # its state is unknown: never hand it out again
                raise _CommitAmbiguous(exc, token, outcomes) from exc
            if conn.moved_money:
                crashpoints.crash_point("after_ledger_commit")
        return outcomes

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

    async def book(self, conn: AsyncConnection, req: OperationRequest) -> OperationRecord:
        """Book `req` on `conn` inside a running write job (see `write`)."""
        content = req.content()
        row = (await conn.execute(_OPERATION_BY_KEY, {"key": req.key})).first()
        if row is not None:
            # channel and actor have their own columns (rows booked before they
            # were part of the content lack them in the request JSON)
            differs = _differs({**row.request, "channel": row.channel, "actor": row.actor}, content)
            if differs:
                raise IdempotencyConflict(req.key, differs)
            return await self._replayed(conn, row)

        now = self.clock()
        ids = sorted({leg.debit for leg in req.legs} | {leg.credit for leg in req.legs})
        q = _ACCOUNTS_BY_ID if self.db.is_sqlite else _ACCOUNTS_BY_ID_LOCKED
        rows = {r.id: dict(r._mapping) for r in (await conn.execute(q, {"ids": ids}))}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise UnknownAccount(f"no account {missing}")

        parts: list[int] = []
        for leg in req.legs:
            d, c = rows[leg.debit], rows[leg.credit]
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

        state = T_PENDING if req.pending else T_POSTED
        balances = {i: balance_from_row(_Row(rows[i])) for i in ids}
        stored = {**content, AFTER: _after(rows.values())}
        # 32^7 references: a collision is rare enough to be handled by the
        # unique constraint (the job is retried with a new reference).
        ref = new_ref()
        op_id = (await conn.execute(_INSERT_OPERATION, dict(
            ref=ref, idempotency_key=req.key, kind=req.kind, channel=req.channel, actor=req.actor,
            account_id=req.account_id, counterparty_id=req.counterparty_id, amount=req.amount,
            fee=req.fee, state=state, request=stored, memo=req.memo, parent_id=req.parent_id,
            created_at=now, resolved_at=None if req.pending else now,
        ))).scalar_one()
        await conn.execute(_INSERT_TRANSFER, [
            dict(operation_id=op_id, leg=i, kind=leg.kind, debit_account_id=leg.debit,
                 credit_account_id=leg.credit, amount=leg.amount, consumption_part=parts[i],
                 consumption_credit=leg.consumption_credit, state=state, created_at=now,
                 resolved_at=None if req.pending else now)
            for i, leg in enumerate(req.legs)])
        await _store_balances(conn, rows.values(), now)
        rec = OperationRecord(op_id, ref, req.key, req.kind, state, req.amount, req.fee, req.account_id,
                              req.counterparty_id, now, stored)
        return _with(rec, balances)

    async def _resolve(self, conn: AsyncConnection, key: str, target: str) -> OperationRecord:
        q = sa.select(operations).where(operations.c.idempotency_key == key)
        if not self.db.is_sqlite:
            q = q.with_for_update()
        op = (await conn.execute(q)).first()
        if op is None:
            raise UnknownOperation(f"no operation with key {key!r}")
        if op.state == target:
            return await self._replayed(conn, op)
        if op.state != T_PENDING:
            raise AlreadyResolved(key, op.state)
        now = self.clock()
        legs = (await conn.execute(sa.select(transfers).where(transfers.c.operation_id == op.id)
                                   .order_by(transfers.c.leg))).all()
        ids = sorted({l.debit_account_id for l in legs} | {l.credit_account_id for l in legs})
        aq = sa.select(accounts).where(accounts.c.id.in_(ids)).order_by(accounts.c.id)
        if not self.db.is_sqlite:
            aq = aq.with_for_update()
        rows = {r.id: dict(r._mapping) for r in (await conn.execute(aq))}
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
        await _store_balances(conn, rows.values(), now)
        await conn.execute(transfers.update().where(transfers.c.operation_id == op.id)
                           .values(state=target, resolved_at=now))
        stored = {**op.request, AFTER: _after(rows.values())}
        await conn.execute(operations.update().where(operations.c.id == op.id)
                           .values(state=target, resolved_at=now, request=stored))
        rec = _record(op)
        rec = OperationRecord(**{**rec.__dict__, "state": target, "request": stored})
        return _with(rec, {i: balance_from_row(_Row(rows[i])) for i in ids})

    async def _replayed(self, conn, row) -> OperationRecord:
        """A committed operation as it was answered: the balances right after
        it (stored with it), so a replay tells what the original told."""
        after = (row.request or {}).get(AFTER)
        rec = _record(row, replayed=True)
        if after is None:       # booked before balances were stored with operations
            return await self._with_balances(conn, rec)
        return _with(rec, {int(i): balance_after(rec, int(i)) for i in after})

    async def _with_balances(self, conn, rec: OperationRecord) -> OperationRecord:
        ids = [i for i in (rec.account_id, rec.counterparty_id) if i is not None]
        if not ids:
            return rec
        rows = (await conn.execute(sa.select(accounts).where(accounts.c.id.in_(ids)))).all()
        return _with(rec, {r.id: balance_from_row(r) for r in rows})


# Statements built once: constructing them per call costs more than running them.
_OPERATION_BY_KEY = sa.select(operations).where(operations.c.idempotency_key == sa.bindparam("key"))
_ACCOUNTS_BY_ID = (sa.select(accounts).where(accounts.c.id.in_(sa.bindparam("ids", expanding=True)))
                   .order_by(accounts.c.id))
_ACCOUNTS_BY_ID_LOCKED = _ACCOUNTS_BY_ID.with_for_update()
_INSERT_OPERATION = operations.insert().returning(operations.c.id)
_INSERT_TRANSFER = transfers.insert()
_INSERT_BATCH = ledger_batches.insert()
_BATCH_BY_TOKEN = sa.select(ledger_batches.c.token).where(ledger_batches.c.token == sa.bindparam("token"))
_PRUNE_BATCHES = ledger_batches.delete().where(ledger_batches.c.committed_at < sa.bindparam("before"))
_STORE_BALANCES = accounts.update().where(accounts.c.id == sa.bindparam("_id")).values(
    balance=sa.bindparam("_balance"), pending_out=sa.bindparam("_pending_out"),
    pending_in=sa.bindparam("_pending_in"), consumption=sa.bindparam("_consumption"),
    updated_at=sa.bindparam("_now"))


async def _store_balances(conn, rows, now) -> None:
    """One executemany for every account an operation touched."""
    await conn.execute(_STORE_BALANCES, [
        {"_id": a["id"], "_balance": a["balance"], "_pending_out": a["pending_out"],
         "_pending_in": a["pending_in"], "_consumption": a["consumption"], "_now": now} for a in rows])


class _WriterConnection:
    """What a write job sees in the writer thread: the awaitable interface of
    an AsyncConnection (execute, begin_nested, dialect) over a blocking one."""

    def __init__(self, conn):
        self._conn = conn
        self.dialect = conn.dialect
        self.moved_money = False      # an operation was booked, posted or voided (crash points)

    async def execute(self, statement, *args, **kwargs):
        if crashpoints.armed is not None and getattr(statement, "table", None) is operations:
            self.moved_money = True
        return self._conn.execute(statement, *args, **kwargs)

    def begin_nested(self) -> "_Savepoint":
        return _Savepoint(self._conn.begin_nested())


class _Savepoint:
    """Usable as `sp = await conn.begin_nested()` and `async with ...`."""

    def __init__(self, sp):
        self._sp = sp

    def __await__(self):
        return self
        yield  # noqa: unreachable - makes __await__ a generator

    async def commit(self) -> None:
        self._sp.commit()

    async def rollback(self) -> None:
        self._sp.rollback()

    async def __aenter__(self) -> "_Savepoint":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self._sp.commit()
        else:
            self._sp.rollback()
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
