"""The FastAGI server and call runner over real sockets, driven by the
Asterisk caller simulator, with a small engine at the menu seam
(tests/ivrkit.py): DTMF collection, retries, `*`, the hang-up rule,
transfer, and a peer that misbehaves. The daemon with the real menu is in
tests/test_ivr_e2e.py."""
from __future__ import annotations

import asyncio

import pytest
from twisted.internet import reactor

from channels.ivr.call import IvrCalls, IvrSettings, caller_msisdn
from channels.ivr.server import AgiFactory
from simulators.asterisk.caller import CallScript, place_call
from telecom_pay.calls import CallLog
from telecom_pay.menus.ivr import render_ivr
from telecom_pay.aio import wait_deferred
from tests.aio import aio_test
from tests.ivrkit import TinyEngine
from tests.servicekit import make_service, shutdown

PROMPTS = {"main_menu": {"en": "Main menu."}, "paid": {"en": "Paid, reference"},
           "balance_is": {"en": "Your balance is"}, "goodbye": {"en": "Goodbye."}, "no_input": {"en": "Nothing pressed."}}


class Rig:
    def __init__(self, svc, engine, *, command_timeout=5.0):
        self.svc = svc
        self.engine = engine
        self.notified = []
        svc.add_notifier(lambda msisdn, result: self.notified.append((msisdn, result)))
        self.call_log = CallLog(svc.ledger)
        self.calls = IvrCalls(engine, svc, self.call_log, None, render_ivr, IvrSettings(retries=2))
        self.factory = AgiFactory(self.calls, reactor, header_timeout=2.0, command_timeout=command_timeout)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.endpoint = f"tcp:127.0.0.1:{self.port.getHost().port}"

    async def call(self, keys, msisdn="13800138000", **faults):
        return await place_call(reactor, self.endpoint, msisdn, CallScript(keys=list(keys), **faults),
                                prompts=PROMPTS, timeout=20)

    async def settled(self):
        """Every connection gone and every handler finished."""
        for _ in range(200):
            if not self.factory.connections:
                break
            await asyncio.sleep(0.01)
        assert not self.factory.connections
        await asyncio.sleep(0.05)

    async def close(self):
        await wait_deferred(self.port.stopListening())
        await shutdown(self.svc)


@pytest.fixture
def rig_factory(sqlite_url):
    made = []

    async def make(**kw):
        svc = await make_service(sqlite_url)
        rig = Rig(svc, TinyEngine(**{k: v for k, v in kw.items() if k in ("pause",)}),
                  **{k: v for k, v in kw.items() if k == "command_timeout"})
        made.append(rig)
        return rig
    yield make


def heard(call):
    return [h.text for h in call.heard]


@aio_test
async def test_balance_call_hears_the_number_and_is_hung_up(rig_factory):
    rig = await rig_factory()
    try:
        call = await rig.call(["1"])
        assert heard(call)[0] == "Main menu."
        assert "12345" in heard(call)
        assert call.commands[0] == "ANSWER"
        assert call.hung_up_by == "platform" and call.commands[-1] == "HANGUP"
        await rig.settled()
        (sid, msisdn, channel), = rig.engine.started
        assert sid == f"ivr:{call.uniqueid}" and msisdn == "8613800138000" and channel == "ivr"
        assert rig.engine.ended == [(sid, "completed")]
        events = [e["event"] for e in await rig.call_log.events(call.uniqueid)]
        assert events == ["agi_start", "agi_end"]
    finally:
        await rig.close()


@aio_test
async def test_pin_payment_books_once_with_the_step_key(rig_factory):
    rig = await rig_factory()
    try:
        call = await rig.call(["2", "123456#"])
        assert "Paid, reference" in heard(call) and "1234" in heard(call)
        assert call.variables["TP_RESULT"] == "ok"
        await rig.settled()
        assert rig.engine.paid == [f"ivr:{call.uniqueid}:2"]
        assert rig.notified == []                     # heard to the end: no SMS
        # the PIN went to the engine, GET DATA asked for 6 digits
        assert any(c.startswith("GET DATA") and c.endswith(" 6") for c in call.commands)
    finally:
        await rig.close()


@aio_test
async def test_hang_up_after_the_pin_still_pays_once_and_sends_the_receipt(rig_factory):
    rig = await rig_factory(pause=0.3)                 # the payment is still running when the caller goes
    try:
        call = await rig.call(["2", "123456#"], hangup_after_keys=2)
        assert call.hung_up_by == "caller"
        await rig.settled()
        assert len(rig.engine.paid) == 1
        (msisdn, result), = rig.notified
        assert msisdn == "8613800138000" and result.ref == "T2345678"
        assert rig.engine.ended[-1][1] == "hangup"
        assert rig.calls.stats["receipts_by_sms"] == 1
    finally:
        await rig.close()


@aio_test
async def test_connection_dropped_while_the_pin_is_checked_still_pays_once(rig_factory):
    rig = await rig_factory(pause=0.3)
    try:
        await rig.call(["2", "123456#"], drop_after_keys=2)
        await asyncio.sleep(0.5)
        await rig.settled()
        assert len(rig.engine.paid) == 1 and len(rig.notified) == 1
        assert rig.engine.ended[-1][1] == "hangup"
    finally:
        await rig.close()


