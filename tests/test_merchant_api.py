"""The SP payment API over real sockets: signed requests, idempotent order
ids, the subscriber's confirmation by SMS (tag and PIN), declines, expiry,
and the callbacks that tell the merchant, signed and retried."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from telecom_pay.merchants import directory, notifications, payments, signing
from telecom_pay.ledger.tables import audit_log
from telecom_pay.merchants.tables import merchant_notifications, sp_payments
from telecom_pay.msisdn import mask
from telecom_pay.security import PasswordHasher
import pytest_twisted

from telecom_pay.aio import as_deferred
from tests.aio import aio_test
from tests.merchantapikit import KEY_A, KEY_B, KEY_C, PIN, start_stack
from tests.servicekit import funded, make_service, outbox_texts, shutdown

ORDER = {"order_id": "8812", "msisdn": "13800138000", "amount": 1250, "description": "双色球 1 注"}
RISK_HOLD_FROM = 2000        # the shared stack's large-amount hold (fen); the other tests pay less
_numbers = iter(range(10, 99))


def new_payer() -> tuple[str, dict]:
    """A number of its own for each test (they share one stack), and ORDER for it."""
    local = f"138001380{next(_numbers):02d}"
    return "86" + local, {**ORDER, "msisdn": local}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One daemon (web, the callback sender, the sweep) and one notify server for the module."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('mapi') / 'ledger.sqlite3'}"
    s = pytest_twisted.blockon(as_deferred(start_stack(
        url, notify_paths={"LT01": "/lt01", "GM02": "/gm02", "SH03": "/sh03"},
        merchant_api={"retry_schedule": [0.2], "give_up_after": 7, "callback_timeout": 2},
        **{"risk.large_amount.amount": RISK_HOLD_FROM, "sms.ussd.push": True})))
    yield s
    pytest_twisted.blockon(as_deferred(s.stop()))


async def _ready(stack, *numbers, amount=50_000):
    stack.service.passwords = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    for n in numbers:
        await funded(stack.service, n, amount=amount)


async def _until(pred, timeout=15.0):
    """Wait for the daemon's background work (the sender, the sweep)."""
    for _ in range(int(timeout / 0.05)):
        value = await pred()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def _notes(stack, subject_ids=None):
    q = sa.select(merchant_notifications).order_by(merchant_notifications.c.id)
    if subject_ids is not None:
        q = q.where(merchant_notifications.c.subject_id.in_(list(subject_ids)))
    return (await stack.service.ledger.read(lambda c: c.execute(q))).all()


async def _row(stack, public_id):
    return (await stack.service.ledger.read(lambda c: c.execute(
        sa.select(sp_payments).where(sp_payments.c.public_id == public_id)))).first()


async def _all_delivered(stack, subject_ids, n):
    notes = await _notes(stack, subject_ids)
    return notes if len(notes) >= n and all(x.status == "delivered" for x in notes) else None


def _received(stack, subject_ids):
    return [r for r in stack.notify.received if r["body"]["data"]["id"] in subject_ids and r["step"] == 200]


