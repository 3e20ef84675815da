"""The sans-I/O ESME session, driven without sockets: the SMSC's side is
written here with the shared codec, time is a task.Clock."""
from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from channels.smpp import pdu as P
from channels.smpp.session import (
    BindFailed, Bound, EsmeConfig, EsmeSession, IncompleteMessage, LinkDead, MessageAccepted,
    MessageReceived, ProtocolWarning, ReceiptReceived, SubmitFailed, SubmitResult, Throttled,
    Unbound, UssdInfo,
)
from channels.smpp.text import decode_short_message

A = "8613800138000"
B = "8613900139000"
C = "8613700137000"
SERVICE = "10658888"


class Smsc:
    """The SMSC end of one session: reads what the session wrote, answers it."""

    def __init__(self, session: EsmeSession):
        self.session = session
        self.reader = P.PduReader()
        self.seq = 5000

    def pdus(self):
        return [P.decode_pdu(raw) for raw in self.reader.feed(self.session.data_to_send())]

    def one(self, command):
        got = self.pdus()
        assert [p.command for p in got] == [command], got
        return got[0]

    def send_raw(self, raw: bytes):
        return self.session.receive_data(raw)

    def send(self, command, status=0, seq=None, **fields):
        if seq is None:
            self.seq += 1
            seq = self.seq
        return self.session.receive_data(P.encode_pdu(command, seq, status, **fields))

    def respond(self, request, status=0, **fields):
        return self.session.receive_data(
            P.encode_pdu(P.response_name(request.command), request.sequence, status, **fields))

    def deliver(self, text_bytes=b"", source=A, data_coding=0, esm_class=0, seq=None, **tlvs):
        return self.send("deliver_sm", seq=seq, source_addr=source, source_addr_ton=1, source_addr_npi=1,
                         destination_addr=SERVICE, esm_class=esm_class, data_coding=data_coding,
                         short_message=text_bytes, **tlvs)


def make(clock=None, **overrides):
    clock = clock or Clock()
    cfg = dict(system_id="telecompay", password="secret", system_type="VMA", addr_ton=1, addr_npi=1)
    cfg.update(overrides)
    session = EsmeSession(EsmeConfig(**cfg), clock)
    return session, Smsc(session), clock


def bound(**overrides):
    session, smsc, clock = make(**overrides)
    session.connection_made()
    bind = smsc.one("bind_transceiver")
    assert smsc.respond(bind, system_id="SMSC") == [Bound("SMSC")]
    return session, smsc, clock


def advance(clock, session, seconds):
    clock.advance(seconds)
    return session.tick()


def submit_text(pdu) -> str:
    return decode_short_message(pdu.short_message, pdu.data_coding, pdu.esm_class).text


# ---------------------------------------------------------------- bind, keep-alive, unbind

def test_bind_transceiver_carries_the_configured_identity():
    session, smsc, _ = make()
    session.connection_made()
    bind = smsc.one("bind_transceiver")
    assert (bind.system_id, bind.password, bind.system_type) == ("telecompay", "secret", "VMA")
    assert (bind.addr_ton, bind.addr_npi, bind.interface_version) == (1, 1, 0x34)
    assert not session.is_bound
    assert smsc.respond(bind, system_id="SMSC") == [Bound("SMSC")]
    assert session.is_bound


def test_refused_bind_closes_the_link():
    session, smsc, _ = make()
    session.connection_made()
    events = smsc.respond(smsc.one("bind_transceiver"), status=P.ESME_RINVPASWD)
    assert events == [BindFailed(P.ESME_RINVPASWD, "bind refused, status 0x0e")]
    assert session.should_close and not session.is_bound


def test_unanswered_bind_times_out():
    session, smsc, clock = make(response_timeout=5)
    session.connection_made()
    smsc.one("bind_transceiver")
    assert advance(clock, session, 4.9) == []
    assert session.next_deadline() == pytest.approx(5)
    events = advance(clock, session, 0.2)
    assert [type(e) for e in events] == [BindFailed] and events[0].status is None
    assert session.should_close


