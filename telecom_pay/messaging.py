"""The durable message record every text channel uses: inbound messages
(recorded before they are acknowledged, deduplicated on a key the channel
derives from the carrier's identity of the message) and the outbox of
replies (recorded in the same transaction that marks the inbound message
processed, sent until the carrier accepts, then tracked to delivery).

It writes through the ledger's group commit, so a burst of messages shares
commits with the payments it carries. A message that will not be answered
(its sender is not a mobile number) is recorded `failed` with the reason.
Rows store no secrets: the channel masks PIN answers before the insert, and
a credential reply (`secret`) loses its text once the SMSC accepted it.

Several daemon instances may share one database. The right to answer an
inbound message, or to send an outbox row, is a lease held in the row
(`claimed_by`, `claimed_until`): an instance records a message, or queues
a reply it sends at once, already claimed by itself; its pump renews what
it holds; a row whose lease ran out (its instance died) is claimed by
another with one UPDATE over `FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite
has one writer). Leases are compared on the instances' clocks, so the
lease must be long against their skew.
"""
from __future__ import annotations

import asyncio
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable

import sqlalchemy as sa

from telecom_pay.ledger.fastsql import Fast, PerDialect
from telecom_pay.ledger.ledger import Ledger, utcnow
from telecom_pay.ledger.tables import Stamp

metadata = sa.MetaData()
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

