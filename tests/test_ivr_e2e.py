"""The IVR end to end: the daemon with its [ivr] section on port 0 (real menu
engine, real service), the SMSC simulator for the SMS side, and the Asterisk
caller simulator dialling the FastAGI server over real sockets."""
from __future__ import annotations

import asyncio

from twisted.internet import reactor

from simulators.asterisk.caller import CallScript, place_call
from telecom_pay.aio import wait_deferred
from telecom_pay.calls import CallLog
from tests.aio import aio_test
from tests.e2ekit import PIN_RE, REF_RE, eventually, reply, say, settings_for, start_daemon, start_smsc, stop_daemon
from tests.servicekit import CHOSEN_PIN

MSISDN = "8613800138000"
LOCAL = "13800138000"
NEW_PIN = "739164"


class Stack:
    def __init__(self, sim, daemon, port):
        self.sim, self.daemon, self.port = sim, daemon, port
        self.svc = daemon.core.service
        self.phone = sim.handset(LOCAL)

    async def call(self, keys, msisdn=LOCAL, **faults):
        return await place_call(reactor, f"tcp:127.0.0.1:{self.port}", msisdn, CallScript(keys=list(keys), **faults),
                                timeout=30)

    async def balance(self) -> int:
        return (await self.svc.balance(MSISDN, channel="test")).balance

    async def settled(self):
        ivr = self.daemon.components["ivr"]
        await eventually(lambda: not ivr.factory.connections, timeout=10)
        await asyncio.sleep(0.05)

    async def no_menu_state(self, call) -> bool:
        return await self.daemon.core.sessions.get(f"menu:ivr:{call.uniqueid}") is None


async def up(stack_cfg, **extra) -> Stack:
    sim, smsc_port = await start_smsc()
    settings = settings_for(stack_cfg["database_url"], smsc_port, sessions_url=stack_cfg.get("sessions_url", "memory://"),
                            prefix=stack_cfg.get("prefix", "tp:"), **{"ivr.command_timeout": 5, **extra})
    daemon = await start_daemon(settings)
    port = await daemon.components["ivr"].wait_listening()
    return Stack(sim, daemon, port)


async def down(s: Stack):
    await stop_daemon(s.daemon)
    await wait_deferred(s.sim.stop())


async def open_funded(s: Stack, amount: int = 10_000) -> str:
    assert "A" in await say(s.phone, "KT")
    await wait_deferred(s.phone.send("A"))
    creds = await reply(s.phone, expect="MM")
    await say(s.phone, f"MM {PIN_RE.search(creds).group(1)} {CHOSEN_PIN}", expect="支付密码已修改")
    await s.svc.fund_agent("AG001", amount, operator="test", key="ivr-float")
    assert (await s.svc.cash_in("AG001", MSISDN, amount, key="ivr-cash")).ok
    await reply(s.phone, expect="现金存入")             # its SMS, so later replies are the ones awaited
    return CHOSEN_PIN


def said(call) -> list[str]:
    return [h.value for h in call.heard]


@aio_test
async def test_balance_pay_with_pin_and_change_pin_by_phone(stack):
    s = await up(stack)
    try:
        pin = await open_funded(s)
        # balance: 1 (the result, then the home menu again), 0 = goodbye
        call = await s.call(["1", "0"])
        assert "100" in said(call) and "done_balance" in said(call)      # 100.00 spoken as 100 yuan
        assert call.hung_up_by == "platform" and said(call)[-1] == "goodbye"
        # pay: 4 merchants, 1 = M001, amount 12 #, the PIN #, then 0
        call = await s.call(["4", "1", "12#", f"{pin}#", "0"])
        assert "done_pay" in said(call) and "88" in said(call)
        assert await s.balance() == 8_800
        assert call.variables["TP_RESULT"] == "ok"
        # the switch speaks numbers in the subscriber's language
        assert call.variables["CHANNEL(language)"] == "zh" and call.variables["TP_LANG"] == "zh"
        pin_command = next(c for c in call.commands if c.startswith("GET DATA") and "enter_pin" in c)
        assert pin_command.endswith(" 6")
        # change the PIN: 7 account, 1 change PIN, old+new digits #
        call = await s.call(["7", "1", f"{pin}{NEW_PIN}#", "0"])
        assert "done_change_pin" in said(call)
        assert (await s.svc.pay(MSISDN, "M001", 100, NEW_PIN, channel="test", key="new-pin")).ok
        await s.settled()
        assert await s.svc.check_books() == []
        events = await CallLog(s.daemon.core.ledger).events(call.uniqueid)
        assert [e["event"] for e in events] == ["agi_start", "agi_end"] and events[0]["msisdn"] == MSISDN
    finally:
        await down(s)