def test_enquire_link_after_idle_and_dead_link_when_unanswered():
    session, smsc, clock = bound(enquire_link_interval=30, response_timeout=5)
    assert session.next_deadline() == pytest.approx(30)
    advance(clock, session, 29)
    assert smsc.pdus() == []
    advance(clock, session, 1)
    probe = smsc.one("enquire_link")
    assert smsc.respond(probe) == []
    # answered: next probe 30 s after the last traffic
    advance(clock, session, 30)
    smsc.one("enquire_link")
    events = advance(clock, session, 5)
    assert [type(e) for e in events] == [LinkDead]
    assert session.should_close


def test_traffic_from_the_smsc_postpones_enquire_link():
    session, smsc, clock = bound(enquire_link_interval=30)
    advance(clock, session, 20)
    smsc.send("enquire_link", seq=77)
    resp = smsc.one("enquire_link_resp")
    assert resp.sequence == 77
    advance(clock, session, 20)
    assert smsc.pdus() == []
    advance(clock, session, 10)
    smsc.one("enquire_link")


def test_graceful_unbind_waits_for_unbind_resp():
    session, smsc, clock = bound()
    session.unbind()
    unbind = smsc.one("unbind")
    assert not session.should_close
    assert smsc.respond(unbind) == [Unbound(False, "unbind acknowledged")]
    assert session.should_close


def test_unbind_without_answer_closes_after_the_unbind_timeout():
    session, smsc, clock = bound(unbind_timeout=2)
    session.unbind()
    smsc.one("unbind")
    events = advance(clock, session, 2)
    assert [type(e) for e in events] == [Unbound] and session.should_close


def test_unbind_from_the_smsc_is_answered():
    session, smsc, _ = bound()
    events = smsc.send("unbind", seq=9)
    assert events == [Unbound(True, "SMSC unbound")]
    assert smsc.one("unbind_resp").sequence == 9
    assert session.should_close


# ---------------------------------------------------------------- malformed input

def test_unknown_command_gets_generic_nack_and_the_link_stays_up():
    session, smsc, _ = bound()
    raw = (16).to_bytes(4, "big") + (0x00000123).to_bytes(4, "big") + bytes(4) + (42).to_bytes(4, "big")
    events = smsc.send_raw(raw)
    assert [type(e) for e in events] == [ProtocolWarning]
    nack = smsc.one("generic_nack")
    assert (nack.sequence, nack.status) == (42, P.ESME_RINVCMDID)
    assert not session.should_close and session.is_bound
    smsc.send("enquire_link", seq=43)
    assert smsc.one("enquire_link_resp").sequence == 43


def test_truncated_deliver_sm_gets_generic_nack():
    session, smsc, _ = bound()
    good = P.encode_pdu("deliver_sm", 50, source_addr=A, destination_addr=SERVICE, short_message=b"hi")
    body = good[16:24]  # cut inside the mandatory fields
    raw = (16 + len(body)).to_bytes(4, "big") + good[4:16] + body
    smsc.send_raw(raw)
    nack = smsc.one("generic_nack")
    assert nack.sequence == 50 and nack.status == P.ESME_RINVCMDLEN
    assert session.is_bound and not session.should_close


def test_unsupported_request_gets_generic_nack():
    session, smsc, _ = bound()
    smsc.send("query_sm", seq=61, message_id="1", source_addr=A)
    nack = smsc.one("generic_nack")
    assert (nack.sequence, nack.status) == (61, P.ESME_RINVCMDID)


def test_framing_error_drops_the_link():
    session, smsc, _ = bound()
    events = smsc.send_raw(b"\x00\x00\x00\x03garbage")
    assert [type(e) for e in events] == [LinkDead]
    assert session.should_close


def test_pdu_split_across_reads_is_reassembled():
    session, smsc, _ = bound()
    raw = P.encode_pdu("enquire_link", 7)
    assert session.receive_data(raw[:5]) == []
    session.receive_data(raw[5:])
    assert smsc.one("enquire_link_resp").sequence == 7


# ---------------------------------------------------------------- MT: window, order, throttling, rate

