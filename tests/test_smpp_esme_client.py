"""The ESME over real TCP on 127.0.0.1 against a small SMSC written here with
the shared codec: bind, submit, MO acknowledged only when the application's
Deferred fires, reconnect with messages queued meanwhile, graceful unbind,
and a pool of two binds with one down."""
from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ServerEndpoint

from channels.smpp import pdu as P
from channels.smpp.client import EsmeService, SubmitError, log_keyword
from channels.smpp.pool import EsmePool
from channels.smpp.text import decode_short_message

A = "8613800138000"
B = "8613900139000"
SERVICE = "10658888"


# ------------------------------------------------------------------ the SMSC end

class SmscConnection(protocol.Protocol):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.reader = P.PduReader()
        self.seq = 100
        self.bound = False
        self.factory.connections.append(self)

    def connectionLost(self, reason=None):
        if self in self.factory.connections:
            self.factory.connections.remove(self)

    def send(self, command, seq=None, status=0, **fields):
        if seq is None:
            self.seq += 1
            seq = self.seq
        self.transport.write(P.encode_pdu(command, seq, status, **fields))
        return seq

    def dataReceived(self, data):
        f = self.factory
        for raw in self.reader.feed(data):
            pdu = P.decode_pdu(raw)
            f.log.append(pdu)
            if pdu.command == "bind_transceiver":
                f.binds.append(pdu)
                self.bound = f.bind_status == 0
                self.send("bind_transceiver_resp", pdu.sequence, f.bind_status, system_id="FAKESMSC")
            elif pdu.command == "submit_sm":
                f.submits.append(pdu)
                if f.hold_submits:
                    f.held.append((self, pdu))
                else:
                    f.msg_id += 1
                    self.send("submit_sm_resp", pdu.sequence, message_id=f"{f.msg_id:08X}")
            elif pdu.command == "enquire_link":
                self.send("enquire_link_resp", pdu.sequence)
            elif pdu.command == "unbind":
                f.unbinds += 1
                self.send("unbind_resp", pdu.sequence)
                self.transport.loseConnection()
            elif pdu.command.endswith("_resp"):
                f.responses.append(pdu)

    def deliver(self, text: str, source=A, **fields):
        return self.send("deliver_sm", source_addr=source, source_addr_ton=1, source_addr_npi=1,
                         destination_addr=SERVICE, short_message=text.encode("ascii"), **fields)


class FakeSmsc(protocol.Factory):
    protocol = SmscConnection

    def __init__(self):
        self.connections: list[SmscConnection] = []
        self.log = []
        self.binds = []
        self.submits = []
        self.responses = []
        self.held = []
        self.hold_submits = False
        self.bind_status = 0
        self.unbinds = 0
        self.msg_id = 0x1F0

    def response_to(self, seq):
        return [r for r in self.responses if r.sequence == seq]


class App:
    """A recording SmsApplication; MO Deferreds stay pending until the test fires them."""

    def __init__(self):
        self.mo = []
        self.pending = []
        self.receipts = []
        self.results = []
        self.up = []
        self.down = []
        self.fail_receipts = False

    def message_received(self, bind, event):
        d = defer.Deferred()
        self.mo.append((bind, event))
        self.pending.append(d)
        return d

    def receipt_received(self, bind, event):
        if self.fail_receipts:
            raise RuntimeError("outbox unavailable")
        self.receipts.append(event)

    def submit_result(self, bind, event):
        self.results.append(event)

    def link_up(self, bind):
        self.up.append(bind)

    def link_down(self, bind):
        self.down.append(bind)


@defer.inlineCallbacks
def until(predicate, timeout=5.0):
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError("condition not reached")
        yield task.deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


@pytest.fixture
def smsc():
    factory = FakeSmsc()
    port = pytest_twisted.blockon(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory))
    factory.port = port
    yield factory
    for c in list(factory.connections):
        c.transport.abortConnection()
    pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def endpoint_of(smsc):
    return f"tcp:host=127.0.0.1:port={smsc.port.getHost().port}"


def bind_config(**extra):
    cfg = {"system_id": "telecompay", "password": "pw", "enquire_link_interval": 5,
           "reconnect_initial_delay": 0.05, "reconnect_max_delay": 0.2}
    cfg.update(extra)
    return cfg


