"""SMS end to end: the daemon and the SMSC simulator over real SMPP sockets
on 127.0.0.1, the daemon on SQLite + in-process sessions or on PostgreSQL +
Redis."""
import asyncio
import struct


from channels.smpp import pdu as P
from telecom_pay.aio import wait_deferred
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
    return sim, daemon, bank


async def down(sim, daemon):
    await stop_daemon(daemon)
    await wait_deferred(sim.stop())


async def open_account(phone) -> str:
    assert "A" in await say(phone, "KT")
    await wait_deferred(phone.send("A"))
    creds = await reply(phone, expect="MM")              # the initial PIN arrives by SMS
    await say(phone, f"MM {PIN_RE.search(creds).group(1)} {CHOSEN_PIN}", expect="支付密码已修改")   # and changed
    return CHOSEN_PIN


@aio_test
async def test_open_topup_pay_balance_statement(stack):
    sim, daemon, bank = await up(stack)
    phone = sim.handset("13800138000")
    pin = await open_account(phone)
    svc = daemon.core.service
    assert (await svc.bind_card(MSISDN, PAN_DEBIT, "2912", channel="test")).ok
    assert "100.00" in await say(phone, "CZ 100")                     # asks for the PIN
    topped = await say(phone, pin, expect="100.00")
    assert REF_RE.search(topped) and bank.cards[bank.token(PAN_DEBIT)].balance == 90_000
    prompt = await say(phone, "ZF M001 12.50")
    assert "12.50" in prompt and "福彩中心" in prompt
    paid = await say(phone, pin)
    assert REF_RE.search(paid) and "12.50" in paid and "87.50" in paid
    assert "87.50" in await say(phone, "YE")
    stmt = await say(phone, "MX")
    assert "12.50" in stmt and "100.00" in stmt
    assert await svc.check_books() == []
    await down(sim, daemon)


@aio_test
async def test_long_chinese_reply_arrives_in_parts(sqlite_url):
    sim, daemon, _ = await up({"database_url": sqlite_url})
    phone = sim.handset("13800138000")
    pin = await open_account(phone)
    svc = daemon.core.service
    await svc.fund_agent("AG001", 100_000, operator="test")
    await svc.cash_in("AG001", MSISDN, 50_000)
    for i in range(4):
        await svc.pay(MSISDN, "M001", 100 + i, pin, channel="test", key=f"p{i}")
    text = await say(phone, "MX", expect="明细")
    (message,) = [m for m in phone.inbox if m.text == text]
    assert message.text == text and len(message.parts) >= 2 and message.data_coding == 8
    assert text.count("福彩中心") == 4                          # every line survived reassembly
    await down(sim, daemon)


@aio_test
async def test_duplicate_mo_moves_money_once(stack):
    sim, daemon, _ = await up(stack)
    phone = sim.handset("13800138000")
    pin = await open_account(phone)
    svc = daemon.core.service
    await svc.fund_agent("AG001", 10_000, operator="test")
    await svc.cash_in("AG001", MSISDN, 5000)
    await say(phone, "ZF M001 10")
    sim.faults.add("duplicate", count=1)
    paid = await say(phone, pin, expect="40.00")
    await eventually(lambda: daemon.components["sms"].stats["duplicates"] >= 1)   # the re-delivery arrived
    await asyncio.sleep(0.3)
    assert (await svc.balance(MSISDN, channel="t")).balance == 4000
    confirmations = [m.text for m in phone.inbox if REF_RE.search(m.text) and "10.00" in m.text]
    assert confirmations == [paid]
    await down(sim, daemon)


@aio_test
async def test_link_killed_mid_conversation_reply_delivered_after_reconnect(sqlite_url):
    sim, daemon, _ = await up({"database_url": sqlite_url})
    phone = sim.handset("13800138000")
    await open_account(phone)
    sim.faults.add("drop", count=1, direction="in")       # the reply's submit_sm is lost ...
    await wait_deferred(phone.send("YE"))
    await asyncio.sleep(0.3)
    assert sim.close_binds() == 1                          # ... and the connection dies
    text = await reply(phone, expect="0.00", timeout=20)    # reconnect, resubmit, delivered
    assert "余额" in text
    await down(sim, daemon)


