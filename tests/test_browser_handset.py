"""The web handset in real headless Chromium (Debian's, driven by
Playwright), against `make run`: dial *188# on the USSD dial pad and read
the balance page; call the IVR from the call keypad and hear the balance.
Screenshots go to tests/artifacts/ (git-ignored)."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.demokit import start_demo

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).with_name("artifacts")


def _in_a_thread(fn):
    """Playwright's sync API refuses a thread where an asyncio loop runs
    (the test process's Twisted reactor is one): drive it from its own."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:          # re-raised in the test
            box["error"] = exc
    t = threading.Thread(target=run)
    t.start()
    t.join(180)
    if "error" in box:
        raise box["error"]
    if t.is_alive():
        raise TimeoutError("the browser did not finish within 180 s")
    return box.get("value")


def test_the_web_handset_dials_ussd_and_calls_the_ivr(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: scripts/ensure-services.sh installs it (make test)")
    from playwright.sync_api import expect, sync_playwright
    ARTIFACTS.mkdir(exist_ok=True)
    demo = start_demo(tmp_path)

    def drive():
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
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
                page.screenshot(path=str(ARTIFACTS / "handset-ussd.png"), full_page=True)
                # the call keypad: 1, next, 0, Call; what the caller heard
                for key in ("1", "next", "0"):
                    page.click(f"#callpad button:text-is('{key}')")
                expect(page.locator("#callkeys")).to_have_value("1,0")
                page.click("#call")
                expect(page.locator("#heard")).to_contain_text("call ended (platform hung up)", timeout=30_000)
                heard = page.locator("#heard").inner_text()
                page.screenshot(path=str(ARTIFACTS / "handset-call.png"), full_page=True)
                return heard
            finally:
                browser.close()
    try:
        heard = _in_a_thread(drive)
    finally:
        demo.stop()
    lines = heard.splitlines()
    assert lines[0].startswith("手机支付 余额 请按 1") and lines[1] == "> 1", lines       # one line per screen
    assert lines[2].startswith("余额查询 余额 0 元") and "感谢使用, 再见" in lines[-2], lines
