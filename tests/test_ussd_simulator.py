"""The SMSC simulator's USSD sessions over real TCP: pages pushed by the
platform, the phone hanging up, the network releasing or timing out a
session, and an SMSC (or a busy phone) refusing a push."""
from __future__ import annotations

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor

from channels.smpp import pdu as P
from tests.test_smsc_sim import CUSTOMER, bound_esme, make_sim, sleep  # noqa: F401  (make_sim is a fixture)


def page(esme, text: bytes, session_info: int, op: int = P.USSD_USSR_REQ):
    return esme.request("submit_sm", source_addr="10658888", destination_addr=CUSTOMER, short_message=text,
                        ussd_service_op=op, its_session_info=session_info)


@pytest_twisted.inlineCallbacks
def test_pushed_page_opens_a_session_the_phone_answers(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    phone = sim.handset(CUSTOMER)
    shown = phone.wait_for_ussd(5)
    resp = yield page(esme, b"Agree to open an account?\n1 Yes\n2 No", 0x2A00)
    assert resp.status == P.ESME_ROK
    assert (yield shown).startswith("Agree")
    assert phone.ussd_session.open
    answered = phone.ussd_reply("1")
    conf = yield esme.next_request("deliver_sm")
    assert (conf.ussd_service_op, conf.its_session_info >> 8, conf.short_message) == (P.USSD_USSR_CONF, 0x2A, b"1")
    yield page(esme, b"Account opened", 0x2A01, P.USSD_PSSR_RESP)
    assert (yield answered.addTimeout(5, reactor)) == "Account opened"
    assert not phone.ussd_session.open
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_refuse_push_fault_and_busy_phone_refuse_a_pushed_page(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    phone = sim.handset(CUSTOMER)
    sim.faults.add("refuse_push", count=1)
    resp = yield page(esme, b"pushed", 0x0700)
    assert resp.status == P.ESME_RSUBMITFAIL and phone.ussd_screens == []
    phone.dial_ussd("*188#")
    begin = yield esme.next_request("deliver_sm")
    yield page(esme, b"menu", begin.its_session_info)
    resp = yield page(esme, b"pushed", (begin.its_session_info + 0x100) & 0xFF00)   # another dialogue
    assert resp.status == P.ESME_RSUBMITFAIL
    assert [s.text for s in phone.ussd_screens] == ["menu"]
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_phone_hangs_up_and_network_releases(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    phone = sim.handset(CUSTOMER)
    assert phone.hang_up() is False                        # nothing open
    phone.dial_ussd("*188#")
    begin = yield esme.next_request("deliver_sm")
    yield page(esme, b"menu", begin.its_session_info)
    yield sleep(0.05)
    assert phone.hang_up() is True
    abort = yield esme.next_request("deliver_sm")
    assert abort.ussd_service_op == P.USSD_USER_ABORT and abort.its_session_info & 1
    assert abort.its_session_info >> 8 == begin.its_session_info >> 8
    assert not phone.ussd_session.open

    phone.dial_ussd("*188#")
    begin = yield esme.next_request("deliver_sm")
    yield page(esme, b"menu", begin.its_session_info)
    yield sleep(0.05)
    assert sim.release_ussd(CUSTOMER) is True
    release = yield esme.next_request("deliver_sm")
    assert release.ussd_service_op == 0x20 and release.its_session_info & 1
    assert phone.ussd_screens[-1].ended and phone.ussd_screens[-1].reason == "released"
    assert sim.release_ussd(CUSTOMER) is False
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_ussd_timeout_fault_releases_an_unanswered_page_only(make_sim):
    sim, port = yield make_sim()
    esme = yield bound_esme(port)
    phone = sim.handset(CUSTOMER)
    sim.faults.add("ussd_timeout", seconds=0.3, count=2)
    phone.dial_ussd("*188#")
    begin = yield esme.next_request("deliver_sm")
    yield page(esme, b"menu", begin.its_session_info)
    yield sleep(0.05)
    phone.ussd_reply("1")                                   # answered in time: no release for this page
    conf = yield esme.next_request("deliver_sm")
    assert conf.ussd_service_op == P.USSD_USSR_CONF
    yield page(esme, b"amount?", conf.its_session_info)
    timed_out = yield esme.next_request("deliver_sm", timeout=5)
    assert timed_out.ussd_service_op == 0x21 and timed_out.its_session_info & 1
    assert phone.ussd_screens[-1].reason == "timeout" and not phone.ussd_session.open
    assert sim.traffic.records(100, command="deliver_sm")[-1].ussd_service_op == 0x21   # kept in the record
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_control_api_dial_answer_hang_up_release_and_the_dial_pad(make_sim):  # noqa: F811
    from simulators.smsc.control import ControlError, SmscControl
    from tests.test_smsc_sim_http import call, start
    sim, esme, base = yield start(make_sim)
    control = SmscControl(base)
    with pytest.raises(ControlError) as refused:
        yield control.ussd(CUSTOMER, "1", wait=1, answer=True)          # nothing open to answer
    assert refused.value.code == 409
    yield control.ussd(CUSTOMER, "*188#", wait=5)
    assert (yield control.ussd_hangup(CUSTOMER)) is True
    abort = [r for r in sim.traffic.records(50, command="deliver_sm") if r.ussd_service_op == P.USSD_USER_ABORT]
    assert len(abort) == 1
    assert (yield control.ussd_hangup(CUSTOMER)) is False
    yield control.ussd(CUSTOMER, "*188#", wait=5)
    screen = yield control.ussd(CUSTOMER, "*188#", wait=5, dial=True)   # dial again: the open one hangs up first
    assert screen["text"] == "menu for *188#"
    code, body = yield call("POST", f"{base}/handsets/{CUSTOMER}/ussd/release", {"reason": "timeout"})
    assert code == 200 and body["released"] is True
    shown = yield control.ussd_screens(CUSTOMER)
    assert shown["screens"][-1]["reason"] == "timeout" and shown["session"]["open"] is False
    code, _ = yield call("POST", f"{base}/handsets/{CUSTOMER}/ussd/release", {"reason": "bored"})
    assert code == 400
    page = yield (yield treq.get(f"{base}/")).text()
    assert 'id="pad"' in page and "/ussd/hangup" in page
    esme.transport.loseConnection()