@pytest.fixture
def started():
    services = []

    def start(service):
        service.startService()
        services.append(service)
        return service

    yield start
    for s in services:
        if s.running:
            pytest_twisted.blockon(defer.maybeDeferred(s.stopService))


# ------------------------------------------------------------------ tests

@pytest_twisted.inlineCallbacks
def test_bind_and_submit(smsc, started):
    app = App()
    svc = started(EsmeService(endpoint_of(smsc), bind_config(), app, reactor=reactor))
    yield until(lambda: svc.is_bound)
    assert app.up == [svc.bind]
    assert smsc.binds[0].system_id == "telecompay" and smsc.binds[0].password == "pw"
    sock = svc.bind._protocol.transport.getHandle()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    ids = yield svc.submit(A, "Balance: 12.50 CNY " + "x" * 200, handle="reply-1")
    assert ids == ["000001F1", "000001F2"]
    assert [s.destination_addr for s in smsc.submits] == [A, A]
    assert [r.message_id for r in app.results] == ids
    status = svc.bind.status()
    assert status["bound"] and status["pending_messages"] == 0
    assert status["counters"]["mt_accepted"] == 1 and status["counters"]["mt_parts"] == 2


@pytest_twisted.inlineCallbacks
def test_mo_is_acked_only_after_the_application_deferred_fires(smsc, started):
    app = App()
    svc = started(EsmeService(endpoint_of(smsc), bind_config(), app, reactor=reactor))
    yield until(lambda: svc.is_bound and smsc.connections)
    conn = smsc.connections[0]
    seq = conn.deliver("YE")
    yield until(lambda: app.mo)
    bind, event = app.mo[0]
    assert bind is svc.bind and (event.msisdn, event.text) == (A, "YE")
    # A later request is answered while the MO is still unacknowledged.
    probe = conn.send("enquire_link")
    yield until(lambda: smsc.response_to(probe))
    assert smsc.response_to(seq) == []
    app.pending[0].callback(None)
    yield until(lambda: smsc.response_to(seq))
    assert smsc.response_to(seq)[0].status == 0
    # a failure to record is a temporary nack: the SMSC will retry
    seq2 = conn.deliver("BAL")
    yield until(lambda: len(app.pending) == 2)
    app.pending[1].errback(RuntimeError("database down"))
    yield until(lambda: smsc.response_to(seq2))
    assert smsc.response_to(seq2)[0].status == P.ESME_RX_T_APPN


@pytest_twisted.inlineCallbacks
def test_receipt_reaches_the_application_and_is_acked(smsc, started):
    app = App()
    svc = started(EsmeService(endpoint_of(smsc), bind_config(), app, reactor=reactor))
    yield until(lambda: svc.is_bound and smsc.connections)
    seq = smsc.connections[0].deliver("id:1F1 sub:001 dlvrd:001 submit date:2611231200 "
                                      "done date:2611231201 stat:DELIVRD err:000 text:", esm_class=4)
    yield until(lambda: smsc.response_to(seq))
    assert smsc.response_to(seq)[0].status == 0
    assert app.mo == [] and [(r.message_id, r.state) for r in app.receipts] == [("1F1", "DELIVRD")]
    app.fail_receipts = True
    seq2 = smsc.connections[0].deliver("", receipted_message_id="1F2", message_state=2)
    yield until(lambda: smsc.response_to(seq2))
    assert smsc.response_to(seq2)[0].status == P.ESME_RX_T_APPN


@pytest_twisted.inlineCallbacks
def test_reconnects_and_sends_what_was_queued_meanwhile(smsc, started):
    app = App()
    svc = started(EsmeService(endpoint_of(smsc), bind_config(), app, reactor=reactor))
    yield until(lambda: svc.is_bound and smsc.connections)
    smsc.hold_submits = True
    first = svc.submit(A, "in flight when the link drops", handle="one")
    yield until(lambda: smsc.held)
    smsc.connections[0].transport.abortConnection()
    yield until(lambda: not svc.is_bound)
    assert app.down == [svc.bind]
    second = svc.submit(B, "queued while down", handle="two")
    smsc.hold_submits = False
    yield until(lambda: svc.is_bound)
    ids = yield defer.gatherResults([first, second])
    assert len(smsc.binds) == 2 and len(app.up) == 2
    texts = [decode_short_message(s.short_message, s.data_coding, s.esm_class).text for s in smsc.submits]
    assert texts[-2:] == ["in flight when the link drops", "queued while down"]
    assert all(len(i) == 1 for i in ids)


