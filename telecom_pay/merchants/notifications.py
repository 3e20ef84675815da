"""Delivering the callbacks `events.enqueue` wrote (README.md here).

A due notification is claimed by one guarded UPDATE (`claimed_until` past
or null), so of several instances exactly one sends it at a time; the
claim outlasts an attempt's timeout. Each attempt is a row of
notification_attempts; a 2xx delivers, anything else (a timeout, a
reset, a 500) is tried again after the next step of `retry_schedule`,
until `give_up_after` seconds from its creation: then it is failed. The
body sent is the stored text, signed as it is, so every attempt (and a
manual resend) carries the same bytes and the merchant deduplicates by
the event id.
"""
from __future__ import annotations

import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
import treq
from twisted.internet import reactor as default_reactor
from twisted.logger import Logger

from telecom_pay import accounts as acct
from telecom_pay.aio import wait_deferred

from . import directory, signing
from .api_settings import MerchantApiSettings
from .events import iso
from .tables import N_DELIVERED, N_FAILED, N_PENDING, merchant_notifications, notification_attempts

log = Logger(namespace="telecom_pay.merchants.notifications")
N = merchant_notifications


class ResendError(Exception):
    """A refused resend: `status` 404 (no such event of the merchant) or 409 (being sent now)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def target_of(url: str) -> str:
    """The PATH line a callback is signed with: the URL's path and query."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


async def claim_due(service, cfg: MerchantApiSettings, *, limit: int, busy: dict[int, int]) -> list:
    """Claim up to `limit` due notifications for this instance, at most
    `cfg.per_merchant` in flight per merchant (`busy`: in flight now)."""
    def due(now):
        return sa.select(N).where(N.c.status == N_PENDING, N.c.next_attempt_at <= now,
                                  sa.or_(N.c.claimed_until.is_(None), N.c.claimed_until < now)) \
            .order_by(N.c.next_attempt_at, N.c.id).limit(limit * 4)
    # a read first: an idle tick costs the writer (the money's group commit) nothing
    if not (await service.ledger.read(lambda conn: conn.execute(due(service.clock())))).first():
        return []

    async def job(conn):
        now = service.clock()
        rows = (await conn.execute(due(now))).all()
        taken, per = [], dict(busy)
        until = now + timedelta(seconds=cfg.claim_seconds)
        for row in rows:
            if len(taken) >= limit or per.get(row.merchant_id, 0) >= cfg.per_merchant:
                continue
            done = await conn.execute(N.update().where(
                N.c.id == row.id, N.c.status == N_PENDING,
                sa.or_(N.c.claimed_until.is_(None), N.c.claimed_until < now)).values(claimed_until=until))
            if done.rowcount == 1:
                per[row.merchant_id] = per.get(row.merchant_id, 0) + 1
                taken.append(row)
        return taken
    return await service.ledger.write(job)


async def _secret(service, merchant_id: int) -> tuple[str | None, str | None]:
    p = await service.ledger.read(lambda conn: directory.get_profile(conn, account_id=merchant_id))
    if p is None or not p.api_key_id:
        return None, None
    return p.api_key_id, directory.secret_for(service.settings.pin_key, p.api_key_id)


async def post_once(service, cfg: MerchantApiSettings, row, *, reactor=None) -> tuple[int | None, str | None, int]:
    """One POST of the notification: (HTTP status or None, error or None, ms)."""
    reactor = reactor or default_reactor
    body = row.body.encode("utf-8")
    headers = {"Content-Type": "application/json", signing.EVENT_HEADER: row.event_id}
    key_id, secret = await _secret(service, row.merchant_id)
    if key_id is not None:        # a merchant without an API key gets the callback unsigned
        headers.update(signing.sign_headers(key_id, secret, "POST", target_of(row.url), body,
                                            now=service.clock().timestamp()))
    t0 = time.monotonic()
    status = error = None
    try:
        d = treq.post(row.url, data=body, headers={k: [v] for k, v in headers.items()}, persistent=False)
        d.addTimeout(cfg.callback_timeout, reactor)
        resp = await wait_deferred(d)
        status = resp.code
        rest = treq.content(resp)
        rest.addTimeout(cfg.callback_timeout, reactor)
        await wait_deferred(rest)
    except Exception as exc:  # noqa: BLE001 - a timeout, a reset, a refused connection: all retried
        error = _describe(exc)
    return status, error, int((time.monotonic() - t0) * 1000)


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    if name in ("CancelledError", "TimeoutError"):
        return "timeout"
    reasons = [type(getattr(r, "value", r)).__name__ for r in getattr(exc, "reasons", None) or ()]
    if "CancelledError" in reasons:                # our timeout cancelled it (twisted.web's ResponseNeverReceived)
        return "timeout"
    if reasons:
        name += ": " + ", ".join(reasons)
    return name[:200]


