"""PaymentService: every operation, lifecycle transition and refusal, on
SQLite + in-process sessions and on PostgreSQL + Redis."""
import re
from datetime import timedelta


from telecom_pay.outcomes import BankDecline, Outcome
from tests.aio import aio_test
from tests.bankdouble import InProcessBank
from tests.servicekit import (MSISDN, OTHER, PAN_CREDIT, PAN_DEBIT, funded, make_service, open_active, outbox_texts,
                              shutdown)




async def service(stack, **kw):
    return await make_service(stack["database_url"], sessions_url=stack["sessions_url"],
                              prefix=stack.get("prefix", "tp:"), **kw)


async def sound(svc):
    assert await svc.check_books() == []


@aio_test
async def test_open_confirm_lifecycle(stack):
    svc = await service(stack)
    assert (await svc.balance(MSISDN, channel="t")).outcome is Outcome.NO_ACCOUNT
    r = await svc.open_account("13800138000", channel="sms")
    assert r.outcome is Outcome.CONFIRM_REQUIRED and r.params["ttl_minutes"] == 10
    assert (await svc.open_account(MSISDN, channel="sms")).outcome is Outcome.CONFIRM_REQUIRED
    assert (await svc.balance(MSISDN, channel="t")).outcome is Outcome.ACCOUNT_PENDING
    r = await svc.confirm_open(MSISDN, channel="sms")
    assert r.outcome is Outcome.OK and len(r.params["pin"]) == 6 and r.params["pin"].isdigit()
    assert len(r.params["password"]) >= 8
    assert await svc.verify_password(MSISDN, r.params["password"])
    assert not await svc.verify_password(MSISDN, "wrong-password")
    assert (await svc.confirm_open(MSISDN, channel="sms")).outcome is Outcome.ALREADY_ACTIVE
    assert (await svc.open_account(MSISDN, channel="sms")).outcome is Outcome.ACCOUNT_EXISTS
    assert (await svc.confirm_open(OTHER, channel="sms")).outcome is Outcome.NOTHING_PENDING
    await shutdown(svc)


@aio_test
async def test_confirmation_expires(stack):
    svc = await service(stack)
    base = svc.clock
    await svc.open_account(MSISDN, channel="sms")
    svc.clock = lambda: base() + timedelta(minutes=11)
    assert (await svc.confirm_open(MSISDN, channel="sms")).outcome is Outcome.CONFIRMATION_EXPIRED
    assert (await svc.balance(MSISDN, channel="t")).outcome is Outcome.NO_ACCOUNT
    # a new KT after expiry starts over
    assert (await svc.open_account(MSISDN, channel="sms")).outcome is Outcome.CONFIRM_REQUIRED
    assert (await svc.confirm_open(MSISDN, channel="sms")).outcome is Outcome.OK
    await shutdown(svc)


@aio_test
async def test_pay_merchant_with_pin_and_fee_legs(stack):
    svc = await service(stack)
    pin = await funded(svc)
    pre = await svc.preview_payment(MSISDN, "m001", 1250)
    assert pre.outcome is Outcome.PIN_REQUIRED and pre.params["merchant_name"] == "福彩中心"
    r = await svc.pay(MSISDN, "M001", 1250, pin, channel="sms", key="sms:1")
    assert r.outcome is Outcome.OK and r.ref and r.balance == 8750 and r.amount == 1250
    again = await svc.pay(MSISDN, "M001", 1250, pin, channel="sms", key="sms:1")
    assert again.ref == r.ref and again.balance == 8750          # idempotent
    conflict = await svc.pay(MSISDN, "M001", 1300, pin, channel="sms", key="sms:1")
    assert conflict.outcome is Outcome.IDEMPOTENCY_CONFLICT and "amount" in conflict.params["differs"]
    fee_income = await svc.ledger.balance(svc.system["fee_income"])
    assert fee_income.balance == 8                                 # 6 per mille of 12.50, merchant pays
    assert (await svc.preview_payment(MSISDN, "NOPE", 100)).outcome is Outcome.UNKNOWN_MERCHANT
    assert (await svc.pay(MSISDN, "NOPE", 100, pin, channel="sms")).outcome is Outcome.UNKNOWN_MERCHANT
    assert (await svc.pay(MSISDN, "M001", 100_000, pin, channel="sms")).outcome in (
        Outcome.INSUFFICIENT_FUNDS, Outcome.LIMIT_PER_TXN)
    assert (await svc.pay(MSISDN, "M001", 9000, pin, channel="sms")).outcome is Outcome.INSUFFICIENT_FUNDS
    assert (await svc.preview_payment(MSISDN, "M001", 9000)).outcome is Outcome.INSUFFICIENT_FUNDS
    assert (await svc.pay(MSISDN, "M001", 100, "12ab", channel="sms")).outcome is Outcome.PIN_FORMAT
    assert (await svc.pay(MSISDN, "M001", 0, pin, channel="sms")).outcome is Outcome.INVALID_AMOUNT
    await sound(svc)
    await shutdown(svc)


