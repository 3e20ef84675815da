"""Callbacks owed to merchants, written in the transaction that changes the
state they report (an outbox): a confirmed payment and its notification
commit together or not at all, so no outcome goes untold and none is told
before it is durable. `notifications.py` delivers them."""
from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

from .tables import N_PENDING, merchant_notifications

EVENT_TYPES = ("payment.confirmed", "payment.declined", "payment.expired", "refund.succeeded", "refund.rejected",
               "airtime.ordered")


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def event_body(event_id: str, event_type: str, created_at: datetime, data: dict[str, Any]) -> str:
    """The exact bytes POSTed (and signed): kept as text, so a resend sends
    the same body the first attempt did."""
    return json.dumps({"event_id": event_id, "type": event_type, "created_at": iso(created_at), "data": data},
                      ensure_ascii=False, separators=(",", ":"), sort_keys=True)


async def enqueue(conn, *, merchant_id: int, event_type: str, subject_id: str, url: str | None,
                  data: dict[str, Any], now: datetime) -> str | None:
    """Owe `merchant_id` a callback (in the caller's transaction). None when
    there is no URL to call: the outcome is still in GET and the back office."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type}")
    if not url:
        return None
    event_id = new_event_id()
    await conn.execute(merchant_notifications.insert().values(
        event_id=event_id, merchant_id=merchant_id, event_type=event_type, subject_id=subject_id, url=url,
        body=event_body(event_id, event_type, now, data), status=N_PENDING, attempts=0, next_attempt_at=now,
        created_at=now, updated_at=now))
    return event_id


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")
