"""The sans-I/O ISO 8583 link and framing, without sockets: sign-on gating,
matching, time-outs, echo keep-alive, and refusal of malformed input without
losing pending requests (including a hypothesis fuzz test). Also the Twisted
protocol around it on a task.Clock."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings, strategies as st
from twisted.internet import task
from twisted.internet.testing import StringTransport

from bank_bridge import link as L
from bank_bridge import spec
from bank_bridge.connection import BankLinkProtocol, RequestTimeout
from bank_bridge.framing import FrameDecoder, FramingError, encode_frame

TERMINAL = "TP000001"


def stans():
    counter = itertools.count(1)
    return lambda: f"{next(counter):06d}"


def frames_of(data: bytes) -> list[dict]:
    return [spec.decode_message(f) for f in FrameDecoder().feed(data)]


def frame(message: dict) -> bytes:
    return encode_frame(spec.encode_message(message))


def signed_on_link(now: float = 0.0, **kw) -> L.Link:
    link = L.Link(terminal_id=TERMINAL, stan_source=stans(), response_timeout=5.0, echo_interval=30.0, **kw)
    link.connection_made(now)
    (sign_on,) = frames_of(link.data_to_send())
    assert (sign_on["t"], sign_on["70"]) == ("0800", "001")
    events = link.receive_data(frame({"t": "0810", "11": sign_on["11"], "41": TERMINAL, "70": "001",
                                      "39": "00"}), now)
    assert [type(e) for e in events] == [L.NetworkExchange, L.SignedOn]
    return link


def purchase(link: L.Link, stan: str = "000100", now: float = 0.0) -> dict:
    return link.new_message("0200", now, stan, **{"3": "000000", "4": "000000001000", "37": "000000000001",
                                                  "48": "ab" * 32, "49": "156"})


def answer_to(message: dict, code: str = "00") -> dict:
    return {"t": spec.response_mti(message["t"]), "11": message["11"], "41": message["41"], "39": code}


# -- framing ---------------------------------------------------------------------

def test_frames_split_and_join_across_reads():
    payload = spec.encode_message({"t": "0800", "11": "000001", "70": "301"})
    data = encode_frame(payload) * 3
    decoder = FrameDecoder()
    out = []
    for i in range(len(data)):
        out += decoder.feed(data[i:i + 1])
    assert out == [payload] * 3 and decoder.buffered == 0


@pytest.mark.parametrize("header", [b"\x00\x00", b"\xff\xff"])
def test_zero_or_oversized_length_breaks_the_stream(header):
    decoder = FrameDecoder(max_length=4096)
    good = encode_frame(b"0800x")
    assert decoder.feed(good + header + b"rest") == [b"0800x"]
    assert isinstance(decoder.error, FramingError)
    with pytest.raises(FramingError):
        decoder.feed(b"more")


# -- spec ----------------------------------------------------------------------------

def test_original_data_round_trip():
    original = spec.OriginalData("0200", "000123", "1123101112", "48020000")
    assert spec.OriginalData.parse(original.encode()) == original
    assert len(original.encode()) == 42


def test_non_numeric_field_is_a_format_error_with_recovered_ids():
    raw = spec.encode_message({"t": "0200", "11": "000007", "41": TERMINAL, "4": "00000000ABCD"})
    with pytest.raises(spec.MessageFormatError) as err:
        spec.decode_message(raw)
    assert (err.value.mti, err.value.stan) == ("0200", "000007")


def test_mask_pan():
    assert spec.mask_pan("6222021234561234") == "622202******1234"


# -- link: sign-on, matching, time-outs -------------------------------------------

def test_nothing_but_sign_on_before_signed_on():
    link = L.Link(terminal_id=TERMINAL, stan_source=stans())
    with pytest.raises(L.LinkNotReady):
        link.send({"t": "0200", "11": "000001", "41": TERMINAL}, 0.0)
    link.connection_made(0.0)
    with pytest.raises(L.LinkNotReady):
        link.send({"t": "0200", "11": "000001", "41": TERMINAL}, 0.0)
    assert [m["t"] for m in frames_of(link.data_to_send())] == ["0800"]


def test_sign_on_refused_or_unanswered_kills_the_link():
    link = L.Link(terminal_id=TERMINAL, stan_source=stans(), response_timeout=5.0)
    link.connection_made(0.0)
    sign_on = frames_of(link.data_to_send())[0]
    events = link.receive_data(frame(dict(answer_to(sign_on, "91"), **{"70": "001"})), 1.0)
    assert isinstance(events[-1], L.LinkDead)

    silent = L.Link(terminal_id=TERMINAL, stan_source=stans(), response_timeout=5.0)
    silent.connection_made(0.0)
    assert silent.tick(4.9) == []
    assert isinstance(silent.tick(5.0)[-1], L.LinkDead)


def test_response_matched_by_stan_and_terminal():
    link = signed_on_link()
    a = link.send(purchase(link, "000100"), 0.0, tag="a")
    b = link.send(purchase(link, "000101"), 0.0, tag="b")
    link.data_to_send()
    other_terminal = dict(answer_to(b.message), **{"41": "TP999999"})
    events = link.receive_data(frame(other_terminal) + frame(answer_to(b.message)) + frame(answer_to(a.message, "51")), 1.0)
    assert isinstance(events[0], L.UnmatchedResponse)
    assert [(e.request.tag, e.response["39"]) for e in events[1:]] == [("b", "00"), ("a", "51")]
    assert link.pending == []


def test_request_times_out_and_late_answer_is_unmatched():
    link = signed_on_link()
    request = link.send(purchase(link), 0.0, timeout=2.0, tag="x")
    assert link.next_deadline() == 2.0
    assert link.tick(1.9) == []
    assert link.tick(2.0) == [L.RequestTimedOut(request)]
    events = link.receive_data(frame(answer_to(request.message)), 3.0)
    assert [type(e) for e in events] == [L.UnmatchedResponse]


def test_connection_lost_reports_pending_requests():
    link = signed_on_link()
    request = link.send(purchase(link), 0.0)
    assert link.connection_lost() == [L.RequestLost(request)]


# -- echo -------------------------------------------------------------------------

def test_echo_sent_when_idle_and_missing_answer_kills_the_link():
    link = signed_on_link(0.0)
    link.data_to_send()
    assert link.next_deadline() == 30.0
    assert link.tick(29.0) == []
    assert link.tick(30.0) == []
    (echo,) = frames_of(link.data_to_send())
    assert (echo["t"], echo["70"]) == ("0800", "301")
    link.receive_data(frame(dict(answer_to(echo), **{"70": "301"})), 31.0)
    assert link.ready and link.next_deadline() == 61.0
    link.tick(61.0)
    (echo2,) = frames_of(link.data_to_send())
    assert echo2["11"] != echo["11"]
    events = link.tick(61.0 + 5.0)
    assert events == [L.LinkDead("no answer to echo")]


def test_host_echo_is_answered():
    link = signed_on_link()
    link.data_to_send()
    (event,) = link.receive_data(frame({"t": "0800", "11": "555555", "70": "301", "7": "1123120000"}), 1.0)
    assert event.by_host and event.response["39"] == "00"
    (answer,) = frames_of(link.data_to_send())
    assert (answer["t"], answer["11"], answer["39"], answer["70"]) == ("0810", "555555", "00", "301")


# -- malformed input ----------------------------------------------------------------

def _corrupt_bitmap(raw: bytes) -> bytes:
    return raw[:4] + b"ZZZZZZZZZZZZZZZZ" + raw[20:]


@pytest.mark.parametrize("name, payload, answered", [
    ("bad bitmap", _corrupt_bitmap(spec.encode_message({"t": "0800", "11": "000009", "70": "301"})), False),
    ("truncated field", spec.encode_message({"t": "0200", "11": "000009", "41": TERMINAL,
                                             "48": "x" * 20})[:-5], True),
    ("non-numeric amount", spec.encode_message({"t": "0200", "11": "000009", "41": TERMINAL,
                                                "4": "0000000000AB"}), True),
    ("garbage", b"\x00\x01garbage\xff", False),
    ("unknown MTI", spec.encode_message({"t": "0999", "11": "000009"}), False),
])
def test_malformed_message_is_refused_and_pending_request_survives(name, payload, answered):
    link = signed_on_link()
    request = link.send(purchase(link), 0.0, tag="keep")
    link.data_to_send()
    events = link.receive_data(encode_frame(payload), 1.0)
    assert [type(e) for e in events] == [L.MessageRefused]
    assert events[0].answered is answered
    sent = frames_of(link.data_to_send())
    if answered:
        assert [(m["t"], m["11"], m["39"]) for m in sent] == [("0210", "000009", "30")]
    else:
        assert sent == []
    assert link.ready and link.pending == [request]
    events = link.receive_data(frame(answer_to(request.message)), 2.0)
    assert [e.request.tag for e in events] == ["keep"]


def test_wrong_length_header_drops_the_link_and_reports_the_request():
    link = signed_on_link()
    request = link.send(purchase(link), 0.0)
    events = link.receive_data(b"\xff\xffxxxx", 1.0)
    assert isinstance(events[-1], L.LinkDead)
    assert link.connection_lost() == [L.RequestLost(request)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=5))
def test_fuzz_random_frames_never_crash_or_lose_the_pending_request(payloads):
    link = signed_on_link()
    request = link.send(purchase(link, "424242"), 0.0)
    link.data_to_send()
    for payload in payloads:
        for event in link.receive_data(encode_frame(payload), 1.0):
            assert not isinstance(event, L.LinkDead)
            if isinstance(event, L.ResponseReceived):       # a random frame may be a valid answer
                return
    assert link.ready and link.pending == [request]
    for answer in frames_of(link.data_to_send()):
        assert answer["39"] in ("30", "00", "12")


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=600))
def test_fuzz_random_stream_bytes_never_crash(data):
    link = signed_on_link()
    request = link.send(purchase(link, "424242"), 0.0)
    events = link.receive_data(data, 1.0)
    if any(isinstance(e, L.LinkDead) for e in events):
        assert link.connection_lost() == [L.RequestLost(request)]
    elif not any(isinstance(e, L.ResponseReceived) for e in events):
        assert link.pending == [request]


# -- the Twisted protocol on a fake clock --------------------------------------------

class TcpStringTransport(StringTransport):
    """StringTransport with the TCP option the protocol sets."""
    no_delay = False

    def setTcpNoDelay(self, enabled):
        self.no_delay = enabled


class _Owner:
    """The protocol's owner seam: a minimal BankConnection stand-in."""
    code = "test"

    def __init__(self):
        self.signed_on = 0
        self.events = []

    def _signed_on(self, protocol):
        self.signed_on += 1

    def _protocol_gone(self, protocol):
        pass

    def _event(self, event):
        self.events.append(event)


def test_protocol_times_out_requests_and_aborts_on_missing_echo():
    clock = task.Clock()
    owner = _Owner()
    link = L.Link(terminal_id=TERMINAL, stan_source=stans(), response_timeout=5.0, echo_interval=30.0)
    protocol = BankLinkProtocol(link, clock, owner)
    transport = TcpStringTransport()
    protocol.makeConnection(transport)
    assert transport.no_delay
    (sign_on,) = frames_of(transport.value())
    transport.clear()
    protocol.dataReceived(frame(dict(answer_to(sign_on), **{"70": "001"})))
    assert owner.signed_on == 1
    d = protocol.request(purchase(link), timeout=2.0)
    failures = []
    d.addErrback(failures.append)
    clock.advance(2.0)
    assert failures and failures[0].check(RequestTimeout)
    transport.clear()
    clock.advance(30.0)                                  # idle: echo goes out
    assert [m["70"] for m in frames_of(transport.value())] == ["301"]
    clock.advance(5.0)                                   # ...and is never answered
    assert transport.disconnected and transport.disconnecting
