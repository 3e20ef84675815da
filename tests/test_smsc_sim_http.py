"""The SMSC simulator's HTTP control API and its treq client, with a bound ESME on the SMPP side."""
from __future__ import annotations

import json

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor

from channels.smpp import pdu as P
from channels.smpp.text import Reassembler, decode_message, split_message
from simulators.smsc.control import ControlError, SmscControl
from tests.test_smsc_sim import CUSTOMER, bound_esme, make_sim  # noqa: F401  (fixture)


@defer.inlineCallbacks
def start(make_sim, echo=True, **overrides):  # noqa: F811
    """Simulator + HTTP API + an ESME that answers each MO with 'echo: <text>'."""
    sim, port = yield make_sim(**overrides)
    http = yield sim.listen_http("tcp:0:interface=127.0.0.1")
    esme = yield bound_esme(port)
    reassembler = Reassembler(reactor)

    def reply(pdu):
        if pdu.esm_class & P.ESM_CLASS_DELIVERY_RECEIPT:
            return
        decoded = decode_message(pdu)
        text = reassembler.add(pdu.source_addr, decoded.concat, decoded.text)
        if text is None:
            return
        if pdu.ussd_service_op is not None:
            op = P.USSD_USSR_REQ if pdu.ussd_service_op == P.USSD_PSSR_IND else P.USSD_PSSR_RESP
            esme.request("submit_sm", source_addr="10658888", destination_addr=pdu.source_addr,
                         short_message=f"menu for {text}".encode(), ussd_service_op=op,
                         its_session_info=pdu.its_session_info)
            return
        for part in split_message(f"echo: {text}", 1):
            esme.request("submit_sm", source_addr="10658888", destination_addr=pdu.source_addr,
                         esm_class=part.esm_class, data_coding=part.data_coding, short_message=part.short_message)

    if echo:
        esme.on_deliver = reply
    base = f"http://127.0.0.1:{http.getHost().port}"
    return sim, esme, base