@aio_test
async def test_signature_refusals_and_a_disabled_merchant(stack):
    payer, order = new_payer()
    await _ready(stack, payer)
    ok = await stack.call("POST", "/api/v1/payments", order)
    assert ok.status == 201, ok.text
    # no headers at all, then one malformed
    r = await stack.call("POST", "/api/v1/payments", order, sign=False)
    assert (r.status, r.json()["code"]) == (401, "missing_signature")
    r = await stack.call("POST", "/api/v1/payments", order, headers={signing.NONCE_HEADER: "short"})
    assert (r.status, r.json()["code"]) == (401, "missing_signature")
    r = await stack.call("POST", "/api/v1/payments", order, key_id="mk_nosuchmerchant1", secret="x")
    assert (r.status, r.json()["code"]) == (401, "unknown_key")
    r = await stack.call("POST", "/api/v1/payments", order, secret=stack.secret(KEY_B))
    assert (r.status, r.json()["code"]) == (401, "bad_signature")
    # the body swapped under a valid signature
    good = signing.sign_headers(KEY_A, stack.secret(KEY_A), "POST", "/api/v1/payments", b'{"a":1}',
                                now=stack.clock().timestamp())
    r = await stack.call("POST", "/api/v1/payments", order, sign=False, headers=good)
    assert (r.status, r.json()["code"]) == (401, "bad_signature")
    r = await stack.call("POST", "/api/v1/payments", order, now=stack.clock().timestamp() - 310)
    assert (r.status, r.json()["code"]) == (401, "stale_timestamp")
    r = await stack.call("POST", "/api/v1/payments", order, now=stack.clock().timestamp() + 310)
    assert (r.status, r.json()["code"]) == (401, "stale_timestamp")
    nonce = signing.new_nonce()
    r = await stack.call("GET", f"/api/v1/payments/{ok.json()['id']}", nonce=nonce)
    assert r.status == 200, r.text
    r = await stack.call("GET", f"/api/v1/payments/{ok.json()['id']}", nonce=nonce)
    assert (r.status, r.json()["code"]) == (401, "nonce_reused")
    # the query string is part of what is signed
    r = await stack.call("GET", f"/api/v1/payments/{ok.json()['id']}?x=1")
    assert r.status == 200, r.text
    await directory.update_profile(stack.service, "SH03", actor="test", channel="test", status="disabled")
    try:
        r = await stack.call("POST", "/api/v1/payments", order, key_id=KEY_C)
        assert (r.status, r.json()["code"]) == (403, "merchant_disabled")
    finally:
        await directory.update_profile(stack.service, "SH03", actor="test", channel="test", status="active")
    doc = (await stack.call("GET", "/api/v1/openapi.json", sign=False)).json()
    op = doc["paths"]["/api/v1/payments"]["post"]
    assert {p["name"] for p in op["parameters"] if p["in"] == "header" and p["required"]} >= {
        "X-TP-Key", "X-TP-Timestamp", "X-TP-Nonce", "X-TP-Signature"}
    assert {"401", "403", "409", "422"} <= set(op["responses"]) and op["security"]


@aio_test
async def test_order_ids_are_idempotent_and_payments_private(stack):
    payer, order = new_payer()
    await _ready(stack, payer)
    order = {**order, "order_id": "idem-1"}
    first = await stack.call("POST", "/api/v1/payments", order)
    assert first.status == 201, first.text
    obj = first.json()
    assert (obj["status"], obj["amount"], obj["msisdn"], obj["merchant_code"]) == \
        ("pending", 1250, mask(payer), "LT01")
    spaced = "+86 " + payer[2:5] + " " + payer[5:9] + " " + payer[9:]
    again = await stack.call("POST", "/api/v1/payments", {**order, "msisdn": spaced})
    assert again.status == 200 and again.json()["id"] == obj["id"]
    clash = await stack.call("POST", "/api/v1/payments", {**order, "amount": 1300, "description": "x"})
    assert clash.status == 409 and clash.json()["code"] == "order_id_conflict"
    assert clash.json()["fields"] == ["amount", "description"]
    # another merchant may use the same order id; it cannot read this one's payment
    other = await stack.call("POST", "/api/v1/payments", order, key_id=KEY_B)
    assert other.status == 201 and other.json()["id"] != obj["id"]
    r = await stack.call("GET", f"/api/v1/payments/{obj['id']}", key_id=KEY_B)
    assert (r.status, r.json()["code"]) == (404, "not_found")
    assert (await stack.call("GET", "/api/v1/payments/pay_000000000000000000000000")).status == 404
    assert (await stack.call("GET", f"/api/v1/payments/{obj['id']}")).json()["status"] == "pending"
    # one ask per request, in the outbox, naming the order by its tag
    texts = await outbox_texts(stack.service, payer)
    row = await _row(stack, obj["id"])
    asks = [t for t in texts if f'"{row.tag} 支付密码"' in t and "福彩中心" in t]
    assert len(asks) == 1 and "12.50" in asks[0] and "订单idem-1" in asks[0], texts
    r = await stack.call("POST", "/api/v1/payments", {**order, "order_id": "o2", "msisdn": "13700137000"})
    assert (r.status, r.json()["code"]) == (422, "no_account")
    r = await stack.call("POST", "/api/v1/payments", {**order, "order_id": "o3", "msisdn": "12345"})
    assert (r.status, r.json()["field"]) == (400, "msisdn")
    r = await stack.call("POST", "/api/v1/payments", {**order, "order_id": "o4", "amount": 0})
    assert r.status == 400 and r.json()["field"] == "amount"
    await stack.service.freeze(payer, channel="test")
    r = await stack.call("POST", "/api/v1/payments", {**order, "order_id": "o5"})
    assert (r.status, r.json()["code"]) == (422, "account_not_active")


