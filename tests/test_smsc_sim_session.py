"""The SMSC session state machine without sockets, and the simulator's timers on a task.Clock."""
from __future__ import annotations

import struct

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from channels.smpp import pdu as P
from channels.smpp.text import decode_message, split_message
from simulators.smsc import SmscConfig, SmscSimulator
from simulators.smsc.server import SmscFactory
from simulators.smsc.session import (BindMode, BindRefused, BindRequested, EnquireLinkReceived, MalformedPdu,
                                     RequestRejected, ResponseReceived, SessionState, SmscSession,
                                     SubmitReceived, UnbindReceived)

ACCOUNTS = {"telecom-pay": "secret"}
CUSTOMER = "8613800138000"


def decoded_output(session):
    return [P.decode_pdu(out.raw) for out in session.take_output()]


def bind(session, command="bind_transceiver", sequence=1, password="secret"):
    return session.receive_pdu(P.encode_pdu(command, sequence, system_id="telecom-pay", password=password))


# --- the sans-I/O session -------------------------------------------------------------

def test_bind_flow_and_state():
    s = SmscSession(ACCOUNTS)
    event = bind(s)
    assert isinstance(event, BindRequested) and event.mode is BindMode.TRANSCEIVER
    assert s.take_output() == []  # the caller decides
    s.accept_bind()
    [resp] = decoded_output(s)
    assert (resp.command, resp.sequence, resp.status, resp.system_id) == ("bind_transceiver_resp", 1, 0, "SMSC-SIM")
    assert s.state is SessionState.BOUND and s.can_deliver
    event = bind(s, sequence=2)
    assert isinstance(event, BindRefused) and event.status == P.ESME_RALYBND


def test_smpp33_bind_gets_no_tlv():
    s = SmscSession(ACCOUNTS)
    s.receive_pdu(P.encode_pdu("bind_transceiver", 1, system_id="telecom-pay", password="secret",
                               interface_version=0x33))
    out = s.accept_bind()
    assert out.raw[-1:] == b"\x00" and P.decode_pdu(out.raw).sc_interface_version is None
    s = SmscSession(ACCOUNTS)
    bind(s)
    assert P.decode_pdu(s.accept_bind().raw).sc_interface_version == 0x34


def test_wrong_password_and_refused_bind():
    s = SmscSession(ACCOUNTS)
    event = bind(s, password="nope")
    assert isinstance(event, BindRefused)
    [resp] = decoded_output(s)
    assert resp.status == P.ESME_RINVPASWD and s.state is SessionState.OPEN
    bind(s, "bind_transmitter", 2)
    s.refuse_bind(P.ESME_RBINDFAIL)
    [resp] = decoded_output(s)
    assert (resp.command, resp.status) == ("bind_transmitter_resp", P.ESME_RBINDFAIL)
    assert s.state is SessionState.OPEN and s.mode is None


def test_submit_needs_a_transmitting_bind():
    s = SmscSession(ACCOUNTS)
    submit = P.encode_pdu("submit_sm", 5, destination_addr=CUSTOMER, short_message=b"x")
    assert isinstance(s.receive_pdu(submit), RequestRejected)
    [resp] = decoded_output(s)
    assert (resp.command, resp.sequence, resp.status) == ("submit_sm_resp", 5, P.ESME_RINVBNDSTS)
    bind(s, "bind_receiver")
    s.accept_bind()
    s.take_output()
    assert not s.mode.can_submit
    assert isinstance(s.receive_pdu(submit), RequestRejected)
    s2 = SmscSession(ACCOUNTS)
    bind(s2, "bind_transmitter")
    s2.accept_bind()
    s2.take_output()
    event = s2.receive_pdu(submit)
    assert isinstance(event, SubmitReceived)
    s2.respond(event.pdu, message_id="abc")
    [resp] = decoded_output(s2)
    assert (resp.sequence, resp.message_id) == (5, "abc")
    assert not s2.can_deliver


