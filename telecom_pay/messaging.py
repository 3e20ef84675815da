"""The durable message record every text channel uses: inbound messages
(recorded before they are acknowledged, deduplicated on a key the channel
derives from the carrier's identity of the message) and the outbox of
replies (recorded in the same transaction that marks the inbound message
processed, sent until the carrier accepts, then tracked to delivery).

It writes through the ledger's group commit, so a burst of messages shares
commits with the payments it carries.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from telecom_pay.ledger.ledger import Ledger, utcnow

metadata = sa.MetaData()
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)

inbound_messages = sa.Table(
    "inbound_messages", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("msisdn", sa.String(20), nullable=False),
    sa.Column("dedup_key", sa.String(160), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("state", sa.String(10), nullable=False),        # received | processed
    sa.Column("received_at", Stamp, nullable=False),
    sa.Column("processed_at", Stamp),
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
)
sa.Index("ix_inbound_state", inbound_messages.c.state)
sa.Index("ix_outbox_due", outbox.c.state, outbox.c.next_attempt_at)
outbox_parts = sa.Table(
    "outbox_parts", metadata,
    sa.Column("message_id", sa.String(80), primary_key=True),
    sa.Column("outbox_id", Id, sa.ForeignKey("outbox.id"), nullable=False),
)

QUEUED, SENDING, ACCEPTED, FAILED = "queued", "sending", "accepted", "failed"


@dataclass(frozen=True)
class Inbound:
    id: int
    msisdn: str
    text: str
    is_new: bool


@dataclass(frozen=True)
class Outgoing:
    id: int
    channel: str
    msisdn: str
    text: str
    attempts: int
    meta: dict | None


def _insert_ignoring_duplicates(dialect: str, table, index_elements):
    """INSERT ... ON CONFLICT DO NOTHING in the backend's own syntax."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing(index_elements=index_elements)


# Statements built once (building them costs more than running them).
_INBOUND_BY_KEY = sa.select(inbound_messages).where(inbound_messages.c.dedup_key == sa.bindparam("k"))
_INSERT_OUTBOX = outbox.insert().returning(outbox.c.id, sort_by_parameter_order=True)
_MARK_PROCESSED = inbound_messages.update().where(inbound_messages.c.id == sa.bindparam("_id")).values(
    state="processed", processed_at=sa.bindparam("_at"))
_ACCEPTED = outbox.update().where(outbox.c.id == sa.bindparam("_id")).values(
    state=ACCEPTED, message_ids=sa.bindparam("_ids"), attempts=outbox.c.attempts + 1,
    updated_at=sa.bindparam("_at"))
_RECEIPT = outbox.update().where(outbox.c.id == sa.select(outbox_parts.c.outbox_id).where(
    outbox_parts.c.message_id.in_(sa.bindparam("ids", expanding=True))).limit(1).scalar_subquery()).values(
    delivery=sa.bindparam("_state"), updated_at=sa.bindparam("_at")).returning(outbox.c.id)


async def queue_outgoing(conn, channel: str, msisdn: str, texts: list[str], *, secret: bool = False,
                         key: str | None = None) -> list[int]:
    """Queue messages inside the caller's transaction, for work done outside
    any channel (the agent CLI runs in its own process): they commit or roll
    back with it, and the channel's outbox scan sends them. `secret` marks a
    credential SMS; `key` names the operation that caused it."""
    if not texts:
        return []
    now = utcnow()
    meta = {k: v for k, v in (("secret", secret or None), ("key", key)) if v}
    return list((await conn.execute(_INSERT_OUTBOX, [dict(
        channel=channel, msisdn=msisdn, text=text, inbound_id=None, state=QUEUED, next_attempt_at=now,
        meta=meta or None, created_at=now, updated_at=now) for text in texts])).scalars())