@aio_test
async def test_wrong_pins_lock_then_timeout_or_agent_reset(stack):
    svc = await service(stack)
    pin = await funded(svc)
    wrong = "000000" if pin != "000000" else "111111"
    r1 = await svc.pay(MSISDN, "M001", 100, wrong, channel="sms")
    assert r1.outcome is Outcome.PIN_WRONG and r1.params["attempts_left"] == 2
    # success resets the count
    assert (await svc.pay(MSISDN, "M001", 100, pin, channel="sms")).outcome is Outcome.OK
    assert (await svc.pay(MSISDN, "M001", 100, wrong, channel="sms")).params["attempts_left"] == 2
    assert (await svc.pay(MSISDN, "M001", 100, wrong, channel="sms")).params["attempts_left"] == 1
    assert (await svc.pay(MSISDN, "M001", 100, wrong, channel="sms")).outcome is Outcome.PIN_LOCKED
    assert (await svc.pay(MSISDN, "M001", 100, pin, channel="sms")).outcome is Outcome.PIN_LOCKED
    base = svc.clock
    svc.clock = lambda: base() + timedelta(minutes=31)               # lock times out
    assert (await svc.pay(MSISDN, "M001", 100, pin, channel="sms")).outcome is Outcome.OK
    svc.clock = base
    for _ in range(3):
        await svc.pay(MSISDN, "M001", 100, wrong, channel="sms")
    reset = await svc.reset_pin("AG001", MSISDN)
    assert reset.outcome is Outcome.OK and "pin" not in reset.params        # never on the agent's screen
    new_pin = re.findall(r"(?<!\d)(\d{6})(?!\d)", (await outbox_texts(svc, MSISDN))[-1])[0]   # by SMS
    assert (await svc.pay(MSISDN, "M001", 100, new_pin, channel="sms")).outcome \
        is Outcome.PIN_CHANGE_REQUIRED                                # a reset PIN must be changed first
    assert (await svc.change_pin(MSISDN, new_pin, "369258", channel="sms")).outcome is Outcome.OK
    assert (await svc.pay(MSISDN, "M001", 100, "369258", channel="sms")).outcome is Outcome.OK
    assert (await svc.reset_pin("NOBODY", MSISDN)).outcome is Outcome.NOT_AUTHORIZED
    await sound(svc)
    await shutdown(svc)


@aio_test
async def test_limits_by_tier_and_velocity(stack, local_clock):
    svc = await service(stack, clock=local_clock,
                        overrides={"limits": {"1": {"per_txn": 5000, "daily": 8000, "monthly": 9000}},
                                   "security.velocity_payments_per_minute": 3})
    assert svc.clock is svc.ledger.clock
    pin = await funded(svc, amount=20_000)
    r = await svc.pay(MSISDN, "M001", 5001, pin, channel="sms")
    assert r.outcome is Outcome.LIMIT_PER_TXN and r.params["limit"] == 5000
    assert (await svc.pay(MSISDN, "M001", 5000, pin, channel="sms")).outcome is Outcome.OK
    r = await svc.pay(MSISDN, "M001", 3001, pin, channel="sms")
    assert r.outcome is Outcome.LIMIT_DAILY and r.params["limit"] == 8000
    local_clock.advance(timedelta(days=1))                          # the next local day, same month
    r = await svc.pay(MSISDN, "M001", 4001, pin, channel="sms")
    assert r.outcome is Outcome.LIMIT_MONTHLY and r.params["limit"] == 9000
    # velocity: at most 3 payments a minute; the 4th is held, the next minute is free again
    minute = local_clock().replace(second=0, microsecond=0) + timedelta(minutes=5)
    svc.clock = lambda: minute + timedelta(seconds=10)
    for _ in range(3):
        assert (await svc.pay(MSISDN, "M001", 1, pin, channel="sms")).outcome is Outcome.OK
    held = await svc.pay(MSISDN, "M001", 1, pin, channel="sms")
    assert held.outcome is Outcome.VELOCITY_HOLD and held.params["retry_after"] == 50
    svc.clock = lambda: minute + timedelta(seconds=70)
    assert (await svc.pay(MSISDN, "M001", 1, pin, channel="sms")).outcome is Outcome.OK
    svc.clock = local_clock
    await sound(svc)
    await shutdown(svc)


