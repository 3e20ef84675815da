"""Merchant refunds (telecom_pay/merchants/refunds.py): never more than was
paid, the merchant's fee back in proportion, idempotent on the merchant's
refund id, the refund policy and four eyes, the subscriber's SMS and the
merchant's callback committed with the money, and refunds racing on two
instances of one PostgreSQL database."""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import uuid

import pytest
import sqlalchemy as sa

from telecom_pay import accounts as acct
from telecom_pay.ledger import schema
from telecom_pay.ledger.invariants import check_invariants
from telecom_pay.ledger.tables import operations
from telecom_pay.merchants import refunds
from telecom_pay.merchants.refunds import RefundError
from telecom_pay.merchants.tables import merchant_notifications, merchant_refunds, sp_payments
from telecom_pay.messaging import outbox
from tests.aio import aio_test
from tests.conftest import PG_SERVER_URL, _admin_engine
from tests.servicekit import MSISDN, funded, make_service, outbox_texts, shutdown

PROFILE_URL = "http://127.0.0.1:9/profile-notify"
ORDER_URL = "http://127.0.0.1:9/order-notify"
MERCHANTS = {"merchants": [
    {"code": "M001", "name": "福彩中心", "name_en": "Lottery Centre", "refund_policy": "automatic",
     "notify_url": PROFILE_URL},
    {"code": "M002", "name": "游戏充值", "refund_policy": "reviewed", "notify_url": PROFILE_URL},
    {"code": "M003", "name": "杂货", "refund_policy": "automatic", "fee_per_mille": 0}],
    "security.velocity_payments_per_minute": 0}
FEE = 60          # [fees.payment] on 10000: 6 per mille, paid by the merchant


# One migrated database per backend and module, copied for each test: a
# fresh database costs its migrations (seconds), a copy almost nothing.

@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("refunds") / "template.sqlite3"
    schema.upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="module")
def pg_template():
    from sqlalchemy.engine import make_url
    admin = _admin_engine()
    names = [f"tp_test_{os.getpid()}_rf_{uuid.uuid4().hex[:8]}"]
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{names[0]}"'))
    url = lambda name: make_url(PG_SERVER_URL).set(database=name).render_as_string(hide_password=False)  # noqa
    schema.upgrade(url(names[0]))

    def copy() -> str:
        name = f"tp_test_{os.getpid()}_rf_{uuid.uuid4().hex[:8]}"
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{names[0]}"'))
        names.append(name)
        return url(name)
    yield copy
    with admin.connect() as c:
        for name in reversed(names):
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def sqlite_db(sqlite_template, tmp_path) -> str:
    shutil.copy(sqlite_template, tmp_path / "ledger.sqlite3")
    return f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite3'}"


@pytest.fixture
def pg_db(pg_template) -> str:
    return pg_template()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request) -> str:
    return request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "pg_db")


async def _svc(url):
    return await make_service(url, overrides=MERCHANTS)


async def _merchant(svc, code: str) -> int:
    return (await svc.ledger.read(lambda c: acct.find_merchant(c, code))).id


async def _balance(svc, account_id: int) -> int:
    return (await svc.ledger.balance(account_id)).balance


async def _wallet(svc) -> int:
    return (await svc.balance(MSISDN, channel="t")).balance


async def _pay(svc, pin, code="M001", amount=10_000, key=None):
    r = await svc.pay(MSISDN, code, amount, pin, channel="sms", key=key or f"pay-{secrets.token_hex(4)}")
    assert r.outcome.value == "ok", r
    return r.ref


async def _notifications(svc, subject_id=None):
    q = sa.select(merchant_notifications).order_by(merchant_notifications.c.id)
    if subject_id is not None:
        q = q.where(merchant_notifications.c.subject_id == subject_id)
    return await svc.ledger.read(lambda c: _all(c, q))


async def _op_id(svc, ref: str) -> int:
    return (await svc.ledger.read(lambda c: _all(c, sa.select(operations.c.id).where(operations.c.ref == ref))))[0].id


