"""A replayed idempotency key answers with the original result, before any
check, on SQLite + in-process sessions and on PostgreSQL + Redis."""
from datetime import datetime, timezone

import pytest

from telecom_pay.ledger.ledger import IdempotencyConflict, Leg, OperationRequest
from telecom_pay.ledger.tables import MERCHANT
from telecom_pay.outcomes import Outcome
from tests.aio import aio_test
from tests.ledgerkit import make_ledger, new_account
from tests.servicekit import MSISDN, funded, make_service, shutdown


async def service(stack, **kw):
    return await make_service(stack["database_url"], sessions_url=stack["sessions_url"],
                              prefix=stack.get("prefix", "tp:"), **kw)


def wrong(pin):
    return "000000" if pin != "000000" else "111111"


@aio_test
async def test_replay_after_freeze_returns_the_payment(stack):
    svc = await service(stack)
    pin = await funded(svc)
    first = await svc.pay(MSISDN, "M001", 1250, pin, channel="sms", key="conv:1")
    assert first.outcome is Outcome.OK and first.balance == 8750
    assert (await svc.freeze(MSISDN, channel="sms")).outcome is Outcome.OK
    again = await svc.pay(MSISDN, "M001", 1250, pin, channel="sms", key="conv:1")
    assert (again.outcome, again.ref, again.amount, again.balance) == (Outcome.OK, first.ref, 1250, 8750)
    assert again.params["merchant_code"] == "M001"
    assert await svc.check_books() == []
    await shutdown(svc)


@aio_test
async def test_replay_after_daily_limit_used_up_returns_its_balance_after(stack):
    svc = await service(stack, overrides={"limits": {"1": {"per_txn": 5000, "daily": 8000, "monthly": 90000}}})
    noon = datetime(2026, 6, 15, 4, 0, tzinfo=timezone.utc)      # 12:00 Asia/Shanghai, a fixed instant
    svc.clock = svc.ledger.clock = lambda: noon
    pin = await funded(svc, amount=20_000)
    first = await svc.pay(MSISDN, "M001", 5000, pin, channel="sms", key="conv:1")
    assert first.outcome is Outcome.OK and first.balance == 15_000
    assert (await svc.pay(MSISDN, "M001", 3000, pin, channel="sms", key="conv:2")).outcome is Outcome.OK
    assert (await svc.pay(MSISDN, "M001", 1, pin, channel="sms", key="conv:3")).outcome is Outcome.LIMIT_DAILY
    again = await svc.pay(MSISDN, "M001", 5000, pin, channel="sms", key="conv:1")
    assert (again.outcome, again.ref, again.balance) == (Outcome.OK, first.ref, 15_000)
    assert (await svc.balance(MSISDN, channel="t")).balance == 12_000
    await shutdown(svc)


@aio_test
async def test_replay_with_a_wrong_pin_returns_the_payment_and_counts_nothing(stack):
    svc = await service(stack)
    pin = await funded(svc)
    first = await svc.airtime(MSISDN, 500, pin, channel="sms", key="conv:1")
    assert first.outcome is Outcome.OK
    again = await svc.airtime(MSISDN, 500, wrong(pin), channel="sms", key="conv:1")
    assert (again.outcome, again.ref, again.balance) == (Outcome.OK, first.ref, first.balance)
    # no failure was counted: three wrong PINs are still needed to lock
    r = await svc.pay(MSISDN, "M001", 100, wrong(pin), channel="sms")
    assert r.outcome is Outcome.PIN_WRONG and r.params["attempts_left"] == 2
    await shutdown(svc)


@aio_test
async def test_replay_from_another_channel_is_a_conflict_naming_it(stack):
    svc = await service(stack)
    pin = await funded(svc)
    assert (await svc.pay(MSISDN, "M001", 1250, pin, channel="sms", key="conv:1")).outcome is Outcome.OK
    r = await svc.pay(MSISDN, "M001", 1250, pin, channel="ussd", key="conv:1")
    assert r.outcome is Outcome.IDEMPOTENCY_CONFLICT and r.params["differs"] == ["channel"]
    assert (await svc.balance(MSISDN, channel="t")).balance == 8750
    await shutdown(svc)