@aio_test
async def test_daily_and_monthly_limits_count_local_days(stack):
    """Three payments of 500.00 at 00:30 Shanghai (16:30 UTC the day before)
    against a 1,000.00 daily limit: the third is refused. The local month
    starts at local midnight too: a payment at 23:30 on the last day of a
    month counts for that month only."""
    from datetime import datetime
    from tests.clockkit import SHANGHAI, TestClock
    clock = TestClock(datetime(2026, 6, 30, 23, 30, tzinfo=SHANGHAI))
    svc = await service(stack, clock=clock, overrides={
        "limits": {"1": {"per_txn": 50_000, "daily": 100_000, "monthly": 150_000}},
        "security.velocity_payments_per_minute": 0})
    pin = await funded(svc, amount=500_000)
    assert (await svc.pay(MSISDN, "M001", 50_000, pin, channel="sms")).outcome is Outcome.OK   # June
    clock.set(datetime(2026, 7, 1, 0, 30, tzinfo=SHANGHAI))
    for _ in range(2):
        assert (await svc.pay(MSISDN, "M001", 50_000, pin, channel="sms")).outcome is Outcome.OK
    r = await svc.pay(MSISDN, "M001", 50_000, pin, channel="sms")
    assert r.outcome is Outcome.LIMIT_DAILY and r.params["limit"] == 100_000
    clock.set(datetime(2026, 7, 2, 0, 30, tzinfo=SHANGHAI))
    assert (await svc.pay(MSISDN, "M001", 50_000, pin, channel="sms")).outcome is Outcome.OK   # July: 1,500.00
    r = await svc.pay(MSISDN, "M001", 1, pin, channel="sms")
    assert r.outcome is Outcome.LIMIT_MONTHLY and r.params["limit"] == 150_000
    await sound(svc)
    await shutdown(svc)


@aio_test
async def test_p2p_send_and_consumption_only_money(stack):
    svc = await service(stack)
    pin = await funded(svc, amount=5000)
    await open_active(svc, OTHER)
    notes = []
    svc.add_notifier(lambda m, res: notes.append((m, res)))
    assert (await svc.preview_send(MSISDN, "13900139000", 1000)).outcome is Outcome.PIN_REQUIRED
    r = await svc.send(MSISDN, "13900139000", 1000, pin, channel="sms")
    assert r.outcome is Outcome.OK and r.balance == 4000
    assert notes[-1][0] == OTHER and notes[-1][1].params["action"] == "receive"
    assert (await svc.send(MSISDN, MSISDN, 1, pin, channel="sms")).outcome is Outcome.SELF_TRANSFER
    assert (await svc.send(MSISDN, "13700137000", 1, pin, channel="sms")).outcome is Outcome.UNKNOWN_RECIPIENT
    assert (await svc.send(MSISDN, "12345", 1, pin, channel="sms")).outcome is Outcome.INVALID_NUMBER
    # credit-card money is consumption only
    assert (await svc.bind_card(MSISDN, PAN_CREDIT, "2912", channel="sms")).outcome is Outcome.OK
    t = await svc.topup(MSISDN, 6000, channel="sms")
    assert t.outcome is Outcome.OK and t.balance == 10_000
    bal = await svc.balance(MSISDN, channel="sms")
    assert bal.params["withdrawable"] == 4000
    r = await svc.send(MSISDN, OTHER, 5000, pin, channel="sms")
    assert r.outcome is Outcome.NOT_WITHDRAWABLE and r.params["withdrawable"] == 4000
    assert (await svc.preview_send(MSISDN, OTHER, 5000)).outcome is Outcome.NOT_WITHDRAWABLE
    await sound(svc)
    await shutdown(svc)


