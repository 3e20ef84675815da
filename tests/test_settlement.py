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
