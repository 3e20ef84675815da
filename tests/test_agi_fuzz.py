"""Whatever bytes a FastAGI peer sends, the session answers with events
(or a Fatal that closes it), never an exception, and never more than one
command in flight."""
from hypothesis import given, settings, strategies as st

from channels.ivr.agi import AgiSession, Fatal, Garbage, HungUp, Response, Started

HEADER = (b"agi_network: yes\nagi_network_script: ivr\nagi_request: agi://127.0.0.1:4573/ivr\n"
          b"agi_channel: PJSIP/trunk-00000001\nagi_uniqueid: 1796178469.0\nagi_callerid: 13800138000\n"
          b"agi_arg_1: callback\n\n")
LINES = st.sampled_from([b"200 result=0\n", b"200 result=49 endpos=17760\n", b"200 result= (timeout)\n",
                         b"200 result=1 (done)\n", b"510 Invalid or unknown command\n", b"511 Command Not Permitted\n",
                         b"520-Invalid command syntax.  Proper usage follows:\n", b"Usage: GET DATA\n",
                         b"520 End of proper usage.\n", b"HANGUP\n", b"\n", b"\r\n", b"agi_extra: x\n",
                         b"200 result=-1 endpos=0\n", b"\xff\xfe\x00garbage\n"])


def _feed(chunks):
    session = AgiSession()
    events = []
    for chunk in chunks:
        if session.closed:
            break
        if session.started and session.in_flight is None:
            session.command("STREAM", "FILE", "telecom-pay/zh/main_title", "0123456789*#")
            session.data_to_send()
        events += session.receive_data(chunk)
    return session, events


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_random_bytes_never_raise(chunks):
    session, events = _feed(chunks)
    assert all(isinstance(e, (Started, Response, HungUp, Garbage, Fatal)) for e in events)
    assert sum(isinstance(e, Started) for e in events) <= 1


@settings(max_examples=300, deadline=None)
@given(st.lists(LINES, max_size=40), st.integers(min_value=1, max_value=7))
def test_agi_shaped_lines_in_any_order_and_any_split(lines, cut):
    data = HEADER + b"".join(lines)
    chunks = [data[i:i + cut] for i in range(0, len(data), cut)]
    session, events = _feed(chunks)
    assert sum(isinstance(e, Started) for e in events) == 1
    responses = [e for e in events if isinstance(e, Response)]
    # each response answers one command sent (never more answers than commands)
    assert len(responses) <= sum(1 for line in lines if line[:3] in (b"200", b"510", b"511", b"520")) + 1
