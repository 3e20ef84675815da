"""Merchant settlement: T+1 batches netting payments, refunds and fees,
paid once through the bank port even when run twice."""
from datetime import timedelta

import pytest

from telecom_pay.business_time import business_day
from telecom_pay.settlement import Settlement, SettlementError
from tests.aio import aio_test
from tests.bankdouble import InProcessBank
from tests.servicekit import MSISDN, funded, make_service, shutdown

MERCHANT_ACCOUNT = "6222025555550001"


@aio_test
async def test_settlement_paid_once(database_url, tmp_path, local_clock):
    bank = InProcessBank()
    bank.add_card(MERCHANT_ACCOUNT, balance=0)
    svc = await make_service(database_url, bank=bank, clock=local_clock, overrides={"merchants": [
        {"code": "M001", "name": "福彩中心"}, {"code": "M002", "name": "游戏充值", "payout": "file"}]})
    assert (await svc.bind_merchant_account("M001", MERCHANT_ACCOUNT, "3012")).outcome.value == "ok"
    pin = await funded(svc, amount=50_000)
    refs = [(await svc.pay(MSISDN, "M001", 10_000, pin, channel="t", key=f"p{i}")).ref for i in range(2)]
    await svc.pay(MSISDN, "M002", 3000, pin, channel="t", key="p-file")
    await svc.refund("M001", refs[0], 2500, actor="merchant:M001")
    day = business_day(local_clock(), svc.tz)
    settlement = Settlement(svc, file_dir=tmp_path)
    with pytest.raises(SettlementError):
        await settlement.run(day)                         # T+1: not yet
    local_clock.advance(timedelta(days=1))
    reports = {r.merchant_code: r for r in await settlement.run(day)}
    m1 = reports["M001"]
    assert (m1.gross, m1.refunds, m1.fees, m1.payments) == (20_000, 2500, 120, 2)
    assert m1.fee_refunds == 60 * 2500 // 10_000        # the refunded quarter of that payment's fee came back
    assert m1.net == 20_000 - 2500 - 120 + 15 and m1.state == "paid"
    assert bank.cards[bank.token(MERCHANT_ACCOUNT)].balance == m1.net
    assert reports["M002"].state == "file"
    assert (tmp_path / f"payouts-{day.isoformat()}.csv").read_text().count("M002") == 1
    again = {r.merchant_code: r for r in await settlement.run(day)}
    assert again["M001"].state == "paid" and again["M001"].payout_ref == m1.payout_ref
    assert bank.cards[bank.token(MERCHANT_ACCOUNT)].balance == m1.net          # paid exactly once
    assert (tmp_path / f"payouts-{day.isoformat()}.csv").read_text().count("M002") == 1
    assert (await svc.ledger.balance((await svc.ledger.read(
        lambda c: __import__("telecom_pay.accounts", fromlist=["a"]).find_merchant(c, "M001"))).id)).balance == 0
    assert await svc.check_books() == []
    await shutdown(svc)


@aio_test
async def test_failed_payout_is_retried_and_in_doubt_waits(database_url, tmp_path, local_clock):
    from telecom_pay.outcomes import BankDecline
    bank = InProcessBank()
    card = bank.add_card(MERCHANT_ACCOUNT, balance=0)
    svc = await make_service(database_url, bank=bank, clock=local_clock)
    await svc.bind_merchant_account("M001", MERCHANT_ACCOUNT, "3012")
    pin = await funded(svc, amount=5000)
    await svc.pay(MSISDN, "M001", 4000, pin, channel="t")
    day = business_day(local_clock(), svc.tz)
    local_clock.advance(timedelta(days=2))
    settlement = Settlement(svc, file_dir=tmp_path)
    card.decline = BankDecline.RESTRICTED
    first = (await settlement.run(day, merchant_code="M001"))[0]
    assert first.state == "failed" and "declined" in first.note
    card.decline = None
    bank.in_doubt = True
    second = (await settlement.run(day, merchant_code="M001"))[0]
    assert second.state == "paying"
    third = (await settlement.run(day, merchant_code="M001"))[0]   # never a second payout while in doubt
    assert third.state == "paying" and card.balance == 0
    (batch,) = await settlement.batches(day)
    await svc.resolve_in_doubt(batch.operation_key, approved=True)
    (batch,) = await settlement.batches(day)
    assert batch.state == "paid" and batch.attempts == 2
    assert await svc.check_books() == []
    await shutdown(svc)


