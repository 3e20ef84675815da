"""The AMI simulator's framing, without sockets: messages split at the
empty line whatever the chunking, repeated keys kept (Variable), and what
it writes read back by asterisk-ami's own parsers."""
from asterisk.ami import Event, Response

from simulators.asterisk.ami_server import format_message, split_messages

ORIGINATE = (b"Action: Originate\r\nActionID: tp-cb-1-1-ab\r\nChannel: PJSIP/8613800138000@trunk\r\n"
             b"Async: true\r\nVariable: TP_MSISDN=8613800138000\r\nVariable: TP_CALLBACK_ID=1\r\n\r\n")


def test_messages_split_at_the_empty_line_whatever_the_chunks():
    stream = ORIGINATE + b"Action: Ping\r\nActionID: 7\r\n\r\nAction: Log"
    for size in (1, 3, 17, len(stream)):
        got, rest = [], b""
        for i in range(0, len(stream), size):
            msgs, rest = split_messages(rest + stream[i:i + size])
            got += msgs
        assert [m.get("action") for m in got] == ["Originate", "Ping"]
        assert rest == b"Action: Log"
    originate = split_messages(ORIGINATE)[0][0]
    assert originate.all("Variable") == ["TP_MSISDN=8613800138000", "TP_CALLBACK_ID=1"]
    assert originate.get("ASYNC") == "true" and originate.get("Missing") is None


def test_what_it_writes_is_read_by_asterisk_ami():
    response = format_message([("Response", "Error"), ("ActionID", "9"), ("Message", "Originate failed"),
                               ("Skipped", None)])
    assert response.endswith(b"\r\n\r\n") and b"Skipped" not in response
    r = Response.read(response.decode().strip())
    assert r.is_error() and r.keys == {"ActionID": "9", "Message": "Originate failed"}
    e = Event.read(format_message([("Event", "Hangup"), ("Uniqueid", "1733.1"), ("Cause", "16"),
                                   ("Cause-txt", "Normal Clearing")]).decode().strip())
    assert e.name == "Hangup" and e.keys == {"Uniqueid": "1733.1", "Cause": "16", "Cause-txt": "Normal Clearing"}
