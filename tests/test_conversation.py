"""The SMS conversation: text in, replies out, against a real service."""
import re


from telecom_pay.commands.conversation import Conversation
from tests.aio import aio_test
from tests.servicekit import CHOSEN_PIN, MSISDN, OTHER, PAN_DEBIT, make_service, shutdown




async def conv_for(stack):
    svc = await make_service(stack["database_url"], sessions_url=stack["sessions_url"],
                             prefix=stack.get("prefix", "tp:"))
    return Conversation(svc), svc


def pin_in(messages):
    found = re.findall(r"(?<!\d)(\d{6})(?!\d)", " ".join(messages))
    assert found, messages
    return found[0]


def ref_in(messages):
    found = re.findall(r"\bT[2-9A-HJ-NP-Z]{7}\b", " ".join(messages))
    assert found, messages
    return found[0]


async def opened(conv, svc, msisdn=MSISDN, cash=10_000):
    kt = await conv.handle(msisdn, "KT")
    assert any("A" in m for m in kt)
    initial = pin_in(await conv.handle(msisdn, "A"))
    assert "密码已修改" in " ".join(await conv.handle(msisdn, f"MM {initial} {CHOSEN_PIN}"))
    pin = CHOSEN_PIN
    if cash:
        await svc.fund_agent("AG001", cash, key=f"f-{msisdn}", operator="test")
        await svc.cash_in("AG001", msisdn, cash, key=f"c-{msisdn}")
    return pin


@aio_test
async def test_kt_a_ye_zf_pin_mx(stack):
    conv, svc = await conv_for(stack)
    replies = await conv.handle("13800138000", "KT")
    assert len(replies) == 1 and "A" in replies[0]
    welcome = await conv.handle("13800138000", "a")
    assert len(welcome) >= 2
    initial = pin_in(welcome)
    await svc.fund_agent("AG001", 10_000, operator="test")
    await svc.cash_in("AG001", MSISDN, 10_000)
    assert "100.00" in " ".join(await conv.handle(MSISDN, "YE"))
    # the initial PIN travelled by SMS: nothing is spent with it, no PIN is asked for
    refused = " ".join(await conv.handle(MSISDN, "ZF M001 12.50"))
    assert "MM" in refused and "12.50" not in refused
    assert "MM" in " ".join(await conv.handle(MSISDN, "TX 10"))
    assert "密码已修改" in " ".join(await conv.handle(MSISDN, f"MM {initial} {CHOSEN_PIN}"))
    pin = CHOSEN_PIN
    ask = await conv.handle(MSISDN, "ZF M001 12.50")
    assert "12.50" in ask[0] and "福彩中心" in ask[0]
    paid = await conv.handle(MSISDN, pin)
    text = " ".join(paid)
    assert "12.50" in text and "87.50" in text and "福彩中心" in text
    ref = ref_in(paid)
    # the same PIN again pays nothing: nothing is pending
    again = await conv.handle(MSISDN, pin)
    assert "87.50" not in " ".join(again) and ref not in " ".join(again)
    assert (await svc.balance(MSISDN, channel="t")).balance == 8750
    stmt = " ".join(await conv.handle(MSISDN, "MX"))
    assert "12.50" in stmt and "100.00" in stmt
    await shutdown(svc)


@aio_test
async def test_english_and_wrong_pin_retry_and_cancel(stack):
    conv, svc = await conv_for(stack)
    pin = await opened(conv, svc)
    assert "English" in " ".join(await conv.handle(MSISDN, "LANG EN")) or \
        await conv.language(MSISDN) == "en"
    assert await conv.language(MSISDN) == "en"
    ask = " ".join(await conv.handle(MSISDN, "pay m001 10"))
    assert "PIN" in ask
    wrong = "000000" if pin != "000000" else "111111"
    bad = " ".join(await conv.handle(MSISDN, wrong))
    assert "2" in bad                                   # attempts left
    ok = " ".join(await conv.handle(MSISDN, pin))       # still pending: the right PIN pays
    assert "10.00" in ok and "90.00" in ok
    await conv.handle(MSISDN, "SEND 13900139000 5")     # recipient has no account
    assert (await svc.balance(MSISDN, channel="t")).balance == 9000
    await conv.handle(MSISDN, "TX 5")
    cancelled = " ".join(await conv.handle(MSISDN, "N"))
    nothing = " ".join(await conv.handle(MSISDN, "N"))
    assert "cancel" in cancelled.lower() and cancelled != nothing
    assert nothing == " ".join(await conv.handle(MSISDN, pin))  # cancelled: the PIN does nothing
    assert (await svc.balance(MSISDN, channel="t")).balance == 9000
    await shutdown(svc)