@aio_test
async def test_a_payment_lands_in_the_batch_of_its_local_day(database_url, tmp_path):
    """The business day is the Shanghai calendar day: payments at 00:30 and
    23:30 local on the 15th are that day's batch, the ones at 23:30 on the
    14th and 00:30 on the 16th are their own days' (on SQLite a payment
    between 00:00 and 08:00 local used to fall into the previous day)."""
    from datetime import datetime
    from tests.clockkit import SHANGHAI, TestClock
    bank = InProcessBank()
    bank.add_card(MERCHANT_ACCOUNT, balance=0)
    clock = TestClock(datetime(2026, 6, 14, 23, 0, tzinfo=SHANGHAI))
    svc = await make_service(database_url, bank=bank, clock=clock)
    await svc.bind_merchant_account("M001", MERCHANT_ACCOUNT, "3012")
    pin = await funded(svc, amount=50_000)
    paid = {}
    for day, hour, amount in ((14, 23, 1000), (15, 0, 2000), (15, 23, 4000), (16, 0, 8000)):
        clock.set(datetime(2026, 6, day, hour, 30, tzinfo=SHANGHAI))
        r = await svc.pay(MSISDN, "M001", amount, pin, channel="t", key=f"p{day}-{hour}")
        assert r.outcome.value == "ok", r
        paid[(day, hour)] = r.ref
    settlement = Settlement(svc, file_dir=tmp_path)
    clock.set(datetime(2026, 6, 16, 23, 59, tzinfo=SHANGHAI))
    with pytest.raises(SettlementError):                  # the 16th is not over before the 17th
        await settlement.run(datetime(2026, 6, 16).date())
    clock.set(datetime(2026, 6, 17, 0, 30, tzinfo=SHANGHAI))
    batches = {}
    for day in (14, 15, 16):
        (report,) = await settlement.run(datetime(2026, 6, day).date(), merchant_code="M001")
        batches[day] = report
    assert batches[15].gross == 6000 and batches[15].payments == 2
    assert batches[14].gross == 1000 and batches[16].gross == 8000
    statements = {b.business_date.day: set(b.statement["refs"]) for d in (14, 15, 16)
                  for b in await settlement.batches(datetime(2026, 6, d).date())}
    assert statements == {14: {paid[(14, 23)]}, 15: {paid[(15, 0)], paid[(15, 23)]}, 16: {paid[(16, 0)]}}
    assert all(b.state == "paid" for b in batches.values())
    assert await svc.check_books() == []
    await shutdown(svc)


# ---------------------------------------------------------------- refunds, fee refunds, carried amounts

AUTOMATIC = {"merchants": [{"code": "M001", "name": "福彩中心", "refund_policy": "automatic"},
                           {"code": "M002", "name": "游戏充值", "refund_policy": "automatic"}],
             "security.velocity_payments_per_minute": 0}
OTHER_ACCOUNT = "6222025555550002"


async def _settling_service(url, clock):
    from telecom_pay.merchants import refunds
    bank = InProcessBank()
    bank.add_card(MERCHANT_ACCOUNT, balance=0)
    bank.add_card(OTHER_ACCOUNT, balance=0)
    svc = await make_service(url, bank=bank, clock=clock, overrides=AUTOMATIC)
    assert (await svc.bind_merchant_account("M001", MERCHANT_ACCOUNT, "3012")).outcome.value == "ok"
    assert (await svc.bind_merchant_account("M002", OTHER_ACCOUNT, "3012")).outcome.value == "ok"
    pin = await funded(svc, amount=100_000)
    ids = {}
    for code in ("M001", "M002"):
        ids[code] = (await svc.ledger.read(lambda c, code=code: acct_find(c, code))).id

    async def pay(code, amount):
        r = await svc.pay(MSISDN, code, amount, pin, channel="t")
        assert r.outcome.value == "ok", r
        return r.ref

    async def refund(code, ref, amount):
        obj, _ = await refunds.request_refund(svc, merchant_id=ids[code], payment_ref=ref, amount=amount,
                                              refund_key=f"rf-{ref}-{amount}", reason="asked",
                                              requested_by="api:mk_test", via="api")
        assert obj["status"] == "succeeded", obj
        return obj
    return svc, bank, ids, pay, refund


