"""Call-backs end to end: `HJ` by SMS through the SMSC simulator and the
daemon, an Originate the AMI simulator receives, the call's events
recorded; a refused or unanswered Originate retried then failed; a
request the daemon could not dial before it stopped dialled by the next."""
from telecom_pay.aio import wait_deferred
from tests.aio import aio_test
from tests.amikit import ami_overrides, logged_in, start_ami
from tests.bankdouble import InProcessBank
from tests.e2ekit import eventually, reply, say, settings_for, start_daemon, start_smsc, stop_daemon

MSISDN = "8613800138000"


async def up(stack, ami_port: int, **ami):
    smsc, smsc_port = await start_smsc()
    settings = settings_for(stack["database_url"], smsc_port, sessions_url=stack.get("sessions_url", "memory://"),
                            prefix=stack.get("prefix", "tp:"), **ami_overrides(ami_port, **ami))
    daemon = await start_daemon(settings, bank=InProcessBank())
    return smsc, daemon


async def rows(daemon):
    return await daemon.core.service.callbacks.rows(msisdn=MSISDN)


async def state_is(daemon, state):
    found = await rows(daemon)
    return found if found and found[0]["state"] == state else None


@aio_test
async def test_hj_by_sms_is_originated_answered_and_its_call_recorded(stack):
    ami, ami_port = await start_ami()
    smsc, daemon = await up(stack, ami_port)
    try:
        await logged_in(daemon)
        phone = smsc.handset("13800138000")
        assert "回电" in await say(phone, "HJ")
        [row] = await eventually(lambda: state_is(daemon, "answered"))
        [sent] = ami.originates
        assert sent == {"action_id": row["action_id"], "channel": f"PJSIP/{MSISDN}@trunk",
                        "context": "telecom-pay-callback", "exten": "s", "priority": "1", "caller_id": "10658888",
                        "async": "true", "variables": {"TP_MSISDN": MSISDN, "TP_CALLBACK_ID": str(row["id"])},
                        "refused": False}
        assert (row["attempts"], row["requested_via"]) == (1, "sms")
        [call] = ami.calls
        ami_events = daemon.components["ami"].calls
        recorded = await eventually(lambda: _events(ami_events, call.uniqueid, 3))
        assert [r["event"] for r in recorded] == ["newchannel", "originate", "hangup"]
        assert recorded[1]["detail"] == {"action_id": row["action_id"]} and recorded[1]["cause"] == "4"
        assert recorded[2]["cause"] == "16" and recorded[2]["duration_s"] is not None
        assert "正在处理" not in await say(phone, "HJ"), "an answered call-back is no longer open"
    finally:
        await stop_daemon(daemon)
        await wait_deferred(smsc.stop())
        await wait_deferred(ami.stop())


async def _events(calls, uid, n):
    found = await calls.events(uid)
    return found if len(found) >= n else None


@aio_test
async def test_a_refused_originate_is_retried_then_failed(stack):
    ami, ami_port = await start_ami()
    ami.refuse_originates = 10
    smsc, daemon = await up(stack, ami_port, **{"ami.callback_attempts": 2, "ami.callback_retry_delay": 0.3})
    try:
        await logged_in(daemon)
        phone = smsc.handset("13800138000")
        assert "回电" in await say(phone, "HJ")
        [row] = await eventually(lambda: state_is(daemon, "failed"))
        assert "未能接通" in await reply(phone, expect="HJ"), "the subscriber is told no call will come"
        assert len(ami.originates) == 2 and all(o["refused"] for o in ami.originates)
        assert len({o["action_id"] for o in ami.originates}) == 2, "each attempt has its own ActionID"
        assert (row["attempts"], row["error"]) == (2, "refused: Originate failed")
        assert ami.calls == []
        failed = [r for r in await daemon.components["ami"].calls.events() if r["event"] == "originate_failed"]
        assert [r["call_id"] for r in failed] == [o["action_id"] for o in ami.originates]
    finally:
        await stop_daemon(daemon)
        await wait_deferred(smsc.stop())
        await wait_deferred(ami.stop())


@aio_test
async def test_a_busy_subscriber_is_called_again_then_the_request_fails(stack):
    ami, ami_port = await start_ami()
    ami.outcome = "busy"
    smsc, daemon = await up(stack, ami_port, **{"ami.callback_attempts": 2, "ami.callback_retry_delay": 0.3})
    try:
        await logged_in(daemon)
        await say(smsc.handset("13800138000"), "HJ")
        [row] = await eventually(lambda: state_is(daemon, "failed"))
        assert len(ami.originates) == 2 and not any(o["refused"] for o in ami.originates)
        assert row["error"] == "originate failed (reason 5)"
        hangups = [r for r in await daemon.components["ami"].calls.events() if r["event"] == "hangup"]
        assert [r["cause"] for r in hangups] == ["17", "17"]
    finally:
        await stop_daemon(daemon)
        await wait_deferred(smsc.stop())
        await wait_deferred(ami.stop())


@aio_test
async def test_a_request_left_by_a_stopped_daemon_is_dialled_by_the_next(stack):
    ami, ami_port = await start_ami()
    await wait_deferred(ami.stop())                       # the switch is down: nothing can be dialled
    smsc, daemon = await up(stack, ami_port)
    try:
        assert "回电" in await say(smsc.handset("13800138000"), "HJ")
        assert [r["state"] for r in await rows(daemon)] == ["requested"]
    finally:
        await stop_daemon(daemon)
        await wait_deferred(smsc.stop())
    ami, _ = await start_ami(ami_port)                    # the switch is back; so is the platform
    smsc, daemon = await up(stack, ami_port)
    try:
        [row] = await eventually(lambda: state_is(daemon, "answered"))
        assert [o["action_id"] for o in ami.originates] == [row["action_id"]]
    finally:
        await stop_daemon(daemon)
        await wait_deferred(smsc.stop())
        await wait_deferred(ami.stop())