@aio_test
async def test_stray_confirmation_and_pin_and_garbage(stack):
    conv, svc = await conv_for(stack)
    for text in ("A", "123456", "", "  ", "ZF", "ZF M001 1.234", "hello there", "💸💸", "ＹＥ"):
        replies = await conv.handle(MSISDN, text)
        assert replies and all(r.strip() for r in replies), text
    await shutdown(svc)


@aio_test
async def test_send_topup_withdraw_airtime_freeze_close(stack):
    conv, svc = await conv_for(stack)
    pin = await opened(conv, svc)
    await opened(conv, svc, OTHER, cash=0)
    notes = []
    svc.add_notifier(lambda m, r: notes.append((m, r)))
    await conv.handle(MSISDN, "ZZ 13900139000 20")
    sent = " ".join(await conv.handle(MSISDN, pin))
    assert "20.00" in sent and "80.00" in sent
    assert notes and notes[-1][0] == OTHER
    received = " ".join(await conv.render_for(OTHER, notes[-1][1]))
    assert "20.00" in received
    await svc.bind_card(MSISDN, PAN_DEBIT, "2912", channel="t")
    await conv.handle(MSISDN, "充值50")
    topped = " ".join(await conv.handle(MSISDN, pin))
    assert "50.00" in topped and "130.00" in topped
    await conv.handle(MSISDN, "TX 30")
    withdrawn = " ".join(await conv.handle(MSISDN, pin))
    assert "30.00" in withdrawn
    assert (await svc.balance(MSISDN, channel="t")).balance == 9900      # 130 - 30 - 1.00 fee
    await conv.handle(MSISDN, "HF 10")
    assert "10.00" in " ".join(await conv.handle(MSISDN, pin))
    assert (await svc.balance(MSISDN, channel="t")).balance == 8900
    await conv.handle(MSISDN, "DJ")
    frozen = " ".join(await conv.handle(MSISDN, "ZF M001 1"))
    assert frozen and (await svc.balance(MSISDN, channel="t")).params["status"] == "frozen"
    await conv.handle(MSISDN, "JD")
    await conv.handle(MSISDN, pin)
    assert (await svc.balance(MSISDN, channel="t")).params["status"] == "active"
    await conv.handle(MSISDN, "MM %s 583920" % pin)
    await conv.handle(MSISDN, "XH")
    closed = " ".join(await conv.handle(MSISDN, "583920"))
    assert "89.00" in closed
    assert (await svc.balance(MSISDN, channel="t")).outcome.value == "no_account"
    assert await svc.check_books() == []
    await shutdown(svc)


@aio_test
async def test_n_after_kt_cancels_the_opening(stack):
    conv, svc = await conv_for(stack)
    await conv.handle(MSISDN, "KT")
    cancelled = " ".join(await conv.handle(MSISDN, "N"))
    assert (await svc.balance(MSISDN, channel="t")).outcome.value == "no_account"
    confirm = " ".join(await conv.handle(MSISDN, "A"))          # nothing to confirm any more
    assert cancelled and confirm
    assert (await svc.balance(MSISDN, channel="t")).outcome.value == "no_account"
    assert "A" in " ".join(await conv.handle(MSISDN, "KT"))     # and KT starts again
    await shutdown(svc)


