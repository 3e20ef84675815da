"""The rules of a message's path (DESIGN section 3) over real SMPP against
the SMSC simulator: duplicates against a peer that sends no TP-MR, senders
that are not mobile numbers, and secrets kept out of the tables and logs."""
import asyncio
import re
from datetime import timedelta

import sqlalchemy as sa
from twisted.logger import formatEvent, globalLogPublisher

from telecom_pay.aio import wait_deferred
from telecom_pay.messaging import inbound_messages, outbox
from tests.aio import aio_test
from tests.bankdouble import InProcessBank
from tests.e2ekit import PIN_RE, REF_RE, eventually, reply, say, settings_for, start_daemon, start_smsc, stop_daemon
from tests.servicekit import CHOSEN_PIN, PAN_DEBIT

MSISDN = "8613800138000"


async def up(stack, **smsc):
    sim, port = await start_smsc(**smsc)
    bank = InProcessBank()
    bank.add_card(PAN_DEBIT, balance=100_000)
    settings = settings_for(stack["database_url"], port, sessions_url=stack.get("sessions_url", "memory://"),
                            prefix=stack.get("prefix", "tp:"))
    daemon = await start_daemon(settings, bank=bank)
    return sim, daemon


async def down(sim, daemon):
    await stop_daemon(daemon)
    await wait_deferred(sim.stop())


async def open_funded(sim, daemon, amount=5000):
    phone = sim.handset("13800138000")
    assert "A" in await say(phone, "KT")
    await wait_deferred(phone.send("A"))
    initial = PIN_RE.search(await reply(phone, expect="MM")).group(1)
    pin = CHOSEN_PIN                                        # the initial PIN moves no money
    assert "密码已修改" in await say(phone, f"MM {initial} {pin}")
    svc = daemon.core.service
    await svc.fund_agent("AG001", 100_000, operator="test")
    await svc.cash_in("AG001", MSISDN, amount)
    await reply(phone, expect="现金存入")                  # the cash-in notice
    return phone, pin


def later(sms, seconds: float) -> None:
    """Move the message record's clock on (what the dedup window is measured by)."""
    clock = sms.messages.clock
    sms.messages.clock = lambda: clock() + timedelta(seconds=seconds)


async def rows(daemon, table):
    async def q(conn):
        return (await conn.execute(sa.select(table).order_by(table.c.id))).all()
    return await daemon.core.ledger.read(q)


@aio_test
async def test_repeats_without_tp_mr_are_new_messages(stack):
    """No user_message_reference: the same text a minute apart is answered
    twice, and the same payment with the same PIN two minutes apart pays twice."""
    sim, daemon = await up(stack, message_reference=False)
    sms = daemon.components["sms"]
    phone, pin = await open_funded(sim, daemon)
    assert "50.00" in await say(phone, "YE")
    later(sms, 60)
    assert "50.00" in await say(phone, "YE")
    for balance in ("40.00", "30.00"):
        later(sms, 30)
        assert "10.00" in await say(phone, "ZF M001 10")
        later(sms, 30)
        paid = await say(phone, pin)
        assert REF_RE.search(paid) and balance in paid
    assert (await daemon.core.service.balance(MSISDN, channel="t")).balance == 3000
    assert sms.stats["duplicates"] == 0
    await down(sim, daemon)


@aio_test
async def test_redeliveries_without_tp_mr_run_nothing_twice(stack):
    """The SMSC re-delivers after it missed a deliver_sm_resp (the ack is
    lost) and right after an ack (a duplicate): each runs nothing twice."""
    sim, daemon = await up(stack, message_reference=False, response_timeout=1.0, redelivery_delay=0.2)
    sms = daemon.components["sms"]
    phone, pin = await open_funded(sim, daemon)
    assert "10.00" in await say(phone, "ZF M001 10")
    sim.faults.add("duplicate", count=1)
    paid = await say(phone, pin, expect="40.00")
    await eventually(lambda: sms.stats["duplicates"] >= 1)
    later(sms, 30)                                            # out of the re-delivery window
    assert "5.00" in await say(phone, "ZF M001 5")
    sim.faults.add("drop", duration=2.0, direction="in")     # what we send is lost: our deliver_sm_resp too
    await wait_deferred(phone.send(pin))                      # acked on one of the SMSC's resends
    paid_again = await reply(phone, expect="35.00", timeout=20)
    await eventually(lambda: sms.stats["duplicates"] >= 2)
    await eventually(lambda: _no_unprocessed(sms))
    assert (await daemon.core.service.balance(MSISDN, channel="t")).balance == 3500
    receipts = [m.text for m in phone.inbox if REF_RE.search(m.text) and "福彩中心" in m.text]
    assert receipts == [paid, paid_again]
    await down(sim, daemon)


async def _no_unprocessed(sms) -> bool:
    return await sms.messages.unprocessed("sms") == []


