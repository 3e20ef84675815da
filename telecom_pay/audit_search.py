"""Searching the audit log, for operations staff: by subscriber number, by
actor, by action and by local business day; newest first, a page at a time.

Channel-neutral: the web's `/ops/audit` and `GET /api/v1/ops/audit` parse
what a person typed with `parse_query` and run `search`; both raise
`AuditSearchError` (the field and a sentence) for anything they cannot use,
never a guess.

- The subscriber is a number in any form `telecom_pay.msisdn` takes (local
  `13800138000` or E.164 `+86...`/`86...`). It matches the rows of every
  wallet that ever had the number (closed ones too: a trail outlives the
  account) through `audit_log.account_id`. Rows written for a number with
  no account (an agent's look-up of an unknown number) carry only the
  masked number and cannot be found by it.
- Dates are local business days (`[platform] timezone`), both included; the
  bounds are `business_time.day_window`'s UTC instants, so a row written at
  00:30 Shanghai time belongs to that day, not to the UTC day before.
- Pages are keyset pages: `before` is the id of the last row of the previous
  page, and a page holds at most `MAX_LIMIT` rows, so no request reads more
  than that whatever the log's size.

Details are shown as stored, after `redacted`: the writers never put a PIN,
password or one-time code in an audit row, and a key that names a secret is
blanked here anyway, so a writer's slip is not shown to staff.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import Any, Callable

import sqlalchemy as sa

from telecom_pay.business_time import local_midnight
from telecom_pay.ledger.tables import WALLET, accounts, audit_log
from telecom_pay.msisdn import MsisdnError, mask, normalize

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
TEXT_LIMIT = 64                 # actor and action columns are 64 and 32 characters
REDACTED = "[redacted]"
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)
FIRST_YEAR, LAST_YEAR = 1970, 2999          # beyond these a local midnight is no instant the log can hold
#: keys that would name a secret in a details object, at any depth
_SECRET_KEY = re.compile(r"(^|_)(pin|pins|password|passwd|secret|otp|pan|cvv|expiry)($|_)", re.I)


class AuditSearchError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class AuditQuery:
    msisdn: str | None = None           # E.164 digits
    actor: str | None = None
    action: str | None = None
    first: date | None = None           # local business days, both included
    last: date | None = None
    limit: int = DEFAULT_LIMIT
    before: int | None = None           # id of the last row of the previous page

    def printable(self) -> dict[str, Any]:
        """The filters as an audit row records them: the number masked."""
        return {"msisdn": mask(self.msisdn) if self.msisdn else None, "actor": self.actor, "action": self.action,
                "from": self.first.isoformat() if self.first else None,
                "to": self.last.isoformat() if self.last else None, "limit": self.limit, "before": self.before}


@dataclass(frozen=True)
class AuditPage:
    rows: list[dict[str, Any]]
    next_before: int | None             # None: this was the last page
    account_ids: tuple[int, ...]        # the subscriber's wallets, when one was named


def _day(text: str, name: str) -> date:
    try:
        if not _DAY.match(text):        # fromisoformat would also take 20261202 and 2026-W49-3
            raise ValueError(text)
        day = date.fromisoformat(text)
    except ValueError:
        raise AuditSearchError(name, f"{name} is not a date (YYYY-MM-DD): {text[:20]!r}")
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise AuditSearchError(name, f"{name} must be between {FIRST_YEAR} and {LAST_YEAR}")
    return day


def _text(value: str | None, name: str) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    if len(value) > TEXT_LIMIT:
        raise AuditSearchError(name, f"{name} is longer than {TEXT_LIMIT} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise AuditSearchError(name, f"{name} contains a control character")       # no actor or action has one
    return value


def _whole(value: str | None, name: str, *, low: int, high: int | None = None) -> int | None:
    value = (value or "").strip()
    if not value:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise AuditSearchError(name, f"{name} must be a whole number")
    n = int(value)
    if n < low or (high is not None and n > high):
        raise AuditSearchError(name, f"{name} must be between {low} and {high}" if high is not None
                               else f"{name} must be at least {low}")
    return n


def parse_query(params: dict[str, str], *, region: str) -> AuditQuery:
    """What a person typed (all text, any of them empty or missing) as a
    query. `params` keys: msisdn, actor, action, from, to, limit, before."""
    msisdn = None
    number = (params.get("msisdn") or "").strip()
    if len(number) > 32:
        raise AuditSearchError("msisdn", "msisdn is longer than 32 characters")
    if number:
        try:
            msisdn = normalize(number, region)
        except MsisdnError:
            raise AuditSearchError("msisdn", "msisdn is not a mobile number (local 138... or E.164 +86...)")
    first = _day(params["from"].strip(), "from") if (params.get("from") or "").strip() else None
    last = _day(params["to"].strip(), "to") if (params.get("to") or "").strip() else None
    if first is not None and last is not None and last < first:
        raise AuditSearchError("to", "to is before from")
    limit = _whole(params.get("limit"), "limit", low=1, high=MAX_LIMIT)
    return AuditQuery(msisdn=msisdn, actor=_text(params.get("actor"), "actor"),
                      action=_text(params.get("action"), "action"), first=first, last=last,
                      limit=DEFAULT_LIMIT if limit is None else limit,
                      before=_whole(params.get("before"), "before", low=1))


def redacted(value: Any) -> Any:
    """`value` with whatever a key names as a secret replaced, at any depth."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) and _could_be_secret(v) else redacted(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def _could_be_secret(value: Any) -> bool:
    # `pin_verified: true` says nothing secret; a string or a number might be one
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def row_view(row, tz: tzinfo) -> dict[str, Any]:
    return {"id": row.id, "at": row.at.isoformat(), "local_time": local_instant(row.at, tz),
            "actor": row.actor, "channel": row.channel, "action": row.action, "account_id": row.account_id,
            "details": redacted(row.details if isinstance(row.details, dict) else {"value": row.details})}