@aio_test
async def test_a_recorded_pin_answer_answered_again_recovers_its_result(stack):
    """The channel answers a recorded message again after a restart; its
    stored text is masked. The payment it booked is found by the message's
    key and reported, never booked twice; a PIN answer that booked nothing
    asks for the PIN again; credentials are marked secret."""
    conv, svc = await conv_for(stack)
    kt = await conv.handle(MSISDN, "KT")
    assert not kt.secret
    creds = await conv.handle(MSISDN, "A")
    assert creds.secret
    assert "密码已修改" in " ".join(await conv.handle(MSISDN, f"MM {pin_in(creds)} {CHOSEN_PIN}"))
    pin = CHOSEN_PIN
    await svc.fund_agent("AG001", 10_000, key="f", operator="test")
    await svc.cash_in("AG001", MSISDN, 10_000, key="c")
    await conv.handle(MSISDN, "ZF M001 10")
    paid = await conv.handle(MSISDN, pin, message_id=7)
    again = await conv.handle(MSISDN, "******", message_id=7, again=True)
    assert ref_in(again) == ref_in(paid) and "90.00" in again[0] and not again.secret
    assert (await svc.balance(MSISDN, channel="t")).balance == 9000
    await conv.answered(7)
    assert "90.00" in (await conv.handle(MSISDN, "******", message_id=7, again=True))[0]   # the key alone suffices
    await conv.handle(MSISDN, "ZF M001 5")
    wrong = "000000" if pin != "000000" else "111111"
    await conv.handle(MSISDN, wrong, message_id=8)               # its reply was never recorded
    asked = await conv.handle(MSISDN, "******", message_id=8, again=True)
    assert "5.00" in asked[0] and not re.search(r"\bT[2-9A-HJ-NP-Z]{7}\b", asked[0])
    assert "85.00" in (await conv.handle(MSISDN, pin, message_id=9))[0]
    nothing = await conv.handle(MSISDN, "******", message_id=10, again=True)
    assert nothing == await conv.handle(MSISDN, "123456")          # nothing pending
    assert await conv.handle(MSISDN, "******", message_id=11) != nothing   # typed, not stored: no recovery
    await shutdown(svc)


@aio_test
async def test_statement_dates_are_local_days_of_the_configured_zone(database_url):
    """A cash-in at 00:30 UTC on 15 June is 14 June in New York (and 15 June
    in Shanghai): MX shows the platform's own zone's date."""
    from datetime import datetime, timezone
    from tests.clockkit import TestClock
    clock = TestClock(datetime(2026, 6, 15, 0, 30, tzinfo=timezone.utc))
    svc = await make_service(database_url, clock=clock, overrides={"platform.timezone": "America/New_York"})
    conv = Conversation(svc)
    await opened(conv, svc)
    stmt = " ".join(await conv.handle(MSISDN, "MX"))
    assert "06-14" in stmt and "06-15" not in stmt and "100.00" in stmt
    await shutdown(svc)


@aio_test
async def test_an_a_whose_reply_was_lost_gets_new_credentials_once_it_is_answered_again(stack):
    """The process died after `A` (message 5) opened the account and before
    its reply, the only copy of the initial PIN, was recorded. Answered again
    after the restart, it issues new credentials (the lost ones never left);
    any other `A`, or one answered again after the PIN was changed, does not."""
    conv, svc = await conv_for(stack)
    await conv.handle(MSISDN, "KT", message_id=4)
    lost = pin_in(await conv.handle(MSISDN, "A", message_id=5))        # its reply never recorded
    again = await conv.handle(MSISDN, "A", message_id=5, again=True)
    assert again.secret
    fresh = pin_in(again)
    assert "MM" in " ".join(again)
    other = await conv.handle(MSISDN, "A", message_id=6, again=True)  # a second A: nothing new issued
    assert not re.search(r"(?<!\d)\d{6}(?!\d)", " ".join(other))
    if fresh != lost:
        assert "密码已修改" not in " ".join(await conv.handle(MSISDN, f"MM {lost} {CHOSEN_PIN}"))
    assert "密码已修改" in " ".join(await conv.handle(MSISDN, f"MM {fresh} {CHOSEN_PIN}"))
    after = await conv.handle(MSISDN, "A", message_id=5, again=True)  # the PIN was changed: they had it
    assert not re.search(r"(?<!\d)\d{6}(?!\d)", " ".join(after))
    await shutdown(svc)


@aio_test
async def test_a_recovered_receipt_tells_the_balance_right_after_its_payment(stack):
    """Recovered after a later payment, a receipt still names the balance
    the original reply would have told, not today's."""
    conv, svc = await conv_for(stack)
    pin = await opened(conv, svc)
    await conv.handle(MSISDN, "ZF M001 10")
    first = await conv.handle(MSISDN, pin, message_id=7)         # its reply was never recorded
    assert "90.00" in first[0]
    await conv.handle(MSISDN, "ZF M001 5")
    assert "85.00" in (await conv.handle(MSISDN, pin, message_id=8))[0]
    again = await conv.handle(MSISDN, "******", message_id=7, again=True)
    assert ref_in(again) == ref_in(first) and "90.00" in again[0] and "85.00" not in again[0]
    await shutdown(svc)
