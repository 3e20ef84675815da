"""Two merchants with something to show in their back office, for the
tests/test_web_merchant_*.py modules: real ZF payments (the ledger), an SP
payment request made and confirmed through the payment API's module,
refund requests through the refunds module, callbacks with their attempts
and settlement batches written as the modules that own them write them;
and the back-office login, CAPTCHA included (the answer read from the
session store, as only the server can)."""
from __future__ import annotations

import re
import shutil
import threading
from dataclasses import dataclass, field
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from telecom_pay.ledger import schema
from telecom_pay.merchants import payments, refunds
from telecom_pay.merchants.directory import get_profile, update_profile
from telecom_pay.merchants.events import event_body
from telecom_pay.merchants.tables import N_FAILED, merchant_notifications, notification_attempts, sp_payments
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


async def _sp_payment(svc, code: str, msisdn: str, pin: str, order_id: str, amount: int, *,
                      confirm: bool) -> dict:
    """An SP payment request as the payment API makes it, confirmed by the
    subscriber's PIN as the USSD or SMS channel passes it on."""
    profile = await svc.ledger.read(lambda conn: get_profile(conn, code=code))
    made, created = await payments.create(svc, profile, order_id=order_id, msisdn=msisdn, amount=amount,
                                          description=f"{code} order {order_id}")
    assert created, made
    if confirm:
        tag = await svc.ledger.read(lambda conn: conn.scalar(
            sa.select(sp_payments.c.tag).where(sp_payments.c.public_id == made["id"])))
        result = await payments.confirm(svc, msisdn, pin, tag=tag, channel="ussd", lang="zh")
        assert result.outcome is Outcome.OK, result
    return await payments.get(svc, profile, made["id"])


async def build_world(daemon, notify_url: str = "https://shop.example/notify") -> World:
    """M001's callbacks go to `notify_url` (a test that resends one gives its
    local server's); M002 keeps no notify URL."""
    svc = daemon.core.service
    world = World()
    world.m1, world.m2 = await _mid(daemon, "M001"), await _mid(daemon, "M002")
    pin1 = await funded(svc, MSISDN, amount=50_000)
    pin2 = await funded(svc, OTHER, amount=50_000)
    zf1 = await svc.pay(MSISDN, "M001", 12_34, pin1, channel="sms", reference="A-77")
    zf1b = await svc.pay(MSISDN, "M001", 5_00, pin1, channel="ussd", reference="A-78")
    zf2 = await svc.pay(OTHER, "M002", 7_00, pin2, channel="sms", reference="B-1")
    for r in (zf1, zf1b, zf2):
        assert r.outcome is Outcome.OK, r
    # SP payment requests: two confirmed (their money moved under the key sp:<id>, listed once, as api), one pending
    sp1 = await _sp_payment(svc, "M001", MSISDN, pin1, "ORD-1001", 20_00, confirm=True)
    sp1p = await _sp_payment(svc, "M001", MSISDN, pin1, "ORD-1002", 3_00, confirm=False)
    sp2 = await _sp_payment(svc, "M002", OTHER, pin2, "ORD-2001", 9_00, confirm=True)
    assert (sp1["status"], sp1p["status"], sp2["status"]) == ("confirmed", "pending", "confirmed")
    # callbacks owed from here on (the refunds' decisions) go to M001's notify URL
    await update_profile(svc, "M001", actor="merchantkit", channel="test", notify_url=notify_url)
    # a refund request of each merchant's ZF payment, waiting for its admin (requested by someone not a user)
    refunds_of = {}
    for code, mid, ref in (("M002", world.m2, zf2.ref), ("M001", world.m1, zf1.ref)):
        made, created = await refunds.request_refund(svc, merchant_id=mid, payment_ref=ref, amount=1_00,
                                                     refund_key=f"key-{code}-pending", reason="customer asked",
                                                     requested_by="someone", via="web")
        assert created and made["status"] == "pending_review", made
        refunds_of[code] = made["id"]
    now = svc.clock()

    async def job(conn):
        # a payment.confirmed callback each merchant's server refused twice, until it was given up:
        # the rows events.enqueue wrote, as notifications.record left them after its last attempt
        events = {}
        for evt, mid, payment in (("evt_m1first000000000001", world.m1, sp1),
                                  ("evt_m2first000000000001", world.m2, sp2)):
            nid = (await conn.execute(merchant_notifications.insert().returning(merchant_notifications.c.id).values(
                event_id=evt, merchant_id=mid, event_type="payment.confirmed", subject_id=payment["id"],
                url=notify_url, body=event_body(evt, "payment.confirmed", now, payment),
                status=N_FAILED, attempts=2, next_attempt_at=None, last_status=500, last_error="HTTP 500",
                created_at=now, updated_at=now + timedelta(seconds=1)))).scalar_one()
            for i in range(2):
                await conn.execute(notification_attempts.insert().values(
                    notification_id=nid, at=now + timedelta(seconds=i), http_status=500, error="HTTP 500",
                    duration_ms=12, manual=False))
            events[evt] = nid
        batches = {}
        day = date(2026, 1, 5)
        for code, mid, gross in (("M001", world.m1, 100_00), ("M002", world.m2, 222_22)):
            batches[code] = (await conn.execute(settlement_batches.insert().returning(settlement_batches.c.id).values(
                merchant_id=mid, business_date=day, payments=2, gross=gross, refunds=1_00, fees=50, net=gross - 150,
                fee_refunds=5, carried_in=0, method="bank", state="paid", payout_ref="PAYOUT" + code,
                statement={"refs": [zf1.ref if code == "M001" else zf2.ref]}, created_at=now,
                updated_at=now))).scalar_one()
        sp_row = (await conn.execute(sa.select(sp_payments.c.id).where(sp_payments.c.public_id == sp1["id"]))
                  ).scalar_one()
        return events, batches, sp_row
    events, batches, sp_row = await svc.ledger.write(job)
    world.ids = {
        "M001": {"zf": zf1.ref, "zf_b": zf1b.ref, "sp": sp1["id"], "sp_pending": sp1p["id"],
                 "sp_row": sp_row, "sp_ref": sp1["ref"], "refund": refunds_of["M001"],
                 "event": "evt_m1first000000000001", "batch": batches["M001"]},
        "M002": {"zf": zf2.ref, "sp": sp2["id"], "sp_ref": sp2["ref"], "refund": refunds_of["M002"],
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