@aio_test
async def test_throttling_slows_down_but_delivers(sqlite_url):
    sim, daemon, _ = await up({"database_url": sqlite_url})
    phone = sim.handset("13800138000")
    await open_account(phone)
    sim.faults.add("throttle", count=3)
    assert "0.00" in await say(phone, "YE", timeout=30)
    throttled = [r for r in sim.traffic.records(1000) if r.command == "submit_sm_resp"
                 and r.status == P.ESME_RTHROTTLED]
    assert len(throttled) == 3
    await down(sim, daemon)


@aio_test
async def test_malformed_pdu_gets_generic_nack_and_link_stays_up(sqlite_url):
    sim, daemon, _ = await up({"database_url": sqlite_url})
    phone = sim.handset("13800138000")
    (proto,) = [p for p in sim._protocols.values()]
    # an unknown command id 0x00000077 with sequence 4242
    proto.transport.write(struct.pack(">IIII", 16, 0x77, 0, 4242))
    nacks = await eventually(lambda: [r for r in sim.traffic.records(1000)
                                      if r.command == "generic_nack" and r.sequence == 4242])
    assert nacks and nacks[0].status == P.ESME_RINVCMDID
    assert "A" in await say(phone, "KT")                   # same link, still working
    assert len(sim.binds) == 1
    await down(sim, daemon)


@aio_test
async def test_restart_with_replies_pending_in_outbox(stack):
    sim, daemon, _ = await up(stack)
    phone = sim.handset("13800138000")
    await open_account(phone)
    sim.faults.add("throttle")                             # the SMSC accepts nothing for now
    await wait_deferred(phone.send("YE"))
    sms = daemon.components["sms"]
    await eventually(lambda: sms.messages.pending_count("sms"))          # the reply waits in the outbox
    await stop_daemon(daemon)                              # reply still in the outbox
    sim.faults.clear()
    settings = daemon.settings
    daemon2 = await start_daemon(settings, bank=InProcessBank())
    text = await reply(phone, expect="0.00", timeout=20)
    assert "余额" in text
    await down(sim, daemon2)


@aio_test
async def test_ussd_abort_is_recorded_and_not_answered(sqlite_url):
    from channels.smpp.text import encode_text
    sim, daemon, _ = await up({"database_url": sqlite_url})
    phone = sim.handset("13800138000")
    part = encode_text("")
    await wait_deferred(sim.deliver_mo(phone, [dict(
        source_addr_ton=1, source_addr_npi=1, source_addr=phone.msisdn, dest_addr_ton=0, dest_addr_npi=1,
        destination_addr="10658888", esm_class=0, data_coding=part.data_coding, short_message=part.short_message,
        ussd_service_op=0x81, its_session_info=0x0101)]))       # a vendor "user abort"
    sms = daemon.components["sms"]
    await eventually(lambda: sms.stats["mo"] >= 1)
    await eventually(lambda: _no_unprocessed(sms))
    await asyncio.sleep(0.3)
    assert phone.inbox == [] and phone.ussd_screens == []
    await down(sim, daemon)


async def _no_unprocessed(sms) -> bool:
    return await sms.messages.unprocessed("sms") == []


@aio_test
async def test_answer_retried_when_the_database_failed_after_the_ack(pg_url):
    """The outbox is unwritable while a message is answered (a real database
    error); once it is back, the recorded message is answered after all."""
    import sqlalchemy as sa
    sim, daemon, _ = await up({"database_url": pg_url})
    sms = daemon.components["sms"]
    sms.unanswered_sweep = 0.3
    phone = sim.handset("13800138000")
    await open_account(phone)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text("ALTER TABLE outbox RENAME TO outbox_away"))
    try:
        await wait_deferred(phone.send("YE"))          # acknowledged: it is recorded
        await eventually(lambda: sms._answer_failed)
    finally:
        with admin.connect() as c:
            c.execute(sa.text("ALTER TABLE outbox_away RENAME TO outbox"))
        admin.dispose()
    assert "0.00" in await reply(phone, expect="余额", timeout=20)
    await down(sim, daemon)