async def search(read: Callable, query: AuditQuery, tz: tzinfo) -> AuditPage:
    """One page of rows matching every filter given, newest first (by `at`,
    then id). `read` is the ledger's `read(job)`.

    Indexes: a subscriber's rows use `ix_audit_account (account_id, at)`;
    the keyset step uses the primary key. Actor, action and date without a
    subscriber have no index of their own (see channels/web/README.md)."""
    a = audit_log.c

    async def job(conn):
        ids: tuple[int, ...] = ()
        q = sa.select(audit_log)
        if query.msisdn is not None:
            ids = tuple((await conn.execute(sa.select(accounts.c.id).where(
                accounts.c.kind == WALLET, accounts.c.msisdn == query.msisdn)
                .order_by(accounts.c.id))).scalars().all())
            if not ids:
                return AuditPage([], None, ())
            q = q.where(a.account_id.in_(ids))
        if query.actor is not None:
            q = q.where(a.actor == query.actor)
        if query.action is not None:
            q = q.where(a.action == query.action)
        if query.first is not None:
            q = q.where(a.at >= local_midnight(query.first, tz))
        if query.last is not None:
            q = q.where(a.at < local_midnight(date.fromordinal(query.last.toordinal() + 1), tz))
        if query.before is not None:
            cursor = (await conn.execute(sa.select(a.at).where(a.id == query.before))).scalar()
            if cursor is None:
                raise AuditSearchError("before", "before names no audit row (use next_before of the last page)")
            q = q.where(sa.or_(a.at < cursor, sa.and_(a.at == cursor, a.id < query.before)))
        rows = (await conn.execute(q.order_by(a.at.desc(), a.id.desc()).limit(query.limit + 1))).all()
        more = len(rows) > query.limit
        rows = rows[:query.limit]
        return AuditPage([row_view(r, tz) for r in rows], rows[-1].id if more else None, ids)
    return await read(job)


async def known_actions(read: Callable) -> list[str]:
    """Every action the log holds, for the search form's list. A scan of
    the whole log: callers keep the answer a while (the web does)."""
    async def job(conn):
        return list((await conn.execute(sa.select(audit_log.c.action).distinct()
                                        .order_by(audit_log.c.action))).scalars().all())
    return await read(job)


def local_instant(instant: datetime, tz: tzinfo) -> str:
    return instant.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
