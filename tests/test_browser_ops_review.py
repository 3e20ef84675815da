"""The operations pages in real headless Chromium (Debian's, driven by
Playwright): an operations admin logs in, searches a subscriber's audit
trail, and approves a top-up the bank left in manual review on /ops/bank
(the bridge talks ISO 8583 to the bank simulator, which answers too late
and never confirms the reversal). Screenshots of every page go to
tests/artifacts/ (git-ignored).

The daemon runs in this process on the reactor, so the browser is driven
from a thread of the reactor's pool (`deferToThread`), not from one the
test joins: the reactor keeps serving the pages meanwhile."""
from __future__ import annotations

from twisted.internet import threads

from telecom_pay.aio import wait_deferred
from tests.aio import aio_test
from tests.browserkit import chromium, require_chromium, shot
from tests.opskit import PASSWORD, bank_daemon, in_review, logged_in, topup_in_doubt
from tests.servicekit import MSISDN
from tests.webkit import add_user


@aio_test
async def test_an_operations_admin_searches_the_audit_and_resolves_an_operation_in_review(sqlite_url):
    require_chromium()
    async with bank_daemon({"database_url": sqlite_url}) as (bank, daemon, base):
        svc = daemon.core.service
        await topup_in_doubt(daemon, bank, "tp-browser", 100_00)
        watcher, _ = await logged_in(daemon, base, "watcher", "ops_admin")
        await in_review(watcher, "tp-browser")
        await add_user(daemon, "ops-li", "ops_admin", password=PASSWORD)

        def drive() -> dict:
            from playwright.sync_api import expect
            seen = {}
            with chromium() as browser:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(base + "/login")
                page.fill("input[name=username]", "ops-li")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                expect(page.locator("h1")).to_have_text("Operations admin")
                shot(page, "ops-home")
                page.click("text=Audit search")
                page.fill("#audit-search input[name=msisdn]", "13800138000")
                page.fill("#audit-search input[name=from]", "2020-01-01")
                page.click("#audit-search button[type=submit]")
                expect(page.locator("#audit")).to_contain_text("open_requested")
                seen["audit"] = page.locator("#audit tbody").inner_text()
                shot(page, "ops-audit")
                page.goto(base + "/home")
                page.click("text=Bank operations in doubt")
                row = page.locator('#in-doubt tr[data-key="tp-browser"]')
                expect(row).to_contain_text("review")
                seen["row"] = row.inner_text()
                shot(page, "ops-bank-review")
                row.locator("select[name=outcome]").select_option("approved")
                row.locator("input[name=reason]").fill("issuer confirms the debit, ticket 88")
                row.locator("button[type=submit]").click()
                expect(page.locator(".notice")).to_contain_text("approved by ops-li")
                seen["notice"] = page.locator(".notice").inner_text()
                seen["resolved"] = page.locator("#resolved tbody").inner_text()
                shot(page, "ops-bank-resolved")
            return seen
        seen = await wait_deferred(threads.deferToThread(drive))
        assert "open_requested" in seen["audit"] and "pin_changed" in seen["audit"]
        assert "ops_audit_search" not in seen["audit"]                  # written after, never found by itself
        assert "100.00" in seen["row"] and "*1234" in seen["row"]
        assert "posted" in seen["notice"]
        assert "tp-browser" in seen["resolved"] and "ticket 88" in seen["resolved"]
        assert (await svc.ledger.get_operation("tp-browser")).state == "posted"
        assert (await svc.balance(MSISDN, channel="t")).balance == 100_00
