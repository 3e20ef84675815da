"""A spoofed sender (the SMSC cannot prove who sent an MO) can send DJ,
which needs no PIN, and wrong PINs. It cannot keep a victim frozen or
locked indefinitely without a trace: every such event is audited with its
channel, DJ is bounded per number and local day, a lockout that has run out
needs fresh failures, repeated lockouts raise an alert agents see, and JD
with the PIN always works."""
from datetime import timedelta

from telecom_pay.outcomes import Outcome
from tests.aio import aio_test
from tests.servicekit import MSISDN, funded, make_service, shutdown


async def service(stack, **kw):
    return await make_service(stack["database_url"], sessions_url=stack["sessions_url"],
                              prefix=stack.get("prefix", "tp:"), **kw)


async def log(svc):
    r = await svc.agent_security_log("AG001", MSISDN)
    assert r.ok, r
    return r.params["events"]


@aio_test
async def test_dj_without_pin_is_bounded_per_day_and_audited(stack):
    svc = await service(stack, overrides={"security.self_freezes_per_day": 2})
    pin = await funded(svc)
    for _ in range(2):
        assert (await svc.freeze(MSISDN, channel="sms")).outcome is Outcome.OK
        assert (await svc.unfreeze(MSISDN, pin, channel="sms")).outcome is Outcome.OK     # JD always works
    refused = await svc.freeze(MSISDN, channel="ussd")
    assert refused.outcome is Outcome.FREEZE_LIMIT and refused.params["limit"] == 2
    assert (await svc.account_info(MSISDN)).status == "active"
    events = await log(svc)
    assert [(e["action"], e["channel"]) for e in events if e["action"] in ("freeze", "security_alert")] == [
        ("security_alert", "ussd"), ("freeze", "sms"), ("freeze", "sms")]
    assert events[0]["details"]["reason"] == "freeze_rate"
    assert (await svc.agent_freeze("AG001", MSISDN)).outcome is Outcome.OK          # an agent is not bounded
    assert (await svc.agent_unfreeze("AG001", MSISDN)).outcome is Outcome.OK
    base = svc.clock
    svc.clock = lambda: base() + timedelta(days=1)                                   # the next local day
    assert (await svc.freeze(MSISDN, channel="sms")).outcome is Outcome.OK
    await shutdown(svc)


@aio_test
async def test_an_expired_lockout_needs_fresh_failures(stack):
    svc = await service(stack)
    pin = await funded(svc)
    wrong = "000000" if pin != "000000" else "111111"
    for _ in range(3):
        await svc.pay(MSISDN, "M001", 100, wrong, channel="sms")
    assert (await svc.pay(MSISDN, "M001", 100, pin, channel="sms")).outcome is Outcome.PIN_LOCKED
    base = svc.clock
    svc.clock = lambda: base() + timedelta(minutes=31)
    again = await svc.pay(MSISDN, "M001", 100, wrong, channel="sms")          # one spoofed wrong PIN
    assert again.outcome is Outcome.PIN_WRONG and again.params["attempts_left"] == 2
    assert (await svc.pay(MSISDN, "M001", 100, pin, channel="sms")).outcome is Outcome.OK
    events = await log(svc)
    assert [e["channel"] for e in events if e["action"] == "pin_wrong"] == ["sms"] * 4
    assert sum(e["action"] == "pin_locked" for e in events) == 1
    await shutdown(svc)


@aio_test
async def test_repeated_lockouts_raise_an_alert_agents_see(stack):
    svc = await service(stack)
    pin = await funded(svc)
    wrong = "000000" if pin != "000000" else "111111"
    base = svc.clock
    for round_ in range(2):
        svc.clock = lambda r=round_: base() + timedelta(minutes=31 * r)
        for _ in range(3):
            await svc.pay(MSISDN, "M001", 100, wrong, channel="sms")
    events = await log(svc)
    alerts = [e for e in events if e["action"] == "security_alert"]
    assert len(alerts) == 1 and alerts[0]["details"] == {"reason": "repeated_lockouts", "lockouts": 2}
    assert alerts[0]["channel"] == "sms" and alerts[0]["actor"] == f"msisdn:{MSISDN}"
    svc.clock = lambda: base() + timedelta(minutes=62)
    assert (await svc.freeze(MSISDN, channel="sms")).ok
    assert (await svc.unfreeze(MSISDN, pin, channel="sms")).ok              # the owner's JD still works
    assert (await svc.agent_security_log("NOPE", MSISDN)).outcome is Outcome.NOT_AUTHORIZED
    await shutdown(svc)
