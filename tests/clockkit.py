"""Fixed instants for tests that depend on "today".

Local days (limits, T+1 settlement) go wrong at particular hours: the
Shanghai day starts at 16:00 UTC, so a bug comparing local bounds with UTC
stamps shows only between 00:00 and 08:00 local. Tests that depend on the
date run at chosen instants, just after local midnight and just before the
next, whatever the hour the suite runs at.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")

# mid-month, so "a day later" stays in the month; month ends have their own tests
LOCAL_INSTANTS = {
    "00:30": datetime(2026, 6, 15, 0, 30, tzinfo=SHANGHAI),
    "23:30": datetime(2026, 6, 15, 23, 30, tzinfo=SHANGHAI),
}


class TestClock:
    """ "Now" for a test: starts at a chosen instant and runs at real speed
    (stamps keep increasing, retry times come due); `advance` and `set`
    move it. Pass the one object to the ledger and the service (or the
    daemon), so their clocks cannot diverge."""

    __test__ = False        # not a pytest test class

    def __init__(self, start: datetime):
        self.set(start)

    def __call__(self) -> datetime:
        """In UTC, as the production clock (ledger.utcnow) gives it."""
        return (self._start + timedelta(seconds=time.monotonic() - self._t0)).astimezone(timezone.utc)

    def set(self, instant: datetime) -> None:
        if instant.tzinfo is None:
            raise ValueError("a test clock needs an aware instant")
        self._start, self._t0 = instant, time.monotonic()

    def advance(self, delta: timedelta) -> None:
        self._start += delta
