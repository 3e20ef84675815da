"""Local business time: the platform's calendar days and months, in its
configured zone (`[platform] timezone`, Asia/Shanghai by default).

Instants are stored and compared as UTC (`ledger.tables.Stamp`); daily and
monthly limits, the T+1 settlement of a day and the reconciliation of a
bank's day are about *local* calendar days. Those days are computed here
and nowhere else, and every bound returned is an aware UTC datetime, ready
to compare with a stored column. A local midnight built by hand elsewhere
(`replace(hour=0)` on some datetime) is how the limits stopped working
between 00:00 and 08:00 Shanghai time.

Windows are half-open, [start, end): an instant at local midnight belongs
to the day it starts. The end of a day is the next day's local midnight, not
start + 24 h, so a zone with daylight saving has 23- and 25-hour days.
`tz` None means the process's local zone (the bank simulator dates its
movements by it).
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone, tzinfo


def _aware(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"naive datetime {instant.isoformat()}: an instant needs a zone")
    return instant


def local_midnight(day: date, tz: tzinfo | None) -> datetime:
    """The UTC instant at which local `day` begins."""
    if tz is None:
        return datetime.combine(day, time.min).astimezone().astimezone(timezone.utc)
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(timezone.utc)


def business_day(instant: datetime, tz: tzinfo | None) -> date:
    """The local calendar day an instant belongs to."""
    instant = _aware(instant)
    return (instant.astimezone(tz) if tz is not None else instant.astimezone()).date()


def day_window(day: date, tz: tzinfo | None) -> tuple[datetime, datetime]:
    """[start, end) of local `day`, as UTC instants."""
    return local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)


def month_window(day: date, tz: tzinfo | None) -> tuple[datetime, datetime]:
    """[start, end) of the local month `day` is in, as UTC instants."""
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return local_midnight(first, tz), local_midnight(following, tz)


def day_start(instant: datetime, tz: tzinfo | None) -> datetime:
    """Start of the local day `instant` is in (daily limits count from here)."""
    return local_midnight(business_day(instant, tz), tz)


def month_start(instant: datetime, tz: tzinfo | None) -> datetime:
    """Start of the local month `instant` is in (monthly limits count from here)."""
    return local_midnight(business_day(instant, tz).replace(day=1), tz)


def first_settlement_day(day: date, delay_days: int) -> date:
    """T+N: the first local day on which business day `day` may be settled."""
    return day + timedelta(days=delay_days)


def is_settleable(day: date, now: datetime, tz: tzinfo | None, delay_days: int) -> bool:
    """Whether business day `day` may be settled at `now` (T+N: from local
    midnight N days after it, when every payment of the day is booked)."""
    return business_day(now, tz) >= first_settlement_day(day, delay_days)