@aio_test
async def test_hang_up_before_the_pin_moves_nothing(rig_factory):
    rig = await rig_factory()
    try:
        call = await rig.call(["2", "h"])
        assert call.hung_up_by == "caller"
        await rig.settled()
        assert rig.engine.paid == [] and rig.notified == []
        assert rig.engine.ended[-1][1] == "hangup"
    finally:
        await rig.close()


@aio_test
async def test_tcp_drop_mid_call_ends_the_session_and_the_next_call_is_served(rig_factory):
    rig = await rig_factory()
    try:
        await rig.call(["2"], close_at=3)
        await rig.settled()
        assert rig.engine.ended[-1][1] == "hangup" and not rig.engine.states
        call = await rig.call(["1"])
        assert "12345" in heard(call)
    finally:
        await rig.close()


@aio_test
async def test_silence_replays_then_goodbye(rig_factory):
    rig = await rig_factory()
    try:
        call = await rig.call([])
        assert heard(call).count("Main menu.") == 3     # first time + 2 retries
        assert heard(call)[-1] == "Goodbye."
        assert call.variables["TP_RESULT"] == "timeout" and call.hung_up_by == "platform"
        await rig.settled()
        assert rig.engine.ended[-1][1] == "timeout"
    finally:
        await rig.close()


@aio_test
async def test_star_repeats_the_screen(rig_factory):
    rig = await rig_factory()
    try:
        call = await rig.call(["*", "1"])
        assert heard(call).count("Main menu.") == 2 and "12345" in heard(call)
    finally:
        await rig.close()


@aio_test
async def test_transfer_records_the_handoff_and_leaves_the_dialplan_to_continue(rig_factory):
    rig = await rig_factory()
    try:
        call = await rig.call(["9"])
        assert call.variables["TP_TRANSFER"] == "telecom-pay-agents,s,1"
        assert call.variables["TP_RESULT"] == "transfer"
        assert call.hung_up_by is None and "HANGUP" not in call.commands
        await rig.settled()
        (h,) = await rig.call_log.handoffs()
        assert h["call_id"] == call.uniqueid and h["msisdn"] == "8613800138000"
        assert h["caller_id"] == "13800138000" and h["menu_path"] == "root>agent"
        assert h["pin_verified"] is False and h["target"] == "telecom-pay-agents,s,1"
        assert rig.engine.ended[-1][1] == "transfer"
    finally:
        await rig.close()


@aio_test
async def test_garbage_lines_are_skipped(rig_factory):
    rig = await rig_factory()
    try:
        call = await rig.call(["1"], garbage_every=2)
        assert "12345" in heard(call)
    finally:
        await rig.close()


@aio_test
async def test_a_peer_too_slow_is_dropped_and_its_session_ended(rig_factory):
    rig = await rig_factory(command_timeout=0.3)
    try:
        await rig.call(["1"], slow=1.0)
        await rig.settled()
        assert rig.engine.ended and rig.engine.ended[-1][1] == "hangup" and not rig.engine.states
    finally:
        await rig.close()


@aio_test
async def test_a_header_that_never_ends_is_dropped(rig_factory):
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Protocol
    from telecom_pay.aio import wait_deferred
    rig = await rig_factory()
    try:
        lost = asyncio.get_running_loop().create_future()

        class Half(Protocol):
            def connectionMade(self):
                self.transport.write(b"agi_network: yes\nagi_uniqueid: 1.1\n")

            def connectionLost(self, reason=None):
                lost.set_result(True)
        await wait_deferred(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", rig.port.getHost().port),
                                            Half()))
        assert await asyncio.wait_for(lost, 5)
        assert rig.engine.started == []
    finally:
        await rig.close()


def test_caller_id_withheld_or_not_mobile_is_none():
    assert caller_msisdn("13800138000", "CN") == "8613800138000"
    assert caller_msisdn("+86 138 0013 8000", "CN") == "8613800138000"
    for cid in ("", "unknown", "Anonymous", "01012345678", "garbage"):
        assert caller_msisdn(cid, "CN") is None


@aio_test
async def test_a_callback_names_the_number_it_dialled(rig_factory):
    rig = await rig_factory()
    try:
        await place_call(reactor, rig.endpoint, None, CallScript(keys=["1"]), prompts=PROMPTS,
                         args=("callback", "13900139000"), timeout=20)
        await rig.settled()
        assert rig.engine.started[-1][1] == "8613900139000"
        (start, _end) = await rig.call_log.events()
        assert start["detail"] == {"script": "ivr", "callback": True}
    finally:
        await rig.close()


@aio_test
async def test_a_failing_core_says_goodbye_and_the_next_call_is_served(rig_factory):
    rig = await rig_factory()
    try:
        call = await rig.call(["5"])
        assert heard(call)[-1] == "Goodbye." and call.variables["TP_RESULT"] == "error"
        assert call.hung_up_by == "platform"
        await rig.settled()
        assert rig.engine.ended[-1][1] == "error"
        assert "12345" in heard(await rig.call(["1"]))
    finally:
        await rig.close()