@defer.inlineCallbacks
def call(method, url, body=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {b"content-type": [b"application/json"]} if data is not None else None
    response = yield treq.request(method, url, data=data, headers=headers)
    content = yield response.content()
    return response.code, json.loads(content)


@pytest_twisted.inlineCallbacks
def test_mo_inbox_and_send_and_wait(make_sim):  # noqa: F811
    sim, esme, base = yield start(make_sim)
    code, body = yield call("POST", f"{base}/handsets/{CUSTOMER}/mo", {"text": "余额"})
    assert code == 200 and body["acked"] is True and body["sent"]["data_coding"] == 8
    code, inbox = yield call("GET", f"{base}/handsets/{CUSTOMER}/inbox?since=0&wait=5")
    assert code == 200 and [m["text"] for m in inbox["inbox"]] == ["echo: 余额"]
    assert inbox["inbox"][0]["parts"][0]["data_coding"] == 8

    control = SmscControl(base)
    replies = yield control.send_and_wait(CUSTOMER, "YE", timeout=5)
    assert replies == ["echo: YE"]
    long_text = "HELP " * 60
    replies = yield control.send_and_wait(CUSTOMER, long_text, timeout=5)
    assert replies == [f"echo: {long_text}"]
    [handset] = yield control.handsets()
    assert handset["msisdn"] == CUSTOMER and handset["inbox"] == 3
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_ussd_over_http(make_sim):  # noqa: F811
    sim, esme, base = yield start(make_sim)
    control = SmscControl(base)
    screen = yield control.ussd(CUSTOMER, "*188#", wait=5)
    assert screen["text"] == "menu for *188#" and screen["ended"] is False
    screen = yield control.ussd(CUSTOMER, "1", wait=5)
    assert screen["text"] == "menu for 1" and screen["ended"] is True
    code, body = yield call("GET", f"{base}/handsets/{CUSTOMER}/ussd")
    assert code == 200 and body["session"]["open"] is False and len(body["screens"]) == 2
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_faults_traffic_binds(make_sim):  # noqa: F811
    sim, esme, base = yield start(make_sim, echo=False)
    control = SmscControl(base)
    fault = yield control.add_fault("throttle", count=1)
    assert fault["kind"] == "throttle" and fault["status"] == P.ESME_RTHROTTLED
    [listed] = yield control.faults()
    assert listed["id"] == fault["id"]
    resp = yield esme.submit()
    assert resp.status == P.ESME_RTHROTTLED
    assert (yield control.faults()) == []  # used up
    yield control.add_fault("delay", seconds=0.1)
    assert (yield control.clear_faults()) == 1
    records = yield control.traffic(limit=3)
    assert len(records) == 3 and records[-1]["command"] == "submit_sm_resp" and records[-1]["status"] == 0x58
    subs = yield control.traffic(limit=10, command="submit_sm")
    assert [r["destination_addr"] for r in subs] == [CUSTOMER]
    [bind] = yield control.binds()
    assert bind["system_id"] == "telecom-pay" and bind["state"] == "bound"
    closed = yield control.add_fault("close")
    assert closed["binds"] == 1
    yield esme.lost.addTimeout(5, reactor)


@pytest_twisted.inlineCallbacks
def test_bad_requests(make_sim):  # noqa: F811
    sim, esme, base = yield start(make_sim, echo=False)
    code, body = yield call("POST", f"{base}/handsets/{CUSTOMER}/mo", raw=b"{not json")
    assert code == 400 and "not valid JSON" in body["error"]
    code, body = yield call("POST", f"{base}/handsets/{CUSTOMER}/mo", {"txt": "x"})
    assert code == 400 and "text" in body["error"]
    code, body = yield call("POST", f"{base}/handsets/not-a-number/mo", {"text": "x"})
    assert code == 400
    code, body = yield call("POST", f"{base}/faults", {"kind": "explode"})
    assert code == 400 and "unknown fault kind" in body["error"]
    code, body = yield call("POST", f"{base}/faults", [1, 2])
    assert code == 400
    code, body = yield call("GET", f"{base}/handsets/8613900139000")
    assert code == 404
    code, body = yield call("DELETE", f"{base}/faults/999")
    assert code == 404
    with pytest.raises(ControlError) as err:
        yield SmscControl(base).ussd(CUSTOMER, "1", wait=0.2)  # no reply comes: 504
    assert err.value.code == 504
    esme.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_web_handset_page(make_sim):  # noqa: F811
    sim, port = yield make_sim()
    http = yield sim.listen_http("tcp:0:interface=127.0.0.1")
    response = yield treq.get(f"http://127.0.0.1:{http.getHost().port}/")
    page = yield response.text()
    assert response.code == 200 and b"text/html" in response.headers.getRawHeaders(b"content-type")[0]
    assert "/handsets/" in page and "textContent" in page


@pytest_twisted.inlineCallbacks
def test_mo_without_receiver_is_queued(make_sim):  # noqa: F811
    sim, port = yield make_sim()
    http = yield sim.listen_http("tcp:0:interface=127.0.0.1")
    base = f"http://127.0.0.1:{http.getHost().port}"
    code, body = yield call("POST", f"{base}/handsets/{CUSTOMER}/mo", {"text": "KT", "wait": 0.1})
    assert code == 202 and body["queued"] is True
    assert sim.waiting_deliveries == 1


@pytest_twisted.inlineCallbacks
def test_service_starts_both_endpoints_and_stops():
    from simulators.smsc.config import SmscConfig
    from simulators.smsc.service import SmscSimulatorService

    service = SmscSimulatorService(SmscConfig(), reactor, "tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1")
    yield service.startService()
    try:
        esme = yield bound_esme(service.smpp_port.getHost().port)
        control = SmscControl(f"http://127.0.0.1:{service.http_port.getHost().port}")
        [bind] = yield control.binds()
        assert bind["state"] == "bound"
    finally:
        yield service.stopService()
    yield esme.lost.addTimeout(5, reactor)


@pytest_twisted.inlineCallbacks
def test_message_reference_switch(make_sim):  # noqa: F811
    """Most SMSCs pass no TP-MR on: the handsets can be told to send none."""
    sim, esme, base = yield start(make_sim, echo=False)
    seen = []
    esme.on_deliver = lambda pdu: seen.append(pdu.user_message_reference)
    control = SmscControl(base)
    yield control.send_mo(CUSTOMER, "YE")
    assert (yield control.set_message_reference(False)) is False
    code, data = yield call("GET", f"{base}/settings")
    assert code == 200 and data == {"message_reference": False}
    yield control.send_mo(CUSTOMER, "YE")
    assert seen == [0, None]
    code, data = yield call("POST", f"{base}/settings", {"message_reference": "no"})
    assert code == 400
    code, data = yield call("POST", f"{base}/settings", {"colour": 1})
    assert code == 400


def test_message_reference_in_config_and_cli():
    from simulators.smsc.config import SmscConfig
    import simulators.smsc.cli  # noqa: F401  (adds its subcommands)
    from telecom_pay.cli import build_parser
    assert SmscConfig.from_mapping({"message_reference": False}).message_reference is False
    with pytest.raises(ValueError):
        SmscConfig.from_mapping({"message_reference": "off"})
    assert build_parser().parse_args(["smsc-sim", "--no-message-reference"]).no_message_reference
