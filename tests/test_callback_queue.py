"""Call-back requests as rows: one open per number, a few per local day,
claimed by one dialler, retried, failed after the attempts, and what a
dead dialler left in `dialing` taken up again from the table."""
from datetime import timedelta

from telecom_pay.commands.conversation import Conversation
from telecom_pay.outcomes import Outcome
from tests.aio import aio_test
from tests.clockkit import LOCAL_INSTANTS, TestClock
from tests.servicekit import MSISDN, OTHER, make_service, shutdown

POLICY = {"ami.callback_per_day": 2, "ami.callback_attempts": 2, "ami.callback_retry_delay": 30,
          "ami.callback_dial_timeout": 60}


async def service(stack, clock=None):
    return await make_service(stack["database_url"], sessions_url=stack["sessions_url"],
                              prefix=stack.get("prefix", "tp:"), overrides=POLICY, clock=clock)


@aio_test
async def test_one_open_request_per_number_and_a_bound_per_local_day(stack, local_clock):
    clock = local_clock
    svc = await service(stack, clock)
    woken = []
    svc.callbacks.wakers.append(lambda: woken.append(1))
    try:
        first = await svc.request_callback("13800138000", channel="sms")      # no account needed
        assert first.outcome is Outcome.OK and first.params["already"] is False
        again = await svc.request_callback(MSISDN, channel="ussd")
        assert again.outcome is Outcome.OK and again.params["already"] is True
        assert again.params["callback_id"] == first.params["callback_id"]
        assert woken == [1], "only a new request wakes the dialler"
        rows = await svc.callbacks.rows(msisdn=MSISDN)
        assert [(r["state"], r["requested_via"], r["attempts"]) for r in rows] == [("requested", "sms", 0)]

        # the first is dialled and answered: a second may be asked for the same day, not a third
        assert await svc.callbacks.claim(rows[0]["id"], "tp-cb-x")
        assert await svc.callbacks.answered("tp-cb-x")
        assert (await svc.request_callback(MSISDN, channel="sms")).params["already"] is False
        [open_row] = [r for r in await svc.callbacks.rows(msisdn=MSISDN) if r["state"] == "requested"]
        assert await svc.callbacks.claim(open_row["id"], "tp-cb-y")
        assert await svc.callbacks.answered("tp-cb-y")
        refused = await svc.request_callback(MSISDN, channel="sms")
        assert refused.outcome is Outcome.CALLBACK_LIMIT and refused.params["limit"] == 2
        assert (await svc.request_callback(OTHER, channel="sms")).outcome is Outcome.OK   # per number

        clock.advance(timedelta(days=1))          # the next local day
        assert (await svc.request_callback(MSISDN, channel="sms")).outcome is Outcome.OK
        assert (await svc.request_callback("12345", channel="sms")).outcome is Outcome.INVALID_NUMBER
    finally:
        await shutdown(svc)


@aio_test
async def test_claim_retry_and_failure_after_the_attempts(stack):
    clock = TestClock(LOCAL_INSTANTS["00:30"])
    svc = await service(stack, clock)
    q = svc.callbacks
    try:
        cid = (await svc.request_callback(MSISDN, channel="sms")).params["callback_id"]
        [due] = await q.due()
        assert due["id"] == cid
        assert await q.claim(cid, "tp-cb-1")
        assert not await q.claim(cid, "tp-cb-other"), "a second dialler must not take a claimed row"
        assert await q.due() == []
        assert await q.attempt_failed("tp-cb-1", "refused: no channel") == "requested"
        assert await q.due() == [], "a retry waits retry_delay_s"
        clock.advance(timedelta(seconds=31))
        [due] = await q.due()
        assert (due["attempts"], due["error"]) == (1, "refused: no channel")
        assert await q.claim(cid, "tp-cb-2")
        assert await q.attempt_failed("tp-cb-1", "late answer to a given-up attempt") is None
        assert await q.attempt_failed("tp-cb-2", "busy") == "failed"
        [row] = await q.rows(msisdn=MSISDN)
        assert (row["state"], row["attempts"], row["error"], row["action_id"]) == ("failed", 2, "busy", "tp-cb-2")
        assert not await q.answered("tp-cb-2"), "a failed request stays failed"
    finally:
        await shutdown(svc)


@aio_test
async def test_a_dialing_row_left_by_a_dead_dialler_comes_back_from_the_table(stack):
    clock = TestClock(LOCAL_INSTANTS["23:30"])
    svc = await service(stack, clock)
    try:
        cid = (await svc.request_callback(MSISDN, channel="sms")).params["callback_id"]
        assert await svc.callbacks.claim(cid, "tp-cb-1")
    finally:
        await shutdown(svc)
    # a new process on the same database: nothing in memory, the row says it all
    svc = await service(stack, clock)
    try:
        assert await svc.callbacks.stale() == []
        clock.advance(timedelta(seconds=61))
        [stale] = await svc.callbacks.stale()
        assert (stale["id"], stale["action_id"]) == (cid, "tp-cb-1")
        assert await svc.callbacks.attempt_failed("tp-cb-1", "no outcome from the switch") == "requested"
        clock.advance(timedelta(seconds=31))
        assert [r["id"] for r in await svc.callbacks.due()] == [cid]
    finally:
        await shutdown(svc)


@aio_test
async def test_hj_by_text_in_both_languages(stack):
    svc = await service(stack)
    conv = Conversation(svc)
    try:
        assert await conv.handle(MSISDN, "HJ") == ["收到, 我们将尽快给您回电, 请注意接听."]
        assert await conv.handle(MSISDN, "回拨") == ["您的回电请求正在处理, 请注意接听来电."]
        await conv.handle(OTHER, "LANG EN")
        assert await conv.handle(OTHER, "callback") == ["We will call you back shortly. Please answer the call."]
        assert [r["msisdn"] for r in await svc.callbacks.rows()] == [OTHER, MSISDN]
        assert "HJ" in (await conv.handle(MSISDN, "HJ 2"))[0], "HJ takes no argument: its usage is shown"
    finally:
        await shutdown(svc)