async def _all(conn, q):
    return (await conn.execute(q)).all()


def _req(merchant_id, ref, amount, key, *, via="api", by="api:mk_test0001", reason="customer asked"):
    return dict(merchant_id=merchant_id, payment_ref=ref, amount=amount, refund_key=key, reason=reason,
                requested_by=by, via=via)


async def _refused(coro) -> RefundError:
    with pytest.raises(RefundError) as e:
        await coro
    return e.value


async def _sound(svc):
    assert await svc.ledger.read(check_invariants) == []
    assert await svc.check_books() == []


# ---------------------------------------------------------------- amounts and the fee


@aio_test
async def test_refunds_in_parts_give_back_the_payment_and_the_whole_fee_and_never_more(db_url):
    svc = await _svc(db_url)
    try:
        pin = await funded(svc, amount=20_000)
        m = await _merchant(svc, "M001")
        ref = await _pay(svc, pin)
        assert await _balance(svc, m) == 10_000 - FEE
        over = await _refused(refunds.request_refund(svc, **_req(m, ref, 10_001, "r0")))
        assert (over.status, over.code, over.extra) == (422, "exceeds_refundable", {"refundable": 10_000})
        done = []
        for key, amount in (("r1", 3000), ("r2", 3333), ("r3", None)):      # None: what is left
            obj, created = await refunds.request_refund(svc, **_req(m, ref, amount, key))
            assert created and obj["status"] == "succeeded" and obj["ref"] and obj["payment_ref"] == ref
            done.append(obj)
        assert [o["amount"] for o in done] == [3000, 3333, 3667]
        # floor(60 x refunded / paid) less what came back before: 18, 37 - 18, 60 - 37
        assert [o["fee_refunded"] for o in done] == [18, 19, 23]
        again = await _refused(refunds.request_refund(svc, **_req(m, ref, 1, "r4")))
        assert (again.code, again.extra["refundable"]) == ("exceeds_refundable", 0)
        op_id = await _op_id(svc, ref)
        assert await svc.ledger.read(lambda c: refunds.refunded_amount(c, op_id)) == 10_000
        assert await _wallet(svc) == 20_000                     # every fen back
        assert await _balance(svc, m) == 0                      # the merchant's fee came back with it
        fee_income = await _balance(svc, svc.system["fee_income"])
        assert fee_income == 0
        await _sound(svc)
    finally:
        await shutdown(svc)


@aio_test
async def test_a_refund_of_a_fee_bearing_payment_after_its_payout_takes_the_merchant_below_zero(sqlite_db):
    """What used to fail: the merchant held the amount less its fee (and
    nothing once paid out), so a full refund could not be booked."""
    svc = await _svc(sqlite_db)
    try:
        pin = await funded(svc)
        m = await _merchant(svc, "M001")
        ref = await _pay(svc, pin, amount=5000)
        fee = 30
        r = await svc.refund("M001", ref, actor="merchant:M001")      # the operator's tooling: at once
        assert r.outcome.value == "ok" and r.amount == 5000
        assert await _balance(svc, m) == 0 and await _wallet(svc) == 10_000
        legs = await svc.ledger.read(lambda c: _all(c, sa.text(
            "SELECT t.kind, t.amount FROM transfers t JOIN operations o ON o.id = t.operation_id "
            "WHERE o.ref = :ref ORDER BY t.leg").bindparams(ref=r.ref)))
        assert [tuple(x) for x in legs] == [("refund", 5000), ("fee_refund", fee)]
        # paid out (as settlement does), then refunded: below zero, for the next batch to take back
        ref2 = await _pay(svc, pin, amount=4000)
        paid = await _balance(svc, m)
        from telecom_pay.ledger.ledger import Leg, OperationRequest
        await svc.ledger.execute(OperationRequest(key="payout-test", kind="settlement", legs=(
            Leg(m, svc.system["bank_settlement"], paid, "settlement"),)))
        obj, _ = await refunds.request_refund(svc, **_req(m, ref2, None, "after-payout"))
        assert obj["status"] == "succeeded" and obj["fee_refunded"] == 24
        assert await _balance(svc, m) == -4000 + 24
        await _sound(svc)
    finally:
        await shutdown(svc)


