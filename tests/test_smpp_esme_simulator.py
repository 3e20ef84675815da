"""The ESME against the project's SMSC simulator (simulators.smsc) over TCP on
127.0.0.1: the round trips a subscriber makes -- SMS in and reply out, long
UCS2 both ways, delivery receipts matched to submit ids, a USSD dialogue,
throttling and a cut link."""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from channels.smpp.client import EsmeService
from channels.smpp.receipts import message_ids_match
from simulators.smsc import SmscConfig, SmscSimulator

PHONE = "8613800138000"


class ReplyingApp:
    """Records each MO, then replies through the bind -- as the platform does
    once the inbound message is durably stored."""

    def __init__(self, reply):
        self.reply = reply
        self.mo = []
        self.receipts = []
        self.up = 0
        self.down = 0
        self.replies = []

    def message_received(self, bind, event):
        self.mo.append(event)
        text, ussd = self.reply(event)

        def stored(_):
            if text is not None:
                self.replies.append(bind.submit(event.msisdn, text, ussd=ussd))

        return task.deferLater(reactor, 0, lambda: None).addCallback(stored)   # "stored" on a later turn

    def receipt_received(self, bind, event):
        self.receipts.append(event)

    def submit_result(self, bind, event):
        pass

    def link_up(self, bind):
        self.up += 1

    def link_down(self, bind):
        self.down += 1


@defer.inlineCallbacks
def until(predicate, timeout=5.0):
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError("condition not reached")
        yield task.deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


@pytest.fixture
def simulator():
    sim = SmscSimulator(SmscConfig(accounts={"telecompay": "pw"}, delivery_receipt_delay=0.05,
                                   redelivery_delay=0.1), reactor)
    port = pytest_twisted.blockon(sim.listen("tcp:0:interface=127.0.0.1"))
    sim.endpoint = f"tcp:host=127.0.0.1:port={port.getHost().port}"
    yield sim
    pytest_twisted.blockon(sim.stop())


@pytest.fixture
def esme(simulator):
    services = []

    def start(app, **settings):
        cfg = {"system_id": "telecompay", "password": "pw", "reconnect_initial_delay": 0.05,
               "reconnect_max_delay": 0.2, "throttle_backoff_initial": 0.05}
        cfg.update(settings)
        svc = EsmeService(simulator.endpoint, cfg, app, reactor=reactor)
        svc.startService()
        services.append(svc)
        return svc

    yield start
    for svc in services:
        pytest_twisted.blockon(defer.maybeDeferred(svc.stopService))


@pytest_twisted.inlineCallbacks
def test_sms_in_reply_out(simulator, esme):
    app = ReplyingApp(lambda e: ("Balance: 12.50 CNY" if e.text == "YE" else "?", None))
    svc = esme(app)
    yield until(lambda: svc.is_bound)
    phone = simulator.handset(PHONE)
    yield phone.send("YE")                      # fires once the ESME acknowledged
    reply = yield phone.wait_for_reply(timeout=5)
    assert reply == "Balance: 12.50 CNY"
    assert [(e.msisdn, e.text) for e in app.mo] == [(PHONE, "YE")]


@pytest_twisted.inlineCallbacks
def test_long_ucs2_both_ways_and_receipts_match(simulator, esme):
    long_zh = "您的账户余额为十二元五角，" * 12
    app = ReplyingApp(lambda e: (e.text, None))  # echo
    svc = esme(app)
    yield until(lambda: svc.is_bound)
    phone = simulator.handset(PHONE)
    yield phone.send(long_zh)
    assert [e.text for e in app.mo] == [long_zh] and app.mo[0].parts > 1
    reply = yield phone.wait_for_reply(timeout=5)
    assert reply == long_zh
    ids = yield app.replies[0]
    assert len(ids) == len(phone.inbox[0].parts)
    yield until(lambda: len(app.receipts) == len(ids))
    for message_id in ids:
        assert any(message_ids_match(message_id, r.message_id) for r in app.receipts)
    assert all(r.state == "DELIVRD" for r in app.receipts)
    assert len(app.mo) == 1                     # receipts are not MO text


@pytest_twisted.inlineCallbacks
def test_ussd_dialogue(simulator, esme):
    def menu(event):
        if event.ussd.service_op == 1:           # PSSR indication: *188# dialled
            return "1 Balance\n2 Pay", event.ussd.reply(end=False)
        return f"You chose {event.text}. Bye", event.ussd.reply(end=True)

    app = ReplyingApp(menu)
    svc = esme(app)
    yield until(lambda: svc.is_bound)
    phone = simulator.handset(PHONE)
    first = yield phone.dial_ussd("*188#", timeout=5)
    assert first == "1 Balance\n2 Pay"
    assert phone.ussd_session.open
    last = yield phone.ussd_reply("1", timeout=5)
    assert last == "You chose 1. Bye"
    assert not phone.ussd_session.open
    assert [e.ussd.service_op for e in app.mo] == [1, 0x12]
    assert app.mo[0].text == "*188#"


@pytest_twisted.inlineCallbacks
def test_throttled_submissions_are_retried_in_order(simulator, esme):
    app = ReplyingApp(lambda e: (None, None))
    svc = esme(app)
    yield until(lambda: svc.is_bound)
    simulator.faults.add("throttle", count=3)
    results = yield defer.gatherResults([svc.submit(PHONE, f"message {i}") for i in range(4)])
    assert all(len(ids) == 1 for ids in results)
    phone = simulator.handset(PHONE)
    assert [m.text for m in phone.inbox] == [f"message {i}" for i in range(4)]


@pytest_twisted.inlineCallbacks
def test_cut_link_reconnects_and_delivers_what_was_queued(simulator, esme):
    app = ReplyingApp(lambda e: (None, None))
    svc = esme(app)
    yield until(lambda: svc.is_bound)
    assert simulator.close_binds() == 1
    yield until(lambda: not svc.is_bound)
    pending = svc.submit(PHONE, "sent while the link was down")
    yield until(lambda: svc.is_bound)
    yield pending
    phone = simulator.handset(PHONE)
    reply = yield phone.wait_for_reply(timeout=5)
    assert reply == "sent while the link was down"
    assert (app.up, app.down) == (2, 1)