@pytest_twisted.inlineCallbacks
def test_refused_bind_is_retried_with_back_off(smsc, started):
    smsc.bind_status = P.ESME_RINVPASWD
    app = App()
    svc = started(EsmeService(endpoint_of(smsc), bind_config(), app, reactor=reactor))
    yield until(lambda: len(smsc.binds) >= 3)
    assert not svc.is_bound and app.up == []
    assert svc.bind.consecutive_failures >= 2
    smsc.bind_status = 0
    yield until(lambda: svc.is_bound)
    assert svc.bind.consecutive_failures == 0


@pytest_twisted.inlineCallbacks
def test_stop_unbinds_gracefully_and_fails_what_is_still_queued(smsc):
    app = App()
    svc = EsmeService(endpoint_of(smsc), bind_config(), app, reactor=reactor)
    svc.startService()
    yield until(lambda: svc.is_bound)
    smsc.hold_submits = True
    pending = svc.submit(A, "never answered", handle="late")
    yield until(lambda: smsc.held)
    yield svc.stopService()
    assert smsc.unbinds == 1
    with pytest.raises(SubmitError):
        yield pending
    assert not svc.bind.connected


@pytest_twisted.inlineCallbacks
def test_dead_smsc_is_detected_by_enquire_link_and_replaced(smsc, started):
    app = App()
    cfg = bind_config(enquire_link_interval=0.1, response_timeout=0.2)
    svc = started(EsmeService(endpoint_of(smsc), cfg, app, reactor=reactor))
    yield until(lambda: svc.is_bound and smsc.connections)
    mute = smsc.connections[0]
    mute.dataReceived = lambda data: None      # the SMSC process hangs
    yield until(lambda: len(smsc.binds) == 2 and svc.is_bound)
    assert app.down == [svc.bind]
    assert svc.bind.counters["link_dead"] == 1


@pytest_twisted.inlineCallbacks
def test_pool_of_two_binds_one_down(smsc, started):
    # a port with nobody listening: connection refused, again and again
    dead = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(protocol.Factory())
    dead_port = dead.getHost().port
    yield dead.stopListening()
    app = App()
    pool = started(EsmePool([
        dict(bind_config(), endpoint=f"tcp:host=127.0.0.1:port={dead_port}", name="down"),
        dict(bind_config(), endpoint=endpoint_of(smsc), name="up"),
    ], app, reactor=reactor))
    up = next(b for b in pool.binds if b.name == "up")
    yield until(lambda: up.is_bound)
    results = yield defer.gatherResults([pool.submit(A, f"m{i}") for i in range(3)]
                                        + [pool.submit(B, "other")])
    assert len(results) == 4 and len(smsc.submits) == 4
    seq = smsc.connections[0].deliver("HELP", source=B)
    yield until(lambda: app.mo)
    assert app.mo[0][0] is up and app.mo[0][1].msisdn == B
    app.pending[0].callback(None)
    yield until(lambda: smsc.response_to(seq))


@pytest_twisted.inlineCallbacks
def test_pool_shares_work_and_survives_one_bind_dropping(started):
    first, second = FakeSmsc(), FakeSmsc()
    for f in (first, second):
        f.port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(f)
    try:
        app = App()
        pool = started(EsmePool([dict(bind_config(), endpoint=endpoint_of(first)),
                                 dict(bind_config(), endpoint=endpoint_of(second))], app, reactor=reactor))
        yield until(lambda: len(pool.bound) == 2)
        dests = [f"86138001380{i:02d}" for i in range(6)]
        yield defer.gatherResults([pool.submit(d, "hello") for d in dests])
        assert len(first.submits) == 3 and len(second.submits) == 3
        # the first SMSC goes away for good; the pool keeps working on the second
        yield first.port.stopListening()
        first.connections[0].transport.abortConnection()
        yield until(lambda: len(pool.bound) == 1)
        yield defer.gatherResults([pool.submit(d, "again") for d in dests])
        assert len(second.submits) == 9
    finally:
        for f in (first, second):
            for c in list(f.connections):
                c.transport.abortConnection()
            if f.port.connected:
                yield f.port.stopListening()


