"""Two merchants with something to show in their back office, for the
tests/test_web_merchant_*.py modules: real ZF payments (the ledger), an SP
payment request confirmed under its `sp:` key, refund requests,
callbacks with their attempts and settlement batches, each written as the
modules that own them write them; and the back-office login, CAPTCHA
included (the answer read from the session store, as only the server can)."""
from __future__ import annotations

import re
import shutil
import sys
import threading
import types
from dataclasses import dataclass, field
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from telecom_pay.ledger import schema
from telecom_pay.merchants.events import event_body
from telecom_pay.merchants.tables import (merchant_notifications, merchant_refunds, notification_attempts,
                                          sp_payments)
from telecom_pay.outcomes import Outcome
from telecom_pay.settlement import settlement_batches
from tests.servicekit import MSISDN, OTHER, funded
from tests.webkit import Browser, add_user

PASSWORD = "merchant-test-pw-9"


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory):
    """A database migrated once per module (migrating takes seconds; a copy
    takes none), in a thread of its own: the upgrade runs its own loop."""
    path = tmp_path_factory.mktemp("merchant-template") / "ledger.sqlite3"
    worker = threading.Thread(target=schema.upgrade, args=(f"sqlite+aiosqlite:///{path}",))
    worker.start()
    worker.join()
    assert path.exists()
    return path


