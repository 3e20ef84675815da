"""Money through every layer: a handset's SMS over SMPP to the daemon, the
PaymentService, the bank bridge over ISO 8583 to the bank simulator, and
back. After each test the books are sound and the platform's bank
settlement account equals the net of the bank's approved card movements."""
import asyncio

from twisted.internet import reactor

from simulators.bank.simulator import BankSimulator
from telecom_pay.aio import wait_deferred
from tests.aio import aio_test
from tests.e2ekit import PIN_RE, REF_RE, reply, say, settings_for, start_daemon, start_smsc, stop_daemon
from tests.servicekit import CHOSEN_PIN

DEBIT = "6222020000001234"
CREDIT = "6222080000001111"
MSISDN = "8613800138000"


async def up(database_url, *, timeout: float = 2.0, clock=None):
    bank = BankSimulator({"bank_code": "simbank"}, reactor)
    iso = await wait_deferred(bank.listen("tcp:0:interface=127.0.0.1"))
    bank.add_card(DEBIT, "3012", "debit", balance=50_000)
    bank.add_card(CREDIT, "3012", "credit", balance=0, limit=100_000)
    sim, smpp_port = await start_smsc()
    settings = settings_for(database_url, smpp_port, **{
        "bank.banks": [{"code": "simbank", "endpoint": f"tcp:host=127.0.0.1:port={iso.getHost().port}",
                        "bins": ["622202", "622208"], "terminal_id": "TP000001", "acquirer_id": "48020000",
                        "timeout": timeout, "card_types": {"622208": "credit"}}],
        "bank.reversal_retry_initial": 0.2})
    daemon = await start_daemon(settings, clock=clock)
    port = daemon.components["bank"].port
    await asyncio.wait_for(port.wait_ready(), 10)
    return bank, iso, sim, daemon


async def down(bank, iso, sim, daemon):
    await stop_daemon(daemon)
    await wait_deferred(sim.stop())
    bank.drop_connections()
    await wait_deferred(iso.stopListening())


async def books_agree_with_bank(daemon, bank):
    svc = daemon.core.service
    assert await svc.check_books() == []
    moved = sum(m.amount for pan in (DEBIT, CREDIT) for m in bank.card(pan).movements)
    settlement = await svc.ledger.balance(svc.system["bank_settlement"])
    assert settlement.balance == moved        # card debits (negative) are money the platform holds


async def open_with_card(phone, daemon, pan):
    assert "A" in await say(phone, "KT")
    await wait_deferred(phone.send("A"))
    pin = PIN_RE.search(await reply(phone, expect="MM")).group(1)
    await say(phone, f"MM {pin} {CHOSEN_PIN}", expect="支付密码已修改")     # an initial PIN moves no money
    assert (await daemon.core.service.bind_card(MSISDN, pan, "3012", channel="test")).ok
    return CHOSEN_PIN


@aio_test
async def test_topup_and_withdraw_by_sms_through_the_bank(database_url):
    bank, iso, sim, daemon = await up(database_url)
    phone = sim.handset("13800138000")
    pin = await open_with_card(phone, daemon, DEBIT)
    await say(phone, "CZ 200")
    topped = await say(phone, pin, expect="200.00")
    assert REF_RE.search(topped) and bank.card(DEBIT).balance == 30_000
    await say(phone, "CZ 400")                               # more than the card holds
    declined = await say(phone, pin)
    assert "余额不足" in declined and not REF_RE.search(declined)
    assert bank.card(DEBIT).balance == 30_000
    await say(phone, "TX 50")
    withdrawn = await say(phone, pin, expect="50.00")
    assert REF_RE.search(withdrawn) and bank.card(DEBIT).balance == 35_000
    assert (await daemon.core.service.balance(MSISDN, channel="t")).balance == 20_000 - 5000 - 100
    await books_agree_with_bank(daemon, bank)
    await down(bank, iso, sim, daemon)