async def record(service, cfg: MerchantApiSettings, row, status: int | None, error: str | None, ms: int, *,
                 manual: bool = False) -> str:
    """The attempt's row and the notification's new state (its claim ends)."""
    ok = status is not None and 200 <= status < 300 and error is None
    if status is not None and not ok and error is None:
        error = f"HTTP {status}"

    async def job(conn):
        now = service.clock()
        await conn.execute(notification_attempts.insert().values(
            notification_id=row.id, at=now, http_status=status, error=error, duration_ms=ms, manual=manual))
        cur = (await conn.execute(sa.select(N).where(N.c.id == row.id))).first()
        attempts = cur.attempts + 1
        values: dict[str, Any] = dict(attempts=attempts, last_status=status, last_error=error, claimed_until=None,
                                      updated_at=now)
        if ok:
            values.update(status=N_DELIVERED, delivered_at=cur.delivered_at or now, next_attempt_at=None)
        elif cur.status == N_PENDING:
            # only automatic attempts reach here: a manual resend is of a delivered or failed one
            delay = cfg.retry_schedule[min(attempts, len(cfg.retry_schedule)) - 1]
            due = now + timedelta(seconds=delay)
            if due > _as_aware(cur.created_at, now) + timedelta(seconds=cfg.give_up_after):
                values.update(status=N_FAILED, next_attempt_at=None)
            else:
                values.update(next_attempt_at=due)
        await conn.execute(N.update().where(N.c.id == row.id).values(**values))
        return values.get("status", cur.status)
    return await service.ledger.write(job)


def _as_aware(at, like):
    if at.tzinfo is None and like.tzinfo is not None:
        return at.replace(tzinfo=like.tzinfo)
    return at


async def deliver(service, cfg: MerchantApiSettings, row, *, reactor=None, manual: bool = False) -> str:
    status, error, ms = await post_once(service, cfg, row, reactor=reactor)
    if error or not (status and 200 <= status < 300):
        log.info("callback {event} to merchant {mid}: {what}", event=row.event_id, mid=row.merchant_id,
                 what=error or status)
    return await record(service, cfg, row, status, error, ms, manual=manual)


async def resend(service, merchant_id: int, event_id: str, actor: str, *, channel: str = "web",
                 reactor=None) -> dict:
    """The back office's manual resend of a delivered or failed
    notification (a pending one is on its way already): sent at once,
    the attempt marked manual, audited. Delivered: it stays delivered
    whatever this attempt gets; failed: delivered if this one is."""
    cfg = MerchantApiSettings.of(service.settings)

    async def claim(conn):
        now = service.clock()
        row = (await conn.execute(sa.select(N).where(N.c.event_id == event_id, N.c.merchant_id == merchant_id))
               ).first()
        if row is None:
            raise ResendError(404, "no such notification")
        if row.status == N_PENDING:
            raise ResendError(409, "this notification is still being sent; it is retried by itself")
        done = await conn.execute(N.update().where(
            N.c.id == row.id, sa.or_(N.c.claimed_until.is_(None), N.c.claimed_until < now)).values(
            claimed_until=now + timedelta(seconds=cfg.claim_seconds)))
        if done.rowcount != 1:
            raise ResendError(409, "this notification is being resent now")
        await acct.audit(conn, actor=actor[:64], channel=channel, action="merchant_notification_resent",
                         account_id=merchant_id, event_id=event_id, before=row.status)
        return row
    row = await service.ledger.write(claim)
    status, error, ms = await post_once(service, cfg, row, reactor=reactor)
    state = await record(service, cfg, row, status, error, ms, manual=True)
    return {"event_id": event_id, "status": state, "http_status": status, "error": error, "duration_ms": ms}


def notification_view(row) -> dict:
    return {"id": row.id, "event_id": row.event_id, "type": row.event_type, "subject_id": row.subject_id,
            "url": row.url, "status": row.status, "attempts": row.attempts,
            "next_attempt_at": iso(row.next_attempt_at), "last_status": row.last_status,
            "last_error": row.last_error, "created_at": iso(row.created_at), "delivered_at": iso(row.delivered_at)}


async def list_notifications(conn, merchant_id: int, *, status: str | None = None, limit: int = 50,
                             before_id: int | None = None) -> list[dict]:
    """The merchant's notifications, newest first (`before_id`: the next page)."""
    q = sa.select(N).where(N.c.merchant_id == merchant_id)
    if status is not None:
        q = q.where(N.c.status == status)
    if before_id is not None:
        q = q.where(N.c.id < before_id)
    rows = (await conn.execute(q.order_by(N.c.id.desc()).limit(max(1, min(limit, 500))))).all()
    return [notification_view(r) for r in rows]


async def attempts(conn, notification_id: int) -> list[dict]:
    """Every attempt of one notification, oldest first."""
    A = notification_attempts
    rows = (await conn.execute(sa.select(A).where(A.c.notification_id == notification_id)
                               .order_by(A.c.at, A.c.id))).all()
    return [{"at": iso(r.at), "http_status": r.http_status, "error": r.error, "duration_ms": r.duration_ms,
             "manual": bool(r.manual)} for r in rows]