@aio_test
async def test_a_subscriber_paid_fee_is_not_refunded(sqlite_db):
    svc = await make_service(sqlite_db, overrides={**MERCHANTS, "fees.payment.payer": "subscriber"})
    try:
        pin = await funded(svc)
        m = await _merchant(svc, "M001")
        ref = await _pay(svc, pin, amount=5000)
        assert await _wallet(svc) == 10_000 - 5000 - 30
        obj, _ = await refunds.request_refund(svc, **_req(m, ref, None, "full"))
        assert (obj["amount"], obj["fee_refunded"]) == (5000, 0)
        assert await _wallet(svc) == 10_000 - 30 and await _balance(svc, m) == 0
        await _sound(svc)
    finally:
        await shutdown(svc)


# ---------------------------------------------------------------- idempotency, finding the payment


@aio_test
async def test_the_refund_id_is_idempotent_and_another_merchants_payment_is_not_found(db_url):
    svc = await _svc(db_url)
    try:
        pin = await funded(svc, amount=30_000)
        m1, m2 = await _merchant(svc, "M001"), await _merchant(svc, "M002")
        ref, other = await _pay(svc, pin), await _pay(svc, pin)
        first, created = await refunds.request_refund(svc, **_req(m1, ref, 1000, "rf-1"))
        assert created
        replay, created = await refunds.request_refund(svc, **_req(m1, ref, 1000, "rf-1"))
        assert not created and replay == first
        assert await _wallet(svc) == 30_000 - 20_000 + 1000            # booked once
        e = await _refused(refunds.request_refund(svc, **_req(m1, ref, 2000, "rf-1")))
        assert (e.status, e.code, e.extra["fields"]) == (409, "refund_id_conflict", ["amount"])
        e = await _refused(refunds.request_refund(svc, **_req(m1, other, 1000, "rf-1")))
        assert (e.status, e.code, e.extra["fields"]) == (409, "refund_id_conflict", ["payment_ref"])
        # the same refund id at another merchant is that merchant's own
        m2_ref = await _pay(svc, pin, code="M002", amount=500)
        obj, created = await refunds.request_refund(svc, **_req(m2, m2_ref, 100, "rf-1"))
        assert created and obj["status"] == "pending_review"
        for merchant, payment in ((m2, ref), (m1, m2_ref), (m1, "ZZZZZZZ")):
            e = await _refused(refunds.request_refund(svc, **_req(merchant, payment, 1, "rf-x")))
            assert (e.status, e.code) == (404, "not_found")
        e = await _refused(refunds.request_refund(svc, merchant_id=m1, sp_payment_id="pay_nope", amount=1,
                                                  refund_key="rf-y", reason="", requested_by="x", via="api"))
        assert (e.status, e.code) == (404, "not_found")
        e = await _refused(refunds.request_refund(svc, **_req(m1, ref, 0, "rf-z")))
        assert (e.status, e.extra["fields"]) == (422, ["amount"])
        assert await refunds.get_refund(svc, merchant_id=m1, refund_id=first["id"]) == first
        assert await refunds.get_refund(svc, merchant_id=m2, refund_id=first["id"]) is None
        assert [o["id"] for o in await refunds.list_refunds(svc, merchant_id=m1)] == [first["id"]]
        await _sound(svc)
    finally:
        await shutdown(svc)


