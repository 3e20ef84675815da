"""The USSD session rules without sockets: what each PDU means, the
session ids, the settings, and when an unanswered page times out."""
from __future__ import annotations

import random

import pytest
from twisted.internet import task

from channels.smpp import pdu as P
from tests.aio import aio_test
from channels.smpp.session import UssdInfo
from channels.smpp.ussd import (ANSWER, BEGIN, IGNORE, RELEASE, UssdSessions, UssdSettings, classify, fit_page,
                                next_page_info, page_ussd, session_id)

A = "8613800138000"


@pytest.mark.parametrize("op, info, kind", [
    (P.USSD_PSSR_IND, 0x0500, BEGIN),
    (P.USSD_USSR_CONF, 0x0502, ANSWER),
    (P.USSD_USSR_CONF, 0x0503, RELEASE),        # the end bit
    (0x20, 0x0501, RELEASE), (0x21, None, RELEASE), (P.USSD_USER_ABORT, 0x0501, RELEASE),
    (P.USSD_USSN_CONF, 0x0500, IGNORE), (P.USSD_PSSD_IND, None, IGNORE),
])
def test_classify(op, info, kind):
    assert classify(UssdInfo(op, info, None)) == kind


def test_session_id_uses_the_session_number_or_the_reference():
    # the second octet (dialogue sequence, end bit) changes within one session
    assert session_id(A, UssdInfo(1, 0x1A00, 7)) == session_id(A, UssdInfo(0x12, 0x1A05, 9)) == f"ussd:{A}:26"
    assert session_id(A, UssdInfo(1, 0x1A00, 7), "user_message_reference") == f"ussd:{A}:7"
    assert session_id(A, UssdInfo(1, None, 7)) == f"ussd:{A}:7"
    assert session_id(A, UssdInfo(1, 0x0300, None), "user_message_reference") == f"ussd:{A}:3"


def test_settings_from_config():
    s = UssdSettings.from_config({"codes": {"*188#": "home", "*188*1#": "balance"}, "timeout": 30, "push": False})
    assert (s.codes["*188*1#"], s.timeout, s.push, s.home_code) == ("balance", 30.0, False, "*188#")
    assert UssdSettings.from_config({"codes": ["*123#"]}).codes == {"*123#": "home"}
    assert UssdSettings.from_config(None).codes == {"*188#": "home"}
    for bad in ({"codes": {"188": "home"}}, {"timeout": 0}, {"session_key": "x"}, {"tiemout": 3}):
        with pytest.raises(ValueError):
            UssdSettings.from_config(bad)


def test_unanswered_page_times_out_and_an_answer_resets_the_deadline():
    clock = task.Clock()
    sessions = UssdSessions(120.0, clock.seconds)
    sessions.open("s1", A, UssdInfo(1, 0x0100), bind="b", code="*188#")
    sessions.open("s2", A, UssdInfo(1, 0x0200), bind="b", code="*188#")
    clock.advance(100)
    sessions.waiting("s1")                       # a new page went out on s1
    clock.advance(20)
    assert [s.session_id for s in sessions.expired()] == ["s2"]
    assert "s2" not in sessions and "s1" in sessions
    clock.advance(99.9)
    assert sessions.expired() == []
    clock.advance(0.1)
    assert [s.session_id for s in sessions.expired()] == ["s1"] and len(sessions) == 0


def test_pages_keep_the_session_number_and_count_the_dialogue_sequence():
    sessions = UssdSessions(10, task.Clock().seconds)
    s = sessions.open("s", A, UssdInfo(1, 0x1A00, 5), bind=None, code="*188#")
    assert s.next_page(end=False) == UssdInfo(P.USSD_USSR_REQ, 0x1A02, 5)
    assert s.next_page(end=False) == UssdInfo(P.USSD_USSR_REQ, 0x1A04, 5)
    assert s.next_page(end=True) == UssdInfo(P.USSD_PSSR_RESP, 0x1A07, 5)
    assert next_page_info(0x1AFE, end=False) == 0x1A00          # the sequence wraps within its 7 bits
    assert next_page_info(None, end=True) is None
    assert page_ussd(UssdInfo(0x12, 0x0306, None), end=False) == UssdInfo(P.USSD_USSR_REQ, 0x0308, None)


def test_a_push_gets_a_session_number_no_open_dialogue_uses():
    sessions = UssdSessions(10, task.Clock().seconds)
    for n in range(255):
        sessions.open(f"s{n}", A, UssdInfo(1, n << 8), bind=None, code="*188#")
    assert sessions.free_session_number(A, random.Random(1)) == 255


def test_fit_page_limits():
    assert fit_page("a" * 182) == "a" * 182
    assert len(fit_page("a" * 200)) == 182 and fit_page("a" * 200).endswith("...")
    assert len(fit_page("余" * 80)) == 70


@aio_test
async def test_a_timeout_is_left_to_the_instance_that_sent_the_last_page():
    from channels.smpp.ussd import UssdDialogue
    from telecom_pay.sessions.memory import MemorySessionStore
    store = MemorySessionStore()
    clock = task.Clock()

    def dialogue():
        return UssdDialogue(None, None, UssdSettings(), language=None, render=None, clock=clock, queue=None,
                            serialize=None, store=store)
    here, there = dialogue(), dialogue()
    s = here.sessions.open("ussd:x:1", A, UssdInfo(1, 0x0100), bind=None, code="*188#")
    await here._noted(s.session_id)
    assert not await here._continued_elsewhere(s)
    await there._noted(s.session_id)                 # the next answer reached the other instance
    assert await here._continued_elsewhere(s)