@aio_test
async def test_ledger_replay_names_channel_and_actor_and_keeps_balance_after(database_url):
    ledger = await make_ledger(database_url)
    w = await new_account(ledger, msisdn=None, name="w")
    m = await new_account(ledger, MERCHANT, code="M1")
    await ledger.execute(OperationRequest(key="fund", kind="topup", account_id=w,
                                          legs=(Leg(ledger.system["bank_settlement"], w, 1000, "topup"),)))
    req = OperationRequest(key="k", kind="payment", account_id=w, channel="sms", actor="msisdn:1",
                           legs=(Leg(w, m, 100, "payment"),))
    await ledger.execute(req)
    await ledger.execute(OperationRequest(key="k2", kind="payment", account_id=w, legs=(Leg(w, m, 200, "payment"),)))
    again = await ledger.execute(req)
    assert again.replayed and again.balance_of(w).balance == 900
    for changed, name in ((dict(channel="web"), "channel"), (dict(actor="msisdn:2"), "actor")):
        with pytest.raises(IdempotencyConflict) as e:
            await ledger.execute(OperationRequest(**{**req.__dict__, **changed}))
        assert e.value.differs == [name]
    await ledger.close()
    await ledger.db.dispose()


@aio_test
async def test_refund_replay_returns_the_refund(stack):
    svc = await service(stack)
    pin = await funded(svc)
    paid = await svc.pay(MSISDN, "M001", 1000, pin, channel="sms", key="conv:1")
    await svc.pay(MSISDN, "M001", 1000, pin, channel="sms", key="conv:2")
    told = []
    svc.add_notifier(lambda m, res: told.append(res.ref))
    first = await svc.refund("M001", paid.ref, actor="merchant:M001", key="rf-1")
    assert first.outcome is Outcome.OK and first.amount == 1000 and first.balance == 9000
    await svc.pay(MSISDN, "M001", 500, pin, channel="sms", key="conv:3")
    again = await svc.refund("M001", paid.ref, actor="merchant:M001", key="rf-1")
    assert (again.outcome, again.ref, again.amount, again.balance) == (Outcome.OK, first.ref, 1000, 9000)
    assert told == [first.ref]                                        # told once
    r = await svc.refund("M001", paid.ref, 400, actor="merchant:M001", key="rf-1")
    assert r.outcome is Outcome.IDEMPOTENCY_CONFLICT and r.params["differs"] == ["amount"]
    r = await svc.refund("M001", paid.ref, actor="merchant:someone-else", key="rf-1")
    assert r.outcome is Outcome.IDEMPOTENCY_CONFLICT and r.params["differs"] == ["actor"]
    assert (await svc.balance(MSISDN, channel="t")).balance == 8500
    assert await svc.check_books() == []
    await shutdown(svc)


@aio_test
async def test_replay_of_a_withdrawal_still_in_doubt_asks_the_bank_again_without_the_checks(stack):
    """The first run passed the checks and the bank's answer is in doubt; the
    account is frozen since. The replay is not refused for the freeze or a
    wrong PIN: it asks the bank again under the same key, and once the bank's
    answer is known it returns the withdrawal, moved once."""
    from tests.bankdouble import InProcessBank
    from tests.servicekit import PAN_DEBIT
    bank = InProcessBank()
    bank.add_card(PAN_DEBIT, card_type="debit", balance=0)
    svc = await service(stack, bank=bank)
    pin = await funded(svc)
    assert (await svc.bind_card(MSISDN, PAN_DEBIT, "3012", channel="sms")).ok
    bank.in_doubt = True
    first = await svc.withdraw(MSISDN, 3000, pin, channel="sms", key="tx:1")
    assert first.outcome is Outcome.IN_PROGRESS
    assert (await svc.freeze(MSISDN, channel="sms")).outcome is Outcome.OK
    again = await svc.withdraw(MSISDN, 3000, wrong(pin), channel="sms", key="tx:1")
    assert (again.outcome, again.ref) == (Outcome.IN_PROGRESS, first.ref)
    bank.in_doubt = False
    bank.unknown.discard("tx:1")                      # the bank's answer arrives: approved
    done = await svc.withdraw(MSISDN, 3000, wrong(pin), channel="sms", key="tx:1")
    assert (done.outcome, done.ref, done.amount) == (Outcome.OK, first.ref, 3000)
    assert bank.movements == [("tx:1", PAN_DEBIT, 3000)]
    assert (await svc.ledger.get_operation("tx:1")).state == "posted"
    assert await svc.check_books() == []
    await shutdown(svc)
