"""USSD end to end: the daemon and the SMSC simulator over real SMPP
sockets on 127.0.0.1, the menu driven from a simulated handset."""
from __future__ import annotations

import asyncio
import sys

import sqlalchemy as sa

from channels.smpp import pdu as P
from channels.smpp.text import is_gsm
from telecom_pay.aio import wait_deferred
from telecom_pay.ledger.tables import operations
from telecom_pay.outcomes import Outcome, Result
from tests.aio import aio_test
from tests.bankdouble import InProcessBank
from tests.e2ekit import PIN_RE, REF_RE, eventually, reply, say, settings_for, start_daemon, start_smsc, stop_daemon
from tests.ledgerkit import assert_sound
from tests.servicekit import CHOSEN_PIN, PAN_DEBIT, funded

MSISDN = "8613800138000"
PHONE = "13800138000"


async def up(database_url: str, *, sessions_url: str = "memory://", prefix: str = "tp:", **ussd):
    sim, port = await start_smsc()
    bank = InProcessBank()
    bank.add_card(PAN_DEBIT, balance=100_000)
    extra = {f"sms.ussd.{k}": v for k, v in ussd.items()}
    daemon = await start_daemon(settings_for(database_url, port, sessions_url=sessions_url, prefix=prefix, **extra),
                                bank=bank)
    return sim, daemon, bank


async def down(sim, daemon) -> None:
    await stop_daemon(daemon)
    await wait_deferred(sim.stop())


async def dial(phone, code: str = "*188#") -> str:
    return await wait_deferred(phone.dial_ussd(code, timeout=10))


async def key(phone, text: str) -> str:
    return await wait_deferred(phone.ussd_reply(text, timeout=10))


def fits(page: str) -> bool:
    return len(page) <= (182 if is_gsm(page) else 70)


async def pay_operations(svc) -> int:
    async def q(conn):
        return (await conn.execute(sa.select(sa.func.count()).select_from(operations)
                                   .where(operations.c.kind == "pay"))).scalar()
    return await svc.ledger.read(q)


async def to_pin_page(phone, amount: str = "8") -> str:
    """From a fresh dial to the PIN page of a payment to the first merchant."""
    assert "4" in await dial(phone)
    assert "福彩中心" in await key(phone, "4")            # the merchants, from config
    await key(phone, "1")                                  # M001: the amount is asked
    page = await key(phone, amount)
    assert "8.00" in page and phone.ussd_session.open      # the PIN is asked
    return page


@aio_test
async def test_menu_opens_an_account_tops_up_and_pays_with_the_pin(stack):
    sim, daemon, bank = await up(stack["database_url"], sessions_url=stack.get("sessions_url", "memory://"),
                                 prefix=stack.get("prefix", "tp:"))
    phone = sim.handset(PHONE)
    svc = daemon.core.service
    pages = [await dial(phone)]                            # no account yet: the "new" menu
    pages.append(await key(phone, "1"))                    # open an account: the agreement
    assert "1" in pages[-1] and phone.ussd_session.open
    pages.append(await key(phone, "1"))                    # accept
    initial = PIN_RE.search(await reply(phone, expect="MM")).group(1)   # credentials by SMS only
    assert initial not in pages[-1]
    await key(phone, "00")                                 # home: now the account holder's menu
    await key(phone, "7")
    await key(phone, "1")
    pages.append(await key(phone, f"{initial} {CHOSEN_PIN}"))
    assert "已修改" in pages[-1]
    assert (await svc.bind_card(MSISDN, PAN_DEBIT, "2912", channel="test")).ok
    await key(phone, "00")
    await key(phone, "3")                                  # top up
    pages.append(await key(phone, "100"))
    assert "100.00" in pages[-1]
    topped = await key(phone, CHOSEN_PIN)
    assert REF_RE.search(topped) and bank.cards[bank.token(PAN_DEBIT)].balance == 90_000
    await key(phone, "00")
    await key(phone, "4")                                  # pay the first merchant
    await key(phone, "1")
    pages.append(await key(phone, "12.50"))
    assert "12.50" in pages[-1] and "福彩中心" in pages[-1]
    paid = await key(phone, CHOSEN_PIN)
    assert REF_RE.search(paid) and "87.50" in paid
    assert (await svc.balance(MSISDN, channel="t")).balance == 8750
    assert all(fits(p) for p in pages + [topped, paid])
    assert phone.hang_up()                                 # the red key: a user abort reaches the daemon
    ussd = daemon.components["sms"].ussd
    await eventually(lambda: ussd.stats["releases"] == 1 and len(ussd.sessions) == 0)
    assert await svc.check_books() == []
    stored = await inbound_texts(svc)
    assert "1" in stored and not [t for t in stored if CHOSEN_PIN in t or initial in t]   # no PIN kept
    await down(sim, daemon)


