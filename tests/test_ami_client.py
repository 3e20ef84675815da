"""The AMI client (asterisk-ami on its own threads) against the AMI
simulator over real sockets: it logs in, records the switch's call events,
stays connected across a simulator restart, and never blocks the reactor
while the switch is slow."""
import asyncio

from twisted.internet import reactor, task

from telecom_pay.aio import wait_deferred
from tests.aio import aio_test
from tests.amikit import ami_settings, logged_in, start_ami, start_ami_daemon
from tests.e2ekit import eventually

MSISDN = "8613800138000"


async def events(daemon, kinds=None):
    rows = await daemon.components["ami"].calls.events()
    return [r for r in rows if kinds is None or r["event"] in kinds]


@aio_test
async def test_logs_in_and_records_new_channel_and_hangup_with_cause_and_duration(sqlite_url):
    sim, port = await start_ami()
    daemon = await start_ami_daemon(ami_settings(sqlite_url, port))
    try:
        await logged_in(daemon)
        assert sim.logins == [("telecom-pay", True)]
        call = sim.call_in("13800138000", seconds=1.2, cause="17", cause_txt="User busy")
        sim.call_in("anonymous", seconds=0.1)
        rows = await eventually(lambda: _two_hangups(daemon))
        mine = [r for r in rows if r["call_id"] == call.uniqueid]
        assert [r["event"] for r in mine] == ["newchannel", "hangup"]
        new, hangup = mine
        assert new["msisdn"] == MSISDN and new["channel"] == call.channel
        assert new["detail"] == {"context": "telecom-pay-ivr", "exten": "s"}
        assert (hangup["cause"], hangup["detail"]["cause_txt"]) == ("17", "User busy")
        assert hangup["duration_s"] == 1
        withheld = [r for r in rows if r["call_id"] != call.uniqueid]
        assert [r["msisdn"] for r in withheld] == [None, None], "a withheld caller id is no MSISDN"
    finally:
        await wait_deferred(daemon.stopService())
        await wait_deferred(sim.stop())


async def _two_hangups(daemon):
    rows = await events(daemon)
    return rows if len([r for r in rows if r["event"] == "hangup"]) == 2 else None


@aio_test
async def test_a_wrong_secret_is_refused_and_retried_without_a_crash(sqlite_url):
    sim, port = await start_ami(accounts={"telecom-pay": "other"})
    daemon = await start_ami_daemon(ami_settings(sqlite_url, port))
    try:
        await eventually(lambda: len(sim.logins) >= 2)         # retried, with back-off
        ami = daemon.components["ami"]
        assert not ami.connected and set(sim.logins) == {("telecom-pay", False)}
        assert not sim.clients or all(c.username is None for c in sim.clients)
        sim.accounts["telecom-pay"] = "secret"                 # the switch's manager.conf is fixed
        await logged_in(daemon)
        assert sim.logins[-1] == ("telecom-pay", True)
    finally:
        await wait_deferred(daemon.stopService())
        await wait_deferred(sim.stop())


@aio_test
async def test_stays_connected_across_a_simulator_restart_and_a_disconnect(sqlite_url):
    sim, port = await start_ami()
    daemon = await start_ami_daemon(ami_settings(sqlite_url, port))
    ami = daemon.components["ami"]
    try:
        await logged_in(daemon)
        await wait_deferred(sim.stop())                        # the switch goes away
        await eventually(lambda: not ami.connected)
        await asyncio.sleep(0.5)                               # and stays away for a few pings
        sim, _ = await start_ami(port)                         # a new switch on the same port
        await logged_in(daemon)
        assert sim.logins == [("telecom-pay", True)]
        call = sim.call_in("13800138000", seconds=0.1)
        await eventually(lambda: _events_of(daemon, call.uniqueid, 2))

        assert sim.disconnect_all() == 1                       # the AMI disconnect fault
        await eventually(lambda: len(sim.logins) == 2 and sim.clients and
                         all(c.username for c in sim.clients))
        call = sim.call_in("13800138000", seconds=0.1)
        await eventually(lambda: _events_of(daemon, call.uniqueid, 2))
        assert ami.connected and ami.stats["link_lost"] >= 2
    finally:
        await wait_deferred(daemon.stopService())
        await wait_deferred(sim.stop())


async def _events_of(daemon, uid, n):
    return len(await daemon.components["ami"].calls.events(uid)) == n


@aio_test
async def test_the_reactor_keeps_ticking_while_the_switch_answers_slowly(sqlite_url):
    sim, port = await start_ami()
    daemon = await start_ami_daemon(ami_settings(sqlite_url, port))
    ticks = []
    loop = task.LoopingCall(lambda: ticks.append(reactor.seconds()))
    try:
        await logged_in(daemon)
        sim.answer_delay = 1.5                                 # every response 1.5 s late
        loop.start(0.05)
        started = reactor.seconds()
        assert (await daemon.core.service.request_callback(MSISDN, channel="sms")).ok
        await eventually(lambda: _answered(daemon), timeout=10)
        waited = reactor.seconds() - started
        assert sim.originates and waited >= 1.4, waited      # the Originate was answered slowly ...
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        assert len(ticks) >= 0.6 * waited / 0.05, (len(ticks), waited)   # ... and the reactor kept ticking
        assert max(gaps) < 0.5, max(gaps)
    finally:
        if loop.running:
            loop.stop()
        await wait_deferred(daemon.stopService())
        await wait_deferred(sim.stop())


async def _answered(daemon):
    rows = await daemon.core.service.callbacks.rows(msisdn=MSISDN)
    return rows and rows[0]["state"] == "answered"


@aio_test
async def test_no_originate_before_the_switch_is_fully_booted(sqlite_url):
    sim, port = await start_ami()
    sim.fully_booted = False                                   # logged in, Asterisk still starting
    daemon = await start_ami_daemon(ami_settings(sqlite_url, port))
    try:
        await logged_in(daemon)
        assert (await daemon.core.service.request_callback(MSISDN, channel="sms")).ok
        await asyncio.sleep(0.6)                               # three polls
        assert sim.originates == []
        sim.boot()
        await eventually(lambda: _answered(daemon))
        assert len(sim.originates) == 1
    finally:
        await wait_deferred(daemon.stopService())
        await wait_deferred(sim.stop())
