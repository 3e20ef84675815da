"""Instants are stored as UTC on both databases and local days are
computed in one place (telecom_pay.business_time): the bounds of a Shanghai
day compared in SQL with stored stamps, at 00:30 and 23:30 local."""
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from telecom_pay import business_time as bt
from telecom_pay.ledger import schema
from telecom_pay.ledger.tables import audit_log
from tests.clockkit import SHANGHAI

UTC = timezone.utc


def test_a_shanghai_day_starts_at_1600_utc_the_day_before():
    assert bt.day_window(date(2026, 6, 15), SHANGHAI) == (datetime(2026, 6, 14, 16, tzinfo=UTC),
                                                          datetime(2026, 6, 15, 16, tzinfo=UTC))
    assert bt.business_day(datetime(2026, 6, 14, 16, 30, tzinfo=UTC), SHANGHAI) == date(2026, 6, 15)
    assert bt.business_day(datetime(2026, 6, 14, 15, 59, 59, tzinfo=UTC), SHANGHAI) == date(2026, 6, 14)
    at_0030 = datetime(2026, 7, 1, 0, 30, tzinfo=SHANGHAI)
    assert bt.day_start(at_0030, SHANGHAI) == datetime(2026, 6, 30, 16, tzinfo=UTC)
    assert bt.month_start(at_0030, SHANGHAI) == datetime(2026, 6, 30, 16, tzinfo=UTC)
    assert bt.month_window(date(2026, 12, 31), SHANGHAI) == (datetime(2026, 11, 30, 16, tzinfo=UTC),
                                                             datetime(2026, 12, 31, 16, tzinfo=UTC))
    assert all(b.tzinfo is UTC for b in bt.day_window(date(2026, 6, 15), SHANGHAI))


def test_settleable_from_local_midnight_after_the_day():
    day = date(2026, 6, 15)
    assert not bt.is_settleable(day, datetime(2026, 6, 15, 23, 59, tzinfo=SHANGHAI), SHANGHAI, 1)
    assert bt.is_settleable(day, datetime(2026, 6, 16, 0, 0, tzinfo=SHANGHAI), SHANGHAI, 1)
    assert bt.is_settleable(day, datetime(2026, 6, 15, 16, 0, tzinfo=UTC), SHANGHAI, 1)     # = 00:00 local
    assert not bt.is_settleable(day, datetime(2026, 6, 16, 12, tzinfo=SHANGHAI), SHANGHAI, 2)


def test_a_day_with_a_clock_change_is_not_24_hours():
    berlin = ZoneInfo("Europe/Berlin")
    start, end = bt.day_window(date(2026, 3, 29), berlin)
    assert end - start == timedelta(hours=23)


def test_naive_instants_are_refused():
    with pytest.raises(ValueError):
        bt.business_day(datetime(2026, 6, 15, 0, 30), SHANGHAI)


def test_stamps_are_stored_and_compared_as_utc(database_url):
    """Stamps written as Shanghai and as UTC datetimes read back as aware
    UTC, are stored in one sortable UTC form on SQLite, and a local day's
    bounds select exactly the stamps of that day, at 00:30 and 23:30 local."""
    schema.upgrade(database_url)
    eng = sa.create_engine(schema.sync_url(database_url))
    stamps = {"before": datetime(2026, 6, 14, 23, 30, tzinfo=SHANGHAI),
              "00:30": datetime(2026, 6, 15, 0, 30, tzinfo=SHANGHAI),
              "23:30": datetime(2026, 6, 15, 15, 30, tzinfo=UTC),             # 23:30 local, given in UTC
              "after": datetime(2026, 6, 16, 0, 30, tzinfo=SHANGHAI)}
    try:
        with eng.begin() as conn:
            conn.execute(audit_log.insert(), [dict(at=at, actor=name, channel="t", action="stamp", details={})
                                              for name, at in stamps.items()])
        with eng.connect() as conn:
            rows = {r.actor: r.at for r in conn.execute(sa.select(audit_log.c.actor, audit_log.c.at))}
            assert rows == stamps and all(at.tzinfo is UTC for at in rows.values())
            start, end = bt.day_window(date(2026, 6, 15), SHANGHAI)
            day = conn.execute(sa.select(audit_log.c.actor).where(audit_log.c.at >= start, audit_log.c.at < end)
                               .order_by(audit_log.c.at)).scalars().all()
            assert day == ["00:30", "23:30"]
            later = conn.execute(sa.select(audit_log.c.actor).where(
                audit_log.c.at >= sa.bindparam("since")), {"since": datetime(2026, 6, 16, tzinfo=SHANGHAI)})
            assert later.scalars().all() == ["after"]
            if conn.dialect.name == "sqlite":
                raw = conn.exec_driver_sql("SELECT at FROM audit_log ORDER BY at").scalars().all()
                assert raw == ["2026-06-14 15:30:00.000000", "2026-06-14 16:30:00.000000",
                               "2026-06-15 15:30:00.000000", "2026-06-15 16:30:00.000000"]
        with pytest.raises(sa.exc.StatementError, match="naive"):
            with eng.begin() as conn:
                conn.execute(audit_log.insert().values(at=datetime(2026, 6, 15, 0, 30), actor="naive",
                                                       channel="t", action="stamp", details={}))
    finally:
        eng.dispose()