@aio_test
async def test_confirmed_by_tag_and_pin_with_a_signed_callback(stack):
    payer, order = new_payer()
    await _ready(stack, payer)
    a = (await stack.call("POST", "/api/v1/payments", {**order, "order_id": "tag-a"})).json()
    b = (await stack.call("POST", "/api/v1/payments", {**order, "order_id": "tag-b", "amount": 300})).json()
    ra, rb = await _row(stack, a["id"]), await _row(stack, b["id"])
    assert ra.tag != rb.tag
    # a bare PIN cannot tell them apart: the reply lists the tags, nothing is paid
    reply = await stack.sms(payer, PIN, message_id=101)
    assert ra.tag in reply[0] and rb.tag in reply[0], reply
    reply = await stack.sms(payer, f"{rb.tag} {PIN}", message_id=102)
    assert "3.00" in reply[0] and "福彩中心" in reply[0], reply
    paid = await _row(stack, b["id"])
    assert paid.status == "confirmed" and paid.ref and (await _row(stack, a["id"])).status == "pending"
    op = await stack.service.ledger.get_operation(f"sp:{b['id']}")
    assert (op.state, op.amount, op.ref, op.request["memo"]) == ("posted", 300, paid.ref, "tag-b")
    # the same message answered again (a redelivery after a restart): the receipt, nothing paid twice
    again = await stack.conversation.handle(payer, f"{rb.tag} ******", channel="sms", message_id=102, again=True)
    assert paid.ref in again[0]
    # N declines the other
    reply = await stack.sms(payer, f"N {ra.tag}", message_id=103)
    assert "已取消" in reply[0] and (await _row(stack, a["id"])).decline_reason == "subscriber_declined"
    got = (await stack.call("GET", f"/api/v1/payments/{b['id']}")).json()
    assert (got["status"], got["ref"], got["refunded"]) == ("confirmed", paid.ref, 0)
    notes = await _until(lambda: _all_delivered(stack, {a["id"], b["id"]}, 2))
    assert len(notes) == 2 and all(n.attempts == 1 for n in notes)
    by_type = {d["body"]["type"]: d for d in _received(stack, {a["id"], b["id"]})}
    assert set(by_type) == {"payment.confirmed", "payment.declined"}
    conf = by_type["payment.confirmed"]
    assert conf["signature_ok"] and conf["key"] == KEY_A and conf["body"]["data"]["id"] == b["id"]
    assert conf["event"] == conf["body"]["event_id"] and conf["body"]["data"]["ref"] == paid.ref
    assert by_type["payment.declined"]["body"]["data"]["decline_reason"] == "subscriber_declined"
    # a bare PIN with exactly one request pending confirms it
    c = (await stack.call("POST", "/api/v1/payments", {**order, "order_id": "tag-c", "amount": 100})).json()
    reply = await stack.sms(payer, PIN, message_id=104)
    assert "1.00" in reply[0] and (await _row(stack, c["id"])).status == "confirmed", reply
    # with nothing pending a bare PIN is what it always was
    assert "没有待确认" in (await stack.sms(payer, PIN, message_id=105))[0]


@aio_test
async def test_three_wrong_pins_decline_and_the_lockout_applies(stack):
    payer, order = new_payer()
    await _ready(stack, payer)
    a = (await stack.call("POST", "/api/v1/payments", {**order, "order_id": "pin-a"})).json()
    tag = (await _row(stack, a["id"])).tag
    for i in range(2):
        reply = await stack.sms(payer, f"{tag} 000000", message_id=200 + i)
        assert (await _row(stack, a["id"])).pin_failures == i + 1, reply
    reply = await stack.sms(payer, f"{tag} 000000", message_id=203)
    row = await _row(stack, a["id"])
    assert (row.status, row.decline_reason) == ("declined", "wrong_pin"), reply
    assert await stack.service.ledger.get_operation(f"sp:{a['id']}") is None
    # the account's lockout counted those PINs as for any payment: the right PIN is refused now
    b = (await stack.call("POST", "/api/v1/payments", {**order, "order_id": "pin-b"})).json()
    tag_b = (await _row(stack, b["id"])).tag
    reply = await stack.sms(payer, f"{tag_b} {PIN}", message_id=204)
    row = await _row(stack, b["id"])
    assert (row.status, row.decline_reason) == ("declined", "wrong_pin"), reply
    assert await stack.service.ledger.get_operation(f"sp:{b['id']}") is None
    notes = await _notes(stack, {a["id"], b["id"]})
    assert [n.event_type for n in notes] == ["payment.declined", "payment.declined"]


