"""A refund after settlement, in real headless Chromium, against `make run`
on three business days (libfaketime; one database):

- day D: the demo subscriber pays M001 30.00 by SMS;
- day D+1: `telecom-pay settle` pays day D out to M001; then M001's staff
  member asks for a full refund in the back office, M001's admin (another
  person) approves it, and the subscriber's SMS arrives;
- day D+2: settling day D+1 finds the refund, less the fee given back, with
  nothing to pay it from: the batch carries its negative net forward, and
  the back office's settlement page shows both batches.
Screenshots: tests/artifacts/."""
from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from tests.browserkit import chromium, in_a_thread, require_chromium, shot
from tests.conftest import REDIS_SERVER_URL
from tests.demokit import CLI, clock_env, start_demo
from tests.pagekit import merchant_log_in, redis_captcha_answers

NUMBER = "13800138000"
PIN = "147258"
DAY = "2026-11-20"                                     # Shanghai business day D
AT = {0: "2026-11-20 02:00:00", 1: "2026-11-21 02:00:00", 2: "2026-11-22 02:00:00"}   # 10:00 Shanghai, UTC
PREFIX = f"tp-settle:{uuid.uuid4().hex[:10]}:"
SESSIONS = {"sessions": {"url": REDIS_SERVER_URL, "prefix": PREFIX}}


def _sms(demo, text: str, expect: str) -> str:
    since = demo.inbox_size(NUMBER)
    demo.send(NUMBER, text)
    return demo.wait_sms(NUMBER, since, expect, timeout=60)[0]


def _settle(demo, day: str, clock: str) -> str:
    out = subprocess.run([*CLI, "settle", "--date", day, "--merchant", "M001", "--config", str(demo.cwd / "telecom-pay.toml")],
                         cwd=demo.cwd, capture_output=True, text=True, timeout=180,
                         env=dict(os.environ, **clock_env(clock)))
    assert out.returncode == 0, (out.stdout, out.stderr)
    return out.stdout


def test_a_refund_after_settlement_is_approved_by_an_admin_and_taken_from_the_next_batch(tmp_path):
    require_chromium()
    from playwright.sync_api import expect
    answers = redis_captcha_answers(REDIS_SERVER_URL, PREFIX)

    day0 = start_demo(tmp_path, overrides=SESSIONS, clock_at=AT[0])
    try:
        _sms(day0, "CZ 100", "密码")
        assert "成功" in _sms(day0, PIN, "成功")
        _sms(day0, "ZF M001 30", "密码")
        receipt = _sms(day0, PIN, "30.00")
        ref = receipt.split()[0]
        assert "福彩中心" in receipt, receipt
    finally:
        day0.stop()

    day1 = start_demo(tmp_path, overrides=SESSIONS, clock_at=AT[1])
    try:
        settled = _settle(day1, DAY, AT[1])
        assert f"{DAY} M001: payments 1 gross 30.00" in settled and "-> paid" in settled, settled
        base = day1.web_url
        since = day1.inbox_size(NUMBER)

        def refund():
            with chromium() as browser:
                staff = browser.new_context().new_page()
                merchant_log_in(staff, base, "m001.staff", answers)
                staff.goto(f"{base}/merchant/orders?number={ref}")
                staff.click(f"a[href='/merchant/orders/{ref}']")
                staff.fill("#refund-form input[name=amount]", "30.00")
                staff.fill("#refund-form input[name=reason]", "draw cancelled")
                staff.click("#refund-form button[type=submit]")
                expect(staff.locator("body")).to_contain_text("waiting for a merchant admin")
                shot(staff, "merchant-staff-refund-requested")
                # staff may ask, not approve: the queue offers them no decision
                staff.goto(f"{base}/merchant/refunds")
                expect(staff.locator("#pending button[value=approve]")).to_have_count(0)

                admin = browser.new_context().new_page()
                merchant_log_in(admin, base, "m001.admin", answers)
                admin.goto(f"{base}/merchant/refunds")
                row = admin.locator("#pending tr", has_text="30.00")
                expect(row).to_contain_text("m001.staff")
                row.locator("input[name=reason]").fill("checked with the draw office")
                row.locator("button[value=approve]").click()
                expect(admin.locator("#no-pending")).to_be_visible()
                expect(admin.locator("#decided")).to_contain_text("checked with the draw office")
                shot(admin, "merchant-admin-refund-approved")
        in_a_thread(refund)
        told, _ = day1.wait_sms(NUMBER, since, "30.00")
        assert "退款" in told and "福彩中心" in told, told
        assert "余额 100.00" in told, told                 # all of it back: 100.00 topped up, 30.00 paid and refunded
    finally:
        day1.stop()

    day2 = start_demo(tmp_path, overrides=SESSIONS, clock_at=AT[2])
    try:
        settled = _settle(day2, "2026-11-21", AT[2])
        # 30.00 refunded, its 0.18 fee given back: 29.82 owed to the platform, carried forward
        assert "2026-11-21 M001: payments 0 gross 0.00 refunds 30.00" in settled, settled
        assert "net -29.82" in settled and "-> carried" in settled, settled
        base = day2.web_url

        def statement():
            with chromium() as browser:
                admin = browser.new_page()
                merchant_log_in(admin, base, "m001.admin", answers)
                admin.goto(f"{base}/merchant/settlement")
                paid = admin.locator("#batches tr", has_text=DAY)
                expect(paid).to_contain_text("29.82")
                expect(paid).to_contain_text("paid")
                carried = admin.locator("#batches tr", has_text="2026-11-21")
                expect(carried).to_contain_text("30.00")
                expect(carried).to_contain_text("0.18")
                expect(carried).to_contain_text("-29.82")
                expect(carried).to_contain_text("carried")
                shot(admin, "merchant-settlement-carried")
        in_a_thread(statement)
    finally:
        day2.stop()


pytestmark = pytest.mark.xdist_group("test_browser_merchant_settlement")