def test_submit_fields_and_results_per_part():
    session, smsc, _ = bound()
    handles = session.submit(A, "x" * 200, handle="m1")
    assert [(h.index, h.count) for h in handles] == [(0, 2), (1, 2)]
    first = smsc.one("submit_sm")
    assert (first.source_addr, first.source_addr_ton, first.source_addr_npi) == (SERVICE, 0, 1)
    assert (first.destination_addr, first.dest_addr_ton, first.dest_addr_npi) == (A, 1, 1)
    assert first.registered_delivery == 1 and first.esm_class & 0x40
    assert smsc.respond(first, message_id="0A1B") == [SubmitResult(handles[0], "0A1B", 0)]
    second = smsc.one("submit_sm")   # the next part goes once the first is answered
    events = smsc.respond(second, message_id="0A1C")
    assert events == [SubmitResult(handles[1], "0A1C", 0), MessageAccepted("m1", ("0A1B", "0A1C"))]
    assert session.pending_messages == 0


def test_unicode_text_goes_as_ucs2():
    session, smsc, _ = bound()
    session.submit(A, "余额 12.50 元", handle="u")
    sm = smsc.one("submit_sm")
    assert sm.data_coding == 8 and submit_text(sm) == "余额 12.50 元"


def test_window_full_queues_submissions():
    session, smsc, _ = bound(window=2)
    for i, dest in enumerate([A, B, C]):
        session.submit(dest, f"m{i}", handle=i)
    sent = smsc.pdus()
    assert [p.destination_addr for p in sent] == [A, B]
    assert session.queued == 1
    smsc.respond(sent[1], message_id="2")
    assert smsc.one("submit_sm").destination_addr == C


def test_one_outstanding_submit_per_destination_keeps_order():
    session, smsc, _ = bound(window=10)
    session.submit(A, "first", handle=1)
    session.submit(A, "second", handle=2)
    session.submit(B, "other", handle=3)
    sent = smsc.pdus()
    assert [(p.destination_addr, submit_text(p)) for p in sent] == [(A, "first"), (B, "other")]
    smsc.respond(sent[0], message_id="1")
    assert submit_text(smsc.one("submit_sm")) == "second"


def test_throttled_submission_backs_off_exponentially_and_keeps_order():
    session, smsc, clock = bound(throttle_backoff_initial=1, throttle_backoff_max=3)
    session.submit(A, "first", handle=1)
    session.submit(A, "second", handle=2)
    sm = smsc.one("submit_sm")
    assert smsc.respond(sm, status=P.ESME_RTHROTTLED) == [Throttled(P.ESME_RTHROTTLED, 1)]
    session.submit(B, "later", handle=3)
    assert smsc.pdus() == []                     # paused: nothing at all goes out
    assert session.next_deadline() == pytest.approx(1)
    advance(clock, session, 1)
    again = smsc.pdus()
    assert [submit_text(p) for p in again] == ["first", "later"]
    assert smsc.respond(again[0], status=P.ESME_RMSGQFUL) == [Throttled(P.ESME_RMSGQFUL, 2)]
    advance(clock, session, 1.9)
    assert smsc.pdus() == []
    advance(clock, session, 0.1)
    third = smsc.one("submit_sm")
    assert submit_text(third) == "first"
    assert smsc.respond(third, status=P.ESME_RTHROTTLED) == [Throttled(P.ESME_RTHROTTLED, 3)]
    advance(clock, session, 3)
    fourth = smsc.one("submit_sm")
    smsc.respond(fourth, message_id="id-1")
    assert submit_text(smsc.one("submit_sm")) == "second"
    # success reset the back-off
    session.submit(C, "x", handle=4)
    assert smsc.respond(smsc.one("submit_sm"), status=P.ESME_RTHROTTLED) == [Throttled(P.ESME_RTHROTTLED, 1)]


def test_rate_limit_counts_parts():
    session, smsc, clock = bound(submit_rate=2, submit_burst=2, window=50, enquire_link_interval=1000)
    session.submit(A, "y" * 400, handle="long")      # 3 parts
    session.submit(B, "short", handle="b")
    session.submit(C, "short", handle="c")
    sent = smsc.pdus()
    assert [p.destination_addr for p in sent] == [A, B]   # the bucket held two tokens
    for p in sent:
        smsc.respond(p, message_id=str(p.sequence))
    assert smsc.pdus() == []
    assert session.next_deadline() == pytest.approx(0.5)
    times = []
    events = []
    while len(times) < 3:
        advance(clock, session, 0.25)
        for p in smsc.pdus():
            times.append((clock.seconds(), p.destination_addr))
            events += smsc.respond(p, message_id=str(p.sequence))
    assert times == [(0.5, C), (1.0, A), (1.5, A)]
    assert [e.handle for e in events if isinstance(e, MessageAccepted)] == ["c", "long"]