async def settlement_batches_of(svc, day, merchant_id):
    return [b for b in await Settlement(svc).batches(day) if b.merchant_id == merchant_id]


def acct_find(conn, code):
    from telecom_pay import accounts
    return accounts.find_merchant(conn, code)


def _days(start):
    from datetime import datetime
    from tests.clockkit import SHANGHAI
    return [datetime(2026, 6, d, 12, 0, tzinfo=SHANGHAI) for d in range(start, start + 6)]


@aio_test
async def test_a_refund_after_its_payment_was_paid_out_reduces_the_next_payout(sqlite_url, tmp_path):
    from tests.clockkit import TestClock
    noon = _days(10)
    clock = TestClock(noon[0])
    svc, bank, ids, pay, refund = await _settling_service(sqlite_url, clock)
    settlement = Settlement(svc, file_dir=tmp_path)
    ref = await pay("M001", 10_000)                                   # fee 60
    clock.set(noon[1])
    (d1,) = await settlement.run(noon[0].date(), merchant_code="M001")
    assert (d1.state, d1.net) == ("paid", 9940)
    await pay("M001", 5000)                                           # fee 30
    await refund("M001", ref, 4000)                                   # after the payout: fee back 24
    assert (await svc.ledger.balance(ids["M001"])).balance == 5000 - 30 - 4000 + 24
    clock.set(noon[2])
    (d2,) = await settlement.run(noon[1].date(), merchant_code="M001")
    assert (d2.gross, d2.refunds, d2.fees, d2.fee_refunds, d2.carried_in) == (5000, 4000, 30, 24, 0)
    assert (d2.state, d2.net) == ("paid", 994)
    assert bank.cards[bank.token(MERCHANT_ACCOUNT)].balance == 9940 + 994
    assert (await svc.ledger.balance(ids["M001"])).balance == 0
    (batch,) = [b for b in await settlement.batches(noon[1].date()) if b.merchant_id == ids["M001"]]
    assert (batch.statement["refunds"], batch.statement["fee_refunds"]) == (4000, 24)
    assert await svc.check_books() == []
    await shutdown(svc)


@aio_test
async def test_a_negative_net_is_carried_forward_once_across_days_in_any_order(database_url, tmp_path):
    from tests.clockkit import TestClock
    noon = _days(10)
    clock = TestClock(noon[0])
    svc, bank, ids, pay, refund = await _settling_service(database_url, clock)
    settlement = Settlement(svc, file_dir=tmp_path)
    first = {code: await pay(code, 10_000) for code in ("M001", "M002")}      # day 0: fee 60 each
    clock.set(noon[1])
    for code in ("M001", "M002"):
        await refund(code, first[code], None)                                   # day 1: all back, fee too
    clock.set(noon[2])
    for code in ("M001", "M002"):
        await pay(code, 3000)                                                   # day 2: fee 18
    clock.set(noon[3])
    for code in ("M001", "M002"):
        await pay(code, 10_000)                                                 # day 3: fee 60
    clock.set(noon[5])
    paid0 = {r.merchant_code: r for r in await settlement.run(noon[0].date())}
    assert {c: (r.state, r.net) for c, r in paid0.items()} == {"M001": ("paid", 9940), "M002": ("paid", 9940)}
    carried = {r.merchant_code: r for r in await settlement.run(noon[1].date())}
    assert {c: (r.state, r.net, r.refunds, r.fee_refunds) for c, r in carried.items()} == {
        c: ("carried", -9940, 10_000, 60) for c in ("M001", "M002")}
    # M001 in order: day 2 takes day 1's amount and is still below zero, day 3 takes day 2's
    (d2,) = await settlement.run(noon[2].date(), merchant_code="M001")
    assert (d2.state, d2.carried_in, d2.net) == ("carried", -9940, 2982 - 9940)
    (d3,) = await settlement.run(noon[3].date(), merchant_code="M001")
    assert (d3.state, d3.carried_in, d3.net) == ("paid", 2982 - 9940, 9940 + 2982 - 9940)
    # M002 out of order: day 3 first takes day 1's amount; day 2, run after it, has nothing to take
    (e3,) = await settlement.run(noon[3].date(), merchant_code="M002")
    assert (e3.state, e3.carried_in, e3.net) == ("empty", -9940, 0)
    (e2,) = await settlement.run(noon[2].date(), merchant_code="M002")
    assert (e2.state, e2.carried_in, e2.net) == ("paid", 0, 2982)
    # re-runs take nothing twice
    for day in (1, 2, 3):
        again = {r.merchant_code: r for r in await settlement.run(noon[day].date())}
        assert again["M001"].carried_in == {1: 0, 2: -9940, 3: 2982 - 9940}[day]
        assert again["M002"].carried_in == {1: 0, 2: 0, 3: -9940}[day]
    (one,) = [b for b in await settlement.batches(noon[1].date()) if b.merchant_id == ids["M001"]]
    assert (one.state, one.statement["carried_to"]) == ("forwarded", noon[2].date().isoformat())
    (three,) = [b for b in await settlement.batches(noon[3].date()) if b.merchant_id == ids["M002"]]
    assert three.statement["carried_from"] == [noon[1].date().isoformat()]
    for code, pan in (("M001", MERCHANT_ACCOUNT), ("M002", OTHER_ACCOUNT)):
        assert bank.cards[bank.token(pan)].balance == 9940 + 2982          # what the merchant earned, once
        assert (await svc.ledger.balance(ids[code])).balance == 0
    assert await svc.check_books() == []
    await shutdown(svc)