async def inbound_texts(svc) -> list[str]:
    from telecom_pay.messaging import inbound_messages

    async def q(conn):
        return [r.text for r in await conn.execute(sa.select(inbound_messages.c.text))]
    return await svc.ledger.read(q)


@aio_test
async def test_timeout_in_the_middle_of_a_payment_moves_no_money(sqlite_url):
    sim, daemon, _ = await up(sqlite_url, timeout=1.0)
    svc = daemon.core.service
    await funded(svc, MSISDN, 5000)
    phone = sim.handset(PHONE)
    await to_pin_page(phone)
    closing = await wait_deferred(phone.wait_for_ussd(10))  # nobody types the PIN
    assert "超时" in closing and phone.ussd_screens[-1].ended and not phone.ussd_session.open
    ussd = daemon.components["sms"].ussd
    assert ussd.stats["timeouts"] == 1 and len(ussd.sessions) == 0
    # the PIN, too late, by SMS: the payment was dropped with the session
    assert await say(phone, CHOSEN_PIN, expect="没有待确认的操作")
    assert (await svc.balance(MSISDN, channel="t")).balance == 5000
    assert await pay_operations(svc) == 0
    await assert_sound(svc.ledger)
    await down(sim, daemon)


@aio_test
async def test_network_release_and_hang_up_mid_payment_move_no_money(sqlite_url):
    sim, daemon, _ = await up(sqlite_url)
    svc = daemon.core.service
    await funded(svc, MSISDN, 5000)
    phone = sim.handset(PHONE)
    ussd = daemon.components["sms"].ussd
    await to_pin_page(phone)
    assert sim.release_ussd(PHONE)                         # the network ends the dialogue (0x20)
    await eventually(lambda: ussd.stats["releases"] == 1 and len(ussd.sessions) == 0)
    await to_pin_page(phone)
    assert phone.hang_up()                                 # the subscriber does (0x81)
    await eventually(lambda: ussd.stats["releases"] == 2 and len(ussd.sessions) == 0)
    assert await say(phone, CHOSEN_PIN, expect="没有待确认的操作")
    assert (await svc.balance(MSISDN, channel="t")).balance == 5000 and await pay_operations(svc) == 0
    releases = [r for r in sim.traffic.records(1000, command="deliver_sm") if r.ussd_service_op in (0x20, 0x81)]
    assert len(releases) == 2
    assert not [r for r in sim.traffic.records(1000, command="submit_sm")
                if r.ussd_service_op == P.USSD_PSSR_RESP]    # a released session gets no more pages
    await down(sim, daemon)


@aio_test
async def test_a_redelivered_answer_is_answered_once_and_the_same_key_again_is_new(sqlite_url):
    sim, daemon, _ = await up(sqlite_url)
    svc = daemon.core.service
    await funded(svc, MSISDN, 5000)
    phone = sim.handset(PHONE)
    sms = daemon.components["sms"]
    await dial(phone)
    await key(phone, "4")
    sim.faults.add("duplicate", count=1)                   # the SMSC delivers the next answer twice
    await key(phone, "1")                                  # M001
    await eventually(lambda: sms.stats["duplicates"] == 1)
    await asyncio.sleep(0.3)
    pages = [r for r in sim.traffic.records(1000, command="submit_sm") if r.ussd_service_op is not None]
    assert len(pages) == 3                                 # home, merchants, the amount: not answered twice
    assert "1.00" in await key(phone, "1")                 # the same key on the next page is a new answer
    await down(sim, daemon)


