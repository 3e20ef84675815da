"""The sample shop (simulators/merchant/) against a double of the platform's
SP payment API (tests/spdouble.py), over real sockets: its requests are
signed so that the double's signing.verify accepts them and refuses them
tampered or replayed; callbacks turn orders paid only when their signature
checks, once per event id; refunds reach the platform with the right body;
the pages show each state."""
from __future__ import annotations

import json
import re
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor, task

from simulators.merchant import server
from simulators.merchant.demo import shop_config
from simulators.merchant.shop import ShopConfig
from telecom_pay import config as config_mod
from telecom_pay.merchants import signing
from tests.spdouble import PlatformDouble

KEY_ID = "mk_testshop0001"
SECRET = signing.derive_secret(b"test-server-key", KEY_ID)
MSISDN = "13800138000"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """One double and one shop for the module (each test makes its own orders)."""
    double = PlatformDouble(KEY_ID, SECRET)
    pytest_twisted.blockon(double.listen(reactor))
    double.refuse_msisdns["13700137000"] = "no_account"
    config = ShopConfig(api_base=double.base, key_id=KEY_ID, secret=SECRET, public_url="",
                        handset_url="http://127.0.0.1:8025/")
    db = tmp_path_factory.mktemp("shop") / "shop.sqlite3"
    running = pytest_twisted.blockon(server.start(config, reactor, listen="tcp:0:interface=127.0.0.1",
                                                  database=str(db)))
    yield double, running, config.public_url
    pytest_twisted.blockon(running.stop())
    pytest_twisted.blockon(double.stop())


async def get(url, **headers):
    response = await treq.get(url, headers={k: [v] for k, v in headers.items()}, allow_redirects=False)
    return response, (await response.content()).decode("utf-8")


async def post(url, form=None, **headers):
    response = await treq.post(url, data=form or {}, headers={k: [v] for k, v in headers.items()},
                               allow_redirects=False)
    return response, (await response.content()).decode("utf-8")


async def order(shop: str, item: str = "credits", msisdn: str = MSISDN) -> str:
    response, _ = await post(f"{shop}/orders", {"item": item, "msisdn": msisdn})
    assert response.code == 303
    location = response.headers.getRawHeaders("location")[0]
    assert re.fullmatch(r"/orders/S\d{8}-\d{4}-[0-9a-f]{4}", location), location
    return location.rsplit("/", 1)[1]


async def state(shop: str, order_id: str) -> dict:
    response, text = await get(f"{shop}/orders/{order_id}/state")
    assert response.code == 200
    return json.loads(text)


async def paid(double, shop, order_id) -> dict:
    payment = double.resolve(order_id)
    code, answer, _ = await double.callback(f"{shop}/notify", "payment.confirmed", payment)
    assert (code, answer["outcome"]) == (200, "applied")
    return payment


@pytest_twisted.ensureDeferred
async def test_the_order_request_is_signed_and_a_tampered_or_replayed_copy_is_refused(rig):
    double, _, shop = rig
    before = len(double.seen)
    order_id = await order(shop)
    [sent] = double.seen[before:]
    assert (sent.method, sent.target, sent.code) == ("POST", "/api/v1/payments", 201)
    assert sent.json == {"order_id": order_id, "msisdn": MSISDN, "amount": 1250,
                         "description": "游戏点数 Game credits", "notify_url": f"{shop}/notify"}
    assert sent.headers[signing.KEY_HEADER.lower()] == KEY_ID

    async def again(body: bytes, target: str = "/api/v1/payments", **changed):
        headers = {k: [v] for k, v in {**sent.headers, **{k.lower(): v for k, v in changed.items()}}.items() if k.lower() not in ("content-length",)}
        response = await treq.request("POST", double.base + target, data=body, headers=headers)
        return response.code, (await response.json())["error"]

    assert await again(sent.body.replace(b'"amount":1250', b'"amount":1')) == (401, "bad_signature")
    assert await again(sent.body, "/api/v1/payments?x=1") == (401, "bad_signature")
    assert await again(sent.body, **{signing.NONCE_HEADER: signing.new_nonce()}) == (401, "bad_signature")
    assert await again(sent.body) == (401, "nonce_reused")      # the very request, replayed

    response, page = await get(f"{shop}/orders/{order_id}")
    assert response.code == 200
    assert 'data-status="pending">Waiting for the subscriber&#39;s confirmation</p>' in page
    assert 'href="http://127.0.0.1:8025/"' in page and MSISDN in page and "¥12.50" in page
    assert double.by_order(order_id)["id"] in page
    csp = response.headers.getRawHeaders("content-security-policy")[0]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page and 'src="/static/shop.js"' in page
    js, text = await get(f"{shop}/static/shop.js")
    assert js.code == 200 and js.headers.getRawHeaders("content-type")[0].startswith("text/javascript")
    assert "data-poll" in text


