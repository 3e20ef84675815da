"""An operations admin releases a held payment in real headless Chromium,
against `make run` with a large-amount rule easy to trigger (50.00 or
more holds): the demo subscriber tops up and pays 60.00 from the handset
(SMS through the SMSC simulator's control API), is told the payment is
under review, the admin logs in, sees the case on /ops/risk and releases
it; the payment is booked once and the handset gets the receipt.
Screenshots go to tests/artifacts/ (git-ignored)."""
from __future__ import annotations

import json
import urllib.request

from tests.browserkit import chromium, in_a_thread, require_chromium, shot
from tests.demokit import start_demo

NUMBER = "13800138000"
PIN = "147258"
RISK = {"risk": {"large_amount": {"action": "hold", "amount": 5000}}}


def _call(url: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(url, method="POST" if body is not None else "GET",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


class Handset:
    def __init__(self, control: str):
        self.control = control

    def say(self, text: str, *, until: str | None = None) -> list[str]:
        """Send an SMS; the reply (or the replies up to one containing `until`)."""
        sent = _call(f"{self.control}/handsets/{NUMBER}/mo", {"text": text, "wait": 30})
        return self.read(sent["inbox_index"], until)

    def read(self, since: int, until: str | None = None) -> list[str]:
        got: list[str] = []
        for _ in range(5):
            box = _call(f"{self.control}/handsets/{NUMBER}/inbox?since={since}&wait=20")
            got += [m["text"] for m in box["inbox"]]
            since = box["next"]
            if got and (until is None or until in got[-1]):
                break
        return got

    def inbox_size(self) -> int:
        return _call(f"{self.control}/handsets/{NUMBER}/inbox")["next"]


def test_an_ops_admin_releases_a_held_payment_in_chromium(tmp_path):
    require_chromium()
    from playwright.sync_api import expect
    demo = start_demo(tmp_path, sections=RISK)
    web = f"http://127.0.0.1:{demo.web}"
    phone = Handset(f"http://127.0.0.1:{demo.http}")
    try:
        [ask] = phone.say("CZ 100")
        assert "密码" in ask, ask
        topped = phone.say(PIN, until="成功")          # perhaps "in progress", then the bank's answer
        assert "充值 100.00 元成功" in topped[-1], topped
        [ask] = phone.say("ZF M001 60")
        assert "密码" in ask, ask
        [held] = phone.say(PIN)
        assert "审核" in held and "60.00" in held and "余额 40.00" in held, held
        ref = held.split()[0]
        [balance] = phone.say("YE")
        assert "余额 40.00 元" in balance and "另有 60.00 元在审核" in balance, balance   # reserved, and says so
        before_release = phone.inbox_size()

        def drive():
            with chromium() as browser:
                page = browser.new_page()
                page.goto(f"{web}/login")
                page.fill("input[name=username]", "admin")
                page.fill("input[name=password]", "operate-dev-2026")
                page.click("button[type=submit]")
                expect(page.locator("a[href='/ops/risk']")).to_be_visible()
                page.click("a[href='/ops/risk']")
                case = page.locator("section.risk-case", has_text=ref)
                expect(case).to_contain_text("Large amount")
                expect(case).to_contain_text("threshold 50.00")
                expect(case).to_have_attribute("data-status", "held")
                shot(page, "ops-risk-held")
                # a release without a reason is refused by the form (required), then given one
                case.locator("input[name=reason]").fill("customer confirmed by phone")
                case.locator("button[value=release]").click()
                expect(page.locator("p.notice")).to_contain_text(f"({ref}) released: paid as")
                expect(page.locator("#no-open")).to_be_visible()
                expect(page.locator("#decided")).to_contain_text("customer confirmed by phone")
                shot(page, "ops-risk-released")
                return page.locator("p.notice").inner_text()
        notice = in_a_thread(drive)
        paid_ref = notice.split("paid as ")[1].split(".")[0]
        [receipt] = phone.read(before_release)
        assert paid_ref in receipt and "已支付 60.00 元" in receipt, receipt
        [balance] = phone.say("YE")
        assert balance == "余额 40.00 元.", balance    # paid once: 100.00 - 60.00, nothing reserved
        [statement] = phone.say("MX")
        assert statement.count("60.00") == 1, statement
    finally:
        demo.stop()
