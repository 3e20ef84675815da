"""The statistics page in real headless Chromium shows the day's figures,
and the test computes them on its own, with its own SQL on the demo's
SQLite ledger and message tables (never through telecom_pay/stats.py).

The business day is the platform's (Asia/Shanghai), not UTC's, and the
test is made to hold at the hour a UTC-dated count goes wrong: the demo's
clock (libfaketime, the whole process) runs first at 23:00 Shanghai time
of day D, with traffic, and then, restarted on the same database, at 00:30
of D+1, with more. Both runs are on the same UTC date, so "today" is only
the second run's traffic if the day is Shanghai's; the test checks that
the data tells the two apart, then that the page shows D+1's figures."""
from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from tests.browserkit import chromium, in_a_thread, require_chromium, shot
from tests.demokit import start_demo
from tests.pagekit import log_in

# one demo per module: its tests stay on one xdist worker (make test runs --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_browser_ops_stats")

SHANGHAI = ZoneInfo("Asia/Shanghai")
PIN = "147258"                   # the demo account's
PAYER, FIRST, SECOND = "13800138000", "13900139000", "13700137000"
UTC_DAY = datetime.now(timezone.utc).date()
EVENING = f"{UTC_DAY} 15:00:00"  # 23:00 in Shanghai, day D = UTC_DAY
NIGHT = f"{UTC_DAY} 16:30:00"    # 00:30 in Shanghai, day D+1
TODAY = UTC_DAY + timedelta(days=1)


def say(demo, msisdn: str, text: str, expect: str) -> str:
    """An SMS from the handset over SMPP, and the platform's answer."""
    since = demo.inbox_size(msisdn)
    demo.send(msisdn, text)
    return demo.wait_sms(msisdn, since, expect)[0]


def pay(demo, words: str, pin: str, expect: str) -> str:
    say(demo, PAYER, words, "支付密码")
    return say(demo, PAYER, pin, expect)


def together(*steps) -> None:
    """Handsets are independent phones: their conversations run at once."""
    with ThreadPoolExecutor(len(steps)) as pool:
        for done in [pool.submit(step) for step in steps]:
            done.result()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    require_chromium()
    where = tmp_path_factory.mktemp("stats-demo")
    evening = start_demo(where, clock_at=EVENING)
    try:                                     # day D: an opening and a top-up
        together(lambda: (say(evening, FIRST, "KT", "A"), say(evening, FIRST, "A", "欢迎")),
                 lambda: pay(evening, "CZ 50", PIN, "成功"))
    finally:
        evening.stop()
    night = start_demo(where, clock_at=NIGHT)
    try:                                     # day D+1: an opening, a transfer, a wrong PIN
        together(lambda: (say(night, SECOND, "KT", "A"), say(night, SECOND, "A", "欢迎")),
                 lambda: (pay(night, f"ZZ {FIRST} 30", PIN, "转账"), pay(night, f"ZZ {FIRST} 5", "000000", "密码")))
        yield night
    finally:
        night.stop()


def window(day: date) -> tuple[str, str]:
    """[start, end) of a Shanghai day as the UTC text SQLite holds."""
    start = datetime.combine(day, time.min, tzinfo=SHANGHAI).astimezone(timezone.utc)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=SHANGHAI).astimezone(timezone.utc)
    return start.strftime("%Y-%m-%d %H:%M:%S"), end.strftime("%Y-%m-%d %H:%M:%S")


def figures(db, start: str, end: str) -> dict:
    def one(sql):
        return db.execute(sql, (start, end)).fetchone()[0]
    return {
        "accounts_opened": one("SELECT count(*) FROM audit_log WHERE action IN ('confirm', 'opened') "
                               "AND at >= ? AND at < ?"),
        "active_subscribers": one("SELECT count(DISTINCT o.account_id) FROM operations o JOIN accounts a "
                                  "ON a.id = o.account_id WHERE a.kind = 'wallet' AND o.state = 'posted' "
                                  "AND o.created_at >= ? AND o.created_at < ?"),
        "sms_in": one("SELECT count(*) FROM inbound_messages WHERE channel = 'sms' "
                      "AND received_at >= ? AND received_at < ?"),
        "sms_out": one("SELECT count(*) FROM outbox WHERE channel = 'sms' "
                       "AND json_extract(meta, '$.ussd_op') IS NULL AND created_at >= ? AND created_at < ?"),
        "transactions": {(k, c, s): (n, amount, fee) for k, c, s, n, amount, fee in db.execute(
            "SELECT kind, channel, state, count(*), sum(amount), sum(fee) FROM operations "
            "WHERE created_at >= ? AND created_at < ? GROUP BY kind, channel, state", (start, end))},
        "pin_wrong": dict(db.execute("SELECT channel, count(*) FROM audit_log WHERE action = 'pin_wrong' "
                                     "AND at >= ? AND at < ? GROUP BY channel", (start, end)).fetchall()),
    }


def fen(yuan: str) -> int:
    whole, _, cents = yuan.strip().partition(".")
    return int(whole) * 100 + int(cents or 0)


def test_the_stats_page_shows_the_business_day_the_ledger_holds(demo):
    db = sqlite3.connect(f"file:{demo.database}?mode=ro", uri=True)
    try:
        today = figures(db, *window(TODAY))
        yesterday = figures(db, *window(UTC_DAY))
        utc_dated = figures(db, f"{UTC_DAY} 00:00:00", f"{TODAY} 00:00:00")
    finally:
        db.close()
    # the data tells the days apart: both runs share a UTC date, not a Shanghai one
    assert today["accounts_opened"] == 1 and yesterday["accounts_opened"] >= 2, (today, yesterday)
    assert utc_dated["accounts_opened"] == today["accounts_opened"] + yesterday["accounts_opened"]
    assert today["transactions"][("p2p", "sms", "posted")] == (1, 3000, 0), today["transactions"]
    assert ("topup", "sms", "posted") not in today["transactions"]
    assert yesterday["transactions"][("topup", "sms", "posted")][:2] == (1, 5000), yesterday["transactions"]
    assert today["pin_wrong"] == {"sms": 1} and today["active_subscribers"] == 1

    def drive():
        with chromium() as browser:
            page = log_in(browser.new_page(), demo.web_url, "admin")
            page.goto(f"{demo.web_url}/ops/stats")
            shot(page, "ops-stats-today")
            cell = lambda name: page.locator(f"#summary td[data-figure={name}]").inner_text()   # noqa: E731
            shown = {name: int(cell(name)) for name in ("accounts_opened", "active_subscribers", "sms_in", "sms_out")}
            rows = {}
            for row in page.locator("#transactions tbody tr[data-kind]").all():
                kind, channel, state, count, amount, fee = [td.inner_text() for td in row.locator("td").all()]
                rows[(kind, channel, state)] = (int(count), fen(amount), fen(fee))
            failures = [[td.inner_text() for td in r.locator("td").all()]
                        for r in page.locator("#failures tbody tr").all()]
            return page.locator("main > p").first.inner_text(), shown, rows, failures
    heading, shown, rows, failures = in_a_thread(drive)
    assert f"{TODAY} to {TODAY} (Asia/Shanghai)" in heading, heading
    assert shown == {k: today[k] for k in shown}, (shown, today)
    assert rows == today["transactions"], (rows, today["transactions"])
    assert {ch: int(n) for reason, ch, n, _ in failures if reason == "pin_wrong"} == today["pin_wrong"], failures
