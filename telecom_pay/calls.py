"""The record of voice calls: call events reported by the switch (AMI: a
channel appears, hangs up, with its duration and cause), call-backs the
platform originated, and IVR hand-offs to an agent (who called, where in
the menu they were, whether they passed the PIN check), which the agent
console shows while it takes the call.

Nothing here moves money; rows are written through the ledger's writer so
they share its commits and its single SQLite writer.
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from telecom_pay.accounts import audit
from telecom_pay.ledger.ledger import Ledger, utcnow
from telecom_pay.ledger.tables import Stamp

metadata = sa.MetaData()
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

call_events = sa.Table(
    "call_events", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(80), nullable=False),      # the switch's Uniqueid
    sa.Column("event", sa.String(24), nullable=False),        # newchannel | hangup | originate | originate_failed | agi_start | agi_end
    sa.Column("channel", sa.String(80)),                      # the switch's channel name (PJSIP/1000-0001)
    sa.Column("msisdn", sa.String(20)),                       # E.164 when the caller id is a mobile number
    sa.Column("cause", sa.String(40)),                        # hang-up cause (16 normal clearing, 17 busy ...)
    sa.Column("duration_s", sa.Integer),
    sa.Column("detail", sa.JSON),
    sa.Column("at", Stamp, nullable=False),
)
sa.Index("ix_call_events_at", call_events.c.at)
sa.Index("ix_call_events_call", call_events.c.call_id)
# each instance logged into the switch hears every event: one row per event and channel
sa.Index("uq_call_events_once", call_events.c.call_id, call_events.c.event, call_events.c.channel, unique=True)

callbacks = sa.Table(
    "callbacks", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("msisdn", sa.String(20), nullable=False),
    sa.Column("requested_via", sa.String(16), nullable=False),   # sms | ussd | ivr
    sa.Column("state", sa.String(12), nullable=False),           # requested | dialing | answered | failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("action_id", sa.String(80)),                        # the AMI ActionID of the Originate
    sa.Column("error", sa.String(200)),
    sa.Column("requested_at", Stamp, nullable=False),
    sa.Column("updated_at", Stamp, nullable=False),
)
sa.Index("ix_callbacks_state", callbacks.c.state)

ivr_handoffs = sa.Table(
    "ivr_handoffs", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(80), nullable=False),
    sa.Column("msisdn", sa.String(20)),                       # None: withheld or not a mobile number
    sa.Column("caller_id", sa.String(40)),                    # as the switch gave it
    sa.Column("menu_path", sa.String(200), nullable=False),   # the nodes walked, "root>pay>amount"
    sa.Column("pin_verified", sa.Boolean, nullable=False),
    sa.Column("target", sa.String(80), nullable=False),       # the dialplan target transferred to
    sa.Column("state", sa.String(12), nullable=False, server_default="waiting"),   # waiting | taken
    sa.Column("at", Stamp, nullable=False),
)
sa.Index("ix_ivr_handoffs_at", ivr_handoffs.c.at)


def _insert_once(dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(call_events).on_conflict_do_nothing()


class CallLog:
    """Writes and reads the voice tables through the ledger's connections."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def _now(self) -> datetime:
        return getattr(self.ledger, "clock", utcnow)()

    async def record_event(self, call_id: str, event: str, *, channel: str | None = None,
                           msisdn: str | None = None, cause: str | None = None,
                           duration_s: int | None = None, detail: dict | None = None) -> None:
        row = dict(call_id=str(call_id)[:80], event=event[:24], channel=(channel or None) and channel[:80],
                   msisdn=msisdn, cause=(cause or None) and str(cause)[:40], duration_s=duration_s,
                   detail=detail, at=self._now())

        async def write(conn):
            await conn.execute(_insert_once(conn.dialect.name), row)
        await self.ledger.write(write)

    async def record_handoff(self, *, call_id: str, msisdn: str | None, caller_id: str | None,
                             menu_path: str, pin_verified: bool, target: str) -> int:
        row = dict(call_id=str(call_id)[:80], msisdn=msisdn, caller_id=(caller_id or None) and caller_id[:40],
                   menu_path=menu_path[-200:], pin_verified=bool(pin_verified), target=target[:80],
                   state="waiting", at=self._now())

        async def write(conn):
            return (await conn.execute(ivr_handoffs.insert().returning(ivr_handoffs.c.id), row)).scalar_one()
        return await self.ledger.write(write)

    async def handoffs(self, *, limit: int = 50, state: str | None = None) -> list[dict]:
        q = sa.select(ivr_handoffs).order_by(ivr_handoffs.c.id.desc()).limit(limit)
        if state is not None:
            q = q.where(ivr_handoffs.c.state == state)

        async def read(conn):
            return [dict(r._mapping) for r in await conn.execute(q)]
        return await self.ledger.read(read)

    async def events(self, call_id: str | None = None, *, limit: int = 200) -> list[dict]:
        q = sa.select(call_events).order_by(call_events.c.id).limit(limit)
        if call_id is not None:
            q = q.where(call_events.c.call_id == call_id)

        async def read(conn):
            return [dict(r._mapping) for r in await conn.execute(q)]
        return await self.ledger.read(read)

    async def take_handoff(self, handoff_id: int, *, taken_by: str,
                           details: dict | None = None) -> tuple[dict | None, bool]:
        """An agent answers a waiting caller: the row becomes taken, once.
        Two agents clicking at once: one UPDATE guarded by the state, so only
        the first takes it. Returns (the row, whether this call took it);
        (None, False) when there is no such hand-off. `taken_by` (the agent,
        as the console knows it) is audited in the same commit, with
        `details` (the web user, the address)."""
        async def write(conn):
            done = await conn.execute(ivr_handoffs.update().where(
                ivr_handoffs.c.id == int(handoff_id), ivr_handoffs.c.state == "waiting").values(state="taken"))
            row = (await conn.execute(sa.select(ivr_handoffs).where(ivr_handoffs.c.id == int(handoff_id)))).first()
            if row is None or done.rowcount != 1:
                return (dict(row._mapping) if row is not None else None), False
            await audit(conn, actor=taken_by[:64], channel="agent", action="handoff_taken", account_id=None,
                        handoff_id=row.id, call_id=row.call_id, **(details or {}))
            return dict(row._mapping), True
        return await self.ledger.write(write)