def test_enquire_link_unbind_and_garbage_are_answered_by_the_session():
    s = SmscSession(ACCOUNTS)
    assert isinstance(s.receive_pdu(P.encode_pdu("enquire_link", 9)), EnquireLinkReceived)
    event = s.receive_pdu(struct.pack(">LLLL", 16, 0x1234, 0, 10))
    assert isinstance(event, MalformedPdu) and event.error.status == P.ESME_RINVCMDID
    event = s.receive_pdu(struct.pack(">LLLL", 16, 0x80001234, 0, 11))  # a bad *response* is never nacked
    assert isinstance(event, MalformedPdu)
    assert isinstance(s.receive_pdu(P.encode_pdu("query_sm", 12, message_id="1")), RequestRejected)
    assert isinstance(s.receive_pdu(P.encode_pdu("unbind", 13)), UnbindReceived)
    out = decoded_output(s)
    assert [(p.command, p.sequence, p.status) for p in out] == [
        ("enquire_link_resp", 9, 0), ("generic_nack", 10, P.ESME_RINVCMDID),
        ("query_sm_resp", 12, P.ESME_RINVCMDID), ("unbind_resp", 13, 0)]
    assert s.state is SessionState.UNBINDING


def test_own_requests_are_tracked_matched_and_expired():
    s = SmscSession(ACCOUNTS)
    bind(s)
    s.accept_bind()
    s.take_output()
    first = s.send_request("deliver_sm", now=100.0, context="mo-1", destination_addr="10658888", short_message=b"a")
    second = s.send_request("enquire_link", now=105.0)
    assert (first.sequence, second.sequence) == (1, 2)
    event = s.receive_pdu(P.encode_pdu("deliver_sm_resp", first.sequence))
    assert isinstance(event, ResponseReceived) and event.request.context == "mo-1"
    event = s.receive_pdu(P.encode_pdu("deliver_sm_resp", 77))
    assert isinstance(event, ResponseReceived) and event.request is None
    assert s.expire(now=110.0, timeout=10.0) == []
    [late] = s.expire(now=115.0, timeout=10.0)
    assert late.command == "enquire_link" and s.outstanding == {}
    s._next_sequence = 0x7FFFFFFF
    assert s.send_request("enquire_link", 120.0).sequence == 0x7FFFFFFF
    assert s.send_request("enquire_link", 120.0).sequence == 1
    assert len(s.close()) == 2 and s.state is SessionState.CLOSED


# --- simulator timers on a task.Clock (no sockets: StringTransport) -----------------------

class TcpStringTransport(StringTransport):
    nodelay = False

    def setTcpNoDelay(self, enabled):
        self.nodelay = enabled


class Wire:
    """One fake connection to the simulator: write PDUs in, read PDUs out."""

    def __init__(self, sim):
        self.proto = SmscFactory(sim).buildProtocol(None)
        self.transport = TcpStringTransport()
        self.proto.makeConnection(self.transport)
        assert self.transport.nodelay
        self.reader = P.PduReader()

    def send(self, command, sequence, **fields):
        self.proto.dataReceived(P.encode_pdu(command, sequence, **fields))

    def read(self):
        data = self.transport.value()
        self.transport.clear()
        return [P.decode_pdu(raw) for raw in self.reader.feed(data)]


def clock_sim(**overrides):
    clock = Clock()
    values = dict(accounts=ACCOUNTS, response_timeout=10, redelivery_delay=2, enquire_link_interval=30,
                  bind_timeout=60, delivery_receipt_delay=1)
    values.update(overrides)
    return clock, SmscSimulator(SmscConfig(**values), clock)


def test_redelivery_and_giving_up_on_a_clock():
    clock, sim = clock_sim(max_delivery_attempts=2)
    wire = Wire(sim)
    wire.send("bind_transceiver", 1, system_id="telecom-pay", password="secret")
    assert wire.read()[0].status == 0
    results = []
    sim.handset(CUSTOMER).send("YE").addBoth(results.append)
    [first] = wire.read()
    clock.advance(9.9)
    assert wire.read() == []
    clock.advance(0.1)  # response timeout
    clock.advance(2)  # redelivery delay
    [second] = wire.read()
    assert decode_message(second).text == "YE" and second.sequence != first.sequence
    clock.advance(10)
    assert len(results) == 1 and "gave up after 2 attempts" in str(results[0].value)


def test_receipt_delay_enquire_link_and_bind_timeout_on_a_clock():
    clock, sim = clock_sim()
    idle = Wire(sim)
    wire = Wire(sim)
    wire.send("bind_transceiver", 1, system_id="telecom-pay", password="secret")
    wire.read()
    wire.send("submit_sm", 2, destination_addr=CUSTOMER, short_message=b"hi", registered_delivery=1)
    [resp] = wire.read()
    clock.advance(0.5)
    assert wire.read() == []
    clock.advance(0.5)
    [receipt] = wire.read()
    assert receipt.receipted_message_id == resp.message_id
    wire.send("deliver_sm_resp", receipt.sequence)
    clock.advance(29)
    [probe] = wire.read()
    assert probe.command == "enquire_link"
    wire.send("enquire_link_resp", probe.sequence)
    clock.advance(10)
    assert not wire.transport.disconnecting
    clock.advance(20)  # next probe, unanswered for response_timeout: the link is dead
    [probe] = wire.read()
    clock.advance(10)
    assert wire.transport.disconnecting
    assert idle.transport.disconnecting  # never bound within bind_timeout


