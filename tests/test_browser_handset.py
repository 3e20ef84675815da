"""The web handset in real headless Chromium (Debian's, driven by
Playwright), against `make run`: dial *188# on the USSD dial pad and read
the balance page; call the IVR from the call keypad and hear the balance.
Screenshots go to tests/artifacts/ (git-ignored)."""
from __future__ import annotations

from tests.browserkit import chromium, in_a_thread, require_chromium, shot
from tests.demokit import start_demo


def test_the_web_handset_dials_ussd_and_calls_the_ivr(tmp_path):
    require_chromium()
    from playwright.sync_api import expect
    demo = start_demo(tmp_path)

    def drive():
        with chromium() as browser:
            page = browser.new_page()
            page.goto(demo.handset_url)
            page.fill("#msisdn", "13800138000")
            # the USSD dial pad: *188#, Send; the home menu; then 1, Send: the balance page
            for key in "*188#":
                page.click(f"#pad button:text-is('{key}')")
            expect(page.locator("#ussdtext")).to_have_value("*188#")
            page.click("#ussdsend")
            expect(page.locator("#ussd")).to_contain_text("1 余额", timeout=15_000)
            page.click("#pad button:text-is('1')")
            page.click("#ussdsend")
            expect(page.locator("#ussd")).to_contain_text("余额 0.00 元", timeout=15_000)
            shot(page, "handset-ussd")
            # the call keypad: 1, next, 0, Call; what the caller heard
            for key in ("1", "next", "0"):
                page.click(f"#callpad button:text-is('{key}')")
            expect(page.locator("#callkeys")).to_have_value("1,0")
            page.click("#call")
            expect(page.locator("#heard")).to_contain_text("call ended (platform hung up)", timeout=30_000)
            heard = page.locator("#heard").inner_text()
            shot(page, "handset-call")
            return heard
    try:
        heard = in_a_thread(drive)
    finally:
        demo.stop()
    lines = heard.splitlines()
    assert lines[0].startswith("手机支付 余额 请按 1") and lines[1] == "> 1", lines       # one line per screen
    assert lines[2].startswith("余额查询 余额 0 元") and "感谢使用, 再见" in lines[-2], lines
