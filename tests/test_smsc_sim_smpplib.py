"""Independent check: smpplib's own blocking client (not our codec's user) against the simulator."""
from __future__ import annotations

import pytest_twisted
import smpplib.client
import smpplib.consts
from twisted.internet import reactor, threads

from channels.smpp import pdu as P  # noqa: F401  (registers the USSD TLVs process-wide)
from tests.test_smsc_sim import ACCOUNT, CUSTOMER, make_sim  # noqa: F401  (fixture)


def run_smpplib_client(port: int, expected_mos: int) -> dict:
    """Bind as transceiver, take the waiting MOs, submit one message, unbind. Runs in a thread."""
    seen: dict = {"deliver_sm": [], "submit_sm_resp": []}
    client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
    client.set_message_received_handler(lambda pdu: seen["deliver_sm"].append(pdu))
    client.set_message_sent_handler(lambda pdu: seen["submit_sm_resp"].append(pdu))
    client.connect()
    try:
        client.bind_transceiver(system_id=ACCOUNT[0], password=ACCOUNT[1])
        while len(seen["deliver_sm"]) < expected_mos:
            client.read_once(auto_send_enquire_link=False)
        sent = client.send_message(
            source_addr_ton=smpplib.consts.SMPP_TON_ALNUM, source_addr="10658888",
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL, destination_addr=CUSTOMER,
            short_message=b"Balance 12.50", data_coding=0, registered_delivery=0)
        seen["submit_sequence"] = sent.sequence
        while not seen["submit_sm_resp"]:
            client.read_once(auto_send_enquire_link=False)
        client.unbind()
    finally:
        client.disconnect()
    return seen


@pytest_twisted.inlineCallbacks
def test_smpplib_client_binds_submits_and_receives_mo(make_sim):  # noqa: F811
    sim, port = yield make_sim()
    phone = sim.handset(CUSTOMER)
    acked = phone.send("YE")  # waits in the SMSC until a receiver binds
    ussd = phone.dial_ussd("*188#")
    ussd.addErrback(lambda f: None)
    seen = yield threads.deferToThread(run_smpplib_client, port, 2)
    yield acked.addTimeout(5, reactor)
    mo, ussd_begin = seen["deliver_sm"]
    assert mo.source_addr == CUSTOMER.encode() and mo.short_message == b"YE"
    assert ussd_begin.ussd_service_op == 1 and ussd_begin.short_message == b"*188#"
    [resp] = seen["submit_sm_resp"]
    assert resp.status == 0 and resp.message_id and resp.sequence == seen["submit_sequence"]
    [message] = phone.inbox
    assert message.text == "Balance 12.50"
    assert message.parts[0].message_id == resp.message_id.decode()
    commands = [(r.direction, r.command) for r in sim.traffic]
    assert ("in", "unbind") in commands and ("out", "unbind_resp") in commands
