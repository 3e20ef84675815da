"""The logged-in subscriber over real sockets: paying from the web runs the
service's path (a double submit with the form's key pays once; limits;
three wrong PINs lock every channel), amounts are yuan text (negative
and fractional fen refused), the statement and its CSV, the card, the
freeze; a subscriber reaches only their own number; CSRF and roles hold;
every change is audited."""
from __future__ import annotations

import csv
import io

import sqlalchemy as sa

from telecom_pay.ledger.tables import audit_log
from tests.aio import aio_test
from tests.bankdouble import InProcessBank
from tests.selfkit import NUMBER, NUMBER_E164, OTHER, OTHER_E164, initial_pin, rows, start_self, web_open
from tests.webkit import Browser, add_user, stop_web

PIN = "258147"
PAN = "6222020200112233"


async def funded(daemon, base, number=NUMBER, fen=20_000):
    """Opened on the web, the PIN changed, cash paid in at an agent's counter."""
    b, token = await web_open(daemon, base, number)
    h = {"X-CSRF-Token": token}
    e164 = "86" + number
    r = await b.post("/api/v1/self/pin", headers=h, json_body={"current_pin": await initial_pin(daemon, e164),
                                                               "new_pin": PIN})
    assert r.status == 200, r.text
    assert (await daemon.core.service.cash_in("AG001", number, fen, key=f"test-cash:{number}")).ok
    return b, h


@aio_test
async def test_paying_a_merchant_from_the_web_pays_once_and_three_wrong_pins_lock_every_channel(stack):
    daemon, base = await start_self(stack)
    try:
        b, h = await funded(daemon, base)
        pay = {"merchant_code": "m001", "amount": "12.50", "pin": PIN, "idempotency_key": "form-key-0001"}
        first = await b.post("/api/v1/self/pay", headers=h, json_body=pay)
        assert first.status == 200 and first.json()["amount"] == 1250, first.text
        second = await b.post("/api/v1/self/pay", headers=h, json_body=pay)       # the double submit
        assert second.status == 200 and second.json()["ref"] == first.json()["ref"], second.text
        me = (await b.get("/api/v1/self")).json()
        assert me["balance"] == 20_000 - 1250 - (first.json().get("fee") or 0)
        other_amount = await b.post("/api/v1/self/pay", headers=h, json_body={**pay, "amount": "13"})
        assert other_amount.status == 409, other_amount.text
        # amounts: text in yuan, never negative, zero, fractional fen or a number
        for amount in ("-5", "0", "1.005", "12,5", "abc"):
            r = await b.post("/api/v1/self/pay", headers=h,
                             json_body={**pay, "amount": amount, "idempotency_key": "form-key-0002"})
            assert r.status == 400 and r.json()["field"] == "amount", (amount, r.text)
        r = await b.post("/api/v1/self/pay", headers=h, json_body={**pay, "amount": 12, "idempotency_key": "k" * 9})
        assert r.status == 400 and r.json()["error"] == "amount must be a string"
        over = await b.post("/api/v1/self/pay", headers=h,
                            json_body={**pay, "amount": "90000", "idempotency_key": "form-key-0003"})
        assert over.status == 422 and over.json()["outcome"].startswith(("limit", "insufficient")), over.text
        unknown = await b.post("/api/v1/self/pay", headers=h, json_body={**pay, "merchant_code": "NOPE",
                                                                         "idempotency_key": "form-key-0004"})
        assert unknown.status == 404 and unknown.json()["outcome"] == "unknown_merchant", unknown.text
        bad_key = await b.post("/api/v1/self/pay", headers=h, json_body={**pay, "idempotency_key": "short"})
        assert bad_key.status == 400 and bad_key.json()["field"] == "idempotency_key"
        # three wrong PINs lock payments: on the web, and then by SMS too
        answers = []
        for i in range(3):
            r = await b.post("/api/v1/self/pay", headers=h,
                             json_body={**pay, "pin": "369258", "idempotency_key": f"wrong-pin-{i:04d}"})
            answers.append((r.status, r.json()["outcome"]))
        assert answers == [(403, "pin_wrong"), (403, "pin_wrong"), (423, "pin_locked")], answers
        right = await b.post("/api/v1/self/pay", headers=h, json_body={**pay, "idempotency_key": "after-lock-1"})
        assert right.status == 423
        by_sms = await daemon.core.service.pay(NUMBER, "M001", 100, PIN, channel="sms")
        assert by_sms.outcome.value == "pin_locked"
        audited = await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "web_self_pay"))
        assert audited and all(PIN not in str(a.details) and "369258" not in str(a.details) for a in audited)
        assert audited[0].details["before"]["balance"] == 20_000 and audited[0].details["role"] == "subscriber"
        wrong = await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "pin_wrong"))
        assert {a.channel for a in wrong} == {"web"}
    finally:
        await stop_web(daemon)


