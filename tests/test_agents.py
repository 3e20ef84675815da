"""Agents and operators: credentials reach only the subscriber's phone, by
SMS queued in the operation's own transaction; the subscriber hears of what
an agent did; float is an operator's bounded, audited action; agent reads
are audited; an unknown agent code is refused for every operation."""
import re

import pytest
import sqlalchemy as sa

from telecom_pay.commands.conversation import Conversation
from telecom_pay.ledger.tables import audit_log
from telecom_pay.messaging import outbox
from telecom_pay.outcomes import Outcome
from tests.aio import aio_test
from tests.servicekit import MSISDN, OTHER, funded, make_service, outbox_texts, shutdown

PIN = re.compile(r"(?<!\d)(\d{6})(?!\d)")
THIRD = "8613700137000"


async def service(stack, **kw):
    return await make_service(stack["database_url"], sessions_url=stack["sessions_url"],
                              prefix=stack.get("prefix", "tp:"), **kw)


async def outbox_rows(svc, msisdn):
    async def q(conn):
        return (await conn.execute(sa.select(outbox).where(outbox.c.msisdn == msisdn).order_by(outbox.c.id))).all()
    return await svc.ledger.read(q)


async def audits(svc, action):
    async def q(conn):
        return (await conn.execute(sa.select(audit_log).where(audit_log.c.action == action)
                                   .order_by(audit_log.c.id))).all()
    return await svc.ledger.read(q)


@aio_test
async def test_agent_opening_follows_the_call_center_flow(stack):
    svc = await service(stack)
    conv = Conversation(svc)
    r = await svc.agent_open("AG001", "13800138000", holder_name="Li Lei", id_type="ID", id_number="1101")
    assert r.outcome is Outcome.OK and set(r.params) == {"action", "what", "msisdn"}
    assert not PIN.search(" ".join(conv_render(r)))                   # the agent sees "agreement SMS sent"
    agreement = await outbox_texts(svc, MSISDN)
    assert agreement == await conv.handle(THIRD, "KT")                # the same text as the KT reply
    welcome = await conv.handle(MSISDN, "A")                          # the subscriber agrees
    initial = PIN.search(" ".join(welcome)).group(1)
    row = await svc.account_info(MSISDN)
    assert row.status == "active" and row.kyc_tier == 2 and row.holder_name == "Li Lei"
    assert "MM" in " ".join(await conv.handle(MSISDN, "ZF M001 1"))   # an initial PIN, to be changed first
    assert (await svc.change_pin(MSISDN, initial, "258147", channel="sms")).ok
    await shutdown(svc)


def conv_render(result):
    from telecom_pay.commands.replies import render
    return render(result, "en") + render(result, "zh")


@aio_test
async def test_generated_pins_go_to_the_phone_only_and_are_marked_secret(stack):
    svc = await service(stack)
    await funded(svc)
    reset = await svc.reset_pin("AG001", MSISDN)
    assert reset.outcome is Outcome.OK and not PIN.search(" ".join(conv_render(reset)))
    last = (await outbox_rows(svc, MSISDN))[-1]
    assert PIN.search(last.text) and last.secret is True
    await svc.fund_agent("AG001", 5000, operator="test")
    assert (await svc.cash_in("AG001", MSISDN, 5000)).ok
    t = await svc.transfer_ownership("AG001", MSISDN, holder_name="Han Meimei", id_type="ID", id_number="2")
    assert t.outcome is Outcome.OK and not PIN.search(" ".join(conv_render(t)))
    rows = await outbox_rows(svc, MSISDN)
    credentials = [r for r in rows if PIN.search(r.text) and "MM" in r.text]
    assert len(credentials) == 2 and all(r.secret for r in credentials)
    cash_in = [r for r in rows if "50.00" in r.text]
    assert len(cash_in) == 1 and not cash_in[0].secret   # only credentials are secret
    await shutdown(svc)


