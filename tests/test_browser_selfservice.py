"""The subscriber's web self-service in real headless Chromium against
`make run` (telecom-pay demo, with the SMSC and bank simulators): a
handset without an account opens on the web with the code the SMSC
simulator's handset received, reads its PIN SMS, changes the PIN, tops up
by SMS from the card the bank simulator bound, pays a merchant from the
page with the PIN, sees the balance and statement, resets a forgotten
password by SMS code, and finds three wrong PINs on the page lock its SMS
payments too. Every self-service page is shot to tests/artifacts/."""
from __future__ import annotations

import json
import re
import time
import urllib.request

from tests.browserkit import chromium, in_a_thread, require_chromium, shot
from tests.demokit import start_demo

NUMBER = "13900139000"
PASSWORD = "green-tea-42"
NEW_PASSWORD = "black-coffee-7"
PIN = "258147"
SIX_DIGITS = re.compile(r"(?<!\d)(\d{6})(?!\d)")


class Handset:
    """The SMSC simulator's handset over its HTTP control API."""

    def __init__(self, control: str, msisdn: str):
        self.base = f"{control}/handsets/{msisdn}"
        self.seen = 0

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def next_text(self, containing: str = "", timeout: float = 30.0) -> str:
        """The next SMS that arrives (after those already read) containing `containing`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self._call("GET", f"/inbox?since={self.seen}&wait=10")
            for message in got["inbox"]:
                self.seen += 1
                if containing in message["text"]:
                    return message["text"]
        raise AssertionError(f"no SMS with {containing!r} within {timeout:.0f} s")

    def send(self, text: str) -> None:
        assert self._call("POST", "/mo", {"text": text, "wait": 15})["acked"]


def test_a_subscriber_opens_on_the_web_and_pays_a_merchant_from_the_page(tmp_path):
    require_chromium()
    from playwright.sync_api import expect
    demo = start_demo(tmp_path)
    web = f"http://127.0.0.1:{demo.web}"
    phone = Handset(f"http://127.0.0.1:{demo.http}", NUMBER)

    def drive():
        with chromium() as browser:
            page = browser.new_page()
            # /open: the number, then the code from the SMS, the agreement and the login password
            page.goto(web + "/login")
            page.click("#self-links a[href='/open']")
            page.fill("#open-number input[name=msisdn]", NUMBER)
            shot(page, "self-open-number")
            page.click("#open-number button[type=submit]")
            expect(page.locator("#code-notice")).to_contain_text("a code was sent")
            code = SIX_DIGITS.search(phone.next_text("验证码")).group(1)
            page.fill("#open-confirm input[name=code]", code)
            page.check("#open-confirm input[name=accept_agreement]")
            page.fill("#open-confirm input[name=password]", PASSWORD)
            page.fill("#open-confirm input[name=password_again]", PASSWORD)
            shot(page, "self-open-code")
            page.click("#open-confirm button[type=submit]")
            expect(page).to_have_url(re.compile(r"/me\?opened=1$"))
            expect(page.locator("#balance")).to_have_text("¥0.00")
            expect(page.locator("#pin-warning")).to_be_visible()
            shot(page, "self-home-opened")

            # the PIN came by SMS; the platform wants it changed before it pays
            initial = SIX_DIGITS.search(phone.next_text("MM")).group(1)
            page.click("nav a[href='/me/settings']")
            page.fill("#op-pin input[name=current_pin]", initial)
            page.fill("#op-pin input[name=new_pin]", PIN)
            page.click("#op-pin button[type=submit]")
            expect(page.locator("p.notice")).to_contain_text("Change the payment PIN")
            expect(page.locator("#pin-warning")).to_have_count(0)
            shot(page, "self-settings")

            # the bank simulator binds the handset's demo card once the wallet is active; top up by SMS
            page.click("nav a[href='/me/card']")
            for _ in range(20):
                if "Bound:" in page.locator("#card").inner_text():
                    break
                page.wait_for_timeout(500)
                page.reload()
            expect(page.locator("#card")).to_contain_text("Bound: debit card ···· ")
            shot(page, "self-card")
            phone.send("CZ 100")
            phone.next_text("6位支付密码")              # the PIN prompt
            phone.send(PIN)
            phone.next_text("100.00")                 # topped up

            # pay a merchant from the page with the PIN; a second submit of the same form pays once
            page.click("nav a[href='/me/pay']")
            expect(page.locator("#balance")).to_have_text("¥100.00")
            page.fill("#op-pay input[name=merchant_code]", "M001")
            page.fill("#op-pay input[name=amount]", "12.50")
            page.fill("#op-pay input[name=pin]", PIN)
            shot(page, "self-pay")
            form = page.locator("#op-pay")
            fields = {name: form.locator(f"input[name={name}]").input_value()
                      for name in ("csrf_token", "op", "idempotency_key", "merchant_code", "amount", "pin")}
            page.click("#op-pay button[type=submit]")
            expect(page.locator("p.notice")).to_contain_text("Pay a merchant")
            shot(page, "self-pay-done")
            again = page.request.post(web + "/me/operation", form=fields)       # the double submit
            assert again.status == 200, again.status
            page.click("nav a[href='/me']")
            expect(page.locator("#balance")).to_have_text("¥87.50")

            page.click("nav a[href='/me/statement']")
            rows = page.locator("#statement tbody tr")
            expect(rows).to_have_count(2)
            expect(rows.nth(0)).to_contain_text("−¥12.50")
            expect(rows.nth(1)).to_contain_text("+¥100.00")
            shot(page, "self-statement")
            csv_text = page.request.get(web + "/me/statement.csv").text()
            newest = csv_text.splitlines()[1]
            assert ",payment," in newest and ",-12.50," in newest, csv_text

            # the forgotten password: log out, a code by SMS, a new password, logged in with it
            page.click("header button:text-is('Log out')")
            page.click("#self-links a[href='/forgot']")
            page.fill("#forgot-number input[name=msisdn]", NUMBER)
            shot(page, "self-forgot-number")
            page.click("#forgot-number button[type=submit]")
            code = SIX_DIGITS.search(phone.next_text("重置")).group(1)
            page.fill("#forgot-reset input[name=code]", code)
            page.fill("#forgot-reset input[name=new_password]", NEW_PASSWORD)
            page.fill("#forgot-reset input[name=new_password_again]", NEW_PASSWORD)
            shot(page, "self-forgot-code")
            page.click("#forgot-reset button[type=submit]")
            expect(page.locator("#reset-done")).to_be_visible()
            shot(page, "self-forgot-done")
            page.goto(web + "/login")
            page.fill("#login input[name=username]", NUMBER)
            page.fill("#login input[name=password]", NEW_PASSWORD)
            page.click("#login button[type=submit]")
            expect(page).to_have_url(re.compile(r"/me$"))
            expect(page.locator("#balance")).to_have_text("¥87.50")
            shot(page, "self-home")

            # three wrong PINs on the page lock payments, by SMS too
            page.click("nav a[href='/me/pay']")
            for _ in range(3):
                page.fill("#op-pay input[name=merchant_code]", "M001")
                page.fill("#op-pay input[name=amount]", "1")
                page.fill("#op-pay input[name=pin]", "369258")
                page.click("#op-pay button[type=submit]")
                expect(page.locator("p.error")).to_be_visible()
            expect(page.locator("p.error")).to_contain_text("payments locked")
            shot(page, "self-pay-locked")
            phone.send("ZF M001 1")
            if "锁定" not in phone.next_text():
                phone.send(PIN)
                phone.next_text("锁定")
            page.click("nav a[href='/me']")
            expect(page.locator("#balance")).to_have_text("¥87.50")
    try:
        in_a_thread(drive, timeout=240)
    finally:
        demo.stop()
