"""The merchant back office over real sockets: the login with a CAPTCHA
every time (on every entry point), the orders of both kinds in one list with
its filters, pages and CSV, an order's page with its refunds and callbacks,
the refund request and review forms (through the refunds module: its
rows, the ledger's refund, the subscriber's SMS and the callback owed),
settlement statements and their CSV, the merchant's own reconciliation,
the notification log with its resend (to a local server standing in for
the merchant's), and the settings: notify URL, staff added, disabled,
re-enabled and given another role, each audited."""
from __future__ import annotations

import csv
import io
import json

import sqlalchemy as sa

from channels.web import merchant_pages
from telecom_pay.aio import wait_deferred
from telecom_pay.ledger.tables import audit_log, operations
from telecom_pay.merchants.directory import get_profile
from telecom_pay.merchants.tables import merchant_notifications, merchant_refunds, notification_attempts
from telecom_pay.messaging import outbox
from tests.aio import aio_test
from tests.merchantapikit import start_notify_server
from tests.merchantkit import (PASSWORD, build_world, captcha_answer, csrf_of, field_of,  # noqa: F401
                               merchant_db, merchant_login, merchant_users, migrated_template)
from tests.servicekit import MSISDN
from tests.webkit import Browser, start_web, stop_web, web_settings


async def audits(daemon, action):
    async def read(conn):
        return (await conn.execute(sa.select(audit_log).where(audit_log.c.action == action)
                                   .order_by(audit_log.c.id))).all()
    return await daemon.core.ledger.read(read)


async def login_asks_a_captcha_every_time_and_lands_on_the_back_office(daemon, base):
    b = Browser(base)
    page = await b.get("/merchant/login")
    assert page.status == 200 and "<svg" in page.text and 'name="captcha_answer"' in page.text
    token = field_of(page.text, "login_token")
    captcha_id, answer = await captcha_answer(daemon, page.text)
    # the right password with a wrong CAPTCHA: refused, and no password was tried
    r = await b.post("/merchant/login", form={"login_token": token, "username": "m1admin", "password": PASSWORD,
                                              "captcha_id": captcha_id, "captcha_answer": "00000" if answer != "00000"
                                              else "11111"})
    assert r.status == 401 and "digits" in r.text and "tp_session" not in b.cookies
    assert await audits(daemon, "web_login") == []
    # a used CAPTCHA does not work twice
    r = await b.post("/merchant/login", form={"login_token": field_of(r.text, "login_token"), "username": "m1admin",
                                              "password": PASSWORD, "captcha_id": captcha_id,
                                              "captcha_answer": answer})
    assert r.status == 401
    # the other entry points ask it too: the API login, and the staff login page
    api = Browser(base)
    r = await api.api_login("m1admin", PASSWORD)
    assert r.status == 401 and r.json()["captcha_required"] is True
    c = (await api.post("/api/v1/captcha", json_body={})).json()
    stored = await daemon.components["web"].app.captchas.store.get(f"web:captcha:{c['captcha_id']}")
    r = await api.api_login("m1admin", PASSWORD, captcha_id=c["captcha_id"], captcha_answer=stored["answer"])
    assert r.status == 200 and r.json()["role"] == "merchant_admin"
    # a wrong password with a solved CAPTCHA is a counted failure, as for anyone
    b2 = Browser(base)
    page = await b2.get("/merchant/login")
    cid, ans = await captcha_answer(daemon, page.text)
    r = await b2.post("/merchant/login", form={"login_token": field_of(page.text, "login_token"),
                                               "username": "m1admin", "password": "wrong-password-1",
                                               "captcha_id": cid, "captcha_answer": ans})
    assert r.status == 401 and "Wrong username or password" in r.text
    assert len(await audits(daemon, "web_login_failed")) == 1

    ok = await merchant_login(daemon, base, "m1admin")
    r = await ok.get("/merchant")
    assert r.status == 200 and "Lottery Centre" in r.text
    assert (await ok.get("/home")).header("location") == "/merchant"
    # logging out lands on the back office's login again, and the session is gone
    bye = await ok.post("/logout", form={"csrf_token": csrf_of(r.text)})
    assert bye.status == 303 and bye.header("location") == "/merchant/login", (bye.status, bye.text)
    assert (await ok.get("/merchant")).header("location") == "/merchant/login"
    # a staff user who logs in here goes to the staff home, and is refused the back office
    ops = await merchant_login(daemon, base, "ops1")
    assert (await ops.get("/merchant")).status == 403