@pytest.fixture
def merchant_db(migrated_template, tmp_path) -> str:
    target = tmp_path / "ledger.sqlite3"
    shutil.copy(migrated_template, target)
    return f"sqlite+aiosqlite:///{target}"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def field_of(html: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', html).group(1)


async def captcha_answer(daemon, html: str) -> tuple[str, str]:
    captcha_id = field_of(html, "captcha_id")
    stored = await daemon.components["web"].app.captchas.store.get(f"web:captcha:{captcha_id}")
    return captcha_id, stored["answer"]


async def merchant_login(daemon, base: str, username: str, password: str = PASSWORD) -> Browser:
    """Through /merchant/login, as a person types it (CAPTCHA solved)."""
    b = Browser(base)
    page = await b.get("/merchant/login")
    assert page.status == 200, page.text
    captcha_id, answer = await captcha_answer(daemon, page.text)
    r = await b.post("/merchant/login", form={"login_token": field_of(page.text, "login_token"), "username": username,
                                              "password": password, "captcha_id": captcha_id,
                                              "captcha_answer": answer})
    assert r.status == 303, r.text
    return b


@dataclass
class World:
    """What the tests look for: per merchant code, its ids."""
    ids: dict[str, dict] = field(default_factory=dict)
    m1: int = 0
    m2: int = 0


async def _mid(daemon, code: str) -> int:
    from telecom_pay.accounts import find_merchant
    return (await daemon.core.ledger.read(lambda conn: find_merchant(conn, code))).id


async def build_world(daemon) -> World:
    svc = daemon.core.service
    world = World()
    world.m1, world.m2 = await _mid(daemon, "M001"), await _mid(daemon, "M002")
    pin1 = await funded(svc, MSISDN, amount=50_000)
    pin2 = await funded(svc, OTHER, amount=50_000)
    zf1 = await svc.pay(MSISDN, "M001", 12_34, pin1, channel="sms", reference="A-77")
    zf1b = await svc.pay(MSISDN, "M001", 5_00, pin1, channel="ussd", reference="A-78")
    zf2 = await svc.pay(OTHER, "M002", 7_00, pin2, channel="sms", reference="B-1")
    # an SP payment request, confirmed: its money moved under the key sp:<id> (listed once, as api)
    sp1 = await svc.pay(MSISDN, "M001", 20_00, pin1, channel="ussd", key="sp:pay_m1confirmed0001")
    sp2 = await svc.pay(OTHER, "M002", 9_00, pin2, channel="ussd", key="sp:pay_m2confirmed0001")
    for r in (zf1, zf1b, zf2, sp1, sp2):
        assert r.outcome is Outcome.OK, r
    now = svc.clock()

    async def job(conn):
        out = {}
        for code, mid, pub, order, amount, ref, msisdn, status in (
                ("M001", world.m1, "pay_m1confirmed0001", "ORD-1001", 20_00, sp1.ref, MSISDN, "confirmed"),
                ("M001", world.m1, "pay_m1pending00001", "ORD-1002", 3_00, None, MSISDN, "pending"),
                ("M002", world.m2, "pay_m2confirmed0001", "ORD-2001", 9_00, sp2.ref, OTHER, "confirmed")):
            out[pub] = (await conn.execute(sp_payments.insert().returning(sp_payments.c.id).values(
                public_id=pub, merchant_id=mid, order_id=order, msisdn=msisdn, amount=amount, fee=0,
                description=f"{code} order {order}", request={"order_id": order}, status=status, tag="1234",
                confirm_by="ussd", operation_key=f"sp:{pub}", ref=ref, created_at=now,
                expires_at=now + timedelta(minutes=5), resolved_at=now if ref else None, updated_at=now))).scalar_one()
        pay_op = {}
        for ref in (zf2.ref, zf1.ref):
            pay_op[ref] = (await conn.execute(sa.text("SELECT id FROM operations WHERE ref = :r"),
                                              {"r": ref})).scalar_one()
        refunds = {}
        for pub, mid, op_ref, sp_id in (("rf_m2pending0001", world.m2, zf2.ref, None),
                                        ("rf_m1pending0001", world.m1, zf1.ref, None)):
            await conn.execute(merchant_refunds.insert().values(
                public_id=pub, merchant_id=mid, payment_operation_id=pay_op[op_ref], sp_payment_id=sp_id,
                refund_key=f"key-{pub}", amount=1_00, status="pending_review", reason="customer asked",
                request={}, requested_by="someone", requested_via="web", operation_key=f"mrefund:{pub}",
                created_at=now, updated_at=now))
            refunds[pub] = pub
        events = {}
        for evt, mid, subject in (("evt_m1first000000000001", world.m1, "pay_m1confirmed0001"),
                                  ("evt_m2first000000000001", world.m2, "pay_m2confirmed0001")):
            nid = (await conn.execute(merchant_notifications.insert().returning(merchant_notifications.c.id).values(
                event_id=evt, merchant_id=mid, event_type="payment.confirmed", subject_id=subject,
                url="https://shop.example/notify", body=event_body(evt, "payment.confirmed", now, {"id": subject}),
                status="failed", attempts=2, last_status=500, last_error="HTTP 500", created_at=now,
                updated_at=now))).scalar_one()
            for i in range(2):
                await conn.execute(notification_attempts.insert().values(
                    notification_id=nid, at=now + timedelta(seconds=i), http_status=500, error="HTTP 500",
                    duration_ms=12))
            events[evt] = nid
        batches = {}
        day = date(2026, 1, 5)
        for code, mid, gross in (("M001", world.m1, 100_00), ("M002", world.m2, 222_22)):
            batches[code] = (await conn.execute(settlement_batches.insert().returning(settlement_batches.c.id).values(
                merchant_id=mid, business_date=day, payments=2, gross=gross, refunds=1_00, fees=50, net=gross - 150,
                fee_refunds=5, carried_in=0, method="bank", state="paid", payout_ref="PAYOUT" + code,
                statement={"refs": [zf1.ref if code == "M001" else zf2.ref]}, created_at=now,
                updated_at=now))).scalar_one()
        return out, refunds, events, batches
    sp_ids, refunds, events, batches = await svc.ledger.write(job)
    world.ids = {
        "M001": {"zf": zf1.ref, "zf_b": zf1b.ref, "sp": "pay_m1confirmed0001", "sp_pending": "pay_m1pending00001",
                 "sp_row": sp_ids["pay_m1confirmed0001"], "sp_ref": sp1.ref, "refund": "rf_m1pending0001",
                 "event": "evt_m1first000000000001", "batch": batches["M001"]},
        "M002": {"zf": zf2.ref, "sp": "pay_m2confirmed0001", "sp_ref": sp2.ref, "refund": "rf_m2pending0001",
                 "event": "evt_m2first000000000001", "batch": batches["M002"]},
    }
    return world


async def merchant_users(daemon) -> None:
    for username, role, code in (("m1admin", "merchant_admin", "M001"), ("m1staff", "merchant_staff", "M001"),
                                 ("m1read", "merchant_readonly", "M001"), ("m2admin", "merchant_admin", "M002"),
                                 ("m2staff", "merchant_staff", "M002")):
        await add_user(daemon, username, role, password=PASSWORD, merchant_code=code)
    await add_user(daemon, "ops1", "ops_admin", password=PASSWORD)
    await add_user(daemon, "agent1", "agent", password=PASSWORD, agent_code="AG001")


class FakeRefunds(types.ModuleType):
    """A stand-in for telecom_pay.merchants.refunds (its own module and
    tests), with its pinned interface, recording what the pages ask."""

    class RefundError(Exception):
        def __init__(self, status, code, message, **extra):
            super().__init__(message)
            self.status, self.code, self.message, self.extra = status, code, message, extra

    def __init__(self):
        super().__init__("telecom_pay.merchants.refunds")
        self.calls: list[tuple[str, dict]] = []
        self.by_key: dict[tuple, dict] = {}

    async def request_refund(self, service, **kw):
        self.calls.append(("request", kw))
        if kw["amount"] > 100_00:
            raise self.RefundError(422, "exceeds_refundable", "the amount is more than is left to refund",
                                   refundable=100_00)
        key = (kw["merchant_id"], kw["refund_key"])
        if key in self.by_key:
            return self.by_key[key], False
        self.by_key[key] = refund = {"id": f"rf_fake{len(self.by_key)}", "amount": kw["amount"],
                                     "status": "pending_review"}
        return refund, True

    async def decide_refund(self, service, **kw):
        self.calls.append(("decide", kw))
        if kw["decided_by"] == "someone":
            raise self.RefundError(409, "own_request", "the requester cannot approve their own refund")
        return {"id": kw["refund_id"], "status": "succeeded" if kw["approve"] else "rejected"}


class FakeNotifications(types.ModuleType):
    def __init__(self):
        super().__init__("telecom_pay.merchants.notifications")
        self.calls: list[dict] = []

    async def resend(self, service, **kw):
        self.calls.append(kw)
        return {"event_id": kw["event_id"], "status": "delivered"}


def install_fakes(monkeypatch) -> tuple[FakeRefunds, FakeNotifications]:
    refunds, notifications = FakeRefunds(), FakeNotifications()
    monkeypatch.setitem(sys.modules, "telecom_pay.merchants.refunds", refunds)
    monkeypatch.setitem(sys.modules, "telecom_pay.merchants.notifications", notifications)
    return refunds, notifications