@aio_test
async def test_topup_and_withdraw_through_bank_port(stack):
    bank = InProcessBank()
    bank.add_card(PAN_DEBIT, balance=10_000)
    bank.add_card("6222029999990000", decline=BankDecline.EXPIRED_CARD)
    svc = await service(stack, bank=bank)
    pin = await open_active(svc)
    assert (await svc.topup(MSISDN, 100, channel="sms")).outcome is Outcome.NO_CARD
    assert (await svc.bind_card(MSISDN, "4000000000000002", "2912", channel="sms")).params["reason"] == "invalid_card"
    assert (await svc.bind_card(MSISDN, PAN_DEBIT, "2912", channel="sms")).outcome is Outcome.OK
    r = await svc.topup(MSISDN, 8000, channel="sms", key="cz-1")
    assert r.outcome is Outcome.OK and r.balance == 8000 and bank.cards[bank.token(PAN_DEBIT)].balance == 2000
    assert (await svc.topup(MSISDN, 8000, channel="sms", key="cz-1")).ref == r.ref   # replay, no second debit
    assert bank.cards[bank.token(PAN_DEBIT)].balance == 2000
    d = await svc.topup(MSISDN, 5000, channel="sms")
    assert d.outcome is Outcome.BANK_DECLINED and d.params["reason"] == "insufficient_funds"
    assert (await svc.balance(MSISDN, channel="t")).balance == 8000
    w = await svc.withdraw(MSISDN, 3000, pin, channel="sms")
    assert w.outcome is Outcome.OK and w.fee == 100 and w.balance == 4900
    assert bank.cards[bank.token(PAN_DEBIT)].balance == 5000
    # in doubt: stays pending until the bridge resolves it
    bank.in_doubt = True
    p = await svc.withdraw(MSISDN, 1000, pin, channel="sms", key="tx-doubt")
    assert p.outcome is Outcome.IN_PROGRESS
    assert (await svc.balance(MSISDN, channel="t")).balance == 3800
    notes = []
    svc.add_notifier(lambda m, res: notes.append((m, res)))
    await svc.resolve_in_doubt("tx-doubt", approved=False)
    assert (await svc.balance(MSISDN, channel="t")).balance == 4900
    assert notes and notes[0][1].outcome is Outcome.BANK_UNAVAILABLE
    await svc.resolve_in_doubt("tx-doubt", approved=True)             # too late: ignored, stays voided
    assert (await svc.balance(MSISDN, channel="t")).balance == 4900
    bank.in_doubt = False
    # the card is changed and unbound
    await svc.unbind_card(MSISDN, channel="sms")
    assert (await svc.withdraw(MSISDN, 100, pin, channel="sms")).outcome is Outcome.NO_CARD
    assert (await svc.unbind_card(MSISDN, channel="sms")).outcome is Outcome.NO_CARD
    bal = await svc.ledger.balance(svc.system["bank_settlement"])
    assert bal.balance == -(8000 - 3000)            # equals the bank's net card movements
    await sound(svc)
    await shutdown(svc)


@aio_test
async def test_freeze_unfreeze_close(stack):
    svc = await service(stack)
    pin = await funded(svc, amount=3000)
    assert (await svc.freeze(MSISDN, channel="sms")).outcome is Outcome.OK
    assert (await svc.pay(MSISDN, "M001", 100, pin, channel="sms")).outcome is Outcome.ACCOUNT_FROZEN
    assert (await svc.freeze(MSISDN, channel="sms")).outcome is Outcome.ACCOUNT_FROZEN
    assert (await svc.unfreeze(MSISDN, pin, channel="sms")).outcome is Outcome.OK
    assert (await svc.unfreeze(MSISDN, pin, channel="sms")).outcome is Outcome.ALREADY_ACTIVE
    assert (await svc.agent_freeze("AG001", MSISDN)).outcome is Outcome.OK
    assert (await svc.agent_unfreeze("AG001", MSISDN)).outcome is Outcome.OK
    # closing returns the balance to the bound card first
    assert (await svc.close(MSISDN, pin, channel="sms")).outcome is Outcome.NO_CARD
    await svc.bind_card(MSISDN, PAN_DEBIT, "2912", channel="sms")
    r = await svc.close(MSISDN, pin, channel="sms")
    assert r.outcome is Outcome.OK and r.amount == 3000
    assert svc.bank.cards[svc.bank.token(PAN_DEBIT)].balance == 1_003_000
    assert (await svc.balance(MSISDN, channel="t")).outcome is Outcome.NO_ACCOUNT
    # the number can open a new account afterwards
    assert (await svc.open_account(MSISDN, channel="sms")).outcome is Outcome.CONFIRM_REQUIRED
    await sound(svc)
    await shutdown(svc)