@aio_test
async def test_unknown_code_gets_an_end_text(sqlite_url):
    sim, daemon, _ = await up(sqlite_url, codes={"*188#": "home", "*188*1#": "balance"})
    phone = sim.handset(PHONE)
    text = await dial(phone, "*199#")
    assert "*199#" in text and "*188#" in text and not phone.ussd_session.open
    await funded(daemon.core.service, MSISDN, 5000)
    text = await dial(phone, "*188*1#")                    # straight into a node of the menu
    assert "50.00" in text
    await down(sim, daemon)


@aio_test
async def test_typed_commands_keep_working_in_a_session(sqlite_url):
    sim, daemon, _ = await up(sqlite_url)
    svc = daemon.core.service
    await funded(svc, MSISDN, 5000)
    phone = sim.handset(PHONE)
    await dial(phone)
    assert "50.00" in await key(phone, "YE")
    assert "8.00" in await key(phone, "ZF M001 8")
    paid = await key(phone, CHOSEN_PIN)
    assert REF_RE.search(paid) and "42.00" in paid
    assert (await svc.balance(MSISDN, channel="t")).balance == 4200
    await down(sim, daemon)


@aio_test
async def test_a_long_statement_is_paged_within_the_limit(sqlite_url):
    sim, daemon, _ = await up(sqlite_url)
    svc = daemon.core.service
    pin = await funded(svc, MSISDN, 50_000)
    for i in range(12):
        assert (await svc.pay(MSISDN, "M001", 100 + i, pin, channel="test", key=f"p{i}")).ok
    phone = sim.handset(PHONE)
    await dial(phone)
    first = await key(phone, "2")
    second = await key(phone, "99")
    assert fits(first) and fits(second) and first != second
    assert "99" in first                                   # "more" is offered
    assert phone.ussd_session.open
    await down(sim, daemon)


# ------------------------------------------------------------ push

@aio_test
async def test_agent_opening_pushes_the_agreement_as_a_page(sqlite_url):
    sim, daemon, _ = await up(sqlite_url, push=True)
    phone = sim.handset(PHONE)
    svc = daemon.core.service
    shown = phone.wait_for_ussd(10)
    r = await svc.agent_open("AG001", MSISDN, holder_name="Li Lei", id_type="ID", id_number="1101")
    assert r.ok
    page = await wait_deferred(shown)                      # no dial: the platform opened the session
    assert "1" in page and phone.ussd_session.open
    await key(phone, "1")                                  # accept
    assert PIN_RE.search(await reply(phone, expect="MM"))  # credentials by SMS
    assert not [m for m in phone.inbox if "A" in m.text.split() and "MM" not in m.text]   # no agreement SMS
    assert (await svc.balance(MSISDN, channel="t")).ok
    await down(sim, daemon)


@aio_test
async def test_push_falls_back_to_sms(sqlite_url):
    sim, daemon, _ = await up(sqlite_url, push=True, timeout=1.0)
    svc = daemon.core.service
    ussd = daemon.components["sms"].ussd
    first = sim.handset(PHONE)
    sim.faults.add("refuse_push", count=1)                 # an SMSC without push
    assert (await svc.agent_open("AG001", MSISDN, holder_name="Li Lei", id_type="ID", id_number="1101")).ok
    agreement = await reply(first, timeout=10)             # the SMS instead
    assert "A" in agreement and first.ussd_screens == []
    assert ussd.stats["push_fallbacks"] == 1

    second = sim.handset("13900139000")
    shown = second.wait_for_ussd(10)
    assert (await svc.agent_open("AG001", "8613900139000", holder_name="Han Mei", id_type="ID",
                                 id_number="1102")).ok
    await wait_deferred(shown)                             # pushed, and nobody answers it
    agreement = await reply(second, timeout=10)
    assert "A" in agreement and ussd.stats["push_fallbacks"] == 2
    assert "超时" in second.ussd_screens[-1].text and not second.ussd_session.open
    initial = PIN_RE.search(await say(second, "A", expect="MM")).group(1)   # the SMS path still opens it
    assert initial
    await down(sim, daemon)


