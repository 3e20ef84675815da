"""The SMSC simulator over real TCP on 127.0.0.1, driven by a tiny ESME built on our codec."""
from __future__ import annotations

import struct

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from channels.smpp import pdu as P
from channels.smpp.text import Reassembler, decode_message, split_message
from simulators.smsc import DeliveryFailed, SmscConfig, SmscSimulator

ACCOUNT = ("telecom-pay", "secret")
CUSTOMER = "8613800138000"


def sleep(seconds: float) -> defer.Deferred:
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class EsmeDouble(Protocol):
    """A minimal ESME on the shared codec: sends requests, collects what the SMSC sends.

    deliver_sm and enquire_link are answered automatically (``ack_status``
    decides the deliver_sm_resp status; ``ack`` False leaves them unanswered).
    ``on_deliver`` may react to each deliver_sm (e.g. send a reply).
    """

    def __init__(self):
        self.reader = P.PduReader()
        self.sequence = 0
        self.pending: dict[int, defer.Deferred] = {}
        self.requests: list = []  # requests from the SMSC, decoded
        self.unread: list = []  # those not yet taken by next_request
        self.responses: list = []
        self._waiters: list = []
        self.ack = True
        self.ack_status = P.ESME_ROK
        self.on_deliver = None
        self.lost = defer.Deferred()

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        for raw in self.reader.feed(data):
            pdu = P.decode_pdu(raw)
            if pdu.command.endswith("_resp") or pdu.command == "generic_nack":
                self.responses.append(pdu)
                d = self.pending.pop(pdu.sequence, None)
                if d is not None:
                    d.callback(pdu)
                continue
            self.requests.append(pdu)
            self.unread.append(pdu)
            if pdu.command == "enquire_link":
                self.transport.write(P.encode_pdu("enquire_link_resp", pdu.sequence))
            elif pdu.command in ("deliver_sm", "data_sm") and self.ack:
                self.transport.write(P.encode_pdu(pdu.command + "_resp", pdu.sequence, self.ack_status))
            if pdu.command == "deliver_sm" and self.on_deliver is not None:
                self.on_deliver(pdu)
            for waiter in list(self._waiters):
                self._try(waiter)

    def connectionLost(self, reason=None):
        self.lost.callback(None)

    def request(self, command, **fields) -> defer.Deferred:
        self.sequence += 1
        d = defer.Deferred()
        self.pending[self.sequence] = d
        self.transport.write(P.encode_pdu(command, self.sequence, **fields))
        return d.addTimeout(5, reactor)

    def bind(self, system_id=ACCOUNT[0], password=ACCOUNT[1], command="bind_transceiver"):
        return self.request(command, system_id=system_id, password=password, interface_version=0x34)

    def submit(self, destination=CUSTOMER, text="hello", **fields):
        [part] = split_message(text, 0)
        fields.setdefault("data_coding", part.data_coding)
        return self.request("submit_sm", source_addr="10658888", destination_addr=destination,
                            short_message=part.short_message, **fields)

    def next_request(self, command="deliver_sm", timeout=5.0) -> defer.Deferred:
        """The next request of ``command`` from the SMSC not yet handed out."""
        waiter = (command, defer.Deferred())
        self._waiters.append(waiter)
        self._try(waiter)
        return waiter[1].addTimeout(timeout, reactor)

    def _try(self, waiter):
        command, d = waiter
        for pdu in self.unread:
            if pdu.command == command:
                self.unread.remove(pdu)
                self._waiters.remove(waiter)
                if not d.called:
                    d.callback(pdu)
                return


def fast_config(**overrides) -> SmscConfig:
    values = dict(accounts=dict([ACCOUNT, ("other", "pw2")]), delivery_receipt_delay=0.01,
                  response_timeout=0.3, redelivery_delay=0.05, enquire_link_interval=0, bind_timeout=5)
    values.update(overrides)
    return SmscConfig(**values)


