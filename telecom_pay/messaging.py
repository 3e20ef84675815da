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


class MessageStore:
    def __init__(self, ledger: Ledger, *, clock=utcnow, max_attempts: int = 50):
        self.ledger = ledger
        self.clock = clock
        self.max_attempts = max_attempts

    async def record_inbound(self, channel: str, msisdn: str, dedup_key: str, text: str) -> Inbound:
        """Durably record a message (call before acknowledging it). A second
        delivery with the same key returns the first record, is_new=False."""
        async def job(conn):
            row = (await conn.execute(sa.select(inbound_messages).where(
                inbound_messages.c.dedup_key == dedup_key))).first()
            if row is not None:
                return Inbound(row.id, row.msisdn, row.text, False)
            new_id = (await conn.execute(inbound_messages.insert().values(
                channel=channel, msisdn=msisdn, dedup_key=dedup_key, text=text, state="received",
                received_at=self.clock()).returning(inbound_messages.c.id))).scalar_one()
            return Inbound(new_id, msisdn, text, True)
        return await self.ledger.write(job)

    async def complete(self, inbound_id: int | None, channel: str, msisdn: str, texts: list[str],
                       meta: dict | None = None) -> list[int]:
        """Queue replies and mark the inbound message processed, atomically."""
        async def job(conn):
            now = self.clock()
            ids = []
            for text in texts:
                ids.append((await conn.execute(outbox.insert().values(
                    channel=channel, msisdn=msisdn, text=text, inbound_id=inbound_id, state=QUEUED,
                    next_attempt_at=now, meta=meta, created_at=now, updated_at=now,
                ).returning(outbox.c.id))).scalar_one())
            if inbound_id is not None:
                await conn.execute(inbound_messages.update().where(inbound_messages.c.id == inbound_id)
                                   .values(state="processed", processed_at=now))
            return ids
        return await self.ledger.write(job)

    async def unprocessed(self, channel: str) -> list[Inbound]:
        """Messages recorded (and acknowledged) but not answered: after a crash."""
        async def q(conn):
            rows = (await conn.execute(sa.select(inbound_messages).where(
                inbound_messages.c.channel == channel, inbound_messages.c.state == "received")
                .order_by(inbound_messages.c.id))).all()
            return [Inbound(r.id, r.msisdn, r.text, True) for r in rows]
        return await self.ledger.read(q)

    async def claim_due(self, channel: str, limit: int = 100) -> list[Outgoing]:
        """Queued messages whose time has come, marked as being sent."""
        async def job(conn):
            rows = (await conn.execute(sa.select(outbox).where(
                outbox.c.channel == channel, outbox.c.state == QUEUED,
                outbox.c.next_attempt_at <= self.clock()).order_by(outbox.c.id).limit(limit))).all()
            if rows:
                await conn.execute(outbox.update().where(outbox.c.id.in_([r.id for r in rows]))
                                   .values(state=SENDING, updated_at=self.clock()))
            return [Outgoing(r.id, r.channel, r.msisdn, r.text, r.attempts, r.meta) for r in rows]
        return await self.ledger.write(job)

    async def requeue_sending(self, channel: str) -> int:
        """On start: what was being sent when the process stopped goes again."""
        async def job(conn):
            return (await conn.execute(outbox.update().where(
                outbox.c.channel == channel, outbox.c.state == SENDING).values(
                state=QUEUED, updated_at=self.clock()))).rowcount
        return await self.ledger.write(job)

    async def accepted(self, outbox_id: int, message_ids: list[str]) -> None:
        async def job(conn):
            await conn.execute(outbox.update().where(outbox.c.id == outbox_id).values(
                state=ACCEPTED, message_ids=message_ids, attempts=outbox.c.attempts + 1,
                updated_at=self.clock()))
            for mid in message_ids:
                exists = (await conn.execute(sa.select(outbox_parts.c.message_id).where(
                    outbox_parts.c.message_id == mid))).first()
                if exists is None:
                    await conn.execute(outbox_parts.insert().values(message_id=mid, outbox_id=outbox_id))
        await self.ledger.write(job)

    async def retry_later(self, outbox_id: int, error: str, attempts: int) -> None:
        """Back off exponentially (capped at 5 minutes); give up after max_attempts."""
        delay = min(300.0, 0.5 * 2 ** min(attempts, 10))

        async def job(conn):
            state = FAILED if attempts + 1 >= self.max_attempts else QUEUED
            await conn.execute(outbox.update().where(outbox.c.id == outbox_id).values(
                state=state, attempts=attempts + 1, error=error[:200],
                next_attempt_at=self.clock() + timedelta(seconds=delay), updated_at=self.clock()))
        await self.ledger.write(job)

    async def receipt(self, message_ids: set[str] | frozenset[str], state: str) -> int | None:
        """A delivery receipt: find the outbox message by any candidate id."""
        async def job(conn):
            row = (await conn.execute(sa.select(outbox_parts.c.outbox_id).where(
                outbox_parts.c.message_id.in_(list(message_ids))))).first()
            if row is None:
                return None
            await conn.execute(outbox.update().where(outbox.c.id == row.outbox_id).values(
                delivery=state, updated_at=self.clock()))
            return row.outbox_id
        return await self.ledger.write(job)

    async def get(self, outbox_id: int):
        return await self.ledger.read(lambda conn: _first(conn, sa.select(outbox).where(outbox.c.id == outbox_id)))

    async def pending_count(self, channel: str) -> int:
        async def q(conn):
            return (await conn.execute(sa.select(sa.func.count()).select_from(outbox).where(
                outbox.c.channel == channel, outbox.c.state.in_((QUEUED, SENDING))))).scalar_one()
        return await self.ledger.read(q)


async def _first(conn, query):
    return (await conn.execute(query)).first()

