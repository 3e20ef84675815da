"""The sans-I/O FastAGI session fed the bytes a real Asterisk 22 sends
(formats from res/res_agi.c), no sockets."""
from __future__ import annotations

import pytest

from channels.ivr.agi import AgiError, AgiSession, Fatal, Garbage, HungUp, Response, Started, quote

HEADER = (
    b"agi_network: yes\n"
    b"agi_network_script: ivr\n"
    b"agi_request: agi://127.0.0.1:4573/ivr\n"
    b"agi_channel: PJSIP/1000-00000001\n"
    b"agi_language: en\n"
    b"agi_type: PJSIP\n"
    b"agi_uniqueid: 1733100000.42\n"
    b"agi_version: 22.11.0\n"
    b"agi_callerid: 13800138000\n"
    b"agi_calleridname: unknown\n"
    b"agi_callingpres: 0\n"
    b"agi_callingani2: 0\n"
    b"agi_callington: 0\n"
    b"agi_callingtns: 0\n"
    b"agi_dnid: 95588\n"
    b"agi_rdnis: unknown\n"
    b"agi_context: telecom-pay-ivr\n"
    b"agi_extension: 95588\n"
    b"agi_priority: 1\n"
    b"agi_enhanced: 0.0\n"
    b"agi_accountcode: \n"
    b"agi_threadid: 140234\n"
    b"agi_arg_1: callback\n"
    b"agi_arg_2: two words\n"
    b"\n"
)


def started() -> AgiSession:
    s = AgiSession()
    events = s.receive_data(HEADER)
    assert isinstance(events[0], Started)
    return s


def test_header_block_in_pieces_gives_the_environment():
    s = AgiSession()
    events = []
    for i in range(0, len(HEADER), 7):                 # TCP may cut anywhere
        events += s.receive_data(HEADER[i:i + 7])
    assert len(events) == 1 and isinstance(events[0], Started)
    env = events[0].env
    assert env.network_script == "ivr"
    assert env.uniqueid == "1733100000.42"
    assert env.callerid == "13800138000"
    assert env.context == "telecom-pay-ivr"
    assert env.language == "en"
    assert env.args == ("callback", "two words")
    assert env.get("accountcode") == ""
    assert s.started and s.in_flight is None


def test_no_command_before_the_header_ends():
    s = AgiSession()
    s.receive_data(HEADER[:40])
    with pytest.raises(AgiError):
        s.command("ANSWER")


def test_stream_file_with_escape_digits_and_endpos():
    s = started()
    line = s.command("STREAM FILE", "telecom-pay/en/main_menu", "0123456789*#")
    assert s.data_to_send() == b"STREAM FILE telecom-pay/en/main_menu 0123456789*#\n"
    assert line.startswith("STREAM FILE")
    (r,) = s.receive_data(b"200 result=49 endpos=12800\n")
    assert isinstance(r, Response) and r.ok and r.number == 49 and chr(r.number) == "1"
    assert r.endpos == 12800 and r.command == line and not r.failed
    assert s.in_flight is None


def test_empty_escape_digits_are_quoted():
    s = started()
    s.command("STREAM FILE", "beep", "")
    assert s.data_to_send() == b'STREAM FILE beep ""\n'
    assert quote('say "hi"') == '"say \\"hi\\""'
    assert quote("a b") == '"a b"'


def test_get_data_digits_timeout_and_nothing():
    s = started()
    s.command("GET DATA", "telecom-pay/en/enter_pin", 5000, 6)
    (r,) = s.receive_data(b"200 result=123456\n")
    assert r.result == "123456" and r.data is None
    s.command("GET DATA", "x", 5000, 6)
    (r,) = s.receive_data(b"200 result=12 (timeout)\n")
    assert r.result == "12" and r.data == "timeout"
    s.command("GET DATA", "x", 5000, 6)
    (r,) = s.receive_data(b"200 result= (timeout)\n")
    assert r.result == "" and r.data == "timeout" and not r.failed
    s.command("GET DATA", "x", 5000, 6)
    (r,) = s.receive_data(b"200 result=-1\n")
    assert r.failed


def test_one_command_at_a_time():
    s = started()
    s.command("ANSWER")
    with pytest.raises(AgiError):
        s.command("ANSWER")


def test_unknown_command_and_usage_block():
    s = started()
    s.command("FROB")
    (r,) = s.receive_data(b"510 Invalid or unknown command\n")
    assert r.code == 510 and r.failed
    s.command("WAIT FOR DIGIT")
    assert s.receive_data(b"520-Invalid command syntax.  Proper usage follows:\n") == []
    assert s.receive_data(b" Usage: WAIT FOR DIGIT <timeout>\n\n") == []
    (r,) = s.receive_data(b"520 End of proper usage.\n")
    assert r.code == 520 and r.usage == (" Usage: WAIT FOR DIGIT <timeout>", "") and r.failed
    s.command("ANSWER")
    (r,) = s.receive_data(b"520 Invalid command syntax.  Proper usage not available.\n")
    assert r.code == 520


def test_hangup_line_then_dead_channel():
    s = started()
    s.command("STREAM FILE", "x", "#")
    events = s.receive_data(b"200 result=-1 endpos=0\nHANGUP\n")
    assert isinstance(events[0], Response) and events[0].failed
    assert isinstance(events[1], HungUp) and s.hung_up
    s.command("SAY NUMBER", 5, "")
    (r,) = s.receive_data(b"511 Command Not Permitted on a dead channel or intercept routine\n")
    assert r.code == 511 and r.failed


def test_hangup_between_commands_and_511_alone_marks_dead():
    s = started()
    assert s.receive_data(b"HANGUP\n") == [HungUp()]
    s2 = started()
    s2.command("ANSWER")
    s2.receive_data(b"511 Command Not Permitted on a dead channel or intercept routine\n")
    assert s2.hung_up


def test_garbage_is_skipped_then_fatal():
    s = started()
    s.command("ANSWER")
    events = s.receive_data(b"hello there\n200 result=0\n")
    assert isinstance(events[0], Garbage) and isinstance(events[1], Response) and events[1].ok
    s = AgiSession(max_garbage=2)
    s.receive_data(HEADER)
    for _ in range(5):                                 # junk between answers: tolerated
        s.command("NOOP")
        events = s.receive_data(b"x\ny\n200 result=0\n")
        assert events[-1].ok and not s.closed
    s.command("NOOP")
    events = s.receive_data(b"x\ny\nz\n200 result=0\n")       # three in a row: not Asterisk
    assert isinstance(events[-1], Fatal) and s.closed
    assert s.receive_data(b"200 result=0\n") == []


def test_malformed_200_is_garbage():
    s = started()
    s.command("ANSWER")
    (g,) = s.receive_data(b"200 resultat\n")
    assert isinstance(g, Garbage) and s.in_flight == "ANSWER"


def test_overlong_line_and_endless_header_are_fatal():
    s = AgiSession(max_line=100)
    (f,) = s.receive_data(b"agi_network: " + b"y" * 200)
    assert isinstance(f, Fatal)
    s = AgiSession(max_header_lines=5)
    events = s.receive_data(b"agi_x: 1\n" * 6)
    assert isinstance(events[-1], Fatal)


def test_crlf_tolerated_and_garbage_in_header():
    s = AgiSession()
    events = s.receive_data(b"agi_network: yes\r\nnot a header\r\nagi_uniqueid: 7\r\n\r\n")
    assert isinstance(events[0], Garbage) and isinstance(events[1], Started)
    assert events[1].env.uniqueid == "7"