class MessageStore:
    """One process sends a channel's outbox (in-flight messages are tracked
    in memory by the channel, not marked in the database)."""

    def __init__(self, ledger: Ledger, *, clock=utcnow, max_attempts: int = 50):
        self.ledger = ledger
        self.clock = clock
        self.max_attempts = max_attempts

    async def record_inbound(self, channel: str, msisdn: str, dedup_key: str, text: str) -> Inbound:
        """Durably record a message (call before acknowledging it). A second
        delivery with the same key returns the first record, is_new=False."""
        async def job(conn):
            insert = _insert_ignoring_duplicates(conn.dialect.name, inbound_messages, ["dedup_key"])
            new_id = (await conn.execute(insert.values(
                channel=channel, msisdn=msisdn, dedup_key=dedup_key, text=text, state="received",
                received_at=self.clock()).returning(inbound_messages.c.id))).scalar()
            if new_id is not None:
                return Inbound(new_id, msisdn, text, True)
            row = (await conn.execute(_INBOUND_BY_KEY, {"k": dedup_key})).first()
            return Inbound(row.id, row.msisdn, row.text, False)
        return await self.ledger.write(job, refuses=False)

    async def complete(self, inbound_id: int | None, channel: str, msisdn: str, texts: list[str],
                       meta: dict | None = None) -> list[Outgoing]:
        """Queue replies and mark the inbound message processed, atomically;
        returns the queued messages for the channel to send at once."""
        async def job(conn):
            now = self.clock()
            ids = []
            if texts:
                ids = list((await conn.execute(_INSERT_OUTBOX, [dict(
                    channel=channel, msisdn=msisdn, text=text, inbound_id=inbound_id, state=QUEUED,
                    next_attempt_at=now, meta=meta, created_at=now, updated_at=now) for text in texts])).scalars())
            if inbound_id is not None:
                await conn.execute(_MARK_PROCESSED, {"_id": inbound_id, "_at": now})
            return [Outgoing(i, channel, msisdn, text, 0, meta) for i, text in zip(ids, texts)]
        return await self.ledger.write(job, refuses=False)

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
        """Queued messages whose (re)try time has come, except those in flight."""
        async def q(conn):
            query = sa.select(outbox).where(
                outbox.c.channel == channel, outbox.c.state.in_((QUEUED, SENDING)),
                outbox.c.next_attempt_at <= self.clock()).order_by(outbox.c.id).limit(limit + len(exclude))
            rows = [r for r in (await conn.execute(query)).all() if r.id not in exclude][:limit]
            return [Outgoing(r.id, r.channel, r.msisdn, r.text, r.attempts, r.meta) for r in rows]
        return await self.ledger.read(q)

    async def accepted(self, outbox_id: int, message_ids: list[str]) -> None:
        async def job(conn):
            now = self.clock()
            await conn.execute(_ACCEPTED, {"_id": outbox_id, "_ids": message_ids, "_at": now})
            if message_ids:
                insert = _insert_ignoring_duplicates(conn.dialect.name, outbox_parts, ["message_id"])
                await conn.execute(insert, [{"message_id": m, "outbox_id": outbox_id} for m in message_ids])
        await self.ledger.write(job, refuses=False)

    async def retry_later(self, outbox_id: int, error: str, attempts: int) -> None:
        """Back off exponentially (capped at 5 minutes); give up after max_attempts."""
        delay = min(300.0, 0.5 * 2 ** min(attempts, 10))

        async def job(conn):
            state = FAILED if attempts + 1 >= self.max_attempts else QUEUED
            await conn.execute(outbox.update().where(outbox.c.id == outbox_id).values(
                state=state, attempts=attempts + 1, error=error[:200],
                next_attempt_at=self.clock() + timedelta(seconds=delay), updated_at=self.clock()))
        await self.ledger.write(job, refuses=False)

    async def receipt(self, message_ids: set[str] | frozenset[str], state: str) -> int | None:
        """A delivery receipt: find the outbox message by any candidate id."""
        async def job(conn):
            return (await conn.execute(_RECEIPT, {"ids": list(message_ids), "_state": state,
                                                  "_at": self.clock()})).scalar()
        return await self.ledger.write(job, refuses=False)

    async def get(self, outbox_id: int):
        return await self.ledger.read(lambda conn: _first(conn, sa.select(outbox).where(outbox.c.id == outbox_id)))

    async def pending_count(self, channel: str) -> int:
        async def q(conn):
            return (await conn.execute(sa.select(sa.func.count()).select_from(outbox).where(
                outbox.c.channel == channel, outbox.c.state.in_((QUEUED, SENDING))))).scalar_one()
        return await self.ledger.read(q)


async def _first(conn, query):
    return (await conn.execute(query)).first()