async def _sp_payment(svc, pin, merchant_id: int, *, status="confirmed", notify_url=ORDER_URL) -> tuple[str, str]:
    """An SP payment as the payment API leaves it once confirmed: its money
    under the key sp:<id> (booked here by ZF's path, as the API does)."""
    public_id = "pay_" + secrets.token_hex(8)
    key = f"sp:{public_id}"
    ref = await _pay(svc, pin, key=key) if status == "confirmed" else None
    now = svc.clock()

    async def job(conn):
        await conn.execute(sp_payments.insert().values(
            public_id=public_id, merchant_id=merchant_id, order_id=public_id[-8:], msisdn=MSISDN, amount=10_000,
            fee=FEE, description="lottery ticket", notify_url=notify_url, request={}, status=status, tag="1234",
            confirm_by="sms", operation_key=key, ref=ref, created_at=now, expires_at=now, updated_at=now))
    await svc.ledger.write(job)
    return public_id, ref


@aio_test
async def test_a_refund_of_an_sp_payment_tells_its_notify_url_and_the_subscriber(sqlite_db):
    svc = await _svc(sqlite_db)
    try:
        pin = await funded(svc, amount=30_000)
        m = await _merchant(svc, "M001")
        pay_id, ref = await _sp_payment(svc, pin, m)
        before = len(await outbox_texts(svc, MSISDN))
        obj, created = await refunds.request_refund(svc, merchant_id=m, sp_payment_id=pay_id, amount=2500,
                                                    refund_key="sp-1", reason="late", requested_by="api:mk_1",
                                                    via="api")
        assert created and (obj["payment_id"], obj["payment_ref"], obj["status"]) == (pay_id, ref, "succeeded")
        texts = await outbox_texts(svc, MSISDN)
        assert len(texts) == before + 1 and "退款 25.00" in texts[-1] and "福彩中心" in texts[-1]
        (note,) = await _notifications(svc, obj["id"])
        assert (note.event_type, note.url, note.status) == ("refund.succeeded", ORDER_URL, "pending")
        assert json.loads(note.body)["data"] == obj
        # named by its ledger reference, it is the same SP payment (and its callback URL)
        obj2, _ = await refunds.request_refund(svc, **_req(m, ref, 500, "sp-2"))
        assert obj2["payment_id"] == pay_id
        assert (await _notifications(svc, obj2["id"]))[0].url == ORDER_URL
        # the payment object shows what came back
        from telecom_pay.merchants.objects import payment_object

        async def shown(conn):
            sp = (await conn.execute(sa.select(sp_payments).where(sp_payments.c.public_id == pay_id))).first()
            op = (await conn.execute(sa.select(operations).where(
                operations.c.idempotency_key == sp.operation_key))).first()
            return payment_object(sp, merchant_code="M001", refunded=await refunds.refunded_amount(conn, op.id))
        assert (await svc.ledger.read(shown))["refunded"] == 3000
        # a ZF payment's refund is told at the profile's URL
        zf = await _pay(svc, pin)
        obj3, _ = await refunds.request_refund(svc, **_req(m, zf, 500, "zf-1"))
        assert obj3["payment_id"] is None and (await _notifications(svc, obj3["id"]))[0].url == PROFILE_URL
        pending_id, _ = await _sp_payment(svc, pin, m, status="pending")
        e = await _refused(refunds.request_refund(svc, merchant_id=m, sp_payment_id=pending_id, amount=None,
                                                  refund_key="sp-3", reason="", requested_by="api:mk_1", via="api"))
        assert (e.status, e.code) == (422, "not_refundable")
        await _sound(svc)
    finally:
        await shutdown(svc)


# ---------------------------------------------------------------- policy and four eyes