@pytest_twisted.ensureDeferred
async def test_a_valid_callback_makes_the_order_paid_and_a_duplicate_event_is_applied_once(rig):
    double, _, shop = rig
    order_id = await order(shop, "lottery")
    first = await state(shop, order_id)
    assert first["status"] == "pending"
    payment = double.resolve(order_id)
    code, answer, event_id = await double.callback(f"{shop}/notify", "payment.confirmed", payment)
    assert (code, answer) == (200, {"received": event_id, "outcome": "applied"})
    now = await state(shop, order_id)
    assert now["status"] == "confirmed" and now["revision"] > first["revision"]

    # the same event again (a retry: a new nonce), even carrying other data, changes nothing
    declined = dict(payment, status="declined", decline_reason="wrong_pin")
    code, answer, _ = await double.callback(f"{shop}/notify", "payment.declined", declined, event_id=event_id)
    assert (code, answer["outcome"]) == (200, "duplicate")
    assert (await state(shop, order_id))["status"] == "confirmed"

    response, page = await get(f"{shop}/orders/{order_id}")
    assert 'data-status="confirmed">Paid</p>' in page
    assert f'data-event="{event_id}" data-verified="1" data-outcome="applied"' in page
    assert f'data-event="{event_id}" data-verified="1" data-outcome="duplicate"' in page
    assert payment["ref"] in page and "Ask for a refund" in page


@pytest_twisted.ensureDeferred
async def test_a_callback_that_overtakes_the_answer_to_the_order_is_not_undone_by_it(rig):
    double, _, shop = rig
    double.hold = hold = defer.Deferred()
    before = len(double.payments)
    ordering = defer.ensureDeferred(post(f"{shop}/orders", {"item": "credits", "msisdn": MSISDN}))
    for _ in range(500):                                       # until the double has the payment
        if len(double.payments) > before:
            break
        await task.deferLater(reactor, 0.01, lambda: None)
    [payment] = list(double.payments.values())[before:]
    confirmed = double.resolve(payment["order_id"])
    code, answer, _ = await double.callback(f"{shop}/notify", "payment.confirmed", confirmed)
    assert (code, answer["outcome"]) == (200, "applied")
    hold.callback(None)                                        # now the 201 saying "pending"
    response, _ = await ordering
    assert response.code == 303
    response, page = await get(f"{shop}/orders/{payment['order_id']}")
    assert 'data-status="confirmed">Paid</p>' in page and confirmed["ref"] in page