@aio_test
async def test_three_wrong_pins_by_phone_lock_sms_payments(sqlite_url):
    s = await up({"database_url": sqlite_url})
    try:
        pin = await open_funded(s)
        call = await s.call(["4", "1", "12#", "111111#", "222222#", "333333#", "0"])
        assert said(call).count("outcome_pin_wrong") == 2 and "outcome_pin_locked" in said(call)
        assert await s.balance() == 10_000
        await say(s.phone, "ZF M001 5")
        refused = await say(s.phone, pin)
        assert "锁定" in refused and not REF_RE.search(refused)
        assert await s.balance() == 10_000
    finally:
        await down(s)


@aio_test
async def test_hang_up_after_the_pin_pays_once_and_the_receipt_goes_by_sms(sqlite_url):
    s = await up({"database_url": sqlite_url})
    try:
        pin = await open_funded(s)
        before = len(s.phone.inbox)
        call = await s.call(["4", "1", "12#", f"{pin}#"], hangup_after_keys=4)
        assert call.hung_up_by == "caller" and "done_pay" not in said(call)
        await s.settled()
        assert await s.balance() == 8_800                         # moved, exactly once
        receipt = await reply(s.phone, expect="12.00")
        assert REF_RE.search(receipt) and "88.00" in receipt
        await asyncio.sleep(0.3)
        assert len([m for m in s.phone.inbox[before:] if "12.00" in m.text]) == 1
        assert await s.balance() == 8_800
        assert await s.no_menu_state(call)
    finally:
        await down(s)


@aio_test
async def test_hang_up_before_the_pin_moves_nothing(sqlite_url):
    s = await up({"database_url": sqlite_url})
    try:
        await open_funded(s)
        call = await s.call(["4", "1", "12#", "h"])
        assert call.hung_up_by == "caller"
        await s.settled()
        assert await s.balance() == 10_000
        assert await s.daemon.core.conversation.pending(MSISDN) is None      # the held payment is dropped
        assert await s.no_menu_state(call)
    finally:
        await down(s)


@aio_test
async def test_transfer_to_an_agent_is_recorded_with_the_pin_check(sqlite_url):
    s = await up({"database_url": sqlite_url})
    try:
        pin = await open_funded(s)
        call = await s.call(["4", "1", "1#", f"{pin}#", "9"])
        assert call.variables["TP_TRANSFER"] == "telecom-pay-agents,s,1"
        assert "HANGUP" not in call.commands                    # the dialplan goes on to the queue
        await s.settled()
        (h,) = await CallLog(s.daemon.core.ledger).handoffs()
        assert h["call_id"] == call.uniqueid and h["msisdn"] == MSISDN and h["caller_id"] == LOCAL
        assert h["pin_verified"] is True and h["menu_path"].endswith("agent")
        assert h["target"] == "telecom-pay-agents,s,1"
        # a withheld caller reaches an agent too, without a PIN check
        call = await s.call(["9"], msisdn=None)
        assert call.variables["TP_TRANSFER"]
        await s.settled()
        latest = (await CallLog(s.daemon.core.ledger).handoffs())[0]
        assert latest["msisdn"] is None and latest["caller_id"] == "unknown" and latest["pin_verified"] is False
    finally:
        await down(s)


@aio_test
async def test_garbage_drops_and_slowness_leave_no_session_and_the_next_call_is_served(sqlite_url):
    s = await up({"database_url": sqlite_url}, **{"ivr.command_timeout": 0.5})
    try:
        await open_funded(s)
        garbled = await s.call(["1", "0"], garbage_every=1)
        assert "done_balance" in said(garbled)
        dropped = await s.call(["4", "1"], close_at=5)
        slow = await s.call(["1", "0"], slow=1.0)
        await s.settled()
        for c in (garbled, dropped, slow):
            assert await s.no_menu_state(c)
        # a connection that sends nothing but noise
        noise = await s.call([], noise=50)
        await s.settled()
        assert await s.no_menu_state(noise)
        call = await s.call(["1", "0"])
        assert "done_balance" in said(call) and call.hung_up_by == "platform"
        assert await s.balance() == 10_000
    finally:
        await down(s)


@aio_test
async def test_handset_call_cli_prints_what_is_heard_and_exits_0(sqlite_url):
    import sys
    s = await up({"database_url": sqlite_url})
    try:
        await open_funded(s)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "telecom_pay.cli", "handset", "call", LOCAL, "--keys", "1,0",
            "--agi", f"tcp:127.0.0.1:{s.port}", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode()
        assert proc.returncode == 0, err.decode()
        assert "余额查询" in text and "\n> 1\n" in text and "100" in text      # the balance, 100 yuan
        assert "(call ended: the IVR hung up; TP_RESULT=ok)" in text
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "telecom_pay.cli", "handset", "call", LOCAL, "--agi", "tcp:127.0.0.1:1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 2 and "no FastAGI server" in err.decode()
    finally:
        await down(s)
