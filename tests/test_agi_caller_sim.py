"""The Asterisk caller simulator answers as res_agi does, checked line by
line against our own AGI session (no sockets)."""
from __future__ import annotations

from channels.ivr.agi import AgiSession, HungUp, Response, Started
from tests.aio import aio_test
from simulators.asterisk.caller import CallScript, SimulatedCall, load_prompts, split_args


def call(keys=(), **faults) -> SimulatedCall:
    return SimulatedCall("13800138000", CallScript(keys=list(keys), **faults), load_prompts(), "1733100000.7",
                         args=("callback", "13800138000"))


def exchange(sim: SimulatedCall, session: AgiSession, *words) -> list:
    session.command(*words)
    line = session.data_to_send().decode().rstrip("\n")
    return session.receive_data("".join(f"{o}\n" for o in sim.answer(line)).encode())


def started(sim) -> AgiSession:
    s = AgiSession()
    (ev,) = s.receive_data(sim.header())
    assert isinstance(ev, Started)
    return s


def test_header_is_what_asterisk_sends():
    sim = call()
    env = started(sim).env
    assert env.network_script == "ivr" and env.callerid == "13800138000" and env.uniqueid == "1733100000.7"
    assert env.request.startswith("agi://127.0.0.1:4573/ivr") and env.context == "telecom-pay-ivr"
    assert env.args == ("callback", "13800138000")
    withheld = SimulatedCall(None, CallScript(), {}, "1.2")
    assert started(withheld).env.callerid == "unknown"


def test_prompts_are_heard_by_their_text_from_prompts_toml():
    sim = call()
    s = started(sim)
    (r,) = exchange(sim, s, "STREAM FILE", "telecom-pay/en/goodbye", "")
    assert r.ok and r.number == 0 and r.endpos > 0
    (r,) = exchange(sim, s, "STREAM FILE", "telecom-pay/zh/goodbye", "")
    assert sim.heard[0].text == load_prompts()["goodbye"]["en"]
    assert sim.heard[1].text == load_prompts()["goodbye"]["zh"]
    exchange(sim, s, "SAY NUMBER", 1250, "")
    exchange(sim, s, "SAY DIGITS", "8000", "")
    assert [h.text for h in sim.heard[2:]] == ["1250", "8000"]


def test_get_data_takes_an_entry_wait_for_digit_a_key():
    sim = call(["2#", "123456#", "12", "", "45"])
    s = started(sim)
    (r,) = exchange(sim, s, "GET DATA", "telecom-pay/en/enter_pin", 6000, 1)
    assert r.result == "2" and r.data is None
    (r,) = exchange(sim, s, "GET DATA", "telecom-pay/en/enter_pin", 6000, 6)
    assert r.result == "123456"
    (r,) = exchange(sim, s, "GET DATA", "telecom-pay/en/enter_pin", 6000, 6)
    assert (r.result, r.data) == ("12", "timeout")             # stopped typing before the max
    (r,) = exchange(sim, s, "GET DATA", "telecom-pay/en/enter_pin", 6000, 6)
    assert (r.result, r.data) == ("", "timeout")               # silence
    (r,) = exchange(sim, s, "WAIT FOR DIGIT", 6000)
    assert chr(r.number) == "4"
    (r,) = exchange(sim, s, "WAIT FOR DIGIT", 6000)
    assert chr(r.number) == "5"
    (r,) = exchange(sim, s, "WAIT FOR DIGIT", 6000)
    assert r.number == 0                                       # script exhausted: timeout


def test_errors_as_res_agi_answers_them():
    sim = call()
    s = started(sim)
    (r,) = exchange(sim, s, "FROB", "x")
    assert r.code == 510
    (r,) = exchange(sim, s, "WAIT FOR DIGIT")
    assert r.code == 520 and "WAIT FOR DIGIT" in r.usage[0]
    (r,) = exchange(sim, s, "SET VARIABLE", "TP_RESULT", "ok")
    assert r.ok and sim.variables == {"TP_RESULT": "ok"}


def test_hang_up_then_dead_channel():
    sim = call(["1"], hangup_at=3)
    s = started(sim)
    exchange(sim, s, "ANSWER")
    exchange(sim, s, "STREAM FILE", "telecom-pay/en/goodbye", "")
    events = exchange(sim, s, "STREAM FILE", "telecom-pay/en/goodbye", "")
    assert isinstance(events[0], Response) and events[0].failed and isinstance(events[1], HungUp)
    (r,) = exchange(sim, s, "STREAM FILE", "telecom-pay/en/goodbye", "")
    assert r.code == 511
    (r,) = exchange(sim, s, "SET VARIABLE", "A", "1")           # allowed on a dead channel
    assert r.ok and sim.hung_up_by == "caller"


def test_hang_up_right_after_the_keys():
    sim = call(["2", "123456#"], hangup_after_keys=2)
    s = started(sim)
    exchange(sim, s, "GET DATA", "x", 6000, 1)
    events = exchange(sim, s, "GET DATA", "x", 6000, 6)
    assert events[0].result == "123456" and isinstance(events[1], HungUp)


def test_platform_hangup_is_reported_like_asterisk():
    sim = call()
    s = started(sim)
    events = exchange(sim, s, "HANGUP")
    assert events[0].ok and isinstance(events[1], HungUp) and sim.hung_up_by == "platform"


def test_argument_splitting():
    assert split_args('STREAM FILE beep ""') == ["STREAM", "FILE", "beep", ""]
    assert split_args('SET VARIABLE X "a \\"b\\" c"') == ["SET", "VARIABLE", "X", 'a "b" c']


@aio_test
async def test_a_caller_who_hung_up_leaves_a_server_that_never_closes():
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    from simulators.asterisk.caller import place_call
    from telecom_pay.aio import wait_deferred

    class Deaf(Protocol):
        def dataReceived(self, data):
            if b"\n\n" in data:
                self.transport.write(b"ANSWER\n")
    port = reactor.listenTCP(0, Factory.forProtocol(Deaf), interface="127.0.0.1")
    try:
        sim = await place_call(reactor, f"tcp:127.0.0.1:{port.getHost().port}", "13800138000",
                               CallScript(hangup_at=1, linger=0.2), prompts={}, timeout=5)
        assert sim.hung_up_by == "caller" and sim.commands == ["ANSWER"]
    finally:
        await wait_deferred(port.stopListening())