@aio_test
async def test_statement_csv_send_and_only_the_own_number(sqlite_url):
    daemon, base = await start_self({"database_url": sqlite_url})
    try:
        b, h = await funded(daemon, base)
        other, oh = await funded(daemon, base, OTHER, fen=500)
        assert (await b.post("/api/v1/self/pay", headers=h, json_body={
            "merchant_code": "M001", "amount": "3.5", "pin": PIN, "idempotency_key": "pay-0000001"})).status == 200
        sent = await b.post("/api/v1/self/send", headers=h, json_body={
            "to_msisdn": OTHER, "amount": "2", "pin": PIN, "idempotency_key": "send-000001"})
        assert sent.status == 200, sent.text
        lines = (await b.get("/api/v1/self/statement")).json()["lines"]
        assert [(line["kind"], line["amount"]) for line in lines][:3] == [
            ("p2p_out", -200), ("payment", -350), ("cash_in", 20_000)], lines
        theirs = (await other.get("/api/v1/self/statement")).json()["lines"]
        assert [line["kind"] for line in theirs] == ["p2p_in", "cash_in"]
        # the CSV: a download, quoted properly, yuan with two decimals
        r = await b.get("/me/statement.csv")
        assert r.status == 200 and r.header("content-type").startswith("text/csv")
        assert r.header("content-disposition") == f'attachment; filename="statement-{NUMBER_E164}.csv"'
        table = list(csv.reader(io.StringIO(r.text)))
        assert table[0] == ["ref", "at", "kind", "counterparty", "amount_yuan", "state"]
        assert [row[4] for row in table[1:]] == ["-2.00", "-3.50", "200.00"], table
        # a subscriber never names another number: unknown fields, and every answer is the own wallet
        r = await b.post("/api/v1/self/pay", headers=h, json_body={
            "msisdn": OTHER, "merchant_code": "M001", "amount": "1", "pin": PIN, "idempotency_key": "pay-0000002"})
        assert r.status == 400 and r.json()["field"] == "msisdn"
        assert (await other.get("/api/v1/self")).json()["msisdn"] == OTHER_E164
        assert (await b.get("/api/v1/self?msisdn=" + OTHER)).json()["msisdn"] == NUMBER_E164
        assert (await b.get("/api/v1/self/statement?page=x")).status == 400
        assert (await b.get("/api/v1/self/statement?page=0")).status == 400
        # CSRF on every change; the role too
        assert (await b.post("/api/v1/self/freeze")).status == 403
        assert (await b.post("/api/v1/self/freeze", headers={"X-CSRF-Token": oh["X-CSRF-Token"]})).status == 403
        await add_user(daemon, "agent9", "agent", password="s3cret-enough-pw", agent_code="AG001")
        staff = Browser(base)
        assert (await staff.api_login("agent9", "s3cret-enough-pw")).status == 200
        assert (await staff.get("/api/v1/self")).status == 403
        assert (await Browser(base).get("/api/v1/self")).status == 401
        huge = await b.post("/api/v1/self/send", headers={**h, "Content-Type": "application/json"},
                            data=b'{"to_msisdn": "' + b"9" * 70_000 + b'"}')
        assert huge.status == 413
    finally:
        await stop_web(daemon)