@pytest_twisted.ensureDeferred
async def test_a_callback_whose_signature_does_not_check_gets_401_and_changes_nothing(rig):
    double, _, shop = rig
    order_id = await order(shop, "tshirt")
    before = await state(shop, order_id)
    payment = double.resolve(order_id)
    notify = f"{shop}/notify"

    code, answer, forged = await double.callback(notify, "payment.confirmed", payment, secret="ms_" + "0" * 64)
    assert (code, answer) == (401, {"error": "bad_signature"})
    code, answer, _ = await double.callback(
        notify, "payment.confirmed", payment, tamper=lambda b: b.replace(b'"amount": 5900', b'"amount": 1'))
    assert (code, answer) == (401, {"error": "bad_signature"})
    code, answer, _ = await double.callback(notify, "payment.confirmed", payment, now=time.time() - 900)
    assert (code, answer) == (401, {"error": "stale_timestamp"})
    nonce = signing.new_nonce()
    declined = double.resolve(order_id, "declined", "subscriber_declined")
    code, answer, _ = await double.callback(notify, "payment.declined", declined, nonce=nonce)
    assert (code, answer["outcome"]) == (200, "applied")
    code, answer, _ = await double.callback(notify, "payment.confirmed", payment, nonce=nonce)   # a replayed nonce
    assert (code, answer) == (401, {"error": "nonce_reused"})
    response, _ = await post(notify, {"x": "1"})                                            # no signature at all
    assert response.code == 401

    after = await state(shop, order_id)
    assert after["status"] == "declined"        # only the one signed callback applied
    assert after["revision"] == before["revision"] + 1
    response, listing = await get(f"{shop}/orders")
    assert f'data-event="{forged}" data-verified="0" data-outcome="refused"' in listing
    assert "refused: bad_signature" in listing and "refused: stale_timestamp" in listing
    assert "refused: nonce_reused" in listing and "refused: missing_signature" in listing
    assert f'data-order="{order_id}" data-status="declined"' in listing


@pytest_twisted.ensureDeferred
async def test_refunds_reach_the_platform_with_the_right_body_and_their_callbacks_show(rig):
    double, _, shop = rig
    order_id = await order(shop, "credits")
    payment = await paid(double, shop, order_id)
    before = len(double.seen)
    response, _ = await post(f"{shop}/orders/{order_id}/refunds", {"amount": "5.00", "reason": "too many credits"})
    assert response.code == 303
    [sent] = double.seen[before:]
    assert (sent.method, sent.target, sent.code) == ("POST", f"/api/v1/payments/{payment['id']}/refunds", 201)
    assert sent.json == {"refund_id": f"{order_id}-R1", "amount": 500, "reason": "too many credits"}
    response, page = await get(f"{shop}/orders/{order_id}")
    assert f'data-refund="{order_id}-R1" data-status="pending_review"' in page and "¥5.00" in page

    refund = double.decide_refund(f"{order_id}-R1", "succeeded")
    code, answer, _ = await double.callback(f"{shop}/notify", "refund.succeeded", refund)
    assert (code, answer["outcome"]) == (200, "applied")

    # the rest: no amount sent, the platform says how much; then refused by the merchant admin
    before = len(double.seen)
    response, _ = await post(f"{shop}/orders/{order_id}/refunds", {"amount": "", "reason": ""})
    [sent] = double.seen[before:]
    assert sent.json == {"refund_id": f"{order_id}-R2", "reason": "customer request"}
    rejected = double.decide_refund(f"{order_id}-R2", "rejected", "goods already used")
    code, answer, _ = await double.callback(f"{shop}/notify", "refund.rejected", rejected)
    assert (code, answer["outcome"]) == (200, "applied")

    response, page = await get(f"{shop}/orders/{order_id}")
    assert f'data-refund="{order_id}-R1" data-status="succeeded"' in page
    assert f'data-refund="{order_id}-R2" data-status="rejected"' in page and "goods already used" in page
    assert "¥7.50" in page                                    # R2's amount, as the platform set it
    assert re.search(r"Refunded</th><td>¥5\.00<", page), page

    # more than is left: the platform's 422 is shown on the refund
    response, _ = await post(f"{shop}/orders/{order_id}/refunds", {"amount": "9.00"})
    response, page = await get(f"{shop}/orders/{order_id}")
    assert f'data-refund="{order_id}-R3" data-status="refused"' in page and "exceeds_refundable" in page
    response, page = await post(f"{shop}/orders/{order_id}/refunds", {"amount": "abc"})
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_check_status_asks_the_platform_and_an_unanswered_order_is_sent_again(rig):
    double, running, shop = rig
    order_id = await order(shop, "lottery")
    double.resolve(order_id)                                  # confirmed, the callback late
    before = len(double.seen)
    response, _ = await post(f"{shop}/orders/{order_id}/check")
    assert response.code == 303
    [sent] = double.seen[before:]
    assert (sent.method, sent.target, sent.code) == ("GET", f"/api/v1/payments/{double.by_order(order_id)['id']}", 200)
    assert sent.body == b""
    assert (await state(shop, order_id))["status"] == "confirmed"

    # the platform unreachable: the order waits, shows why, and is sent again with the same order id
    platform = running.shop.platform
    platform.api_base, base = "http://127.0.0.1:1", platform.api_base
    try:
        lost = await order(shop, "tshirt")
    finally:
        platform.api_base = base
    response, page = await get(f"{shop}/orders/{lost}")
    assert 'data-status="new"' in page and "no answer from the platform" in page and "Send to the platform again" in page
    response, _ = await post(f"{shop}/orders/{lost}/check")
    assert (await state(shop, lost))["status"] == "pending"
    assert double.by_order(lost)["amount"] == 5900

    # refused by the platform: shown as refused with its error
    refused = await order(shop, "lottery", msisdn="13700137000")
    response, page = await get(f"{shop}/orders/{refused}")
    assert 'data-status="refused"' in page and "422 no_account" in page
    del double.refuse_msisdns["13700137000"]                  # the account opened: the same order again
    response, _ = await post(f"{shop}/orders/{refused}/check")
    assert (await state(shop, refused))["status"] == "pending" and double.by_order(refused)["amount"] == 200
    double.refuse_msisdns["13700137000"] = "no_account"