def test_permanent_error_fails_the_message_and_drops_its_other_parts():
    session, smsc, _ = bound()
    handles = session.submit(A, "z" * 200, handle="bad")
    session.submit(A, "next", handle="ok")
    events = smsc.respond(smsc.one("submit_sm"), status=P.ESME_RINVDSTADR)
    assert events[0] == SubmitResult(handles[0], None, P.ESME_RINVDSTADR)
    assert isinstance(events[1], SubmitFailed) and events[1].handle == "bad"
    assert submit_text(smsc.one("submit_sm")) == "next"


def test_submit_timeout_retries_the_part_and_probes_the_link():
    session, smsc, clock = bound(response_timeout=5)
    session.submit(A, "hello", handle=1)
    smsc.one("submit_sm")
    events = advance(clock, session, 5)
    assert [type(e) for e in events] == [ProtocolWarning]
    sent = smsc.pdus()
    assert sorted(p.command for p in sent) == ["enquire_link", "submit_sm"]
    resubmit = next(p for p in sent if p.command == "submit_sm")
    assert submit_text(resubmit) == "hello"
    assert smsc.respond(resubmit, message_id="9")[-1] == MessageAccepted(1, ("9",))


def test_queued_and_in_flight_messages_survive_a_reconnect():
    session, smsc, clock = bound(window=1)
    session.submit(A, "one", handle=1)
    session.submit(B, "two", handle=2)
    smsc.one("submit_sm")                 # in flight when the link drops
    session.connection_lost()
    session.submit(C, "three", handle=3)  # queued while down
    assert session.data_to_send() == b""
    session.connection_made()
    smsc.reader = P.PduReader()
    smsc.respond(smsc.one("bind_transceiver"))
    order = []
    for _ in range(3):
        sm = smsc.one("submit_sm")
        order.append(submit_text(sm))
        smsc.respond(sm, message_id=str(sm.sequence))
    assert order == ["one", "two", "three"]


def test_give_up_reports_failure_for_messages_never_accepted():
    session, smsc, clock = make(give_up=60)
    session.submit(A, "stuck", handle="s")
    assert session.next_deadline() == pytest.approx(60)
    events = advance(clock, session, 60)
    assert [type(e) for e in events] == [SubmitFailed] and events[0].handle == "s"
    assert session.pending_messages == 0


def test_bad_submissions_are_refused_up_front():
    session, _, _ = bound()
    with pytest.raises(ValueError):
        session.submit("+8613800138000", "x", handle=1)
    session.submit(A, "x", handle=1)
    with pytest.raises(ValueError):
        session.submit(A, "x", handle=1)


# ---------------------------------------------------------------- MO

def test_mo_is_acknowledged_only_when_the_application_says_so():
    session, smsc, _ = bound()
    events = smsc.deliver(b"YE", seq=300)
    [mo] = events
    assert isinstance(mo, MessageReceived)
    assert (mo.msisdn, mo.destination, mo.text, mo.sequence, mo.ussd) == (A, SERVICE, "YE", 300, None)
    assert smsc.pdus() == []                       # nothing until the app has recorded it
    assert session.ack_deliver(mo.sequence, mo.connection)
    resp = smsc.one("deliver_sm_resp")
    assert (resp.sequence, resp.status) == (300, 0)
    assert not session.ack_deliver(mo.sequence, mo.connection)   # only once


def test_nack_asks_the_smsc_to_retry_and_the_key_is_stable():
    session, smsc, _ = bound()
    [first] = smsc.deliver(b"ZF 1001 10", seq=301)
    session.nack_deliver(first.sequence, P.ESME_RX_T_APPN, first.connection)
    resp = smsc.one("deliver_sm_resp")
    assert (resp.sequence, resp.status) == (301, P.ESME_RX_T_APPN)
    [retry] = smsc.deliver(b"ZF 1001 10", seq=377)
    assert retry.smsc_message_key == first.smsc_message_key
    [other] = smsc.deliver(b"ZF 1001 10", source=B)
    assert other.smsc_message_key != first.smsc_message_key


