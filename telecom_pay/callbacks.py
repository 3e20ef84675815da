"""Call-backs a subscriber asked for (`HJ` by SMS, or the menu), kept as
rows of the `callbacks` table so that a restart forgets none of them.

A row walks requested -> dialing -> answered | failed. The switch
component (channels/ivr/ami.py) claims a due row by one conditional UPDATE
(requested -> dialing, attempts + 1, its ActionID), so two daemon instances
never dial the same request twice; a failed attempt goes back to requested
until the attempts are spent. A row left in dialing by a process that died
(or whose switch never answered) counts as a failed attempt after
`dial_timeout_s`: the table, not memory, says what is still to do.

The retry wait needs no column of its own: a requested row that was tried
before is due `retry_delay_s` after its `updated_at`.

Requests are bounded per number (one open at a time, `per_day` a local
day): a spoofed sender could otherwise have the platform ring a victim
all day. Nothing here moves money.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Callable

import sqlalchemy as sa
from twisted.logger import Logger

from telecom_pay import business_time
from telecom_pay.calls import callbacks
from telecom_pay.ledger.ledger import Ledger, utcnow
from telecom_pay.msisdn import mask

log = Logger(namespace="telecom_pay.callbacks")

REQUESTED, DIALING, ANSWERED, FAILED = "requested", "dialing", "answered", "failed"
OPEN_STATES = (REQUESTED, DIALING)


@dataclass(frozen=True)
class CallbackPolicy:
    per_day: int = 3                # requests from one number per local day
    max_attempts: int = 3           # Originates per request before it fails
    retry_delay_s: float = 60.0     # between two attempts
    dial_timeout_s: float = 120.0   # a dialing row with no outcome this long is a failed attempt

    @classmethod
    def from_config(cls, cfg: dict) -> "CallbackPolicy":
        return cls(per_day=int(cfg.get("callback_per_day", cls.per_day)),
                   max_attempts=max(1, int(cfg.get("callback_attempts", cls.max_attempts))),
                   retry_delay_s=float(cfg.get("callback_retry_delay", cls.retry_delay_s)),
                   dial_timeout_s=float(cfg.get("callback_dial_timeout", cls.dial_timeout_s)))


@dataclass(frozen=True)
class Requested:
    """What a request became: "requested" (a new row), "open" (one is already
    on its way: the same answer, no second call) or "limit" (refused)."""
    status: str
    callback_id: int | None = None


class CallbackQueue:
    def __init__(self, ledger: Ledger, policy: CallbackPolicy, tz: tzinfo | None):
        self.ledger = ledger
        self.policy = policy
        self.tz = tz
        # called (no arguments, on the event loop) after a request commits, so
        # the dialler need not wait for its next poll
        self.wakers: list[Callable[[], None]] = []

    def _now(self) -> datetime:
        return getattr(self.ledger, "clock", utcnow)()

    async def request(self, msisdn: str, *, via: str) -> Requested:
        now = self._now()
        since = business_time.day_start(now, self.tz)
        policy = self.policy

        async def job(conn):
            open_id = (await conn.execute(
                sa.select(callbacks.c.id).where(callbacks.c.msisdn == msisdn,
                                                callbacks.c.state.in_(OPEN_STATES)).limit(1))).scalar()
            if open_id is not None:
                return Requested("open", open_id)
            today = (await conn.execute(
                sa.select(sa.func.count()).select_from(callbacks).where(
                    callbacks.c.msisdn == msisdn, callbacks.c.requested_at >= since))).scalar_one()
            if today >= policy.per_day:
                return Requested("limit")
            new_id = (await conn.execute(callbacks.insert().returning(callbacks.c.id), dict(
                msisdn=msisdn, requested_via=via[:16], state=REQUESTED, attempts=0,
                requested_at=now, updated_at=now))).scalar_one()
            return Requested("requested", new_id)
        done = await self.ledger.write(job)
        if done.status == "requested":
            log.info("call-back {id} requested by {msisdn} via {via}", id=done.callback_id, msisdn=mask(msisdn),
                     via=via)
            for wake in self.wakers:
                try:
                    wake()
                except Exception:
                    log.failure("a call-back waker failed")
        return done

    async def due(self, limit: int = 20) -> list[dict]:
        """Requested rows whose turn it is, oldest first."""
        retry_before = self._now() - timedelta(seconds=self.policy.retry_delay_s)
        q = (sa.select(callbacks)
             .where(callbacks.c.state == REQUESTED,
                    sa.or_(callbacks.c.attempts == 0, callbacks.c.updated_at <= retry_before))
             .order_by(callbacks.c.id).limit(limit))
        return await self._rows(q)

    async def claim(self, callback_id: int, action_id: str) -> bool:
        """requested -> dialing, one attempt more, under `action_id`; False
        when another dialler took it first (or it is no longer requested)."""
        now = self._now()

        async def job(conn):
            r = await conn.execute(
                callbacks.update().where(callbacks.c.id == callback_id, callbacks.c.state == REQUESTED)
                .values(state=DIALING, attempts=callbacks.c.attempts + 1, action_id=action_id[:80],
                        error=None, updated_at=now))
            return r.rowcount == 1
        return await self.ledger.write(job)

    async def answered(self, action_id: str) -> bool:
        """The switch says the subscriber picked up the call of `action_id`."""
        now = self._now()

        async def job(conn):
            r = await conn.execute(
                callbacks.update().where(callbacks.c.action_id == action_id, callbacks.c.state == DIALING)
                .values(state=ANSWERED, error=None, updated_at=now))
            return r.rowcount == 1
        return await self.ledger.write(job)

    async def attempt_failed(self, action_id: str, error: str) -> str | None:
        """The attempt of `action_id` did not reach the subscriber: back to
        requested (retried after retry_delay_s) or, attempts spent, failed.
        Returns the new state, or None when the row is not dialing under
        that ActionID (a late answer to an attempt already given up)."""
        now = self._now()
        max_attempts = self.policy.max_attempts

        async def job(conn):
            row = (await conn.execute(sa.select(callbacks.c.id, callbacks.c.attempts).where(
                callbacks.c.action_id == action_id, callbacks.c.state == DIALING))).first()
            if row is None:
                return None
            state = FAILED if row.attempts >= max_attempts else REQUESTED
            # conditional again: another instance told of the same outcome may have moved it meanwhile
            r = await conn.execute(
                callbacks.update().where(callbacks.c.id == row.id, callbacks.c.action_id == action_id,
                                         callbacks.c.state == DIALING)
                .values(state=state, error=error[:200], updated_at=now))
            return state if r.rowcount == 1 else None
        return await self.ledger.write(job)

    async def release(self, action_id: str, error: str) -> bool:
        """The Originate of `action_id` never left (the link was down as it
        was sent): the row is requested again and the attempt not counted."""
        now = self._now()

        async def job(conn):
            r = await conn.execute(
                callbacks.update().where(callbacks.c.action_id == action_id, callbacks.c.state == DIALING)
                .values(state=REQUESTED, attempts=callbacks.c.attempts - 1, error=error[:200], updated_at=now))
            return r.rowcount == 1
        return await self.ledger.write(job)

    async def stale(self, limit: int = 20) -> list[dict]:
        """Dialing rows with no outcome for dial_timeout_s (their dialler died,
        or the switch lost the call)."""
        before = self._now() - timedelta(seconds=self.policy.dial_timeout_s)
        q = (sa.select(callbacks).where(callbacks.c.state == DIALING, callbacks.c.updated_at <= before)
             .order_by(callbacks.c.id).limit(limit))
        return await self._rows(q)

    async def by_action(self, action_id: str) -> dict | None:
        found = await self._rows(sa.select(callbacks).where(callbacks.c.action_id == action_id).limit(1))
        return found[0] if found else None

    async def rows(self, *, msisdn: str | None = None, limit: int = 50) -> list[dict]:
        q = sa.select(callbacks).order_by(callbacks.c.id.desc()).limit(limit)
        if msisdn is not None:
            q = q.where(callbacks.c.msisdn == msisdn)
        return await self._rows(q)

    async def _rows(self, q) -> list[dict]:
        async def read(conn):
            return [dict(r._mapping) for r in await conn.execute(q)]
        return await self.ledger.read(read)