@aio_test
async def test_expiry_by_the_sweep_and_a_late_pin(stack):
    payer, order = new_payer()
    await _ready(stack, payer)
    a = (await stack.call("POST", "/api/v1/payments", {**order, "order_id": "exp-a"})).json()
    b = (await stack.call("POST", "/api/v1/payments", {**order, "order_id": "exp-b"})).json()
    tag_a = (await _row(stack, a["id"])).tag
    stack.clock.advance(timedelta(seconds=301))
    # a PIN that arrives after the request's time pays nothing and says so
    reply = await stack.sms(payer, f"{tag_a} {PIN}", message_id=301)
    assert "超时" in reply[0], reply
    assert await stack.service.ledger.get_operation(f"sp:{a['id']}") is None
    await _until(lambda: _status_is(stack, b["id"], "expired"))
    assert (await _row(stack, a["id"])).status == "expired"
    got = (await stack.call("GET", f"/api/v1/payments/{b['id']}")).json()
    assert got["status"] == "expired" and got["resolved_at"]
    notes = await _until(lambda: _all_delivered(stack, {a["id"], b["id"]}, 2))
    assert [n.event_type for n in notes] == ["payment.expired", "payment.expired"]


async def _status_is(stack, public_id, status):
    return (await _row(stack, public_id)).status == status


@aio_test
async def test_callbacks_are_retried_through_a_bad_endpoint_without_blocking_others(stack):
    payer, order = new_payer()
    await _ready(stack, payer)
    stack.notify.script("flaky", "hang", 500, "reset", 200)
    stack.notify.script("down", 500)
    ids = {}

    async def paid_to(key: str, path: str) -> None:
        obj = (await stack.call("POST", "/api/v1/payments",
                                {**order, "order_id": "cb-1", "notify_url": f"{stack.notify_base}/{path}"},
                                key_id=key)).json()
        ids[path] = obj["id"]
        reply = await stack.sms(payer, f"{(await _row(stack, obj['id'])).tag} {PIN}")
        assert "12.50" in reply[0], reply
    await paid_to(KEY_A, "flaky")
    await _until(lambda: _hanging(stack, ids["flaky"]))    # its first callback hangs (until the timeout)
    await paid_to(KEY_B, "fine")
    # the good merchant's callback is delivered while the other one hangs
    fine = await _until(lambda: _all_delivered(stack, {ids["fine"]}, 1))
    assert fine[0].attempts == 1 and _received(stack, {ids["fine"]})[0]["signature_ok"]
    assert (await _notes(stack, {ids["flaky"]}))[0].attempts == 0        # still hanging meanwhile
    await paid_to(KEY_C, "down")
    note = (await _until(lambda: _all_delivered(stack, {ids["flaky"]}, 1)))[0]
    assert (note.attempts, note.last_status) == (4, 200)
    assert _received(stack, {ids["flaky"]})[0]["signature_ok"]
    tried = await stack.service.ledger.read(lambda c: notifications.attempts(c, note.id))
    assert [t["http_status"] for t in tried] == [None, 500, None, 200]
    assert tried[0]["error"] == "timeout" and tried[2]["error"] not in (None, "timeout"), tried
    # the one that never answers 2xx gives up: failed
    down = (await _until(lambda: _failed(stack, ids["down"])))
    assert down.attempts >= 2 and down.last_status == 500
    # the back office resends it by hand (now answered), marked manual and audited
    stack.notify.script("down", 200)
    out = await notifications.resend(stack.service, down.merchant_id, down.event_id, "web:ops")
    assert out["status"] == "delivered" and out["http_status"] == 200
    listed = await stack.service.ledger.read(lambda c: notifications.list_notifications(c, down.merchant_id))
    assert listed[0]["event_id"] == down.event_id and listed[0]["status"] == "delivered"
    tried = await stack.service.ledger.read(lambda c: notifications.attempts(c, down.id))
    assert tried[-1]["manual"] and not tried[0]["manual"]
    audited = (await stack.service.ledger.read(lambda c: c.execute(sa.select(audit_log.c.actor).where(
        audit_log.c.action == "merchant_notification_resent")))).all()
    assert [a.actor for a in audited] == ["web:ops"]
    with pytest.raises(notifications.ResendError):
        await notifications.resend(stack.service, down.merchant_id + 999, down.event_id, "web:ops")