@pytest.fixture
def make_sim():
    sims = []

    @defer.inlineCallbacks
    def make(**overrides):
        sim = SmscSimulator(fast_config(**overrides), reactor)
        sims.append(sim)
        port = yield sim.listen("tcp:0:interface=127.0.0.1")
        return sim, port.getHost().port

    yield make
    for sim in sims:
        pytest_twisted.blockon(sim.stop())


@defer.inlineCallbacks
def connect(port) -> EsmeDouble:
    esme = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), EsmeDouble())
    return esme


@defer.inlineCallbacks
def bound_esme(port, command="bind_transceiver"):
    esme = yield connect(port)
    resp = yield esme.bind(command=command)
    assert resp.status == P.ESME_ROK
    return esme


# --- binds ---------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_bind_transceiver_ok(make_sim):
    sim, port = yield make_sim()
    esme = yield connect(port)
    resp = yield esme.bind()
    assert (resp.command, resp.status, resp.system_id, resp.sequence) == ("bind_transceiver_resp", 0, "SMSC-SIM", 1)
    [info] = sim.binds
    assert (info.system_id, info.mode, info.state) == ("telecom-pay", "transceiver", "bound")
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_bad_credentials_are_refused(make_sim):
    sim, port = yield make_sim()
    esme = yield connect(port)
    resp = yield esme.bind(password="wrong")
    assert resp.status == P.ESME_RINVPASWD
    resp = yield esme.bind(system_id="nobody")
    assert resp.status == P.ESME_RINVSYSID
    resp = yield esme.submit()
    assert resp.status == P.ESME_RINVBNDSTS  # not bound: no submitting
    resp = yield esme.bind()
    assert resp.status == P.ESME_ROK  # the link survived the refusals
    resp = yield esme.bind()
    assert resp.status == P.ESME_RALYBND
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_receiver_cannot_submit(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port, "bind_receiver")
    resp = yield esme.submit()
    assert resp.status == P.ESME_RINVBNDSTS
    esme.transport.loseConnection()