@aio_test
async def test_change_pin(stack):
    svc = await service(stack)
    pin = await funded(svc)
    assert (await svc.change_pin(MSISDN, pin, "111111", channel="sms")).outcome is Outcome.PIN_FORMAT  # weak
    assert (await svc.change_pin(MSISDN, pin, "12345", channel="sms")).outcome is Outcome.PIN_FORMAT
    wrong = "000000" if pin != "000000" else "111111"
    assert (await svc.change_pin(MSISDN, wrong, "482913", channel="sms")).outcome is Outcome.PIN_WRONG
    assert (await svc.change_pin(MSISDN, pin, "482913", channel="sms")).outcome is Outcome.OK
    assert (await svc.pay(MSISDN, "M001", 100, pin, channel="sms")).outcome is Outcome.PIN_WRONG
    assert (await svc.pay(MSISDN, "M001", 100, "482913", channel="sms")).outcome is Outcome.OK
    await shutdown(svc)


@aio_test
async def test_agent_operations(stack):
    svc = await service(stack)
    r = await svc.agent_open("AG001", "13800138000", holder_name="Li Lei", id_type="ID", id_number="110101199001011234")
    assert r.outcome is Outcome.OK and r.params["what"] == "agreement" and "pin" not in r.params
    agreement = await outbox_texts(svc, MSISDN)
    assert len(agreement) == 1 and "A" in agreement[0]                  # the KT reply, sent by the platform
    assert (await svc.balance(MSISDN, channel="t")).outcome is Outcome.ACCOUNT_PENDING
    assert (await svc.confirm_open(MSISDN, channel="sms")).params["pin"]   # the subscriber's A
    assert (await svc.account_info(MSISDN)).kyc_tier == 2
    assert (await svc.agent_open("AG001", MSISDN, holder_name="x", id_type="ID", id_number="1")).outcome \
        is Outcome.ACCOUNT_EXISTS
    assert (await svc.agent_open("AG001", "999", holder_name="x", id_type="ID", id_number="1")).outcome \
        is Outcome.INVALID_NUMBER
    assert (await svc.cash_in("AG001", MSISDN, 500)).outcome is Outcome.INSUFFICIENT_FUNDS   # no float yet
    await svc.fund_agent("AG001", 100_000, operator="test")
    c = await svc.cash_in("AG001", MSISDN, 5000, key="counter-1")
    assert c.outcome is Outcome.OK and c.balance == 5000 and c.params["agent_balance"] == 95_000
    assert (await svc.cash_in("NOBODY", MSISDN, 5000)).outcome is Outcome.NOT_AUTHORIZED
    assert (await svc.set_kyc_tier("AG001", MSISDN, 3)).outcome is Outcome.OK
    assert (await svc.set_kyc_tier("AG001", MSISDN, 9)).outcome is Outcome.MALFORMED
    assert (await svc.change_number("AG001", MSISDN, OTHER)).outcome is Outcome.OK
    assert (await svc.balance(OTHER, channel="t")).balance == 5000
    assert (await svc.balance(MSISDN, channel="t")).outcome is Outcome.NO_ACCOUNT
    t = await svc.transfer_ownership("AG001", OTHER, holder_name="Han Meimei", id_type="ID", id_number="2")
    assert t.outcome is Outcome.OK and t.params["held"] == 5000
    assert "pin" not in t.params and "password" not in t.params
    assert "MM" in (await outbox_texts(svc, OTHER))[-1]                # the new holder's credentials, by SMS
    assert (await svc.balance(OTHER, channel="t")).balance == 0                      # not the old holder's money
    assert (await svc.ledger.balance(svc.system["suspense"])).balance == 5000
    assert (await svc.cancel_number("AG001", OTHER)).outcome is Outcome.OK
    assert (await svc.balance(OTHER, channel="t")).params["status"] == "frozen"
    st = await svc.statement(OTHER, channel="agent")
    assert st.outcome is Outcome.OK
    await sound(svc)
    await shutdown(svc)