async def orders_list_filters_pages_exports_and_shows_one(daemon, base, world):
    ids = world.ids["M001"]
    b = await merchant_login(daemon, base, "m1read")
    r = await b.get("/merchant/orders")
    assert r.status == 200, r.text
    for shown in (ids["zf"], ids["zf_b"], ids["sp"], ids["sp_pending"], "A-77", "ORD-1001", "12.34", "20.00"):
        assert shown in r.text, shown
    assert r.text.count('<tr data-id="') == 4                    # the SP payment's ledger row is not listed twice
    assert world.ids["M002"]["zf"] not in r.text and "ORD-2001" not in r.text
    assert "138****8000" in r.text and "8613800138000" not in r.text   # the payer masked

    async def listed(query):
        r = await b.get("/merchant/orders?" + query)
        assert r.status == 200, (query, r.text)
        return r.text.count('<tr data-id="'), r.text
    assert (await listed("type=api"))[0] == 2
    assert (await listed("type=sms"))[0] == 1
    assert (await listed("status=pending"))[0] == 1
    assert (await listed("status=confirmed&type=ussd"))[0] == 1
    assert (await listed("amount_min=10&amount_max=20"))[0] == 2
    assert (await listed("number=A-77"))[0] == 1
    assert (await listed(f"number={ids['sp_ref']}"))[0] == 1
    assert (await listed("number=ORD-1002"))[0] == 1
    today = (await daemon.core.ledger.read(lambda c: _today(daemon)))
    assert (await listed(f"date_from={today}&date_to={today}"))[0] == 4
    assert (await listed("date_from=2020-01-01&date_to=2020-01-02"))[0] == 0
    count, text = await listed("per_page=3")
    assert count == 3 and 'rel="next"' in text and "page=2" in text
    count, text = await listed("per_page=3&page=2")
    assert count == 1 and 'rel="prev"' in text and 'rel="next"' not in text
    for bad, words in (("date_from=2026-02-30", "date"), ("amount_min=abc", "amount"), ("status=lost", "status"),
                       ("type=fax", "type"), ("page=0", "page"), ("per_page=201", "Per page"),
                       ("date_from=2026-02-02&date_to=2026-02-01", "after"), ("number=" + "9" * 65, "64")):
        r = await b.get("/merchant/orders?" + bad)
        assert r.status == 400 and words in r.text, (bad, r.status)

    r = await b.get("/merchant/orders.csv?type=api")
    assert r.status == 200 and r.header("content-type").startswith("text/csv")
    assert r.header("content-disposition") == 'attachment; filename="orders-M001-all.csv"'
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sorted((x["id"], x["amount_yuan"], x["status"]) for x in rows) == sorted([
        (ids["sp"], "20.00", "confirmed"), (ids["sp_pending"], "3.00", "pending")])
    r = await b.get(f"/merchant/orders.csv?date_from={today}&date_to={today}")
    assert f"orders-M001-{today}-{today}.csv" in r.header("content-disposition")
    assert len(list(csv.DictReader(io.StringIO(r.text)))) == 4

    r = await b.get(f"/merchant/orders/{ids['zf']}")
    assert r.status == 200 and "A-77" in r.text and ids["refund"] in r.text      # its refund request
    assert 'id="refund-form"' not in r.text                                  # read-only: no form
    r = await b.get(f"/merchant/orders/{ids['sp']}")
    assert r.status == 200 and "ORD-1001" in r.text and "evt_m1first000000000001" in r.text
    assert (await b.get("/merchant/orders/pay_nothing")).status == 404


async def _today(daemon):
    from telecom_pay.business_time import business_day
    return business_day(daemon.core.service.clock(), daemon.core.service.tz).isoformat()


async def rows(daemon, query) -> list:
    async def read(conn):
        return (await conn.execute(query)).all()
    return await daemon.core.ledger.read(read)


def refunds_of(mid: int):
    r = merchant_refunds
    return sa.select(r).where(r.c.merchant_id == mid).order_by(r.c.id)