# --- MT, receipts -----------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_submit_sm_gets_unique_id_and_matching_delivery_receipt(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    first = yield esme.submit(text="Balance 12.50", registered_delivery=1)
    second = yield esme.submit(text="no receipt please")
    assert first.status == second.status == P.ESME_ROK
    assert first.message_id and second.message_id and first.message_id != second.message_id
    receipt = yield esme.next_request("deliver_sm")
    assert receipt.esm_class & P.ESM_CLASS_DELIVERY_RECEIPT
    assert receipt.receipted_message_id == first.message_id
    assert receipt.message_state == P.MESSAGE_STATE_DELIVERED
    assert (receipt.source_addr, receipt.destination_addr) == (CUSTOMER, "10658888")
    body = decode_message(receipt).text
    assert body.startswith(f"id:{first.message_id} sub:001 dlvrd:001 submit date:")
    assert " stat:DELIVRD err:000 text:Balance 12.50" in body
    inbox = sim.handset(CUSTOMER).inbox
    assert [m.text for m in inbox] == ["Balance 12.50", "no receipt please"]
    yield sleep(0.05)
    assert sim.messages[first.message_id].receipt_acked_at is not None
    assert not [r for r in esme.unread if r.command == "deliver_sm"]  # only one receipt
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_long_chinese_mt_is_reassembled_in_the_inbox(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    text = "您的账户余额为十二元五角。" * 12
    parts = split_message(text, ref=42)
    assert len(parts) > 2
    for part in reversed(parts):  # order on the wire must not matter
        resp = yield esme.request("submit_sm", source_addr="10658888", destination_addr=CUSTOMER,
                                  esm_class=part.esm_class, data_coding=part.data_coding,
                                  short_message=part.short_message)
        assert resp.status == 0
    [message] = sim.handset(CUSTOMER).inbox
    assert message.text == text
    assert message.data_coding == 8 and len(message.parts) == len(parts)
    got = yield sim.handset(CUSTOMER).wait_for_reply(timeout=1)
    assert got == text
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_mos_are_spread_over_the_bound_esmes_in_turn(make_sim):
    """Two daemon instances, each with its own bind of the account: the SMSC
    hands MOs to one and the other in turn (a bind that dies leaves the
    rest to the other, tested with the daemons in tests/reliability)."""
    sim, port = yield make_sim()
    one = yield bound_esme(port)
    two = yield bound_esme(port)
    phone = sim.handset(CUSTOMER)
    for i in range(6):
        yield phone.send(f"YE {i}")
    texts = [[decode_message(r).text for r in e.requests if r.command == "deliver_sm"] for e in (one, two)]
    assert sorted(texts) == [["YE 0", "YE 2", "YE 4"], ["YE 1", "YE 3", "YE 5"]]
    one.transport.loseConnection()
    yield sleep(0.2)
    yield phone.send("YE after")
    assert decode_message(two.requests[-1]).text == "YE after"
    two.transport.loseConnection()


# --- link management ---------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_enquire_link_both_ways(make_sim):
    sim, port = yield make_sim(enquire_link_interval=0.05)
    esme = yield bound_esme(port)
    resp = yield esme.request("enquire_link")
    assert (resp.command, resp.status) == ("enquire_link_resp", 0)
    probe = yield esme.next_request("enquire_link")
    assert probe.sequence >= 1
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_unanswered_enquire_link_drops_the_link(make_sim):
    sim, port = yield make_sim(enquire_link_interval=0.05, response_timeout=0.1)
    esme = yield connect(port)
    esme.dataReceived = lambda data: None  # a dead peer: reads nothing, answers nothing
    esme.transport.write(P.encode_pdu("bind_transceiver", 1, system_id=ACCOUNT[0], password=ACCOUNT[1]))
    yield esme.lost.addTimeout(5, reactor)
    assert any("enquire_link" in (r.note or "") for r in sim.traffic)


@pytest_twisted.inlineCallbacks
def test_unbind_answers_and_closes(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    resp = yield esme.request("unbind")
    assert (resp.command, resp.status) == ("unbind_resp", 0)
    yield esme.lost.addTimeout(5, reactor)
    yield sleep(0.01)
    assert sim.binds == []


@pytest_twisted.inlineCallbacks
def test_smsc_initiated_unbind(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    assert sim.unbind_binds(system_id="telecom-pay") == 1
    unbind = yield esme.next_request("unbind")
    esme.transport.write(P.encode_pdu("unbind_resp", unbind.sequence))
    yield esme.lost.addTimeout(5, reactor)


@pytest_twisted.inlineCallbacks
def test_garbage_gets_generic_nack_and_the_link_stays_up(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    unknown = defer.Deferred()
    esme.pending[4242] = unknown
    esme.transport.write(struct.pack(">LLLL", 20, 0x00000077, 0, 4242) + b"junk")
    nack = yield unknown.addTimeout(5, reactor)
    assert (nack.command, nack.status) == ("generic_nack", P.ESME_RINVCMDID)
    good = P.encode_pdu("submit_sm", 4243, source_addr="1", destination_addr=CUSTOMER, short_message=b"hi")
    truncated = struct.pack(">L", 30) + good[4:30]
    cut = defer.Deferred()
    esme.pending[4243] = cut
    esme.transport.write(truncated)
    nack = yield cut.addTimeout(5, reactor)
    assert (nack.command, nack.status) == ("generic_nack", P.ESME_RINVCMDLEN)
    resp = yield esme.request("enquire_link")
    assert resp.status == 0
    resp = yield esme.submit(text="still here")
    assert resp.status == 0
    assert any((r.note or "").startswith("malformed") for r in sim.traffic)
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_framing_error_drops_the_connection(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    esme.transport.write(struct.pack(">LLLL", 8, 0x15, 0, 9))
    yield esme.lost.addTimeout(5, reactor)


# --- MO -------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_mo_reaches_the_bound_esme(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    phone = sim.handset("13800138000")  # local form: the handset is the E.164 number
    assert phone.msisdn == CUSTOMER
    sent = yield phone.send("YE").addTimeout(5, reactor)
    assert sent.acked_at is not None and sent.parts == 1
    mo = yield esme.next_request("deliver_sm")
    assert (mo.source_addr, mo.destination_addr, mo.esm_class) == (CUSTOMER, "10658888", 0)
    assert decode_message(mo).text == "YE"
    records = sim.traffic.records(command="deliver_sm")
    assert records[-1].text == "YE" and records[-1].direction == "out"
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_mo_as_data_sm(make_sim):
    sim, port = yield make_sim(mo_command="data_sm")
    esme = yield bound_esme(port)
    yield sim.handset(CUSTOMER).send("余额").addTimeout(5, reactor)
    mo = yield esme.next_request("data_sm")
    assert mo.message_payload == "余额".encode("utf-16-be") and mo.data_coding == 8
    assert decode_message(mo).text == "余额"
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_long_chinese_mo_arrives_as_ucs2_parts(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    text = "转账给13900139000金额100元备注房租" * 5
    yield sim.handset(CUSTOMER).send(text).addTimeout(5, reactor)
    reassembler = Reassembler(reactor)
    parts = []
    result = None
    while result is None:
        pdu = yield esme.next_request("deliver_sm")
        parts.append(pdu)
        decoded = decode_message(pdu)
        result = reassembler.add(pdu.source_addr, decoded.concat, decoded.text)
    assert result == text
    assert len(parts) == len(split_message(text, 0)) > 1
    assert all(p.data_coding == 8 and p.esm_class & 0x40 and len(p.short_message) <= 140 for p in parts)
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_mo_waits_for_a_receiver_and_is_delivered_on_bind(make_sim):
    sim, port = yield make_sim()
    sending = sim.handset(CUSTOMER).send("KT")
    tx = yield bound_esme(port, "bind_transmitter")  # cannot receive
    yield sleep(0.02)
    assert not sending.called and sim.waiting_deliveries == 1
    rx = yield bound_esme(port, "bind_receiver")
    yield sending.addTimeout(5, reactor)
    mo = yield rx.next_request("deliver_sm")
    assert decode_message(mo).text == "KT"
    tx.transport.loseConnection()
    rx.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_unacknowledged_mo_is_redelivered(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    esme.ack = False
    sending = sim.handset(CUSTOMER).send("CZ 50")
    first = yield esme.next_request("deliver_sm")
    esme.ack = True
    second = yield esme.next_request("deliver_sm")  # after response_timeout
    yield sending.addTimeout(5, reactor)
    assert decode_message(first).text == decode_message(second).text == "CZ 50"
    assert first.sequence != second.sequence
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_temporary_error_is_retried_permanent_error_fails(make_sim):
    sim, port = yield make_sim(max_delivery_attempts=3)
    esme = yield bound_esme(port)
    esme.ack_status = P.ESME_RX_T_APPN
    sending = sim.handset(CUSTOMER).send("YE")
    yield esme.next_request("deliver_sm")
    esme.ack_status = P.ESME_ROK
    yield sending.addTimeout(5, reactor)
    esme.ack_status = P.ESME_RX_P_APPN
    with pytest.raises(DeliveryFailed):
        yield sim.handset(CUSTOMER).send("YE").addTimeout(5, reactor)
    esme.transport.loseConnection()


# --- USSD -----------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_ussd_dialogue(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    phone = sim.handset(CUSTOMER)
    screen = phone.dial_ussd("*188#")
    begin = yield esme.next_request("deliver_sm")
    assert begin.ussd_service_op == P.USSD_PSSR_IND
    assert begin.short_message == b"*188#" and begin.service_type == "USSD"
    session_info = begin.its_session_info
    resp = yield esme.request("submit_sm", source_addr="10658888", destination_addr=CUSTOMER,
                              short_message=b"1 Balance\n2 Top up", ussd_service_op=P.USSD_USSR_REQ,
                              its_session_info=session_info)
    assert resp.status == 0
    text = yield screen.addTimeout(5, reactor)
    assert text == "1 Balance\n2 Top up"
    assert phone.ussd_session.open
    answer = phone.ussd_reply("1")
    reply = yield esme.next_request("deliver_sm")
    assert reply.ussd_service_op == P.USSD_USSR_CONF and reply.short_message == b"1"
    assert reply.its_session_info >> 8 == session_info >> 8
    final = "余额 12.50 元"
    yield esme.request("submit_sm", source_addr="10658888", destination_addr=CUSTOMER,
                       short_message=final.encode("utf-16-be"), data_coding=8,
                       ussd_service_op=P.USSD_PSSR_RESP, its_session_info=reply.its_session_info | 1)
    text = yield answer.addTimeout(5, reactor)
    assert text == final
    assert not phone.ussd_session.open and phone.ussd_screens[-1].ended
    assert phone.inbox == []  # USSD never lands in the SMS inbox
    esme.transport.loseConnection()


# --- faults ------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_fault_throttle(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    sim.faults.add("throttle", count=2)
    statuses = []
    for _ in range(3):
        resp = yield esme.submit()
        statuses.append(resp.status)
    assert statuses == [P.ESME_RTHROTTLED, P.ESME_RTHROTTLED, P.ESME_ROK]
    sim.faults.add("throttle", duration=60, status=P.ESME_RMSGQFUL, system_id="other")
    resp = yield esme.submit()
    assert resp.status == 0  # scoped to another account
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_fault_drop_and_delay(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    sim.faults.add("drop", count=1)
    lost = esme.submit(text="lost")
    resp = yield esme.submit(text="kept")
    assert resp.status == 0 and not lost.called
    lost.addErrback(lambda f: f.trap(defer.TimeoutError))
    lost.cancel()
    assert [m.text for m in sim.handset(CUSTOMER).inbox] == ["kept"]
    assert any(r.note == "dropped (fault)" for r in sim.traffic)
    sim.faults.add("delay", seconds=0.2, count=1)
    resp = yield esme.request("enquire_link")
    assert resp.status == 0
    assert any((r.note or "").startswith("delayed 0.2s") for r in sim.traffic)
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_fault_duplicate_mo(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    sim.faults.add("duplicate", count=1)
    yield sim.handset(CUSTOMER).send("ZF 1001 5").addTimeout(5, reactor)
    first = yield esme.next_request("deliver_sm")
    again = yield esme.next_request("deliver_sm")
    assert first.short_message == again.short_message and first.sequence != again.sequence
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_fault_close_and_refuse_bind(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    assert sim.close_binds(system_id="telecom-pay") == 1
    yield esme.lost.addTimeout(5, reactor)
    sim.faults.add("refuse_bind", count=1)
    esme = yield connect(port)
    resp = yield esme.bind()
    assert resp.status == P.ESME_RBINDFAIL
    resp = yield esme.bind()
    assert resp.status == P.ESME_ROK
    esme.transport.loseConnection()


def test_fault_validation():
    sim = SmscSimulator(fast_config(), reactor)
    with pytest.raises(ValueError):
        sim.faults.add("explode")
    with pytest.raises(ValueError):
        sim.faults.add("throttle", count=0)
    with pytest.raises(ValueError):
        sim.faults.add("delay")
    with pytest.raises(ValueError):
        sim.faults.add_from_json({"kind": "drop", "colour": "red"})
    fault = sim.faults.add_from_json({"kind": "drop", "probability": 0.5, "direction": "out"})
    assert sim.faults.active() == [fault]
    assert sim.faults.clear() == 1
