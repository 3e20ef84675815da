"""XH obeys the TX rule: consumption-only money (topped up from a credit
card) never goes out to a card by a close. The rule: the close is refused
while such money remains; it stays spendable, and the close works once it is
spent. Over the service and the SMS conversation, both stacks."""
from telecom_pay.commands.conversation import Conversation
from telecom_pay.outcomes import Outcome
from tests.aio import aio_test
from tests.servicekit import MSISDN, PAN_CREDIT, PAN_DEBIT, funded, make_service, shutdown


async def service(stack):
    return await make_service(stack["database_url"], sessions_url=stack["sessions_url"],
                              prefix=stack.get("prefix", "tp:"))


async def with_credit_card_money(svc):
    pin = await funded(svc, amount=2000)                                 # cash: withdrawable
    assert (await svc.bind_card(MSISDN, PAN_CREDIT, "2912", channel="sms")).outcome is Outcome.OK
    assert (await svc.topup(MSISDN, 3000, channel="sms", key="cz")).outcome is Outcome.OK   # consumption-only
    await svc.unbind_card(MSISDN, channel="sms")
    assert (await svc.bind_card(MSISDN, PAN_DEBIT, "2912", channel="sms")).outcome is Outcome.OK
    return pin


@aio_test
async def test_close_waits_while_consumption_only_money_remains(stack):
    svc = await service(stack)
    pin = await with_credit_card_money(svc)
    debit = svc.bank.cards[svc.bank.token(PAN_DEBIT)].balance
    r = await svc.close(MSISDN, pin, channel="sms", key="xh-1")
    assert r.outcome is Outcome.NOT_WITHDRAWABLE and r.params["withdrawable"] == 2000
    b = await svc.balance(MSISDN, channel="t")
    assert b.outcome is Outcome.OK and b.balance == 5000 and b.params["status"] == "active"
    assert svc.bank.cards[svc.bank.token(PAN_DEBIT)].balance == debit
    assert await svc.ledger.get_operation("xh-1") is None
    # still spendable; once spent, the close returns the rest to the card
    assert (await svc.pay(MSISDN, "M001", 3000, pin, channel="sms")).outcome is Outcome.OK
    r = await svc.close(MSISDN, pin, channel="sms", key="xh-2")
    assert r.outcome is Outcome.OK and r.amount == 2000
    assert svc.bank.cards[svc.bank.token(PAN_DEBIT)].balance == debit + 2000
    assert (await svc.balance(MSISDN, channel="t")).outcome is Outcome.NO_ACCOUNT
    assert await svc.check_books() == []
    await shutdown(svc)


@aio_test
async def test_xh_reply_says_what_can_leave(stack):
    svc = await service(stack)
    conv = Conversation(svc)
    pin = await with_credit_card_money(svc)
    await conv.handle(MSISDN, "XH")
    reply = " ".join(await conv.handle(MSISDN, pin))
    assert "20.00" in reply and "信用卡" in reply, reply
    assert (await svc.balance(MSISDN, channel="t")).balance == 5000
    await shutdown(svc)