@aio_test
async def test_policy_and_four_eyes(db_url):
    svc = await _svc(db_url)
    try:
        pin = await funded(svc, amount=30_000)
        auto, reviewed = await _merchant(svc, "M001"), await _merchant(svc, "M002")
        ref = await _pay(svc, pin, code="M002")
        auto_ref = await _pay(svc, pin, code="M001")
        wallet = await _wallet(svc)
        texts = len(await outbox_texts(svc, MSISDN))
        # a reviewed merchant's API refund waits; nothing moves, nothing is told
        obj, _ = await refunds.request_refund(svc, **_req(reviewed, ref, 6000, "rv-1"))
        assert obj["status"] == "pending_review" and obj["ref"] is None and obj["fee_refunded"] == 0
        assert await _wallet(svc) == wallet and await _notifications(svc, obj["id"]) == []
        # what waits is promised: a second request cannot take it
        e = await _refused(refunds.request_refund(svc, **_req(reviewed, ref, 4001, "rv-2", via="web", by="staff1")))
        assert (e.code, e.extra["refundable"]) == ("exceeds_refundable", 4000)
        # the back office's requests wait even at an automatic merchant
        web, _ = await refunds.request_refund(svc, **_req(auto, auto_ref, 1000, "web-1", via="web", by="staff1"))
        assert web["status"] == "pending_review"
        decide = dict(merchant_id=reviewed, refund_id=obj["id"], approve=True, reason="checked the order")
        e = await _refused(refunds.decide_refund(svc, **decide, decided_by="staff2", decider_role="merchant_staff"))
        assert (e.status, e.code) == (403, "forbidden")
        e = await _refused(refunds.decide_refund(svc, **decide, decided_by="api:mk_test0001",
                                                 decider_role="merchant_admin"))
        assert (e.status, e.code) == (403, "same_person")
        e = await _refused(refunds.decide_refund(svc, **{**decide, "reason": " "}, decided_by="boss",
                                                 decider_role="merchant_admin"))
        assert (e.status, e.code) == (422, "reason_required")
        e = await _refused(refunds.decide_refund(svc, **{**decide, "merchant_id": auto}, decided_by="boss",
                                                 decider_role="merchant_admin"))
        assert (e.status, e.code) == (404, "not_found")
        done = await refunds.decide_refund(svc, **decide, decided_by="boss", decider_role="merchant_admin")
        assert (done["status"], done["decided_by"], done["decision_reason"]) == ("succeeded", "boss",
                                                                                 "checked the order")
        assert done["fee_refunded"] == FEE * 6000 // 10_000 and done["ref"]
        assert await _wallet(svc) == wallet + 6000
        assert len(await outbox_texts(svc, MSISDN)) == texts + 1
        assert [n.event_type for n in await _notifications(svc, obj["id"])] == ["refund.succeeded"]
        e = await _refused(refunds.decide_refund(svc, **decide, decided_by="boss2", decider_role="merchant_admin"))
        assert (e.status, e.code) == (409, "not_pending")
        # rejected: nothing moves, the merchant is told
        no = await refunds.decide_refund(svc, merchant_id=auto, refund_id=web["id"], approve=False,
                                         reason="already shipped", decided_by="boss", decider_role="merchant_admin")
        assert (no["status"], no["ref"]) == ("rejected", None)
        assert [n.event_type for n in await _notifications(svc, web["id"])] == ["refund.rejected"]
        assert await _wallet(svc) == wallet + 6000
        # a rejected refund promises nothing any more
        rest, _ = await refunds.request_refund(svc, **_req(auto, auto_ref, None, "auto-rest"))
        assert (rest["status"], rest["amount"]) == ("succeeded", 10_000)
        assert [o["id"] for o in await refunds.list_refunds(svc, merchant_id=auto, status="rejected")] == [web["id"]]
        audits = await svc.ledger.read(lambda c: _all(c, sa.text(
            "SELECT action, actor FROM audit_log WHERE action LIKE 'refund_%' ORDER BY id")))
        assert [tuple(a) for a in audits][-3:] == [("refund_approved", "boss"), ("refund_rejected", "boss"),
                                                   ("refund_requested", "api:mk_test0001")]
        await _sound(svc)
    finally:
        await shutdown(svc)