async def refund_request_and_review_go_through_the_refunds_module(daemon, base, world, notify_url):
    ids = world.ids["M001"]
    before = await rows(daemon, refunds_of(world.m1))
    staff = await merchant_login(daemon, base, "m1staff")
    page = await staff.get(f"/merchant/orders/{ids['zf']}")
    assert 'id="refund-form"' in page.text
    key = field_of(page.text, "refund_key")
    assert key != field_of((await staff.get(f"/merchant/orders/{ids['zf']}")).text, "refund_key")
    form = {"csrf_token": csrf_of(page.text), "refund_key": key, "amount": "2.50", "reason": "broken ticket"}
    first = await staff.post(f"/merchant/orders/{ids['zf']}/refund", form=form)
    again = await staff.post(f"/merchant/orders/{ids['zf']}/refund", form=form)     # a double submit
    assert first.status == 201 and "waiting for a merchant admin" in first.text, first.text
    assert again.status == 200 and "same request" in again.text
    made = (await rows(daemon, refunds_of(world.m1)))[len(before):]
    assert len(made) == 1, made                                      # one request, not two
    zf_op = (await rows(daemon, sa.select(operations.c.id).where(operations.c.ref == ids["zf"])))[0].id
    staffs = made[0]
    assert (staffs.refund_key, staffs.amount, staffs.status, staffs.reason, staffs.requested_by,
            staffs.requested_via, staffs.payment_operation_id, staffs.sp_payment_id) == (
        key, 250, "pending_review", "broken ticket", "m1staff", "web", zf_op, None)
    assert staffs.public_id in first.text and staffs.public_id in again.text
    # an SP payment is named to the module by its pay_ id
    page = await staff.get(f"/merchant/orders/{ids['sp']}")
    r = await staff.post(f"/merchant/orders/{ids['sp']}/refund", form={
        "csrf_token": csrf_of(page.text), "refund_key": field_of(page.text, "refund_key"), "amount": "1",
        "reason": "r"})
    assert r.status == 201, r.text
    sp_refund = (await rows(daemon, refunds_of(world.m1)))[-1]
    assert (sp_refund.sp_payment_id, sp_refund.amount, sp_refund.status, sp_refund.request["payment_id"],
            sp_refund.request["payment_ref"]) == (ids["sp_row"], 100, "pending_review", ids["sp"], None)
    # the module's refusal is shown with its status: 12.34 paid, 1.00 and 2.50 waiting, so 8.84 is left
    r = await staff.post(f"/merchant/orders/{ids['zf']}/refund", form={**form, "refund_key": "web-other-key-1",
                                                                    "amount": "8.85"})
    assert r.status == 422 and "At most 8.84 yuan of this payment can still be refunded" in r.text, r.text
    count = len(await rows(daemon, refunds_of(world.m1)))
    for bad, status in (({"amount": "0"}, 400), ({"amount": "x"}, 400), ({"reason": ""}, 400),
                        ({"reason": "r" * 201}, 400), ({"refund_key": "short"}, 400),
                        ({"refund_key": "bad key with spaces"}, 400), ({"csrf_token": "forged"}, 403),
                        ({"refund_key": key, "amount": "3"}, 409)):      # the key of another request
        r = await staff.post(f"/merchant/orders/{ids['zf']}/refund", form={**form, **bad})
        assert r.status == status, (bad, r.status)
    assert len(await rows(daemon, refunds_of(world.m1))) == count

    # review: the queue, approve/reject by the admin only, with the module's refusal shown
    assert (await staff.get("/merchant/refunds")).status == 200
    decide = {"csrf_token": csrf_of(page.text), "refund_id": ids["refund"], "decision": "approve", "reason": "ok"}
    assert (await staff.post("/merchant/refunds/decide", form=decide)).status == 403
    reader = await merchant_login(daemon, base, "m1read")
    r = await reader.get("/merchant/refunds")
    assert (await reader.post("/merchant/refunds/decide", form={**decide, "csrf_token": csrf_of(r.text)})
            ).status == 403
    assert {x.public_id: x.status for x in await rows(daemon, refunds_of(world.m1))}[ids["refund"]] == \
        "pending_review"
    admin = await merchant_login(daemon, base, "m1admin")
    q = await admin.get("/merchant/refunds")
    assert q.status == 200 and ids["refund"] in q.text and world.ids["M002"]["refund"] not in q.text
    assert staffs.public_id in q.text and sp_refund.public_id in q.text and "broken ticket" in q.text
    token = csrf_of(q.text)
    r = await admin.post("/merchant/refunds/decide", form={**decide, "csrf_token": token})
    assert r.status == 200 and f"Refund {ids['refund']}: succeeded" in r.text, r.text
    done = {x.public_id: x for x in await rows(daemon, refunds_of(world.m1))}[ids["refund"]]
    assert (done.status, done.decided_by, done.decision_reason) == ("succeeded", "m1admin", "ok")
    # booked: the ledger's refund of the payment, the subscriber's SMS, the merchant's callback
    booked = await rows(daemon, sa.select(operations).where(operations.c.parent_id == zf_op,
                                                            operations.c.kind == "refund"))
    assert [(o.ref, o.amount, o.state, o.idempotency_key, o.actor) for o in booked] == [
        (done.ref, 100, "posted", f"mrefund:{ids['refund']}", "m1admin")]
    sms = await rows(daemon, sa.select(outbox).where(outbox.c.queue_key.like(f"refund:{ids['refund']}:%")))
    assert [(m.msisdn, m.state) for m in sms] == [(MSISDN, "queued")] and "1.00" in sms[0].text, sms
    n = merchant_notifications
    told = await rows(daemon, sa.select(n).where(n.c.subject_id == ids["refund"]))
    assert [(x.merchant_id, x.event_type, x.url) for x in told] == [(world.m1, "refund.succeeded", notify_url)]
    assert json.loads(told[0].body)["data"]["status"] == "succeeded"
    # owed, not yet sent (the sender is off in this test): a resend of it is refused, it is on its way already
    assert told[0].status == "pending"
    page = await admin.get(f"/merchant/notifications/{told[0].event_id}")
    assert page.status == 200 and "refund.succeeded" in page.text
    r = await admin.post(f"/merchant/notifications/{told[0].event_id}/resend", form={"csrf_token": token})
    assert r.status == 409 and "still being sent" in r.text, r.text
    # decided once: a second approval is refused by the module
    r = await admin.post("/merchant/refunds/decide", form={**decide, "csrf_token": token})
    assert r.status == 409 and "already succeeded" in r.text
    # a rejection, with its reason; nothing moves, the merchant is told
    r = await admin.post("/merchant/refunds/decide", form={
        "csrf_token": token, "refund_id": staffs.public_id, "decision": "reject", "reason": "not our ticket"})
    assert r.status == 200 and f"Refund {staffs.public_id}: rejected" in r.text, r.text
    rejected = {x.public_id: x for x in await rows(daemon, refunds_of(world.m1))}[staffs.public_id]
    assert (rejected.status, rejected.decided_by, rejected.decision_reason, rejected.ref) == (
        "rejected", "m1admin", "not our ticket", None)
    assert len(await rows(daemon, sa.select(operations).where(operations.c.parent_id == zf_op,
                                                              operations.c.kind == "refund"))) == 1
    assert [x.event_type for x in await rows(daemon, sa.select(n).where(n.c.subject_id == staffs.public_id))] == [
        "refund.rejected"]
    # an admin's own request is decided by another admin, never by its requester
    page = await admin.get(f"/merchant/orders/{ids['zf_b']}")
    r = await admin.post(f"/merchant/orders/{ids['zf_b']}/refund", form={
        "csrf_token": token, "refund_key": field_of(page.text, "refund_key"), "amount": "5", "reason": "all back"})
    assert r.status == 201, r.text
    own = (await rows(daemon, refunds_of(world.m1)))[-1]
    assert (own.requested_by, own.amount, own.status) == ("m1admin", 500, "pending_review")
    r = await admin.post("/merchant/refunds/decide", form={**decide, "csrf_token": token, "refund_id": own.public_id})
    assert r.status == 403 and "someone other than its requester" in r.text, r.text
    assert {x.public_id: x.status for x in await rows(daemon, refunds_of(world.m1))}[own.public_id] == \
        "pending_review"
    # the page's own checks, before the module is asked
    changed = [(x.public_id, x.status) for x in await rows(daemon, sa.select(merchant_refunds))]
    for bad, status in (({"decision": "maybe"}, 400), ({"reason": ""}, 400), ({"refund_id": "rf_none"}, 404),
                        ({"refund_id": world.ids["M002"]["refund"]}, 404)):
        r = await admin.post("/merchant/refunds/decide", form={**decide, "csrf_token": token,
                                                               "refund_id": sp_refund.public_id, **bad})
        assert r.status == status, (bad, r.status)
    assert [(x.public_id, x.status) for x in await rows(daemon, sa.select(merchant_refunds))] == changed
    r = await admin.get("/merchant/refunds")
    assert own.public_id in r.text and "not our ticket" in r.text