def test_ack_for_a_previous_connection_is_not_sent():
    session, smsc, _ = bound()
    [mo] = smsc.deliver(b"BAL", seq=1)
    session.connection_lost()
    session.connection_made()
    smsc.reader = P.PduReader()
    smsc.respond(smsc.one("bind_transceiver"))
    assert not session.ack_deliver(mo.sequence, mo.connection)
    assert smsc.pdus() == []


def test_ucs2_mo_is_decoded():
    session, smsc, _ = bound()
    [mo] = smsc.deliver("余额".encode("utf-16-be"), data_coding=8)
    assert mo.text == "余额" and mo.data_coding == 8


def test_concatenated_mo_8bit_udh_out_of_order():
    session, smsc, _ = bound()
    udh = lambda seq: bytes([5, 0, 3, 0x42, 3, seq])
    assert smsc.deliver(udh(2) + b"BBB", esm_class=0x40, seq=11) == []
    assert smsc.deliver(udh(3) + b"CCC", esm_class=0x40, seq=12) == []
    # parts that do not complete the message are acknowledged at once
    assert [(p.sequence, p.status) for p in smsc.pdus()] == [(11, 0), (12, 0)]
    [mo] = smsc.deliver(udh(1) + b"AAA", esm_class=0x40, seq=13)
    assert mo.text == "AAABBBCCC" and mo.parts == 3 and mo.sequence == 13
    assert smsc.pdus() == []
    session.ack_deliver(13)
    assert smsc.one("deliver_sm_resp").sequence == 13


def test_concatenated_mo_16bit_udh_ucs2():
    session, smsc, _ = bound()
    udh = lambda seq: bytes([6, 8, 4, 0x12, 0x34, 2, seq])
    assert smsc.deliver(udh(1) + "余".encode("utf-16-be"), esm_class=0x40, data_coding=8) == []
    [mo] = smsc.deliver(udh(2) + "额".encode("utf-16-be"), esm_class=0x40, data_coding=8)
    assert mo.text == "余额"


def test_concatenated_mo_with_sar_tlvs():
    session, smsc, _ = bound()
    assert smsc.deliver(b"hello ", sar_msg_ref_num=700, sar_total_segments=2, sar_segment_seqnum=1) == []
    [mo] = smsc.deliver(b"world", sar_msg_ref_num=700, sar_total_segments=2, sar_segment_seqnum=2)
    assert mo.text == "hello world"


def test_missing_part_times_out_as_incomplete_message():
    session, smsc, clock = bound(reassembly_timeout=20, enquire_link_interval=1000)
    smsc.deliver(bytes([5, 0, 3, 9, 2, 1]) + b"half", esm_class=0x40)
    assert session.next_deadline() == pytest.approx(20)
    assert advance(clock, session, 19) == []
    assert advance(clock, session, 1) == [IncompleteMessage(A, SERVICE, 1, 2)]
    # a late second part starts a new, again incomplete, message
    assert smsc.deliver(bytes([5, 0, 3, 9, 2, 2]) + b"late", esm_class=0x40) == []


def test_nacked_multipart_is_whole_again_when_the_smsc_retries_the_last_part():
    session, smsc, _ = bound()
    udh = lambda seq: bytes([5, 0, 3, 1, 2, seq])
    smsc.deliver(udh(1) + b"pay ", esm_class=0x40)
    [mo] = smsc.deliver(udh(2) + b"now", esm_class=0x40, seq=90)
    session.nack_deliver(90)
    smsc.pdus()
    [again] = smsc.deliver(udh(2) + b"now", esm_class=0x40, seq=91)
    assert again.text == "pay now" and again.smsc_message_key == mo.smsc_message_key