@aio_test
async def test_cash_in_freeze_and_number_change_notify_the_subscriber(stack):
    svc = await service(stack)
    await funded(svc, amount=1000)
    before = len(await outbox_texts(svc, MSISDN))
    await svc.fund_agent("AG001", 2500, operator="test")
    assert (await svc.cash_in("AG001", MSISDN, 2500, key="receipt-7")).ok
    assert (await svc.cash_in("AG001", MSISDN, 2500, key="receipt-7")).ok     # a replay texts nothing more
    texts = (await outbox_texts(svc, MSISDN))[before:]
    assert len(texts) == 1 and "25.00" in texts[0] and "35.00" in texts[0]
    assert (await svc.agent_freeze("AG001", MSISDN)).ok
    assert "JD" in (await outbox_texts(svc, MSISDN))[-1]
    assert (await svc.agent_unfreeze("AG001", MSISDN)).ok
    assert (await svc.change_number("AG001", MSISDN, OTHER)).ok
    assert "13900139000" in (await outbox_texts(svc, MSISDN))[-1]      # the old number is told
    assert "13900139000" in (await outbox_texts(svc, OTHER))[-1]       # and the new one
    await shutdown(svc)


@aio_test
async def test_operator_funding_is_bounded_and_audited(stack):
    svc = await service(stack, overrides={"security.agent_float_max_per_operation": 5000,
                                          "security.agent_float_max_per_day": 8000})
    r = await svc.fund_agent("AG001", 5001, operator="alice")
    assert r.outcome is Outcome.LIMIT_PER_TXN and r.params["limit"] == 5000
    first = await svc.fund_agent("AG001", 5000, operator="alice", key="voucher-1")
    assert first.ok
    r = await svc.fund_agent("AG001", 3001, operator="bob")
    assert r.outcome is Outcome.LIMIT_DAILY and r.params["limit"] == 8000
    assert (await svc.fund_agent("AG001", 5000, operator="alice", key="voucher-1")).ref == first.ref   # replay
    assert (await svc.fund_agent("AG001", 3000, operator="bob")).ok
    rows = await audits(svc, "agent_funded")
    assert [(a.actor, a.details["amount"]) for a in rows] == [("operator:alice", 5000), ("operator:bob", 3000)]
    await shutdown(svc)


@aio_test
async def test_agent_reads_are_audited(stack):
    svc = await service(stack)
    await funded(svc)
    assert (await svc.agent_balance("AG001", MSISDN)).balance == 10_000
    assert (await svc.agent_statement("AG001", MSISDN)).ok
    rows = await audits(svc, "agent_read")
    assert [(a.actor, a.details["what"]) for a in rows] == [("agent:AG001", "balance"), ("agent:AG001", "statement")]
    assert all(a.account_id is not None for a in rows)
    await shutdown(svc)


AGENT_OPERATIONS = {
    "open": lambda s: s.agent_open("NOPE", MSISDN, holder_name="x", id_type="ID", id_number="1"),
    "cash_in": lambda s: s.cash_in("NOPE", MSISDN, 100),
    "fund": lambda s: s.fund_agent("NOPE", 100, operator="alice"),
    "freeze": lambda s: s.agent_freeze("NOPE", MSISDN),
    "unfreeze": lambda s: s.agent_unfreeze("NOPE", MSISDN),
    "pin_reset": lambda s: s.reset_pin("NOPE", MSISDN),
    "kyc": lambda s: s.set_kyc_tier("NOPE", MSISDN, 2),
    "number_change": lambda s: s.change_number("NOPE", MSISDN, THIRD),
    "transfer": lambda s: s.transfer_ownership("NOPE", MSISDN, holder_name="x", id_type="ID", id_number="1"),
    "cancel_number": lambda s: s.cancel_number("NOPE", MSISDN),
    "balance": lambda s: s.agent_balance("NOPE", MSISDN),
    "statement": lambda s: s.agent_statement("NOPE", MSISDN),
}


@pytest.mark.parametrize("operation", sorted(AGENT_OPERATIONS))
@aio_test
async def test_unknown_agent_code_is_refused(sqlite_url, operation):
    svc = await make_service(sqlite_url)
    await funded(svc)
    if operation == "unfreeze":
        await svc.freeze(MSISDN, channel="sms")
    r = await AGENT_OPERATIONS[operation](svc)
    assert r.outcome is Outcome.NOT_AUTHORIZED, r
    assert (await svc.balance(MSISDN, channel="t")).balance == 10_000
    await shutdown(svc)