@aio_test
async def test_two_admins_deciding_at_once_one_wins(sqlite_db):
    svc = await _svc(sqlite_db)
    try:
        pin = await funded(svc, amount=30_000)
        m = await _merchant(svc, "M002")
        ref = await _pay(svc, pin, code="M002")
        obj, _ = await refunds.request_refund(svc, **_req(m, ref, None, "k", via="web", by="staff1"))
        results = await asyncio.gather(*(refunds.decide_refund(
            svc, merchant_id=m, refund_id=obj["id"], approve=approve, reason="r", decided_by=who,
            decider_role="merchant_admin") for who, approve in (("a1", True), ("a2", False))),
            return_exceptions=True)
        won = [r for r in results if isinstance(r, dict)]
        lost = [r for r in results if isinstance(r, RefundError)]
        assert len(won) == 1 and [(e.status, e.code) for e in lost] == [(409, "not_pending")]
        assert len(await _notifications(svc, obj["id"])) == 1
        await _sound(svc)
    finally:
        await shutdown(svc)


# ---------------------------------------------------------------- two instances on PostgreSQL


@aio_test
async def test_refunds_racing_on_two_instances_never_exceed_the_payment(pg_db):
    one = await _svc(pg_db)
    two = await _svc(pg_db)
    try:
        pin = await funded(one, amount=30_000)
        m = await _merchant(one, "M001")
        ref = await _pay(one, pin)
        await _pay(one, pin, code="M002")        # the books hold other money too
        wallet = await _wallet(one)
        # 8 requests of 3000 on one payment of 10000, half on each instance, at once
        jobs = [refunds.request_refund(svc, **_req(m, ref, 3000, f"race-{i}-{n}"))
                for i in range(4) for n, svc in enumerate((one, two))]
        # and a merchant admin approving a back-office request for 1000 meanwhile
        web, _ = await refunds.request_refund(two, **_req(m, ref, 1000, "web", via="web", by="staff1"))
        jobs.append(refunds.decide_refund(one, merchant_id=m, refund_id=web["id"], approve=True, reason="ok",
                                          decided_by="boss", decider_role="merchant_admin"))
        # and, on another payment, two admins on the two instances deciding one request at once
        ref2 = await _pay(one, pin, amount=5000)
        wait, _ = await refunds.request_refund(one, **_req(m, ref2, None, "web-2", via="web", by="staff1"))
        deciders = [refunds.decide_refund(svc, merchant_id=m, refund_id=wait["id"], approve=True, reason="ok",
                                          decided_by=who, decider_role="merchant_admin")
                    for svc, who in ((one, "boss"), (two, "boss2"))]
        *results, d1, d2 = await asyncio.gather(*jobs, *deciders, return_exceptions=True)
        decided = sorted((type(d).__name__, getattr(d, "code", None)) for d in (d1, d2))
        assert decided == [("RefundError", "not_pending"), ("dict", None)], (d1, d2)
        assert not [r for r in results if not isinstance(r, (tuple, dict, RefundError))], results
        refused = [r for r in results if isinstance(r, RefundError)]
        assert {(e.status, e.code) for e in refused} == {(422, "exceeds_refundable")}
        succeeded = [r[0] for r in results[:-1] if isinstance(r, tuple)] + [results[-1]]
        assert len(succeeded) == 4 and all(o["status"] == "succeeded" for o in succeeded)   # 1000 + 3 x 3000
        op_id = await _op_id(one, ref)
        assert await two.ledger.read(lambda c: refunds.refunded_amount(c, op_id)) == 10_000
        assert sum(o["fee_refunded"] for o in succeeded) == FEE
        rows = await one.ledger.read(lambda c: _all(c, sa.select(merchant_refunds.c.status)))
        assert sorted(r.status for r in rows) == ["succeeded"] * 5
        assert await _wallet(two) == wallet + 10_000                # the second payment's 5000 came back too
        assert await _balance(one, m) == 0
        await _sound(one)
        # each success told once: one SMS and one callback per refund
        texts = await one.ledger.read(lambda c: _all(c, sa.select(outbox.c.text).where(
            outbox.c.text.like("%退款%"))))
        assert len(texts) == 5
        assert len(await _notifications(one)) == 5
    finally:
        await shutdown(two)
        await shutdown(one)