def test_handset_wait_for_reply_times_out_on_a_clock():
    clock, sim = clock_sim()
    phone = sim.handset(CUSTOMER)
    waiting = phone.wait_for_reply(timeout=5)
    failures = []
    waiting.addErrback(failures.append)
    clock.advance(5)
    assert failures and failures[0].check(defer.TimeoutError)


def test_config_rejects_unknown_and_bad_settings():
    with pytest.raises(ValueError):
        SmscConfig.from_mapping({"acounts": {}})
    with pytest.raises(ValueError):
        SmscConfig.from_mapping({"response_timeout": 0})
    config = SmscConfig.from_mapping({"service_number": "10650000", "handsets": [{"msisdn": "13900139000"}]})
    sim = SmscSimulator(config, Clock())
    assert list(sim.handsets) == ["8613900139000"]


def test_network_initiated_ussd_menu_is_answered_with_the_echoed_session_info():
    clock, sim = clock_sim()
    wire = Wire(sim)
    wire.send("bind_transceiver", 1, system_id="telecom-pay", password="secret")
    wire.read()
    wire.send("submit_sm", 2, source_addr="10658888", destination_addr=CUSTOMER, short_message=b"Pay 5.00? 1 yes 2 no",
              ussd_service_op=P.USSD_USSR_REQ, its_session_info=0x0504)
    [resp] = wire.read()
    assert resp.status == 0
    phone = sim.handset(CUSTOMER)
    assert phone.ussd_session.open and phone.ussd_screens[-1].text == "Pay 5.00? 1 yes 2 no"
    phone.ussd_reply("1")
    [answer] = wire.read()
    assert (answer.ussd_service_op, answer.short_message, answer.its_session_info) == (
        P.USSD_USSR_CONF, b"1", 0x0504)
    wire.send("deliver_sm_resp", answer.sequence)
    wire.send("submit_sm", 3, source_addr="10658888", destination_addr=CUSTOMER, short_message=b"Paid",
              ussd_service_op=P.USSD_USSR_REQ, its_session_info=0x0505)  # end bit set
    wire.read()
    assert not phone.ussd_session.open and phone.ussd_screens[-1].ended


def test_deliver_sm_window_holds_back_the_rest_until_acks_come():
    clock, sim = clock_sim(window=2)
    wire = Wire(sim)
    wire.send("bind_transceiver", 1, system_id="telecom-pay", password="secret")
    wire.read()
    acked = []
    for i in range(5):
        sim.handset(CUSTOMER).send(f"MSG {i}").addCallback(acked.append)
    first = wire.read()
    assert [decode_message(p).text for p in first] == ["MSG 0", "MSG 1"]
    assert sim.waiting_deliveries == 3
    wire.send("deliver_sm_resp", first[0].sequence)
    [third] = wire.read()
    assert decode_message(third).text == "MSG 2"
    for pdu in (first[1], third):
        wire.send("deliver_sm_resp", pdu.sequence)
    rest = wire.read()
    assert [decode_message(p).text for p in rest] == ["MSG 3", "MSG 4"]
    for pdu in rest:
        wire.send("deliver_sm_resp", pdu.sequence)
    assert len(acked) == 5 and sim.waiting_deliveries == 0


def test_incomplete_long_mt_expires_into_the_traffic_record():
    clock, sim = clock_sim()
    wire = Wire(sim)
    wire.send("bind_transceiver", 1, system_id="telecom-pay", password="secret")
    parts = split_message("x" * 200, 7)
    wire.send("submit_sm", 2, source_addr="10658888", destination_addr=CUSTOMER, esm_class=parts[0].esm_class,
              short_message=parts[0].short_message)
    clock.advance(61)
    wire.send("submit_sm", 3, source_addr="10658888", destination_addr=CUSTOMER, short_message=b"later")
    assert [m.text for m in sim.handset(CUSTOMER).inbox] == ["later"]
    [note] = [r.note for r in sim.traffic if r.note and "incomplete" in r.note]
    assert "ref 7, 1 part(s)" in note