def test_multipart_unanswered_when_the_link_drops_is_whole_on_redelivery():
    session, smsc, _ = bound()
    udh = lambda seq: bytes([5, 0, 3, 2, 2, seq])
    smsc.deliver(udh(1) + b"ZZ 13900139000 ", esm_class=0x40)
    [mo] = smsc.deliver(udh(2) + b"5", esm_class=0x40, seq=40)
    session.connection_lost()
    session.connection_made()
    smsc.reader = P.PduReader()
    smsc.respond(smsc.one("bind_transceiver"))
    [again] = smsc.deliver(udh(2) + b"5", esm_class=0x40, seq=1)
    assert again.text == "ZZ 13900139000 5" and again.smsc_message_key == mo.smsc_message_key
    assert session.ack_deliver(again.sequence, again.connection)
    assert not session.ack_deliver(mo.sequence, mo.connection)


def test_delivery_receipt_is_reported_as_a_receipt():
    session, smsc, _ = bound()
    text = b"id:0000A1B sub:001 dlvrd:001 submit date:2611231200 done date:2611231201 stat:DELIVRD err:000 text:hi"
    [rcpt] = smsc.deliver(text, esm_class=0x04, seq=500)
    assert isinstance(rcpt, ReceiptReceived)
    assert (rcpt.message_id, rcpt.state, rcpt.error, rcpt.msisdn) == ("0000A1B", "DELIVRD", "000", A)
    assert "a1b" in rcpt.message_id_candidates and "2587" in rcpt.message_id_candidates
    assert smsc.pdus() == []
    session.ack_deliver(500)
    assert smsc.one("deliver_sm_resp").sequence == 500


def test_receipt_from_tlvs_without_text():
    session, smsc, _ = bound()
    [rcpt] = smsc.deliver(b"", receipted_message_id="77", message_state=5)
    assert (rcpt.message_id, rcpt.state) == ("77", "UNDELIV")


def test_unreadable_receipt_is_acknowledged_not_retried():
    session, smsc, _ = bound()
    events = smsc.deliver(b"nonsense", esm_class=0x04, seq=12)
    assert [type(e) for e in events] == [ProtocolWarning]
    assert smsc.one("deliver_sm_resp").status == 0


def test_deliver_before_bind_is_refused():
    session, smsc, _ = make()
    session.connection_made()
    smsc.one("bind_transceiver")
    smsc.deliver(b"early", seq=3)
    resp = smsc.one("deliver_sm_resp")
    assert (resp.sequence, resp.status) == (3, P.ESME_RINVBNDSTS)


# ---------------------------------------------------------------- USSD

def test_ussd_tlvs_are_exposed_and_echoed_in_the_reply():
    session, smsc, _ = bound()
    [mo] = smsc.deliver(b"*188#", ussd_service_op=1, its_session_info=0x1A00, user_message_reference=5)
    assert mo.ussd == UssdInfo(1, 0x1A00, 5)
    assert not mo.ussd.session_ended
    session.submit(A, "1 Balance\n2 Pay", handle="menu", ussd=mo.ussd.reply(end=False),
                   registered_delivery=False)
    menu = smsc.one("submit_sm")
    assert (menu.ussd_service_op, menu.its_session_info, menu.registered_delivery) == (2, 0x1A00, 0)
    assert menu.user_message_reference == 5 and menu.esm_class == 0
    smsc.respond(menu, message_id="u1")
    session.submit(A, "Balance 12.50", handle="end", ussd=mo.ussd.reply(end=True),
                   registered_delivery=False)
    final = smsc.one("submit_sm")
    assert (final.ussd_service_op, final.its_session_info) == (0x11, 0x1A01)


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown SMPP bind settings: windw"):
        EsmeConfig.from_dict({"system_id": "x", "windw": 3})
    assert EsmeConfig.from_dict({"system_id": "x", "window": 3}).window == 3


@pytest.mark.parametrize("bad", [dict(source_addr="1" * 30), dict(service_type="toolong"),
                                 dict(addr_ton=300), dict(window=0), dict(password="123456789"),
                                 dict(response_timeout=0)])
def test_config_errors_surface_at_load_time(bad):
    with pytest.raises(ValueError):
        EsmeConfig(system_id="telecompay", **bad)


def test_ussd_text_must_fit_one_pdu():
    session, _, _ = bound()
    with pytest.raises(ValueError):
        session.submit(A, "余" * 200, handle="u", ussd=UssdInfo(0x11, 1))