def test_log_keyword_never_shows_digits():
    assert log_keyword("zf 1001 10") == "ZF"
    assert log_keyword("123456") == "-"
    assert log_keyword("余额") == "余额"
    assert log_keyword("") == "-"


@pytest_twisted.inlineCallbacks
def test_logs_mask_the_msisdn_and_never_show_the_content(smsc, started):
    from twisted.logger import formatEvent, globalLogPublisher

    from telecom_pay.msisdn import mask

    lines = []

    def observe(event):
        if event.get("log_namespace") == "telecom_pay.smpp":
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        app = App()
        svc = started(EsmeService(endpoint_of(smsc), bind_config(), app, reactor=reactor))
        yield until(lambda: svc.is_bound and smsc.connections)
        smsc.connections[0].deliver("MM 123456 654321")
        yield until(lambda: app.mo)
        app.pending[0].callback(None)
        yield svc.submit(A, "Your new PIN is 834211")
    finally:
        globalLogPublisher.removeObserver(observe)
    mo = [line for line in lines if line.startswith("smpp mo ")]
    mt = [line for line in lines if line.startswith("smpp mt ")]
    assert len(mo) == 1 and len(mt) == 1
    assert mask(A) in mo[0] and "keyword=MM" in mo[0] and "length=16" in mo[0]
    assert mask(A) in mt[0] and "keyword=YOUR" in mt[0]
    for line in lines:
        assert A not in line
        assert "123456" not in line and "654321" not in line and "834211" not in line


@pytest_twisted.inlineCallbacks
def test_pool_holds_submissions_until_a_bind_is_up(smsc, started):
    app = App()
    pool = started(EsmePool([dict(bind_config(), endpoint=endpoint_of(smsc))], app, reactor=reactor))
    early = pool.submit(A, "before any bind")
    assert pool.held == 1
    ids = yield early
    assert len(ids) == 1 and pool.held == 0
    assert [s.destination_addr for s in smsc.submits] == [A]


@pytest_twisted.inlineCallbacks
def test_pool_moves_pending_messages_off_a_bind_that_goes_down(started):
    first, second = FakeSmsc(), FakeSmsc()
    for f in (first, second):
        f.port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(f)
    try:
        app = App()
        pool = started(EsmePool([dict(bind_config(), endpoint=endpoint_of(first)),
                                 dict(bind_config(), endpoint=endpoint_of(second))], app, reactor=reactor))
        yield until(lambda: len(pool.bound) == 2)
        first.hold_submits = True
        pending = [pool.submit(A, f"to A #{i}") for i in range(3)]   # one destination: one bind
        yield until(lambda: first.held)
        assert len(first.submits) == 1 and second.submits == []
        yield first.port.stopListening()
        first.connections[0].transport.abortConnection()
        results = yield defer.gatherResults(pending)
        assert all(len(ids) == 1 for ids in results)
        texts = [decode_short_message(s.short_message, s.data_coding, s.esm_class).text for s in second.submits]
        assert texts == ["to A #0", "to A #1", "to A #2"]
    finally:
        for f in (first, second):
            for c in list(f.connections):
                c.transport.abortConnection()
            if f.port.connected:
                yield f.port.stopListening()


def test_reconnect_delay_grows_with_failures_and_is_capped():
    import random as _random

    from channels.smpp.client import EsmeBind, EsmeClientFactory
    from channels.smpp.session import EsmeConfig

    clock = task.Clock()
    bind = EsmeBind(EsmeConfig(system_id="x"), App(), clock)
    factory = EsmeClientFactory(bind, initial_delay=1, max_delay=8, rng=_random.Random(7))
    delays = [factory.retry_delay(n) for n in range(1, 7)]
    for n, delay in enumerate(delays, start=1):
        base = min(2 ** (n - 1), 8)
        assert 0.8 * base <= delay <= 1.2 * base
    assert len({round(d, 6) for d in delays}) == len(delays)      # jittered
    # connections that never got bound count like failed attempts
    bind.consecutive_failures = 4
    assert 6.4 <= factory.retry_delay(1) <= 9.6