async def settlement_reconciliation_and_notifications(daemon, base, world, notify):
    ids = world.ids["M001"]
    b = await merchant_login(daemon, base, "m1read")
    r = await b.get("/merchant/settlement")
    assert r.status == 200 and "2026-01-05" in r.text and "PAYOUTM001" in r.text and "PAYOUTM002" not in r.text
    r = await b.get(f"/merchant/settlement/{ids['batch']}")
    assert r.status == 200 and "98.50" in r.text and ids["zf"] in r.text
    r = await b.get(f"/merchant/settlement/{ids['batch']}/statement.csv")
    assert r.status == 200 and "statement-M001-2026-01-05.csv" in r.header("content-disposition")
    lines = list(csv.reader(io.StringIO(r.text)))
    assert lines[1] == ["M001", "2026-01-05", "2", "100.00", "1.00", "0.50", "0.05", "0.00", "98.50", "paid",
                        "PAYOUTM001"]
    assert lines[4][0] == ids["zf"] and lines[4][4] == "12.34"

    # reconciliation: the merchant's list of today against the platform's confirmed payments
    today = await _today(daemon)
    page = await b.get("/merchant/reconciliation")
    assert page.status == 200
    token = csrf_of(page.text)
    text = f"order,amount\r\nA-77,12.34\r\n{ids['zf_b']},5.01\r\nNOPE-1,1.00\r\n{world.ids['M002']['zf']},7.00\r\n"
    r = await b.post("/merchant/reconciliation", form={"csrf_token": token, "day": today, "orders": text})
    assert r.status == 200, r.text
    summary = " ".join(r.text.split('id="summary">')[1].split("</p>")[0].split())
    assert summary == "1 matched, 1 with another amount, 2 missing on the platform, 1 missing in your file.", summary
    # the same as an uploaded file (multipart), and the result as CSV
    boundary = "xYzBoundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"day\"\r\n\r\n{today}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.csv\"\r\n"
            f"Content-Type: text/csv\r\n\r\n{text}\r\n--{boundary}--\r\n").encode()
    r = await b.post("/merchant/reconciliation", data=body,
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status == 200 and "1 matched, 1 with another amount" in r.text, r.text
    r = await b.post("/merchant/reconciliation.csv", form={"csrf_token": token, "day": today, "orders": text})
    assert r.status == 200 and f"reconciliation-M001-{today}.csv" in r.header("content-disposition")
    found = {(x["finding"], x["order"]) for x in csv.DictReader(io.StringIO(r.text))}
    assert found == {("matched", "A-77"), ("amount_mismatch", ids["zf_b"]), ("missing_on_platform", "NOPE-1"),
                     ("missing_on_platform", world.ids["M002"]["zf"]), ("missing_in_file", "ORD-1001")}
    for bad, words in (("A-77,12.34\r\nA-77,1\r\n", "line 2: the order A-77 is on line 1"),
                       ("A-77,12.34\r\nB,zwölf\r\n", "line 2:"), ("A-77\r\n", "line 1:"), ("", "no orders"),
                       ("".join(f"X{i},1\r\n" for i in range(2001)), "more than 2000"), ("=cmd,1\r\n" + "a" * 33000, "KB")):
        r = await b.post("/merchant/reconciliation", form={"csrf_token": token, "day": today, "orders": bad})
        error = r.text.split('class="error" role="alert">')[1].split("</p>")[0]
        assert r.status == 400 and words.lower() in error.lower(), (bad[:20], r.status, error)
    r = await b.post("/merchant/reconciliation", form={"csrf_token": token, "day": "2026-13-01", "orders": "a,1"})
    assert r.status == 400

    # notifications: the log, one with its attempts, a resend (staff; read-only may not)
    r = await b.get("/merchant/notifications")
    assert r.status == 200 and ids["event"] in r.text and world.ids["M002"]["event"] not in r.text
    assert (await b.get("/merchant/notifications?status=failed")).text.count("evt_m1") >= 1
    assert "evt_m1" not in (await b.get("/merchant/notifications?status=delivered")).text
    assert (await b.get("/merchant/notifications?status=lost")).status == 400
    r = await b.get(f"/merchant/notifications/{ids['event']}")
    assert r.status == 200 and r.text.count("HTTP 500") >= 2 and 'id="resend"' not in r.text
    assert (await b.post(f"/merchant/notifications/{ids['event']}/resend",
                         form={"csrf_token": csrf_of(r.text)})).status == 403
    staff = await merchant_login(daemon, base, "m1staff")
    page = await staff.get(f"/merchant/notifications/{ids['event']}")
    r = await staff.post(f"/merchant/notifications/{ids['event']}/resend", form={"csrf_token": csrf_of(page.text)})
    assert r.status == 200 and "Sent again" in r.text
    # sent at once, the stored body as it was, to the merchant's server; the attempt marked manual, audited
    n, a = merchant_notifications, notification_attempts
    stored = (await rows(daemon, sa.select(n).where(n.c.event_id == ids["event"])))[0]
    assert [(x["event"], x["body"]) for x in notify.received] == [(ids["event"], json.loads(stored.body))]
    assert (stored.status, stored.attempts, stored.last_status, stored.last_error, stored.claimed_until) == (
        "delivered", 3, 200, None, None)
    tried = await rows(daemon, sa.select(a).where(a.c.notification_id == stored.id).order_by(a.c.id))
    assert [(x.http_status, x.manual) for x in tried] == [(500, False), (500, False), (200, True)]
    assert [(x.actor, x.account_id, x.details["event_id"], x.details["before"])
            for x in await audits(daemon, "merchant_notification_resent")] == [
        ("m1staff", world.m1, ids["event"], "failed")]
    assert "delivered" in r.text and r.text.count("HTTP 500") >= 2
    # another merchant's event is not found, and nothing is sent
    other = world.ids["M002"]["event"]
    r = await staff.post(f"/merchant/notifications/{other}/resend", form={"csrf_token": csrf_of(page.text)})
    assert r.status == 404 and not [x for x in notify.received if x["event"] == other]


async def settings_notify_url_and_staff_management_are_the_admins_and_audited(daemon, base):
    admin = await merchant_login(daemon, base, "m1admin")
    page = await admin.get("/merchant/settings")
    assert page.status == 200 and "m1staff" in page.text and "m2admin" not in page.text
    token = csrf_of(page.text)
    r = await admin.post("/merchant/settings/notify-url", form={"csrf_token": token,
                                                                "notify_url": "https://shop.example/cb"})
    assert r.status == 200 and "https://shop.example/cb" in r.text
    profile = await daemon.core.ledger.read(lambda conn: get_profile(conn, code="M001"))
    assert profile.notify_url == "https://shop.example/cb"
    r = await admin.post("/merchant/settings/notify-url", form={"csrf_token": token, "notify_url": "ftp://x"})
    assert r.status == 400 and "http or https" in r.text

    r = await admin.post("/merchant/staff", form={"csrf_token": token, "username": "m1new", "role": "merchant_staff"})
    assert r.status == 201, r.text
    initial = r.text.split('id="initial-password">')[1].split("<")[0]
    user = await daemon.components["web"].app.users.get("m1new")
    assert (user.role, user.merchant_id, user.must_change_password) == (
        "merchant_staff", profile.account_id, True)
    assert (await admin.post("/merchant/staff", form={"csrf_token": token, "username": "m1new",
                                                      "role": "merchant_staff"})).status == 409
    assert (await admin.post("/merchant/staff", form={"csrf_token": token, "username": "x1",
                                                      "role": "ops_admin"})).status == 400
    # the new user's first login: the CAPTCHA, then the password change first
    newcomer = Browser(base)
    p = await newcomer.get("/merchant/login")
    cid, ans = await captcha_answer(daemon, p.text)
    r = await newcomer.post("/merchant/login", form={"login_token": field_of(p.text, "login_token"),
                                                     "username": "m1new", "password": initial, "captcha_id": cid,
                                                     "captcha_answer": ans})
    assert r.status == 303 and r.header("location") == "/password"
    assert (await newcomer.get("/merchant/orders")).header("location") == "/password"

    staff = await merchant_login(daemon, base, "m1staff")
    assert (await staff.get("/merchant/orders")).status == 200
    r = await admin.post("/merchant/staff/change", form={"csrf_token": token, "username": "m1staff",
                                                         "action": "disable"})
    assert r.status == 200 and "m1staff: disabled" in r.text
    assert (await staff.get("/merchant/orders")).header("location") == "/merchant/login"  # logged out at once
    r = await admin.post("/merchant/staff/change", form={"csrf_token": token, "username": "m1staff",
                                                         "action": "enable"})
    assert "m1staff: active" in r.text
    r = await admin.post("/merchant/staff/change", form={"csrf_token": token, "username": "m1staff",
                                                         "action": "role", "role": "merchant_readonly"})
    assert "m1staff: active, merchant_readonly" in r.text
    for bad, status in (({"username": "m2staff", "action": "disable"}, 404),
                        ({"username": "ops1", "action": "disable"}, 404),
                        ({"username": "m1admin", "action": "disable"}, 400),
                        ({"username": "m1staff", "action": "role", "role": "ops_admin"}, 400),
                        ({"username": "m1staff", "action": "explode"}, 400)):
        r = await admin.post("/merchant/staff/change", form={"csrf_token": token, **bad})
        assert r.status == status, (bad, r.status)
    assert (await daemon.components["web"].app.users.get("m2staff")).status == "active"
    changed = await audits(daemon, "web_user_changed")
    assert [(a.actor, a.details["user"], a.details["after"]) for a in changed] == [
        ("m1admin", "m1staff", {"status": "disabled"}), ("m1admin", "m1staff", {"status": "active"}),
        ("m1admin", "m1staff", {"role": "merchant_readonly"})]
    assert all(a.details["role"] == "merchant_admin" and a.details["address"] == "127.0.0.1" for a in changed)
    created = [a for a in await audits(daemon, "web_user_created") if a.actor == "m1admin"]
    assert created[0].details["after"]["merchant_code"] == "M001"
    assert [a.actor for a in await audits(daemon, "merchant_changed")] == ["m1admin"]


@aio_test
async def test_login_and_settings(merchant_db):
    """One daemon for both (starting one costs seconds)."""
    daemon, base = await start_web(web_settings({"database_url": merchant_db}))
    try:
        await merchant_users(daemon)
        await login_asks_a_captcha_every_time_and_lands_on_the_back_office(daemon, base)
        await settings_notify_url_and_staff_management_are_the_admins_and_audited(daemon, base)
    finally:
        await stop_web(daemon)


@aio_test
async def test_orders_refunds_settlement_reconciliation_notifications(merchant_db, monkeypatch):
    """The callbacks' sender is off: what is sent is what the test resends."""
    daemon, base = await start_web(web_settings({"database_url": merchant_db}, **{"merchant_api.enabled": False}))
    notify, notify_port, notify_base = await start_notify_server(daemon.core.service.settings.pin_key,
                                                                 daemon.core.service.clock)
    try:
        await merchant_users(daemon)
        world = await build_world(daemon, notify_url=notify_base + "/shop")
        await orders_list_filters_pages_exports_and_shows_one(daemon, base, world)
        # an export over its cap is refused, not cut short
        monkeypatch.setattr(merchant_pages, "CSV_MAX_PAGES", 0)
        reader = await merchant_login(daemon, base, "m1read")
        r = await reader.get("/merchant/orders.csv")
        assert r.status == 400 and "narrow the dates" in r.text
        assert (await reader.get("/merchant/orders.csv?number=nothing")).text.count("\r\n") == 1
        monkeypatch.setattr(merchant_pages, "CSV_MAX_PAGES", 100)
        await settlement_reconciliation_and_notifications(daemon, base, world, notify)
        await refund_request_and_review_go_through_the_refunds_module(daemon, base, world, notify_base + "/shop")
    finally:
        await stop_web(daemon)
        await wait_deferred(notify_port.stopListening())
