"""Risk and AML rules on the service: each rule hits at its boundary and
not one below; a hold books the spend pending (reserved: not spendable
twice, shown out of the balance) with a case and an SMS; an alert lets it
through with a case; release pays exactly once under racing decisions;
refuse gives the money back; the books stay balanced throughout. Runs on
SQLite and on PostgreSQL + Redis."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from telecom_pay import config
from telecom_pay.commands.replies import render
from telecom_pay.ledger.tables import audit_log
from telecom_pay.outcomes import Outcome
from telecom_pay.risk.cases import risk_cases
from telecom_pay.risk.rules import parse_rules
from telecom_pay.service.risk_review import Reviewer, RiskCaseError
from tests.aio import aio_test
from tests.clockkit import TestClock
from tests.ledgerkit import assert_sound
from tests.servicekit import MSISDN, OTHER, funded, make_service, open_active, outbox_texts, shutdown

THIRD = "8613700137000"
FOURTH = "8613600136000"
OPS = Reviewer("ops1", "ops_admin", "127.0.0.1")


async def service(stack, rules: dict, **kw):
    overrides = {"security.velocity_payments_per_minute": 0, **{f"risk.{k}": v for k, v in rules.items()}}
    return await make_service(stack["database_url"], sessions_url=stack["sessions_url"],
                              prefix=stack.get("prefix", "tp:"), overrides=overrides, **kw)


async def sound(svc):
    assert await svc.check_books() == []


async def cases(svc) -> list:
    return await svc.ledger.read(lambda conn: _all_cases(conn))


async def _all_cases(conn):
    return (await conn.execute(sa.select(risk_cases).order_by(risk_cases.c.id))).all()


async def available(svc, msisdn=MSISDN) -> int:
    return (await svc.balance(msisdn, channel="t")).balance


async def merchant_balance(svc, code="M001") -> int:
    from telecom_pay import accounts as acct
    m = await svc.ledger.read(lambda conn: acct.find_merchant(conn, code))
    return m.balance


def pay(svc, pin, amount, key=None):
    return svc.pay(MSISDN, "M001", amount, pin, channel="web", key=key)


# ------------------------------------------------------------ config

@pytest.mark.parametrize("section, message", [
    ({"large_amount": {"action": "block", "amount": 100}}, 'risk.large_amount.action must be "hold" or "alert"'),
    ({"large_amount": {"action": "hold", "amount": 12.5}}, "risk.large_amount.amount must be a positive integer"),
    ({"large_amount": {"action": "hold"}}, "risk.large_amount.amount is required"),
    ({"velocity": {"action": "hold", "max_count": 0, "window_minutes": 5}}, "risk.velocity.max_count must be"),
    ({"velocity": {"action": "hold", "max_count": 3, "window": 5}}, "risk.velocity.window is not a setting"),
    ({"structuring": {"action": "alert", "limit": 100, "percent": 100, "count": 2, "window_minutes": 5}},
     "percent must be below 100"),
    ({"fanin": {}}, "risk.fanin is not a rule"),
    ({"new_account": "yes"}, "risk.new_account must be a table"),
])
def test_bad_rules_are_config_errors_naming_the_setting(section, message):
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        config.load(None, {"risk": section})


def test_no_rules_is_off_and_the_shipped_configs_parse():
    assert not parse_rules(None).active
    assert config.load(None).risk is not None
    prod = config.load(config.DEFAULT_CONFIG.with_name("production.example.toml"),
                       {"security.pin_key": "x" * 40})
    assert prod.risk.active and prod.risk.large_amount.action == "hold"


# ------------------------------------------------------------ boundaries

@aio_test
async def test_large_amount_holds_at_the_threshold_not_one_below(stack):
    svc = await service(stack, {"large_amount": {"action": "hold", "amount": 5000}})
    try:
        pin = await funded(svc, amount=20_000)
        r = await pay(svc, pin, 4999)
        assert r.outcome is Outcome.OK and await cases(svc) == []
        r = await pay(svc, pin, 5000, key="big-1")
        assert r.outcome is Outcome.RISK_HELD, r
        assert r.params["action"] == "pay" and r.ref
        [case] = await cases(svc)
        assert (case.status, case.kind, case.rules, case.amount) == ("held", "hold", ["large_amount"], 5000)
        assert case.figures == [{"rule": "large_amount", "action": "hold", "amount": 5000, "threshold": 5000}]
        # reserved: out of the available balance, the merchant not paid yet
        assert r.balance == 20_000 - 4999 - 5000 == await available(svc)
        assert await merchant_balance(svc) == 4999 - 30        # the merchant-paid fee of the first only
        # the payer was told by SMS (the web's answer may never be read)
        assert any("审核" in t for t in await outbox_texts(svc, MSISDN))
        # the same key again: still held, no second case, no second reservation
        again = await pay(svc, pin, 5000, key="big-1")
        assert again.outcome is Outcome.RISK_HELD and again.ref == r.ref
        assert len(await cases(svc)) == 1 and await available(svc) == 20_000 - 4999 - 5000
        await sound(svc)
    finally:
        await shutdown(svc)


@aio_test
async def test_held_money_cannot_be_spent_twice(stack):
    svc = await service(stack, {"large_amount": {"action": "hold", "amount": 6000}})
    try:
        pin = await funded(svc, amount=10_000)
        assert (await pay(svc, pin, 8000)).outcome is Outcome.RISK_HELD
        [shown] = render(await svc.balance(MSISDN, channel="sms"), "zh")
        assert shown == "余额 20.00 元. 另有 80.00 元在审核或处理中, 暂不可用.", shown
        r = await pay(svc, pin, 3000)
        assert r.outcome is Outcome.INSUFFICIENT_FUNDS and r.balance == 2000
        await open_active(svc, OTHER)
        r = await svc.send(MSISDN, OTHER, 2001, pin, channel="web")
        assert r.outcome is Outcome.INSUFFICIENT_FUNDS
        await sound(svc)
    finally:
        await shutdown(svc)


@aio_test
async def test_velocity_hits_the_spend_after_max_count_in_the_window(stack):
    svc = await service(stack, {"velocity": {"action": "alert", "max_count": 2, "window_minutes": 10}})
    try:
        pin = await funded(svc, amount=10_000)
        assert (await pay(svc, pin, 100)).outcome is Outcome.OK
        assert (await svc.airtime(MSISDN, 100, pin, channel="web")).outcome is Outcome.OK
        assert await cases(svc) == []
        r = await pay(svc, pin, 100)
        assert r.outcome is Outcome.OK                 # an alert lets it through
        [case] = await cases(svc)
        assert (case.status, case.kind, case.rules) == ("alert", "alert", ["velocity"])
        assert case.figures[0]["spends"] == 3 and case.figures[0]["max_count"] == 2
        assert await available(svc) == 10_000 - 300
        await sound(svc)
    finally:
        await shutdown(svc)


@aio_test
async def test_velocity_window_is_read_from_the_ledger_across_a_restart(sqlite_url):
    rules = {"velocity": {"action": "hold", "max_count": 1, "window_minutes": 10}}
    stack = {"database_url": sqlite_url, "sessions_url": "memory://"}
    svc = await service(stack, rules)
    pin = await funded(svc, amount=10_000)
    assert (await pay(svc, pin, 100)).outcome is Outcome.OK
    await shutdown(svc)
    svc = await service(stack, rules)                  # a new process: no counters survive, the ledger does
    try:
        assert (await pay(svc, pin, 100)).outcome is Outcome.RISK_HELD
    finally:
        await shutdown(svc)


@aio_test
async def test_structuring_counts_amounts_just_under_the_limit(stack):
    # limit 1000, 10%: 900..999 are "just under"; the third of them hits
    svc = await service(stack, {"structuring": {"action": "hold", "limit": 1000, "percent": 10, "count": 3,
                                                "window_minutes": 60}})
    try:
        pin = await funded(svc, amount=20_000)
        for amount in (900, 999, 899, 1000):           # 899 and 1000 are outside the band
            assert (await pay(svc, pin, amount)).outcome is Outcome.OK, amount
        assert await cases(svc) == []
        r = await pay(svc, pin, 950)
        assert r.outcome is Outcome.RISK_HELD
        [case] = await cases(svc)
        assert case.rules == ["structuring"]
        assert case.figures[0]["just_under"] == 3 and case.figures[0]["from"] == 900
        await sound(svc)
    finally:
        await shutdown(svc)


@aio_test
async def test_fan_in_hits_the_nth_distinct_sender(stack):
    svc = await service(stack, {"fan_in": {"action": "hold", "senders": 3, "window_minutes": 60}})
    try:
        await open_active(svc, OTHER)                  # the collecting wallet
        pins = {n: await funded(svc, n, amount=5000) for n in (MSISDN, THIRD, FOURTH)}
        assert (await svc.send(MSISDN, OTHER, 100, pins[MSISDN], channel="web")).outcome is Outcome.OK
        assert (await svc.send(THIRD, OTHER, 100, pins[THIRD], channel="web")).outcome is Outcome.OK
        assert (await svc.send(MSISDN, OTHER, 100, pins[MSISDN], channel="web")).outcome is Outcome.OK
        assert await cases(svc) == []                  # two distinct senders so far
        r = await svc.send(FOURTH, OTHER, 100, pins[FOURTH], channel="web")
        assert r.outcome is Outcome.RISK_HELD
        [case] = await cases(svc)
        assert case.rules == ["fan_in"] and case.figures[0]["senders"] == 3
        assert (await svc.balance(OTHER, channel="t")).balance == 300      # not received yet
        await sound(svc)
    finally:
        await shutdown(svc)


@aio_test
async def test_new_account_moving_more_than_the_amount(stack):
    # accounts are stamped at the real time of opening: the clock starts there
    clock = TestClock(datetime.now(timezone.utc))
    svc = await service(stack, {"new_account": {"action": "hold", "days": 7, "amount": 3000,
                                                "window_minutes": 1440}}, clock=clock)
    try:
        pin = await funded(svc, amount=20_000)
        assert (await pay(svc, pin, 2000)).outcome is Outcome.OK
        assert (await pay(svc, pin, 1000)).outcome is Outcome.OK          # exactly 3000 moved: no hit
        r = await pay(svc, pin, 1)
        assert r.outcome is Outcome.RISK_HELD
        [case] = await cases(svc)
        assert case.rules == ["new_account"] and case.figures[0]["moved"] == 3001
        clock.advance(timedelta(days=7, minutes=1))                        # no longer new
        assert (await pay(svc, pin, 5000)).outcome is Outcome.OK
        # nobody decided the held case: it stays held, and `db check` names it
        assert [c["status"] for c in (await svc.risk_cases())["open"]] == ["held"]
        [stale] = await svc.check_books()
        assert r.ref in stale and "pending since" in stale
        await assert_sound(svc.ledger)
    finally:
        await shutdown(svc)


# ------------------------------------------------------------ decisions

@aio_test
async def test_release_pays_exactly_once_under_a_race(stack):
    svc = await service(stack, {"large_amount": {"action": "hold", "amount": 5000}})
    try:
        pin = await funded(svc, amount=10_000)
        held = await pay(svc, pin, 6000, key="race-1")
        [case] = await cases(svc)
        before = await merchant_balance(svc)
        outcomes = await asyncio.gather(
            svc.decide_risk_case(case.id, "release", reason="customer called, known shop", by=OPS),
            svc.decide_risk_case(case.id, "release", reason="looks fine", by=Reviewer("ops2", "ops_admin", "::1")),
            return_exceptions=True)
        done = [o for o in outcomes if isinstance(o, dict)]
        refused = [o for o in outcomes if isinstance(o, RiskCaseError)]
        assert len(done) == 1 and len(refused) == 1 and refused[0].status == 409, outcomes
        assert done[0]["status"] == "released"
        assert await merchant_balance(svc) == before + 6000 - 36          # fee 6 per mille, merchant pays
        assert await available(svc) == 4000
        with pytest.raises(RiskCaseError) as exc:
            await svc.decide_risk_case(case.id, "refuse", reason="too late", by=OPS)
        assert exc.value.status == 409
        # the payer is told by SMS; a replay of the key now tells the payment done
        paid = done[0]["paid_ref"]
        assert paid != held.ref and any(paid in t and "已支付" in t for t in await outbox_texts(svc, MSISDN))
        again = await pay(svc, pin, 6000, key="race-1")
        assert again.outcome is Outcome.OK and again.ref == paid and again.balance == 4000
        rows = await svc.ledger.read(lambda conn: _audits(conn, "risk_release"))
        assert len(rows) == 1
        d = rows[0].details
        assert rows[0].actor in ("ops1", "ops2") and d["role"] == "ops_admin" and d["address"]
        assert d["before"]["status"] == "held" and d["after"]["status"] == "released" and d["reason"]
        await sound(svc)
    finally:
        await shutdown(svc)


async def _audits(conn, action):
    return (await conn.execute(sa.select(audit_log).where(audit_log.c.action == action))).all()


@aio_test
async def test_refuse_returns_the_money_and_tells_the_payer(stack):
    svc = await service(stack, {"large_amount": {"action": "hold", "amount": 1000}})
    try:
        pin = await funded(svc, amount=10_000)
        await open_active(svc, OTHER)
        r = await svc.send(MSISDN, OTHER, 4000, pin, channel="sms", key="p2p-held")
        assert r.outcome is Outcome.RISK_HELD
        assert await outbox_texts(svc, MSISDN) == [] or not any("审核" in t for t in await outbox_texts(svc, MSISDN))
        assert await available(svc) == 6000
        [case] = await cases(svc)
        out = await svc.decide_risk_case(case.id, "refuse", reason="mule pattern", by=OPS)
        assert out["status"] == "refused" and out["reason"] == "mule pattern"
        assert await available(svc) == 10_000
        assert (await svc.balance(OTHER, channel="t")).balance == 0
        assert any("未通过" in t for t in await outbox_texts(svc, MSISDN))
        again = await svc.send(MSISDN, OTHER, 4000, pin, channel="sms", key="p2p-held")
        assert again.outcome is Outcome.RISK_REFUSED
        assert len(await svc.ledger.read(lambda conn: _audits(conn, "risk_refuse"))) == 1
        await sound(svc)
    finally:
        await shutdown(svc)


@aio_test
async def test_released_transfer_tells_the_recipient(stack):
    svc = await service(stack, {"large_amount": {"action": "hold", "amount": 1000}})
    try:
        pin = await funded(svc, amount=10_000)
        await open_active(svc, OTHER)
        await svc.send(MSISDN, OTHER, 3000, pin, channel="ussd")
        [case] = await cases(svc)
        await svc.decide_risk_case(case.id, "release", reason="family", by=OPS)
        assert (await svc.balance(OTHER, channel="t")).balance == 3000
        assert any("30.00" in t for t in await outbox_texts(svc, OTHER))
        await sound(svc)
    finally:
        await shutdown(svc)


@aio_test
async def test_alerts_are_closed_as_reviewed_and_bad_decisions_refused(stack):
    svc = await service(stack, {"large_amount": {"action": "alert", "amount": 1000},
                                "velocity": {"action": "hold", "max_count": 1, "window_minutes": 60}})
    try:
        pin = await funded(svc, amount=10_000)
        assert (await pay(svc, pin, 2000)).outcome is Outcome.OK          # alert only
        r = await pay(svc, pin, 3000)                                     # velocity holds, large alerts
        assert r.outcome is Outcome.RISK_HELD
        alert, hold = await cases(svc)
        assert (alert.kind, hold.kind) == ("alert", "hold") and hold.rules == ["large_amount", "velocity"]
        for case_id, decision, status in ((alert.id, "release", 409), (hold.id, "review", 409),
                                          (alert.id, "approve", 400), (999999, "review", 404)):
            with pytest.raises(RiskCaseError) as exc:
                await svc.decide_risk_case(case_id, decision, reason="x", by=OPS)
            assert exc.value.status == status, (case_id, decision)
        with pytest.raises(RiskCaseError) as exc:
            await svc.decide_risk_case(alert.id, "review", reason="   ", by=OPS)
        assert exc.value.status == 400 and "reason" in exc.value.message
        out = await svc.decide_risk_case(alert.id, "review", reason="regular customer", by=OPS)
        assert out["status"] == "reviewed"
        listed = await svc.risk_cases()
        assert [c["case_id"] for c in listed["open"]] == [hold.id]
        assert [c["case_id"] for c in listed["decided"]] == [alert.id]
        await sound(svc)
    finally:
        await shutdown(svc)


@aio_test
async def test_the_hold_and_its_case_commit_together_or_not_at_all(sqlite_url):
    """The case row is written after the booking in the same job: when it
    cannot be written, the booking is gone too (no reservation without a
    case an operator could decide)."""
    svc = await service({"database_url": sqlite_url, "sessions_url": "memory://"},
                        {"large_amount": {"action": "hold", "amount": 5000}})
    try:
        pin = await funded(svc, amount=10_000)

        async def break_cases(conn):
            await conn.execute(sa.text("ALTER TABLE risk_cases RENAME TO risk_cases_gone"))
        await svc.ledger.write(break_cases)
        with pytest.raises(Exception, match="risk_cases"):
            await pay(svc, pin, 6000, key="atomic-1")
        assert await svc.ledger.get_operation("atomic-1") is None
        assert await available(svc) == 10_000
        assert not any("审核" in t for t in await outbox_texts(svc, MSISDN))
        await sound(svc)
    finally:
        await shutdown(svc)