async def _hanging(stack, subject_id):
    return any(r["body"]["data"]["id"] == subject_id and r["step"] == "hang" for r in stack.notify.received)


async def _failed(stack, subject_id):
    notes = await _notes(stack, {subject_id})
    return notes[0] if notes and notes[0].status == "failed" else None


@aio_test
async def test_a_risk_hold_declines_the_request_and_frees_the_money(stack):
    payer, order = new_payer()
    await _ready(stack, payer)
    before = (await stack.service.balance(payer, channel="test")).balance
    a = (await stack.call("POST", "/api/v1/payments", {**order, "order_id": "risk-1",
                                                       "amount": RISK_HOLD_FROM + 500})).json()
    reply = await stack.sms(payer, f"{(await _row(stack, a['id'])).tag} {PIN}")
    row = await _row(stack, a["id"])
    assert (row.status, row.decline_reason, row.ref) == ("declined", "risk", None), reply
    op = await stack.service.ledger.get_operation(f"sp:{a['id']}")
    assert op.state == "voided"
    assert (await stack.service.balance(payer, channel="test")).balance == before
    from telecom_pay.risk.cases import risk_cases
    case = (await stack.service.ledger.read(lambda c: c.execute(
        sa.select(risk_cases).where(risk_cases.c.operation_key == op.key)))).first()
    assert case.status == "refused" and case.decided_by == "sp-api"
    assert [n.event_type for n in await _notes(stack, {a["id"]})] == ["payment.declined"]
    assert await stack.service.check_books() == []


@aio_test
async def test_a_risk_hold_on_the_pushed_page_is_told_as_declined_only(stack):
    """Confirmed from the USSD page: the page answers "declined", and no
    "under review" SMS (what a held spend on a non-SMS channel gets) goes."""
    from telecom_pay.merchants import payments
    payer, order = new_payer()
    await _ready(stack, payer)
    a = (await stack.call("POST", "/api/v1/payments", {**order, "order_id": "risk-ussd",
                                                       "amount": RISK_HOLD_FROM + 500})).json()
    before = list(await outbox_texts(stack.service, payer))
    tag = (await _row(stack, a["id"])).tag
    result = await payments.confirm(stack.service, payer, PIN, tag=tag, channel="ussd", lang="zh")
    assert result.params.get("action") == "sp_declined", result
    assert ((await _row(stack, a["id"])).status, (await _row(stack, a["id"])).decline_reason) == ("declined", "risk")
    sent = list(await outbox_texts(stack.service, payer))[len(before):]
    assert not any("审核" in t for t in sent), sent


@aio_test
async def test_two_instances_on_postgres_race_an_order_id_and_the_sweep(pg_url):
    """The unique index decides a doubled order id (the loser answers as a
    replay); two instances sweeping at once expire each request once, with
    one callback each. (No worker here: the sweeps are the test's.)"""
    stack = await start_stack(pg_url, merchant_api={"enabled": False})
    other = await make_service(pg_url, clock=stack.clock, overrides={"security.allow_development_keys": True})
    try:
        payer, order = new_payer()
        await _ready(stack, payer)
        answers = await asyncio.gather(*(stack.call("POST", "/api/v1/payments", order) for _ in range(4)))
        assert sorted(r.status for r in answers) == [200, 200, 200, 201], [r.text for r in answers]
        assert len({r.json()["id"] for r in answers}) == 1
        rows = (await stack.service.ledger.read(lambda c: c.execute(sa.select(sp_payments)))).all()
        assert len(rows) == 1
        texts = await outbox_texts(stack.service, payer)
        assert sum(f'"{rows[0].tag} 支付密码"' in t for t in texts) == 1
        for i in range(5):
            r = await stack.call("POST", "/api/v1/payments", {**order, "order_id": f"sweep-{i}"})
            assert r.status == 201, r.text
        stack.clock.advance(timedelta(seconds=301))
        done = await asyncio.gather(payments.expire_due(stack.service), payments.expire_due(other),
                                    payments.expire_due(other))
        assert sum(done) == 6
        notes = await _notes(stack)
        assert len(notes) == 6 and {n.event_type for n in notes} == {"payment.expired"}
        assert len({n.subject_id for n in notes}) == 6
    finally:
        await shutdown(other)
        await stack.stop()