def test_take_movable_keeps_what_must_stay_and_per_destination_order():
    session, smsc, _ = bound()
    session.submit(A, "a" * 200, handle="a-long")   # 2 parts; the first gets accepted
    session.submit(A, "a2", handle="a2")
    session.submit(B, "b1", handle="b1")
    session.submit(B, "b2", handle="b2")
    session.submit(C, "c1", handle="c1")
    sent = {p.destination_addr: p for p in smsc.pdus()}
    smsc.respond(sent[A], message_id="1")            # A: part 1/2 accepted, part 2 now in flight
    session.connection_lost()                          # B and C were in flight: requeued
    moved = session.take_movable()
    assert moved == [("b1", B), ("b2", B), ("c1", C)]
    assert session.pending_messages == 2               # a-long (partly accepted) and a2 behind it
    session.connection_made()
    smsc.reader = P.PduReader()
    smsc.respond(smsc.one("bind_transceiver"))
    assert [submit_text(p)[:2] for p in smsc.pdus()] == ["aa"]


def test_give_up_waits_for_the_part_in_flight_then_decides():
    session, smsc, clock = bound(give_up=10, response_timeout=30, enquire_link_interval=1000)
    session.submit(A, "slow", handle="late-ok")
    session.submit(B, "slow", handle="late-throttled")
    ok, throttled = smsc.pdus()
    assert advance(clock, session, 10) == []
    assert session.next_deadline() > clock.seconds()       # no busy loop while waiting
    assert smsc.respond(ok, message_id="5")[-1] == MessageAccepted("late-ok", ("5",))
    events = smsc.respond(throttled, status=P.ESME_RTHROTTLED)
    assert [type(e) for e in events] == [SubmitResult, SubmitFailed]
    assert session.pending_messages == 0


def test_data_sm_mo_is_handled_like_deliver_sm():
    session, smsc, _ = bound()
    [mo] = smsc.send("data_sm", seq=88, source_addr=A, destination_addr=SERVICE, data_coding=0,
                     message_payload=b"1", ussd_service_op=0x12, its_session_info=0x0302)
    assert (mo.text, mo.ussd.service_op, mo.ussd.session_info) == ("1", 0x12, 0x0302)
    assert smsc.pdus() == []
    session.ack_deliver(88)
    resp = smsc.one("data_sm_resp")
    assert (resp.sequence, resp.status) == (88, 0)


def test_unknown_tlv_does_not_abort_the_parse():
    session, smsc, _ = bound()
    raw = P.encode_pdu("deliver_sm", 70, source_addr=A, destination_addr=SERVICE, short_message=b"YE")
    raw += bytes.fromhex("1400 0003 abcdef".replace(" ", ""))   # vendor TLV
    raw = (len(raw)).to_bytes(4, "big") + raw[4:]
    [mo] = smsc.send_raw(raw)
    assert mo.text == "YE" and mo.sequence == 70


def test_long_ucs2_mt_splits_on_whole_characters():
    session, smsc, _ = bound()
    text = "付款成功😀" * 30                      # surrogate pairs included
    handles = session.submit(A, text, handle="zh")
    assert len(handles) > 1
    joined = []
    for _ in handles:
        sm = smsc.one("submit_sm")
        assert sm.data_coding == 8 and sm.esm_class & 0x40
        decoded = decode_short_message(sm.short_message, sm.data_coding, sm.esm_class)
        joined.append(decoded.text)
        smsc.respond(sm, message_id=str(sm.sequence))
    assert "".join(joined) == text


def test_late_redelivery_of_a_completed_multipart_is_acked_and_forgotten():
    session, smsc, clock = bound(reassembly_timeout=20, enquire_link_interval=1000)
    udh = lambda seq: bytes([5, 0, 3, 7, 2, seq])
    smsc.deliver(udh(1) + b"one ", esm_class=0x40)
    [mo] = smsc.deliver(udh(2) + b"two", esm_class=0x40, seq=31)
    session.ack_deliver(31)
    smsc.pdus()
    assert smsc.deliver(udh(1) + b"one ", esm_class=0x40, seq=32) == []   # the SMSC missed our ack
    assert smsc.one("deliver_sm_resp").sequence == 32
    assert advance(clock, session, 20) == []
    deadline = session.next_deadline()
    assert deadline is None or deadline > clock.seconds()
