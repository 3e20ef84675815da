"""The agent console in real headless Chromium, against `telecom-pay demo`
(the daemon beside the SMSC simulator): what a counter agent does with a
caller at the desk, and what reaches the caller's phone over SMPP.

The handset is driven through the SMSC simulator's control API: an answer
the test sends travels over SMPP as a phone's would, and the SMS the
platform sends are read from the handset's inbox."""
from __future__ import annotations

import pytest

from tests.browserkit import chromium, in_a_thread, shot
from tests.pagekit import PIN_RE, demo_fixture, log_in, look_up

# one demo per module: its tests stay on one xdist worker (make test runs --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_browser_console")

NEW_CALLER = "13600136001"       # no account: the agent opens one
DEMO_ACCOUNT = "13800138000"     # opened by the demo with PIN 147258

demo = demo_fixture("console-demo")


def test_an_agent_opens_an_account_the_caller_confirms_from_the_handset(demo):
    from playwright.sync_api import expect
    demo.handset(NEW_CALLER, "en")
    since = demo.inbox_size(NEW_CALLER)

    def drive():
        with chromium() as browser:
            page = log_in(browser.new_page(), demo.web_url, "agent1")
            assert look_up(page, demo.web_url, NEW_CALLER).status == 404
            expect(page.locator("p.error")).to_contain_text("no mobile wallet account")   # the search again
            form = page.locator("#open")
            form.locator("input[name=msisdn]").fill(NEW_CALLER)
            form.locator("input[name=holder_name]").fill("Han Meimei")
            form.locator("select[name=id_type]").select_option("ID")
            form.locator("input[name=id_number]").fill("110101199202023456")
            form.locator("select[name=language]").select_option("en")
            form.locator("button[type=submit]").click()
            expect(page.locator("p.notice")).to_contain_text("reply A")
            shot(page, "console-opened")

            agreement, after = demo.wait_sms(NEW_CALLER, since, "A")       # over SMPP, to the phone
            assert not PIN_RE.search(agreement), agreement                 # no PIN before the holder agreed
            demo.send(NEW_CALLER, "A")
            welcome, _ = demo.wait_sms(NEW_CALLER, after, "MM")            # the initial PIN, by SMS only
            assert PIN_RE.search(welcome), welcome

            look_up(page, demo.web_url, NEW_CALLER)
            expect(page.locator("#status")).to_have_text("active")
            assert "Han Meimei" in page.locator("#facts").inner_text()
            assert PIN_RE.search(welcome).group(1) not in page.content()
            shot(page, "console-active")
    in_a_thread(drive)


def test_a_pin_reset_reaches_the_handset_not_the_page_and_works(demo):
    from playwright.sync_api import expect
    since = demo.inbox_size(DEMO_ACCOUNT)

    def drive():
        with chromium() as browser:
            page = log_in(browser.new_page(), demo.web_url, "agent1")
            look_up(page, demo.web_url, DEMO_ACCOUNT)
            expect(page.locator("#status")).to_have_text("active")
            page.click("#op-pin-reset button[type=submit]")
            expect(page.locator("p.notice")).to_contain_text("Reset the PIN")
            shot(page, "console-pin-reset")
            text, after = demo.wait_sms(DEMO_ACCOUNT, since, "MM")
            pin = PIN_RE.search(text).group(1)
            assert pin not in page.content()                                 # the PIN is the phone's alone
            # the forced change, from the handset: the reset PIN is accepted, the old one is not
            demo.send(DEMO_ACCOUNT, "MM 147258 369258")
            refused, after = demo.wait_sms(DEMO_ACCOUNT, after, "")
            demo.send(DEMO_ACCOUNT, f"MM {pin} 369258")
            changed, _ = demo.wait_sms(DEMO_ACCOUNT, after, "")
            return refused, changed
    refused, changed = in_a_thread(drive)
    assert "已修改" not in refused, refused
    assert "支付密码已修改" in changed, changed