@aio_test
async def test_refund_routes(stack):
    payer, order = new_payer()
    await _ready(stack, payer)
    a = (await stack.call("POST", "/api/v1/payments", {**order, "order_id": "rf-1"})).json()
    r = await stack.call("POST", f"/api/v1/payments/{a['id']}/refunds", {"refund_id": "r1", "amount": 100})
    assert r.status == 422 and r.json()["code"] == "not_refundable", r.text
    await stack.sms(payer, f"{(await _row(stack, a['id'])).tag} {PIN}")
    r = await stack.call("POST", f"/api/v1/payments/{a['id']}/refunds",
                         {"refund_id": "r1", "amount": 100, "reason": "returned"})
    assert r.status == 201, r.text
    refund = r.json()
    again = await stack.call("POST", f"/api/v1/payments/{a['id']}/refunds",
                             {"refund_id": "r1", "amount": 100, "reason": "returned"})
    assert again.status == 200 and again.json()["id"] == refund["id"]
    got = await stack.call("GET", f"/api/v1/payments/{a['id']}/refunds/{refund['id']}")
    assert got.status == 200 and got.json()["amount"] == 100
    assert (await stack.call("GET", f"/api/v1/payments/{a['id']}/refunds/{refund['id']}",
                             key_id=KEY_B)).status == 404
    paid = (await stack.call("GET", f"/api/v1/payments/{a['id']}")).json()
    assert paid["refunded"] == (100 if refund["status"] == "succeeded" else 0)
    r = await stack.call("POST", f"/api/v1/payments/{a['id']}/refunds", {"refund_id": "r2", "amount": 10 ** 6})
    assert r.status == 422 and r.json()["code"] == "exceeds_refundable"


@aio_test
async def test_where_ussd_push_is_on_the_request_is_its_own_pin_page(stack):
    """The ask carries the push meta (the SMS channel pushes the page, the
    SMS is its fallback); the page, opened at the request's entry, takes
    the PIN for that request only."""
    from telecom_pay.messaging import outbox
    payer, order = new_payer()
    await _ready(stack, payer)
    a = (await stack.call("POST", "/api/v1/payments", {**order, "order_id": "ussd-1"})).json()
    row = await _row(stack, a["id"])
    assert row.confirm_by == "ussd"
    metas = [r.meta for r in (await stack.service.ledger.read(lambda c: c.execute(
        sa.select(outbox.c.meta).where(outbox.c.msisdn == payer)))).all() if r.meta and "sp_tag" in r.meta]
    assert metas == [{"confirm": "pin_required", "sp_tag": row.tag}]
    menus = stack.daemon.core.menus
    assert (await menus.start("push-x", payer, channel="ussd", entry="sp:0000")).node != "pin"
    page = await menus.start("push-1", payer, channel="ussd", entry=f"sp:{row.tag}")
    assert page.node == "pin"
    page = await menus.answer("push-1", "000000")
    assert page.node == "pin" and (await _row(stack, a["id"])).pin_failures == 1
    page = await menus.answer("push-1", PIN)
    paid = await _row(stack, a["id"])
    assert paid.status == "confirmed" and paid.ref in page.text, page.text
    assert (await stack.service.ledger.get_operation(f"sp:{a['id']}")).request["channel"] == "ussd"


def test_tag_and_pin_parse_and_are_stored_masked():
    from telecom_pay.commands import keywords as kw
    from telecom_pay.commands.parser import parse
    from telecom_pay.commands.redaction import is_masked_pin_answer, masked_tag, redact
    for text in ("8812 147258", "８８１２　１４７２５８", "8812,147258"):
        cmd = parse(text)
        assert (cmd.name, cmd.tag, cmd.pin) == (kw.PIN_REPLY, "8812", "147258"), text
        assert redact(text) == "8812 ******" and masked_tag(redact(text)) == "8812"
    assert is_masked_pin_answer("8812 ******") and not is_masked_pin_answer("88 ******")
    for text in ("N 8812", "n 8812", "取消 8812"):
        cmd = parse(text)
        assert (cmd.name, cmd.tag) == (kw.CANCEL, "8812"), text
        assert redact(text) == text
    # what was there before is unchanged: a split PIN, a bare N
    assert (parse("123 456").pin, parse("123 456").tag) == ("123456", None)
    assert (parse("N").name, parse("N").tag) == (kw.CANCEL, None)
