"""The sample shop against `make run`, in real headless Chromium: a tester
buys in the shop (simulators/merchant/), the shop calls the SP payment API,
the platform's SMS reaches the web handset, the tester answers it there
with the order's tag and the PIN, and the shop shows the order paid once
the platform's signed callback arrived. Then the shop asks for a refund
(SHOP1 reviews refunds), the shop's merchant admin approves it in the back
office, the subscriber's SMS arrives and the shop is told. A merchant's
admin cannot read another merchant's order. Screenshots: tests/artifacts/."""
from __future__ import annotations

import re
import uuid

import pytest

from tests.browserkit import chromium, in_a_thread, shot
from tests.pagekit import demo_fixture, merchant_log_in, redis_captcha_answers
from tests.conftest import REDIS_SERVER_URL

pytestmark = pytest.mark.xdist_group("test_browser_shop")

NUMBER = "13800138000"
PIN = "147258"
PREFIX = f"tp-shop:{uuid.uuid4().hex[:10]}:"
demo = demo_fixture("shop-demo", overrides={"sessions": {"url": REDIS_SERVER_URL, "prefix": PREFIX}})
TAG_RE = re.compile(r'"(\d{4}) ')


def _top_up(demo, amount: str = "100") -> None:
    since = demo.inbox_size(NUMBER)
    demo.send(NUMBER, f"CZ {amount}")
    _, since = demo.wait_sms(NUMBER, since, "密码")
    demo.send(NUMBER, PIN)
    demo.wait_sms(NUMBER, since, "成功", timeout=60)


def test_a_tester_buys_in_the_shop_confirms_on_the_handset_and_gets_a_refund(demo):
    from playwright.sync_api import expect
    shop = demo.printed_url("sample shop:")
    base = demo.web_url
    _top_up(demo)
    answers = redis_captcha_answers(REDIS_SERVER_URL, PREFIX)

    def drive():
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"{shop}/")
            page.check("input[name=item][value=credits]")           # game credits, 12.50
            page.fill("input[name=msisdn]", NUMBER)
            since = demo.inbox_size(NUMBER)
            page.click("form.order-form button[type=submit]")
            expect(page.locator("#order-status")).to_have_attribute("data-status", "pending", timeout=30_000)
            order_url = page.url
            shot(page, "shop-order-pending")
            ask, _ = demo.wait_sms(NUMBER, since, "样品商店")
            assert "12.50" in ask, ask
            tag = TAG_RE.search(ask).group(1)

            # the subscriber answers on the web handset: the order's tag and the PIN
            handset = browser.new_page()
            handset.goto(demo.handset_url)
            handset.fill("#msisdn", NUMBER)
            handset.fill("#sms", f"{tag} {PIN}")
            handset.click("#send")
            expect(handset.locator("#inbox")).to_contain_text("12.50", timeout=30_000)
            shot(handset, "shop-handset-confirmed")

            # the shop's page turns paid by itself once the signed callback is in
            page.bring_to_front()
            expect(page.locator("#order-status")).to_have_attribute("data-status", "confirmed", timeout=60_000)
            page.goto(f"{shop}/orders")
            callback = page.locator("tr.callback[data-outcome=applied]").first
            expect(callback).to_have_attribute("data-verified", "1")
            shot(page, "shop-orders-paid")

            # a refund of 5.00 from the shop: SHOP1's policy is reviewed
            page.goto(order_url)
            page.fill("form.refund-form input[name=amount]", "5")
            page.click("form.refund-form button[type=submit]")
            expect(page.locator("#refunds tr.refund")).to_have_attribute("data-status", "pending_review",
                                                                        timeout=30_000)
            payment_id = page.locator("table.details code").first.inner_text()
            refund_since = demo.inbox_size(NUMBER)

            admin = browser.new_context().new_page()
            merchant_log_in(admin, base, "shop1.admin", answers)
            admin.goto(f"{base}/merchant/refunds")
            row = admin.locator("#pending tr", has_text="5.00")
            row.locator("input[name=reason]").fill("item not delivered")
            row.locator("button[value=approve]").click()
            expect(admin.locator("#no-pending")).to_be_visible()
            shot(admin, "shop-admin-refund-approved")
            refunded, _ = demo.wait_sms(NUMBER, refund_since, "5.00")
            assert "退款" in refunded, refunded

            page.bring_to_front()
            page.goto(order_url)
            expect(page.locator("#refunds tr.refund")).to_have_attribute("data-status", "succeeded", timeout=60_000)
            shot(page, "shop-order-refunded")

            # another merchant's admin cannot read this order, nor find it
            other = browser.new_context().new_page()
            merchant_log_in(other, base, "m001.admin", answers)
            response = other.goto(f"{base}/merchant/orders/{payment_id}")
            assert response.status == 404, response.status
            other.goto(f"{base}/merchant/orders?order={payment_id}")
            assert payment_id not in other.content()
            shot(other, "shop-other-merchant-404")
            return payment_id
    payment_id = in_a_thread(drive)
    assert payment_id.startswith("pay_")