@pytest_twisted.ensureDeferred
async def test_forms_from_another_site_and_foreign_host_names_are_refused(rig):
    double, _, shop = rig
    before = len(double.seen)
    response, _ = await post(f"{shop}/orders", {"item": "credits", "msisdn": MSISDN}, Origin="http://evil.example")
    assert response.code == 403
    response, _ = await post(f"{shop}/orders", {"item": "credits", "msisdn": MSISDN}, **{"Sec-Fetch-Site": "cross-site"})
    assert response.code == 403
    response, _ = await get(f"{shop}/orders", Host="evil.example")
    assert response.code == 421
    assert len(double.seen) == before
    response, page = await post(f"{shop}/orders", {"item": "nothing", "msisdn": MSISDN})
    assert response.code == 400 and "Pick an item" in page
    response, _ = await get(f"{shop}/orders/S19990101-0001-abcd")
    assert response.code == 404
    for path in ("/nothing", "/static/../store.py", "/static/x.js"):
        response, _ = await get(f"{shop}{path}")
        assert response.code == 404, path
    response = await treq.delete(f"{shop}/orders")
    assert response.code == 405 and "Method Not Allowed" in (await response.text())
    response, page = await get(f"{shop}/")
    assert response.code == 200 and "¥2.00" in page and "¥12.50" in page and "¥59.00" in page


def test_the_demo_shop_is_merchant_shop1_with_its_derived_secret():
    settings = config_mod.load()
    [merchant] = [m for m in settings.merchants if m["code"] == "SHOP1"]
    assert merchant["api_key_id"] == "mk_devshop000001" and signing.KEY_ID_RE.match(merchant["api_key_id"])
    config = shop_config(settings, settings.section("demo"), "http://127.0.0.1:8080")
    assert config.key_id == "mk_devshop000001"
    assert config.secret == signing.derive_secret(settings.pin_key, "mk_devshop000001")
    assert config.handset_url == "http://127.0.0.1:8025/"
    assert settings.section("demo")["shop"]["endpoint"] == "tcp:8090:interface=127.0.0.1"
    assert merchant["notify_url"] == "http://127.0.0.1:8090/notify"