@aio_test
async def test_pending_payment_notified_is_pushed_and_paid_by_the_page(sqlite_url):
    sim, daemon, _ = await up(sqlite_url, push=True)
    svc = daemon.core.service
    await funded(svc, MSISDN, 5000)
    phone = sim.handset(PHONE)
    assert await say(phone, "ZF M001 8", expect="8.00")    # held, the PIN asked by SMS
    shown = phone.wait_for_ussd(10)
    await svc.notify(MSISDN, Result(Outcome.PIN_REQUIRED, amount=800))   # e.g. a reminder
    page = await wait_deferred(shown)
    assert "8.00" in page
    paid = await key(phone, CHOSEN_PIN)
    assert REF_RE.search(paid) and (await svc.balance(MSISDN, channel="t")).balance == 4200
    await down(sim, daemon)


@aio_test
async def test_a_pushed_pin_page_that_fails_leaves_the_payment_to_the_sms(sqlite_url):
    sim, daemon, _ = await up(sqlite_url, push=True, timeout=1.0)
    svc = daemon.core.service
    await funded(svc, MSISDN, 5000)
    phone = sim.handset(PHONE)
    ussd = daemon.components["sms"].ussd
    assert await say(phone, "ZF M001 8", expect="8.00")
    sim.faults.add("refuse_push", count=1)
    await svc.notify(MSISDN, Result(Outcome.PIN_REQUIRED, amount=800))
    assert await reply(phone, expect="支付密码")             # refused: the reminder comes by SMS
    shown = phone.wait_for_ussd(10)
    await svc.notify(MSISDN, Result(Outcome.PIN_REQUIRED, amount=800))
    await wait_deferred(shown)                             # pushed, and left unanswered
    await eventually(lambda: ussd.stats["timeouts"] == 1)
    assert await reply(phone, expect="支付密码") and ussd.stats["push_fallbacks"] == 2
    paid = await say(phone, CHOSEN_PIN, expect="42.00")    # the payment is still pending: the PIN pays it
    assert REF_RE.search(paid) and (await svc.balance(MSISDN, channel="t")).balance == 4200
    await down(sim, daemon)


# ------------------------------------------------------------ the handset CLI

async def handset_cli(control: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "telecom_pay.cli", "handset", "--control", control, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


@aio_test
async def test_handset_dial_keys_exit_codes(sqlite_url):
    sim, daemon, _ = await up(sqlite_url)
    await funded(daemon.core.service, MSISDN, 5000)
    port = await wait_deferred(sim.listen_http("tcp:0:interface=127.0.0.1"))
    control = f"http://127.0.0.1:{port.getHost().port}"
    code, out, err = await handset_cli(control, "dial", PHONE, "*188#", "--keys", "1")
    assert code == 0, err
    assert "余额" in out and "50.00" in out                # the home page, then the balance page
    code, out, _ = await handset_cli(control, "dial", PHONE, "*188#", "--keys", "4,1,8,0")
    assert code == 0 and "8.00" in out
    sim.faults.add("ussd_timeout", seconds=0, count=1)   # the first page times out at once
    code, out, err = await handset_cli(control, "dial", PHONE, "*188#", "--keys", "1,1")
    assert code == 1 and "timed the session out" in err, (out, err)
    code, out, err = await handset_cli(control, "ussd", PHONE, "*199#", "--keys", "1")   # the old name
    assert code == 0 and "*199#" in out
    assert (await daemon.core.service.balance(MSISDN, channel="t")).balance == 5000
    await down(sim, daemon)