@aio_test
async def test_senders_that_are_not_mobile_numbers_are_recorded_failed_once(sqlite_url):
    from channels.smpp.text import encode_text
    sim, daemon = await up({"database_url": sqlite_url})
    sms = daemon.components["sms"]
    sms.unanswered_sweep = 0.2
    failures = []

    def observe(event):
        # answering failed (the traceback that used to repeat every sweep)
        if event.get("log_failure") is not None and event.get("log_format", "").startswith("answering {msisdn}"):
            failures.append(formatEvent(event))
    globalLogPublisher.addObserver(observe)
    try:
        part = encode_text("YE")
        for ton, source in ((1, "10086"), (5, "BANK"), (1, "")):
            await wait_deferred(sim.deliver_mo(None, [dict(
                source_addr_ton=ton, source_addr_npi=1, source_addr=source, dest_addr_ton=0, dest_addr_npi=1,
                destination_addr="10658888", esm_class=0, data_coding=part.data_coding,
                short_message=part.short_message)]))
        phone = sim.handset("13800138000")
        assert "A" in await say(phone, "KT")          # after them, a subscriber is answered as usual
        await asyncio.sleep(0.5)                       # sweeps would have run by now
    finally:
        globalLogPublisher.removeObserver(observe)
    inbound = await rows(daemon, inbound_messages)
    failed = [r for r in inbound if r.state == "failed"]
    assert sorted(r.msisdn for r in failed) == ["", "10086", "BANK"]
    assert all(r.error == "sender is not a mobile number" for r in failed)
    assert not sms._answer_failed and failures == []
    assert [r.text for r in await rows(daemon, outbox) if r.msisdn in ("", "10086", "BANK")] == []
    await down(sim, daemon)


@aio_test
async def test_no_pin_or_password_in_the_tables_or_the_log(stack):
    sim, daemon = await up(stack)
    logged = []

    def observe(event):
        logged.append(formatEvent(event) + repr(event.get("log_failure") or ""))
    globalLogPublisher.addObserver(observe)
    try:
        phone = sim.handset("13800138000")
        assert "A" in await say(phone, "KT")
        await wait_deferred(phone.send("A"))
        creds = await reply(phone, expect="MM")
        pin = PIN_RE.search(creds).group(1)
        password = re.search(r"(?:登录密码|password) ([A-Za-z0-9]+)", creds).group(1)
        secrets = {pin, password}
        svc = daemon.core.service
        await svc.fund_agent("AG001", 10_000, operator="test")
        await svc.cash_in("AG001", MSISDN, 5000)
        await reply(phone, expect="现金存入")
        new_pin = "258036"
        secrets |= {new_pin, "111111"}
        assert "密码已修改" in await say(phone, f"MM {pin} {new_pin}")   # the initial PIN moves no money
        assert "10.00" in await say(phone, "ZF M001 10")
        assert "40.00" in await say(phone, new_pin)
        assert "10.00" in await say(phone, "ZF M001 10")
        await say(phone, "111111")                          # a wrong PIN is a PIN too
        assert "30.00" in await say(phone, new_pin)
        sms = daemon.components["sms"]
        await eventually(lambda: _all_accepted(daemon))
    finally:
        globalLogPublisher.removeObserver(observe)
    stored = [" ".join(str(v) for v in r) for r in await rows(daemon, inbound_messages)]
    stored += [" ".join(str(v) for v in r) for r in await rows(daemon, outbox)]
    assert stored and not [s for s in stored for secret in secrets if secret in s]
    assert "******" in " ".join(stored) and "MM ****** ******" in " ".join(stored)
    credential_rows = [r for r in await rows(daemon, outbox) if r.secret]
    assert credential_rows and all(r.text == "" and r.message_ids for r in credential_rows)
    assert not [line for line in logged for secret in secrets if secret in line]
    assert sms.stats["mo"] >= 8
    await down(sim, daemon)


async def _all_accepted(daemon) -> bool:
    return all(r.state == "accepted" for r in await rows(daemon, outbox))


def crash_seam(database_url: str, on: bool) -> None:
    """While on, the database refuses every outbox row: the process stays
    up between the money commit and the reply record, as if it died there."""
    from telecom_pay.ledger import schema
    eng = sa.create_engine(schema.sync_url(database_url))
    sqlite = eng.dialect.name == "sqlite"
    with eng.begin() as c:
        if not on:
            c.execute(sa.text("DROP TRIGGER crash_seam" + ("" if sqlite else " ON outbox")))
        elif sqlite:
            c.execute(sa.text("CREATE TRIGGER crash_seam BEFORE INSERT ON outbox "
                              "BEGIN SELECT RAISE(ABORT, 'crash seam'); END"))
        else:
            c.execute(sa.text("CREATE FUNCTION crash_seam() RETURNS trigger AS "
                              "$$ BEGIN RAISE EXCEPTION 'crash seam'; END $$ LANGUAGE plpgsql"))
            c.execute(sa.text("CREATE TRIGGER crash_seam BEFORE INSERT ON outbox "
                              "FOR EACH ROW EXECUTE FUNCTION crash_seam()"))
    eng.dispose()


@aio_test
async def test_receipt_after_dying_between_the_payment_and_the_reply(stack):
    """The payment commits, the reply is never recorded, the process stops;
    the restarted daemon answers the recorded PIN with the original receipt
    (found by the key derived from the message), and nothing pays twice."""
    from telecom_pay.ledger.tables import operations
    sim, daemon = await up(stack)
    sms = daemon.components["sms"]
    phone, pin = await open_funded(sim, daemon)
    svc = daemon.core.service
    assert "10.00" in await say(phone, "ZF M001 10")
    crash_seam(stack["database_url"], True)
    try:
        await wait_deferred(phone.send(pin))                  # recorded and acknowledged
        await eventually(lambda: sms._answer_failed)          # the money committed, its reply did not
        assert (await svc.balance(MSISDN, channel="t")).balance == 4000
        await stop_daemon(daemon)
    finally:
        crash_seam(stack["database_url"], False)
    daemon = await start_daemon(daemon.settings, bank=InProcessBank())
    receipt = await reply(phone, expect="40.00", timeout=20)
    payments = [r for r in await rows(daemon, operations) if r.kind == "payment"]
    assert len(payments) == 1 and payments[0].ref in receipt and "10.00" in receipt
    assert (await daemon.core.service.balance(MSISDN, channel="t")).balance == 4000
    assert "nothing" not in receipt.lower() and await daemon.core.service.check_books() == []
    await down(sim, daemon)