@aio_test
async def test_statement_paging_and_airtime_and_refund(stack):
    svc = await service(stack)
    pin = await funded(svc, amount=10_000)
    refs = []
    for i in range(4):
        refs.append((await svc.pay(MSISDN, "M002", 100 + i, pin, channel="sms", key=f"p{i}")).ref)
    a = await svc.airtime(MSISDN, 500, pin, channel="sms")
    assert a.outcome is Outcome.OK
    st = await svc.statement(MSISDN, channel="sms", per_page=3)
    assert st.params["pages"] == 2 and [l.kind for l in st.params["lines"]] == ["airtime", "payment", "payment"]
    assert st.params["lines"][1].amount == -103 and st.params["lines"][1].counterparty == "游戏充值"
    st2 = await svc.statement(MSISDN, channel="sms", page=2, per_page=3)
    assert [l.kind for l in st2.params["lines"]] == ["payment", "payment", "cash_in"]
    rf = await svc.refund("M002", refs[0], 50, actor="merchant:M002")
    assert rf.outcome is Outcome.OK and rf.amount == 50
    assert (await svc.refund("M002", refs[0], 51, actor="merchant:M002")).outcome is Outcome.INVALID_AMOUNT
    assert (await svc.refund("M001", refs[1], None, actor="merchant:M001")).outcome is Outcome.NOT_FOUND
    await sound(svc)
    await shutdown(svc)


@aio_test
async def test_initial_and_reset_pins_move_no_money_until_changed(stack):
    """An initial (or agent-reset) PIN came by SMS: before MM it may check
    balance and statement, freeze and unfreeze, and change itself; every
    spend, withdrawal, PIN top-up and close is refused without a booking."""
    svc = await service(stack)
    await svc.open_account(MSISDN, channel="sms")
    pin = (await svc.confirm_open(MSISDN, channel="sms")).params["pin"]
    await open_active(svc, OTHER)
    await svc.fund_agent("AG001", 10_000, operator="test")
    assert (await svc.cash_in("AG001", MSISDN, 10_000)).outcome is Outcome.OK
    assert (await svc.bind_card(MSISDN, PAN_DEBIT, "2912", channel="t")).ok
    assert (await svc.balance(MSISDN, channel="sms")).balance == 10_000
    assert (await svc.statement(MSISDN, channel="sms")).outcome is Outcome.OK
    refused = Outcome.PIN_CHANGE_REQUIRED
    assert (await svc.preview_payment(MSISDN, "M001", 100)).outcome is refused
    assert (await svc.preview_send(MSISDN, OTHER, 100)).outcome is refused
    assert (await svc.pay(MSISDN, "M001", 100, pin, channel="sms")).outcome is refused
    assert (await svc.send(MSISDN, OTHER, 100, pin, channel="sms")).outcome is refused
    assert (await svc.airtime(MSISDN, 100, pin, channel="sms")).outcome is refused
    assert (await svc.withdraw(MSISDN, 100, pin, channel="sms")).outcome is refused
    assert (await svc.topup(MSISDN, 100, pin=pin, require_pin=True, channel="sms")).outcome is refused
    assert (await svc.close(MSISDN, pin, channel="sms")).outcome is refused
    wrong = "000000" if pin != "000000" else "111111"
    assert (await svc.pay(MSISDN, "M001", 100, wrong, channel="sms")).outcome is Outcome.PIN_WRONG
    assert (await svc.freeze(MSISDN, channel="sms")).outcome is Outcome.OK
    assert (await svc.unfreeze(MSISDN, pin, channel="sms")).outcome is Outcome.OK
    assert (await svc.balance(MSISDN, channel="sms")).balance == 10_000          # nothing moved
    assert (await svc.change_pin(MSISDN, pin, "369258", channel="sms")).outcome is Outcome.OK
    assert (await svc.preview_payment(MSISDN, "M001", 100)).outcome is Outcome.PIN_REQUIRED
    assert (await svc.pay(MSISDN, "M001", 100, "369258", channel="sms")).outcome is Outcome.OK
    await sound(svc)
    await shutdown(svc)