@aio_test
async def test_a_payment_refunded_in_two_parts_gives_the_whole_fee_back(sqlite_url, tmp_path):
    from tests.clockkit import TestClock
    noon = _days(10)
    clock = TestClock(noon[0])
    svc, bank, ids, pay, refund = await _settling_service(sqlite_url, clock)
    ref = await pay("M001", 9999)                                     # fee 60 (6 per mille, rounded)
    parts = [await refund("M001", ref, 3333), await refund("M001", ref, None)]
    assert [p["amount"] for p in parts] == [3333, 6666]
    assert [p["fee_refunded"] for p in parts] == [20, 40]
    clock.set(noon[1])
    (r,) = await Settlement(svc, file_dir=tmp_path).run(noon[0].date(), merchant_code="M001")
    assert (r.gross, r.refunds, r.fees, r.fee_refunds, r.net, r.state) == (9999, 9999, 60, 60, 0, "empty")
    assert (await svc.ledger.balance(svc.system["fee_income"])).balance == 0
    assert await svc.check_books() == []
    await shutdown(svc)


@aio_test
async def test_two_instances_settling_two_later_days_at_once_take_a_carried_amount_once(pg_url, tmp_path):
    import asyncio
    from tests.clockkit import TestClock
    noon = _days(10)
    clock = TestClock(noon[0])
    svc, bank, ids, pay, refund = await _settling_service(pg_url, clock)
    other = await make_service(pg_url, bank=bank, clock=clock, overrides=AUTOMATIC)
    first = await pay("M001", 10_000)
    clock.set(noon[1])
    await refund("M001", first, None)
    clock.set(noon[2])
    await pay("M001", 3000)
    clock.set(noon[3])
    await pay("M001", 4000)
    clock.set(noon[5])
    for day in (0, 1):
        await Settlement(svc, file_dir=tmp_path).run(noon[day].date(), merchant_code="M001")
    two, three = await asyncio.gather(
        Settlement(svc, file_dir=tmp_path).run(noon[2].date(), merchant_code="M001"),
        Settlement(other, file_dir=tmp_path).run(noon[3].date(), merchant_code="M001"))
    # whichever took what (either order, or both at once), each carried amount
    # was taken once: what the batches took is what the forwarded ones carried,
    # and what the merchant still owes is exactly what is carried now
    batches = [b for d in range(4) for b in await settlement_batches_of(svc, noon[d].date(), ids["M001"])]
    forwarded = [b for b in batches if b.state == "forwarded"]
    assert 1 <= len(forwarded) <= 2 and sum(b.carried_in for b in batches) == sum(b.net for b in forwarded)
    assert sorted(b.business_date.isoformat() for b in forwarded) == sorted(
        d for b in batches for d in b.statement["carried_from"])
    owed = sum(b.net for b in batches if b.state == "carried")
    assert owed < 0 and (await svc.ledger.balance(ids["M001"])).balance == owed
    assert bank.cards[bank.token(MERCHANT_ACCOUNT)].balance == 9940 + 2982 + 3976 - 9940 - owed
    assert await svc.check_books() == []
    await shutdown(other)
    await shutdown(svc)
