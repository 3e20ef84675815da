"""Merchant settlement: T+1 batches netting payments, refunds and fees,
paid once through the bank port even when run twice."""
from datetime import timedelta

import pytest

from telecom_pay.settlement import Settlement, SettlementError
from tests.aio import aio_test
from tests.bankdouble import InProcessBank
from tests.servicekit import MSISDN, funded, make_service, shutdown

MERCHANT_ACCOUNT = "6222025555550001"


@aio_test
async def test_settlement_paid_once(database_url, tmp_path):
    bank = InProcessBank()
    bank.add_card(MERCHANT_ACCOUNT, balance=0)
    svc = await make_service(database_url, bank=bank, overrides={"merchants": [
        {"code": "M001", "name": "福彩中心"}, {"code": "M002", "name": "游戏充值", "payout": "file"}]})
    assert (await svc.bind_merchant_account("M001", MERCHANT_ACCOUNT, "3012")).outcome.value == "ok"
    pin = await funded(svc, amount=50_000)
    refs = [(await svc.pay(MSISDN, "M001", 10_000, pin, channel="t", key=f"p{i}")).ref for i in range(2)]
    await svc.pay(MSISDN, "M002", 3000, pin, channel="t", key="p-file")
    await svc.refund("M001", refs[0], 2500, actor="merchant:M001")
    real_clock = svc.clock
    day = real_clock().astimezone(svc.tz).date()
    settlement = Settlement(svc, file_dir=tmp_path)
    with pytest.raises(SettlementError):
        await settlement.run(day)                         # T+1: not yet
    svc.clock = lambda: real_clock() + timedelta(days=1)
    reports = {r.merchant_code: r for r in await settlement.run(day)}
    m1 = reports["M001"]
    assert (m1.gross, m1.refunds, m1.fees, m1.payments) == (20_000, 2500, 120, 2)
    assert m1.net == 20_000 - 2500 - 120 and m1.state == "paid"
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
async def test_failed_payout_is_retried_and_in_doubt_waits(sqlite_url, tmp_path):
    from telecom_pay.outcomes import BankDecline
    bank = InProcessBank()
    card = bank.add_card(MERCHANT_ACCOUNT, balance=0)
    svc = await make_service(sqlite_url, bank=bank)
    await svc.bind_merchant_account("M001", MERCHANT_ACCOUNT, "3012")
    pin = await funded(svc, amount=5000)
    await svc.pay(MSISDN, "M001", 4000, pin, channel="t")
    real_clock = svc.clock
    day = real_clock().astimezone(svc.tz).date()
    svc.clock = lambda: real_clock() + timedelta(days=2)
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
