"""A call-back completed into the IVR: `HJ` by SMS, the Originate on the
AMI simulator, the answered call placed by the caller simulator into the
daemon's FastAGI server as the call-back context does
(`AGI(agi://HOST:4573/ivr,callback,MSISDN)`), the menu heard, and the
whole call (switch and IVR events) recorded under the channel's Uniqueid."""
from twisted.internet import reactor

from simulators.asterisk.ami_server import agi_dialer
from telecom_pay.aio import wait_deferred
from tests.aio import aio_test
from tests.amikit import ami_overrides, logged_in, start_ami
from tests.e2ekit import eventually, say, settings_for, start_daemon, start_smsc, stop_daemon
from tests.servicekit import open_active

MSISDN = "8613800138000"


@aio_test
async def test_hj_by_sms_calls_the_subscriber_into_the_ivr_menu(stack):
    ami, ami_port = await start_ami()
    smsc, smsc_port = await start_smsc()
    settings = settings_for(stack["database_url"], smsc_port, sessions_url=stack.get("sessions_url", "memory://"),
                            prefix=stack.get("prefix", "tp:"), **ami_overrides(ami_port))
    daemon = await start_daemon(settings)
    try:
        ivr_port = await daemon.components["ivr"].wait_listening()
        calls = []
        ami.dial = agi_dialer(reactor, f"tcp:127.0.0.1:{ivr_port}", ["1", "0"], timeout=20, on_call=calls.append)
        svc = daemon.core.service
        await open_active(svc, MSISDN)
        await logged_in(daemon)

        assert "回电" in await say(smsc.handset("13800138000"), "HJ")
        [call] = await eventually(lambda: calls, timeout=20)
        heard = [h.value for h in call.heard]
        assert "done_balance" in heard, heard                    # 1: the balance, spoken ...
        assert call.hung_up_by == "platform"                     # ... 0: goodbye
        [row] = await svc.callbacks.rows(msisdn=MSISDN)
        assert row["state"] == "answered"
        [originated] = ami.calls
        assert originated.uniqueid == call.uniqueid

        log = daemon.components["ami"].calls
        events = await eventually(lambda: _whole_call(log, call.uniqueid), timeout=10)
        kinds = [e["event"] for e in events]
        # the switch's events and the IVR's come by different paths: each in its own order
        assert sorted(kinds) == ["agi_end", "agi_start", "hangup", "newchannel", "originate"], kinds
        assert kinds.index("newchannel") < kinds.index("hangup") and kinds.index("agi_start") < kinds.index("agi_end")
        start = next(e for e in events if e["event"] == "agi_start")
        assert start["msisdn"] == MSISDN and start["detail"]["callback"] is True
    finally:
        await stop_daemon(daemon)
        await wait_deferred(smsc.stop())
        await wait_deferred(ami.stop())


async def _whole_call(log, uid):
    events = await log.events(uid)
    return events if {"hangup", "agi_end"} <= {e["event"] for e in events} else None