@aio_test
async def test_card_binding_freeze_and_unfreeze_with_the_pin(sqlite_url):
    bank = InProcessBank()
    bank.add_card(PAN)
    daemon, base = await start_self({"database_url": sqlite_url}, bank=bank)
    try:
        b, h = await funded(daemon, base)
        r = await b.post("/api/v1/self/card", headers=h, json_body={"pan": PAN, "expiry": "2912"})
        assert r.status == 200 and r.json()["last4"] == "2233", r.text
        card = (await b.get("/api/v1/self")).json()["card"]
        assert card["last4"] == "2233" and card["card_type"] == "debit" and PAN not in str(card)
        declined = await b.post("/api/v1/self/card", headers=h, json_body={"pan": "6222020200999999",
                                                                           "expiry": "2912"})
        assert declined.status == 422
        assert (await b.post("/api/v1/self/card", headers=h, json_body={"pan": "12ab", "expiry": "2912"})).status == 400
        audited = await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "web_self_card"))
        assert PAN not in str([a.details for a in audited]) and audited[0].details["request"]["pan_last4"] == "2233"

        assert (await b.post("/api/v1/self/freeze", headers=h)).status == 200
        assert (await b.get("/api/v1/self")).json()["status"] == "frozen"
        frozen = await b.post("/api/v1/self/pay", headers=h, json_body={
            "merchant_code": "M001", "amount": "1", "pin": PIN, "idempotency_key": "frozen-0001"})
        assert frozen.status == 409, frozen.text
        assert (await b.post("/api/v1/self/unfreeze", headers=h, json_body={"pin": "12"})).status == 400
        assert (await b.post("/api/v1/self/unfreeze", headers=h, json_body={"pin": PIN})).status == 200
        assert (await b.get("/api/v1/self")).json()["status"] == "active"
        trail = await rows(daemon, sa.select(audit_log).where(audit_log.c.action.in_(
            ["web_self_freeze", "web_self_unfreeze"])).order_by(audit_log.c.id))
        assert [(a.details["before"]["status"], a.details["after"]["status"]) for a in trail] == [
            ("active", "frozen"), ("frozen", "active")]
    finally:
        await stop_web(daemon)


#: a plausible value per field, so the odd one is checked past the others
BASELINE = {"msisdn": NUMBER, "code": "123456", "password": "green-tea-43", "accept_agreement": True,
            "agreement_version": "2026-01", "language": "en", "new_password": "green-tea-44", "merchant_code": "M001",
            "amount": "1", "pin": PIN, "idempotency_key": "fuzz-key-0001", "to_msisdn": OTHER, "pan": PAN,
            "expiry": "2912", "current_pin": PIN, "new_pin": "147258", "reference": "order-1"}


@aio_test
async def test_no_field_of_any_self_service_route_gets_a_5xx_whatever_it_holds(sqlite_url):
    from channels.web.selfservice import ROUTES
    daemon, base = await start_self({"database_url": sqlite_url})
    try:
        b, h = await funded(daemon, base)
        odd = [None, 0, -1, 1.5, True, [], {}, "", " ", "-0.01", "0.001", "1e3", "９９", "１３９００１３９０００", "\u0000",
               "💸" * 8, "x" * 200, "12" * 40, "+86 139 0013 9000", "258147", "M001"]
        checked = 0
        for route in ROUTES:
            if route.method != "POST" or route.body is None:
                continue
            valid = {name: BASELINE.get(name, "x") for name in route.body.fields}
            for name in route.body.fields:
                for value in odd:
                    r = await b.post(route.path, headers=h, json_body={**valid, name: value})
                    assert r.status < 500 and "error" in r.json() or r.status < 300, (route.path, name, value, r.text)
                    checked += 1
        assert checked > 300
    finally:
        await stop_web(daemon)