@aio_test
async def test_credit_card_money_is_consumption_only(sqlite_url):
    bank, iso, sim, daemon = await up(sqlite_url)
    phone = sim.handset("13800138000")
    pin = await open_with_card(phone, daemon, CREDIT)
    await say(phone, "CZ 100")
    await say(phone, pin, expect="100.00")
    await say(phone, "ZF M001 30")
    assert "70.00" in await say(phone, pin)
    await say(phone, "TX 10")                                 # a credit card cannot take a withdrawal
    refused = await say(phone, pin)
    assert "借记卡" in refused
    assert "70.00" in await say(phone, "YE")
    assert bank.card(CREDIT).balance == -10_000
    await books_agree_with_bank(daemon, bank)
    await down(bank, iso, sim, daemon)


@aio_test
async def test_bank_timeout_is_reversed_and_the_subscriber_told(sqlite_url):
    bank, iso, sim, daemon = await up(sqlite_url, timeout=0.5)
    phone = sim.handset("13800138000")
    pin = await open_with_card(phone, daemon, DEBIT)
    bank.faults.update({"answer_after": 1.5, "mtis": ["0200"]})
    await say(phone, "CZ 100")
    first = await say(phone, pin, timeout=15)               # in progress: the bank did not answer in time
    later = await reply(phone, timeout=20)                   # then: reversed, told
    assert "处理中" in first and REF_RE.search(first)
    assert REF_RE.search(first).group(0) in later and "未完成" in later
    await asyncio.sleep(2.5)                                 # the late 0210 arrives and is ignored
    svc = daemon.core.service
    assert (await svc.balance(MSISDN, channel="t")).balance == 0
    assert bank.card(DEBIT).balance == 50_000                 # the reversal restored the card
    await books_agree_with_bank(daemon, bank)
    await down(bank, iso, sim, daemon)


@aio_test
async def test_credit_card_funds_never_withdrawn_after_changing_to_a_debit_card(sqlite_url):
    bank, iso, sim, daemon = await up(sqlite_url)
    phone = sim.handset("13800138000")
    pin = await open_with_card(phone, daemon, CREDIT)
    await say(phone, "CZ 100")
    await say(phone, pin, expect="100.00")
    svc = daemon.core.service
    assert (await svc.bind_card(MSISDN, DEBIT, "3012", channel="test")).ok        # the card is changed
    await say(phone, "TX 50")
    refused = await say(phone, pin)
    assert "信用卡" in refused and bank.card(DEBIT).balance == 50_000
    await books_agree_with_bank(daemon, bank)
    await down(bank, iso, sim, daemon)


@aio_test
async def test_settlement_pays_the_merchant_once_through_the_bank(database_url, tmp_path, local_clock):
    from datetime import timedelta
    from telecom_pay.business_time import business_day
    from telecom_pay.settlement import Settlement
    bank, iso, sim, daemon = await up(database_url, clock=local_clock)
    merchant_account = "6222020000000001"
    bank.add_card(merchant_account, "3012", "debit", balance=0)
    svc = daemon.core.service
    assert (await svc.bind_merchant_account("M001", merchant_account, "3012")).ok
    phone = sim.handset("13800138000")
    pin = await open_with_card(phone, daemon, DEBIT)
    await say(phone, "CZ 300")
    await say(phone, pin, expect="300.00")
    await say(phone, "ZF M001 120")
    await say(phone, pin, expect="180.00")
    day = business_day(local_clock(), svc.tz)
    local_clock.advance(timedelta(days=1))
    settlement = Settlement(svc, file_dir=tmp_path)
    (first,) = [r for r in await settlement.run(day) if r.merchant_code == "M001"]
    assert first.state == "paid" and first.net == 12_000 - 72          # 6 per mille fee
    (again,) = [r for r in await settlement.run(day) if r.merchant_code == "M001"]
    assert again.state == "paid" and again.payout_ref == first.payout_ref
    assert bank.card(merchant_account).balance == first.net             # paid exactly once
    assert await svc.check_books() == []
    moved = sum(m.amount for pan in (DEBIT, CREDIT, merchant_account) for m in bank.card(pan).movements)
    assert (await svc.ledger.balance(svc.system["bank_settlement"])).balance == moved
    await down(bank, iso, sim, daemon)