inbound_messages = sa.Table(
    "inbound_messages", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("msisdn", sa.String(20), nullable=False),
    sa.Column("dedup_key", sa.String(160), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("state", sa.String(10), nullable=False),        # received | processed | failed
    sa.Column("received_at", Stamp, nullable=False),
    sa.Column("processed_at", Stamp),
    sa.Column("error", sa.String(200)),                        # why a failed message is not answered
    # the instance answering it, and until when (its lease; see the module's docstring)
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_until", Stamp),
    sa.UniqueConstraint("dedup_key", name="uq_inbound_dedup"),
)
outbox = sa.Table(
    "outbox", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("msisdn", sa.String(20), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("inbound_id", Id, sa.ForeignKey("inbound_messages.id")),
    sa.Column("state", sa.String(10), nullable=False),        # queued | sending | accepted | failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", Stamp, nullable=False),
    sa.Column("message_ids", sa.JSON),
    sa.Column("delivery", sa.String(16)),                     # DELIVRD, UNDELIV, ... from receipts
    sa.Column("error", sa.String(200)),
    sa.Column("meta", sa.JSON),
    sa.Column("created_at", Stamp, nullable=False),
    sa.Column("updated_at", Stamp, nullable=False),
    # a credential SMS: its text is blanked once the SMSC has accepted it
    sa.Column("secret", sa.Boolean, nullable=False, server_default=sa.false()),
    # set by a writer that may run twice (a redo after an ambiguous COMMIT): queued once
    sa.Column("queue_key", sa.String(160)),
    # the instance sending it, and until when; none for a row any instance may send
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_until", Stamp),
    sa.UniqueConstraint("queue_key", name="uq_outbox_queue_key"),
)
sa.Index("ix_inbound_state", inbound_messages.c.state)
sa.Index("ix_outbox_due", outbox.c.state, outbox.c.next_attempt_at)
outbox_parts = sa.Table(
    "outbox_parts", metadata,
    sa.Column("message_id", sa.String(80), primary_key=True),
    sa.Column("outbox_id", Id, sa.ForeignKey("outbox.id"), nullable=False),
)

QUEUED, SENDING, ACCEPTED, FAILED = "queued", "sending", "accepted", "failed"
DEFAULT_LEASE = 15.0        # seconds an instance holds a claim without renewing it


def default_instance_id() -> str:
    """Unique among live processes (host and pid). A restarted daemon gets
    a new one, so it takes its former self's rows over only once their
    leases ran out; a stable `[daemon] instance_id` lets it take them at
    once, and must then never be shared by two live instances."""
    return f"{socket.gethostname()}:{os.getpid()}"[-64:]


@dataclass(frozen=True)
class Claim:
    """Who holds a row and until when, written with the row."""
    by: str
    until: datetime


@dataclass(frozen=True)
class Inbound:
    id: int
    msisdn: str
    text: str
    is_new: bool
    channel: str = ""


@dataclass(frozen=True)
class Outgoing:
    id: int
    channel: str
    msisdn: str
    text: str
    attempts: int
    meta: dict | None
    secret: bool = False


def _insert_ignoring_duplicates(dialect: str, table, index_elements):
    """INSERT ... ON CONFLICT DO NOTHING in the backend's own syntax."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=index_elements)


# Statements built once (building them costs more than running them).
_INSERT_OUTBOX = outbox.insert().returning(outbox.c.id, sort_by_parameter_order=True)
_MARK_PROCESSED = Fast(inbound_messages.update().where(inbound_messages.c.id == sa.bindparam("_id")).values(
    state="processed", processed_at=sa.bindparam("_at")))
_ACCEPTED = Fast(outbox.update().where(outbox.c.id == sa.bindparam("_id")).values(
    state=ACCEPTED, message_ids=sa.bindparam("_ids", type_=outbox.c.message_ids.type),
    attempts=outbox.c.attempts + 1, updated_at=sa.bindparam("_at", type_=Stamp),
    # a credential leaves the database once the SMSC has it (the parts stay, for receipts)
    text=sa.case((outbox.c.secret, ""), else_=outbox.c.text)))
_INBOUND_COLUMNS = ("channel", "msisdn", "dedup_key", "text", "state", "error", "received_at", "processed_at",
                    "claimed_by", "claimed_until")
_INSERT_INBOUND = PerDialect(lambda name: _insert_ignoring_duplicates(name, inbound_messages, ["dedup_key"]).values(
    {c: sa.bindparam(c, type_=inbound_messages.c[c].type) for c in _INBOUND_COLUMNS}).returning(inbound_messages.c.id))
_INSERT_PARTS = PerDialect(lambda name: _insert_ignoring_duplicates(name, outbox_parts, ["message_id"]).values(
    message_id=sa.bindparam("message_id", type_=outbox_parts.c.message_id.type),
    outbox_id=sa.bindparam("outbox_id", type_=outbox_parts.c.outbox_id.type)))
_OUTBOX_COLUMNS = ("channel", "msisdn", "text", "inbound_id", "state", "next_attempt_at", "meta", "created_at",
                   "updated_at", "secret", "queue_key", "claimed_by", "claimed_until")
_INSERT_ONE_OUTBOX = Fast(outbox.insert().values(
    {c: sa.bindparam(c, type_=outbox.c[c].type) for c in _OUTBOX_COLUMNS}).returning(outbox.c.id))
_INBOUND_BY_KEYS = sa.select(inbound_messages).where(
    inbound_messages.c.dedup_key.in_(sa.bindparam("keys", expanding=True)))
_PARTS_BY_IDS = sa.select(outbox_parts.c.message_id, outbox_parts.c.outbox_id).where(
    outbox_parts.c.message_id.in_(sa.bindparam("ids", expanding=True)))
_RECEIPT = outbox.update().where(outbox.c.id == sa.bindparam("_id")).values(
    delivery=sa.bindparam("_state"), updated_at=sa.bindparam("_at"))


def _outbox_row(channel: str, msisdn: str, text: str, inbound_id: int | None, meta: dict | None,
                secret: bool, queue_key: str | None, now, claim: "Claim | None" = None) -> dict:
    return dict(channel=channel, msisdn=msisdn, text=text, inbound_id=inbound_id, state=QUEUED,
                next_attempt_at=now, meta=meta, created_at=now, updated_at=now, secret=secret,
                queue_key=queue_key, claimed_by=None if claim is None else claim.by,
                claimed_until=None if claim is None else claim.until)


async def queue_outgoing(conn, channel: str, msisdn: str, texts: list[str], *, secret: bool = False,
                         key: str | None = None, inbound_id: int | None = None,
                         meta: dict | None = None, now=None, claim: Claim | None = None) -> list[Outgoing]:
    """Queue messages in the outbox inside the caller's write job, so they
    commit with whatever the job books (any process may call it; the SMS
    daemon's outbox scan sends them). `secret` marks a credential SMS, whose
    text is blanked once the SMSC accepted it. With `key`, a second call with
    the same key (a redo after an ambiguous COMMIT) queues nothing again and
    returns []. `claim`: the caller sends them at once itself, so no other
    instance's scan takes them while it does (no statement of its own)."""
    if not texts:
        return []
    now = now or utcnow()
    rows = [_outbox_row(channel, msisdn, text, inbound_id, meta, secret, None if key is None else f"{key}:{i}", now,
                        claim)
            for i, text in enumerate(texts)]
    if key is None:
        ids = list((await conn.execute(_INSERT_OUTBOX, rows)).scalars())
    else:
        insert = _insert_ignoring_duplicates(conn.dialect.name, outbox, ["queue_key"]).returning(outbox.c.id)
        ids = [(await conn.execute(insert.values(**row))).scalar() for row in rows]
        if any(i is None for i in ids):
            return []
    return [Outgoing(i, channel, msisdn, text, 0, meta, secret) for i, text in zip(ids, texts)]


class _Coalescer:
    """Gathers one kind of message-record write (inbound records, answers,
    acceptances, receipts) into one ledger write job for everything waiting
    when the writer thread reaches it: under load one job, and a handful of
    multi-row statements, serve a whole burst instead of one job per
    message. Each caller still gets its own result, after the COMMIT.

    The job takes what is waiting at the moment it runs (in the writer
    thread, hence the lock); a rerun of the same job (the ledger redoes a
    failed batch job by job) works on what it took the first time, so no
    item is lost or written twice."""

    def __init__(self, ledger: Ledger, process: Callable[[Any, list], Awaitable[list]]):
        self.ledger = ledger
        self.process = process
        self._lock = threading.Lock()
        self._waiting: list[tuple[Any, asyncio.Future]] = []
        self._job_queued = False

    def add(self, item) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiting.append((item, fut))
            submit = not self._job_queued
            self._job_queued = True
        if submit:
            asyncio.ensure_future(self._submit())
        return fut

    async def _submit(self) -> None:
        taken: list[tuple[Any, asyncio.Future]] | None = None

        async def job(conn):
            nonlocal taken
            if taken is None:
                with self._lock:
                    taken, self._waiting = self._waiting, []
                    self._job_queued = False
            return await self.process(conn, [item for item, _ in taken])
        try:
            results = await self.ledger.write(job, refuses=False)
        except BaseException as exc:
            if taken is None:     # never ran: the next job takes these
                with self._lock:
                    if self._waiting and not self._job_queued:
                        self._job_queued = True
                        asyncio.ensure_future(self._submit())
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            for _, fut in taken:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            return
        for (_, fut), result in zip(taken, results):
            if not fut.done():
                fut.set_result(result)


@dataclass(frozen=True)
class _InboundItem:
    channel: str
    msisdn: str
    dedup_key: str
    text: str
    window: float | None
    failed: str | None


class MessageStore:
    """The message record of one daemon instance (`instance_id`), which may
    share the database with others: what it answers and sends it claims in
    the rows for `lease` seconds at a time (see the module's docstring)."""

    def __init__(self, ledger: Ledger, *, clock=None, max_attempts: int = 50, instance_id: str | None = None,
                 lease: float = DEFAULT_LEASE):
        self.ledger = ledger
        # the ledger's clock unless told otherwise: one notion of "now" per process
        self.clock = clock if clock is not None else (lambda: ledger.clock())
        self.max_attempts = max_attempts
        self.instance_id = instance_id or default_instance_id()
        if lease <= 0:
            raise ValueError("the claim lease must be a positive number of seconds")
        self.lease = lease
        self._inbound = _Coalescer(ledger, self._record_many)
        self._answers = _Coalescer(ledger, self._complete_many)
        self._acceptances = _Coalescer(ledger, self._accepted_many)
        self._receipts = _Coalescer(ledger, self._receipts_many)

    def _claim(self, now) -> Claim:
        return Claim(self.instance_id, now + timedelta(seconds=self.lease))

    async def record_inbound(self, channel: str, msisdn: str, dedup_key: str, text: str, *,
                             window: float | None = None, failed: str | None = None) -> Inbound:
        """Durably record a message (call before acknowledging it). A second
        delivery with the same key returns the first record, is_new=False.

        With `window` (seconds) the key identifies the message only that long:
        a delivery with the same key within `window` of the first is a
        re-delivery, a later one a new message. `failed` records a message
        that will not be answered, with the reason."""
        return await self._inbound.add(_InboundItem(channel, msisdn, dedup_key, text, window, failed))

    async def _record_many(self, conn, items: list[_InboundItem]) -> list[Inbound]:
        now = self.clock()
        claim = self._claim(now)
        results: list[Inbound | None] = [None] * len(items)
        keys: list[str] = []
        # the neighbouring windows' keys: a delivery just after an edge finds
        # the one just before it, and one whose clock ran a little behind
        # (another instance's) finds one recorded just after
        nearby: dict[int, tuple[str, str]] = {}
        for i, it in enumerate(items):
            if it.window is None:
                keys.append(it.dedup_key)
                continue
            bucket = int(now.timestamp() // it.window)
            keys.append(f"{it.dedup_key}:{bucket}")
            nearby[i] = (f"{it.dedup_key}:{bucket - 1}", f"{it.dedup_key}:{bucket + 1}")
        if nearby:
            await _lock_keys(conn, sorted({items[i].dedup_key for i in nearby}))
            wanted = list({k for pair in nearby.values() for k in pair})
            found = {r.dedup_key: r for r in await conn.execute(_INBOUND_BY_KEYS, {"keys": wanted})}
            for i, pair in nearby.items():
                window = timedelta(seconds=items[i].window)
                for key in pair:
                    row = found.get(key)
                    if row is not None and abs(row.received_at - now) < window:
                        results[i] = Inbound(row.id, row.msisdn, row.text, False)
                        break
        first_of: dict[str, int] = {}       # the same message twice in one burst: the first is new
        rows = []
        for i, it in enumerate(items):
            if results[i] is not None or keys[i] in first_of:
                continue
            first_of[keys[i]] = i
            rows.append(dict(channel=it.channel, msisdn=it.msisdn, dedup_key=keys[i], text=it.text,
                             state="received" if it.failed is None else FAILED,
                             error=None if it.failed is None else it.failed[:200],
                             received_at=now, processed_at=None if it.failed is None else now,
                             claimed_by=claim.by, claimed_until=claim.until))
        new_ids: dict[str, int] = {}
        if rows:
            inserted = await _INSERT_INBOUND.on(conn).insert_returning(conn, rows)
            new_ids = {row["dedup_key"]: r.id for row, r in zip(rows, inserted) if r is not None}
        old_keys = [k for k in first_of if k not in new_ids]
        old = {}
        if old_keys:
            old = {r.dedup_key: r for r in await conn.execute(_INBOUND_BY_KEYS, {"keys": old_keys})}
        for i, it in enumerate(items):
            if results[i] is not None:
                continue
            key = keys[i]
            if key in new_ids:
                results[i] = Inbound(new_ids[key], it.msisdn, it.text, first_of[key] == i)
            else:
                row = old[key]
                results[i] = Inbound(row.id, row.msisdn, row.text, False)
        return results

    async def complete(self, inbound_id: int | None, channel: str, msisdn: str, texts: list[str],
                       meta: dict | None = None, *, secret: bool = False) -> list[Outgoing]:
        """Queue replies and mark the inbound message processed, atomically;
        returns the queued messages for the channel to send at once."""
        return await self._answers.add((inbound_id, channel, msisdn, list(texts), meta, secret))

    async def _complete_many(self, conn, items: list) -> list[list[Outgoing]]:
        now = self.clock()
        claim = self._claim(now)      # sent at once by this instance
        rows, owners = [], []
        for n, (inbound_id, channel, msisdn, texts, meta, secret) in enumerate(items):
            for text in texts:
                rows.append(_outbox_row(channel, msisdn, text, inbound_id, meta, secret, None, now, claim))
                owners.append(n)
        results: list[list[Outgoing]] = [[] for _ in items]
        if rows:
            ids = [r.id for r in await _INSERT_ONE_OUTBOX.insert_returning(conn, rows)]
            for out_id, row, n in zip(ids, rows, owners):
                results[n].append(Outgoing(out_id, row["channel"], row["msisdn"], row["text"], 0, row["meta"],
                                           row["secret"]))
        processed = [{"_id": item[0], "_at": now} for item in items if item[0] is not None]
        await _MARK_PROCESSED.execute_many(conn, processed)
        return results

    async def unprocessed(self, channel: str) -> list[Inbound]:
        """Messages recorded (and acknowledged) but not answered: after a crash."""
        async def q(conn):
            rows = (await conn.execute(sa.select(inbound_messages).where(
                inbound_messages.c.channel == channel, inbound_messages.c.state == "received")
                .order_by(inbound_messages.c.id))).all()
            return [Inbound(r.id, r.msisdn, r.text, True) for r in rows]
        return await self.ledger.read(q)

    async def due(self, channel: str, *, exclude: set[int] | frozenset[int] = frozenset(),
                  limit: int = 100) -> list[Outgoing]:
        """Queued messages whose (re)try time has come, except those in flight
        (a read: what `claim_due` would choose from, claims aside)."""
        async def q(conn):
            query = sa.select(outbox).where(
                outbox.c.channel == channel, outbox.c.state.in_((QUEUED, SENDING)),
                outbox.c.next_attempt_at <= self.clock()).order_by(outbox.c.id).limit(limit + len(exclude))
            rows = [r for r in (await conn.execute(query)).all() if r.id not in exclude][:limit]
            return [_outgoing(r) for r in rows]
        return await self.ledger.read(q)

    async def claim_due(self, channel: str, *, limit: int = 100, mine: bool = False) -> list[Outgoing]:
        """Claims queued messages whose (re)try time has come and that no live
        instance holds (never claimed, or the lease ran out), oldest first,
        and returns them for this instance to send. `mine`: also those this
        instance id holds already (a restart under a stable id: its former
        self was sending them)."""
        async def job(conn):
            now = self.clock()
            free = sa.or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now)
            if mine:
                free = sa.or_(free, outbox.c.claimed_by == self.instance_id)
            chosen = (sa.select(outbox.c.id).where(
                outbox.c.channel == channel, outbox.c.state.in_((QUEUED, SENDING)),
                outbox.c.next_attempt_at <= now, free).order_by(outbox.c.id).limit(limit))
            if conn.dialect.name == "postgresql":
                chosen = chosen.with_for_update(skip_locked=True)
            claim = self._claim(now)
            rows = (await conn.execute(outbox.update().where(outbox.c.id.in_(chosen.scalar_subquery()))
                                       .values(claimed_by=claim.by, claimed_until=claim.until)
                                       .returning(*outbox.c))).all()
            return [_outgoing(r) for r in sorted(rows, key=lambda r: r.id)]
        return await self.ledger.write(job, refuses=False)

    async def claim_unanswered(self, channel: str | tuple[str, ...], *, limit: int | None = 100,
                               mine: bool = False) -> list[Inbound]:
        """Claims recorded messages nobody is answering: those whose claim ran
        out (their instance died, or stopped renewing), unclaimed ones older
        than a lease, and with `mine` those this instance id holds (after a
        restart under the same id, or when answering them failed).
        `channel`: one, or several (SMS and USSD inputs of one SMSC link)."""
        channels = (channel,) if isinstance(channel, str) else tuple(channel)

        async def job(conn):
            now = self.clock()
            c = inbound_messages.c
            free = sa.or_(c.claimed_until < now,
                          sa.and_(c.claimed_until.is_(None), c.received_at < now - timedelta(seconds=self.lease)))
            if mine:
                free = sa.or_(free, c.claimed_by == self.instance_id)
            chosen = (sa.select(c.id).where(c.channel.in_(channels), c.state == "received", free)
                      .order_by(c.id).limit(limit))        # limit None: all of them
            if conn.dialect.name == "postgresql":
                chosen = chosen.with_for_update(skip_locked=True)
            claim = self._claim(now)
            rows = (await conn.execute(inbound_messages.update().where(c.id.in_(chosen.scalar_subquery()))
                                       .values(claimed_by=claim.by, claimed_until=claim.until)
                                       .returning(c.id, c.msisdn, c.text, c.channel))).all()
            return [Inbound(r.id, r.msisdn, r.text, True, r.channel) for r in sorted(rows, key=lambda r: r.id)]
        return await self.ledger.write(job, refuses=False)

    async def renew(self, channel: str | tuple[str, ...], sending: set[int] | frozenset[int] = frozenset()) -> None:
        """Extends this instance's leases: on every message it recorded or
        claimed and has not answered yet, and on the outbox rows it is
        sending (`sending`; a row it holds but no longer sends, say one whose
        acceptance could not be recorded, runs out and is sent again)."""
        channels = (channel,) if isinstance(channel, str) else tuple(channel)

        async def job(conn):
            until = self._claim(self.clock()).until
            c = inbound_messages.c
            await conn.execute(inbound_messages.update().where(
                c.state == "received", c.claimed_by == self.instance_id, c.channel.in_(channels))
                .values(claimed_until=until))
            if sending:
                await conn.execute(outbox.update().where(
                    outbox.c.id.in_(sorted(sending)), outbox.c.claimed_by == self.instance_id,
                    outbox.c.state.in_((QUEUED, SENDING))).values(claimed_until=until))
        await self.ledger.write(job, refuses=False)

    async def accepted(self, outbox_id: int, message_ids: list[str]) -> None:
        await self._acceptances.add((outbox_id, list(message_ids)))

    async def _accepted_many(self, conn, items: list) -> list[None]:
        now = self.clock()
        await _ACCEPTED.execute_many(conn, [{"_id": out_id, "_ids": ids, "_at": now} for out_id, ids in items])
        parts = [{"message_id": m, "outbox_id": out_id} for out_id, ids in items for m in ids]
        await _INSERT_PARTS.on(conn).execute_many(conn, parts)
        return [None] * len(items)

    async def retry_later(self, outbox_id: int, error: str, attempts: int) -> None:
        """Back off exponentially (capped at 5 minutes); give up after max_attempts."""
        delay = min(300.0, 0.5 * 2 ** min(attempts, 10))

        async def job(conn):
            state = FAILED if attempts + 1 >= self.max_attempts else QUEUED
            values = dict(state=state, attempts=attempts + 1, error=error[:200],
                          next_attempt_at=self.clock() + timedelta(seconds=delay), updated_at=self.clock(),
                          # any instance may send it once the back-off is over
                          claimed_by=None, claimed_until=None)
            if state == FAILED:
                # never sent: a credential is not kept either (a new one is issued by reset)
                values["text"] = sa.case((outbox.c.secret, ""), else_=outbox.c.text)
            # a lease that ran out may be another instance's now: its send decides
            await conn.execute(outbox.update().where(
                outbox.c.id == outbox_id,
                sa.or_(outbox.c.claimed_by.is_(None), outbox.c.claimed_by == self.instance_id)).values(**values))
        await self.ledger.write(job, refuses=False)

    async def receipt(self, message_ids: set[str] | frozenset[str], state: str) -> int | None:
        """A delivery receipt: find the outbox message by any candidate id."""
        return await self._receipts.add((frozenset(message_ids), state))

    async def _receipts_many(self, conn, items: list) -> list[int | None]:
        wanted = sorted({m for ids, _ in items for m in ids})
        owner = {r.message_id: r.outbox_id for r in await conn.execute(_PARTS_BY_IDS, {"ids": wanted})}
        found = [next((owner[m] for m in sorted(ids) if m in owner), None) for ids, _ in items]
        now = self.clock()
        updates = [{"_id": out_id, "_state": state, "_at": now} for out_id, (_, state) in zip(found, items)
                   if out_id is not None]
        if updates:
            await conn.execute(_RECEIPT, updates)
        return found

    async def get(self, outbox_id: int):
        return await self.ledger.read(lambda conn: _first(conn, sa.select(outbox).where(outbox.c.id == outbox_id)))

    async def pending_count(self, channel: str) -> int:
        async def q(conn):
            return (await conn.execute(sa.select(sa.func.count()).select_from(outbox).where(
                outbox.c.channel == channel, outbox.c.state.in_((QUEUED, SENDING))))).scalar_one()
        return await self.ledger.read(q)



# every key of a burst in one statement, in the order given (unnest keeps it)
_KEY_LOCKS = sa.text("SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) "
                     "FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS t(k, n)")


async def _lock_keys(conn, keys: list[str]) -> None:
    """Serialises the look-up of the neighbouring windows' records and the
    insert into this window's between instances recording the same message:
    without it, two re-deliveries either side of a window's edge, each
    recorded by its own instance before the other's commit, would both be
    taken as new. One round trip for a burst's keys, sorted, so two
    instances' bursts take their locks in one order and never deadlock. Held
    until the (group) commit; SQLite has one writer and needs none."""
    if conn.dialect.name == "postgresql" and keys:
        await conn.execute(_KEY_LOCKS, {"keys": keys})


def _outgoing(r) -> Outgoing:
    return Outgoing(r.id, r.channel, r.msisdn, r.text, r.attempts, r.meta, r.secret)


async def _first(conn, query):
    return (await conn.execute(query)).first()
