"""Bank operations in manual review, decided from the web over real
sockets: the bridge talks ISO 8583 to the bank simulator, which answers the
0200 too late (or never) and every reversal "96", so the operation ends in
review exactly as in production. An operations admin approves a top-up over
the API (the ledger posts it) and a merchant payout from the page (the
ledger posts it and the batch is paid); a declined one is voided; deciding
twice is a 409; roles, CSRF and bad bodies hold; every decision is audited
with the web user, role, address, before and after."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from bank_bridge.store import BankStore
from telecom_pay.business_time import business_day
from telecom_pay.ledger.tables import audit_log
from telecom_pay.settlement import Settlement
from tests.aio import aio_test
from tests.clockkit import TestClock
from tests.opskit import (DEBIT, MERCHANT_PAN, bank_daemon, books_agree, csrf_of, in_review, logged_in, topup_in_doubt,
                          web_daemon)
from tests.servicekit import MSISDN, funded
from tests.test_bank_recovery import fail_posts
from tests.webkit import Browser

RESOLVE = "/api/v1/ops/bank/resolve"


async def audit_rows(daemon, action: str):
    async def read(conn):
        return (await conn.execute(sa.select(audit_log).where(audit_log.c.action == action)
                                   .order_by(audit_log.c.id))).all()
    return await daemon.core.ledger.read(read)


@aio_test
async def test_a_topup_in_review_is_approved_over_the_api_and_the_ledger_posts_it(stack):
    async with bank_daemon(stack) as (bank, daemon, base):
        svc = daemon.core.service
        await topup_in_doubt(daemon, bank, "tp-web", 100_00)
        ops, token = await logged_in(daemon, base, "ops1", "ops_admin")
        row = await in_review(ops, "tp-web")
        assert (row["kind"], row["amount"], row["last4"], row["response_code"], row["attempts"]) == (
            "debit", 100_00, "1234", "96", 2)
        assert row["age_seconds"] >= 0 and row["settlement"] is False
        assert (await svc.ledger.get_operation("tp-web")).state == "pending"

        # who may: logged out 401, an agent 403, no CSRF token 403
        anonymous = Browser(base)
        assert (await anonymous.get("/api/v1/ops/bank/in-doubt")).status == 401
        assert (await anonymous.post(RESOLVE, json_body={})).status == 401
        agent, agent_token = await logged_in(daemon, base, "agent1", "agent", agent_code="AG001")
        assert (await agent.get("/api/v1/ops/bank/in-doubt")).status == 403
        good = {"operation_key": "tp-web", "outcome": "approved", "reason": "issuer confirms the debit, ticket 77"}
        r = await agent.post(RESOLVE, json_body=good, headers={"X-CSRF-Token": agent_token})
        assert r.status == 403 and "agent" in r.json()["error"]
        r = await ops.post(RESOLVE, json_body=good)
        assert r.status == 403 and "CSRF" in r.json()["error"]
        h = {"X-CSRF-Token": token}
        for body, status, words in [
            ({k: v for k, v in good.items() if k != "reason"}, 400, "missing field: reason"),
            ({**good, "reason": "   "}, 400, "reason is required"),
            ({**good, "outcome": "maybe"}, 400, "outcome must be one of approved, declined"),
            ({**good, "by": "someone-else"}, 400, "unknown field: by"),
            ({**good, "operation_key": "k" * 129}, 400, "longer than 128"),
            ({**good, "operation_key": "tp-\x00web"}, 400, "control character"),
            ({**good, "reason": "ticket\x00 77"}, 400, "NUL"),
            ({**good, "operation_key": "tp-nope"}, 404, "no bank operation"),
        ]:
            r = await ops.post(RESOLVE, json_body=body, headers=h)
            assert r.status == status and words in r.json()["error"], (body, r.text)
        assert (await svc.ledger.get_operation("tp-web")).state == "pending"        # nothing decided yet

        r = await ops.post(RESOLVE, json_body=good, headers=h)
        assert r.status == 200, r.text
        assert (r.json()["outcome"], r.json()["actor"], r.json()["ledger_state"]) == ("approved", "ops1", "posted")
        assert (await svc.balance(MSISDN, channel="t")).balance == 100_00
        r = await ops.post(RESOLVE, json_body={**good, "outcome": "declined"}, headers=h)
        assert r.status == 409 and "not in review" in r.json()["error"]
        assert (await svc.ledger.get_operation("tp-web")).state == "posted"

        listed = (await ops.get("/api/v1/ops/bank/in-doubt")).json()
        assert listed["operations"] == [] and listed["bank_in_process"] is True
        (done,) = listed["resolved"]
        assert (done["operation_key"], done["actor"], done["outcome"], done["reason"], done["amount"]) == (
            "tp-web", "ops1", "approved", good["reason"], 100_00)
        (review_row,) = await BankStore(daemon.core.ledger.db.read).reviews_for("tp-web")
        assert review_row["actor"] == "ops1"
        (audited,) = await audit_rows(daemon, "ops_bank_resolve")
        wallet = await svc.account_info(MSISDN)
        assert (audited.actor, audited.channel, audited.account_id) == ("ops1", "web", wallet.id)
        d = audited.details
        assert (d["role"], d["address"], d["operation_key"], d["outcome"]) == (
            "ops_admin", "127.0.0.1", "tp-web", "approved")
        assert d["before"]["operation"] == "review" and d["before"]["ledger"] == "pending"
        assert d["after"]["operation"] == "approved"
        bank.sim.faults.clear()
        await books_agree(svc, bank)


@aio_test
async def test_a_lost_topup_in_review_is_declined_and_the_ledger_voids_it(stack):
    async with bank_daemon(stack) as (bank, daemon, base):
        svc = daemon.core.service
        await topup_in_doubt(daemon, bank, "tp-lost", 30_00, lost=True)
        ops, token = await logged_in(daemon, base, "ops1", "ops_admin")
        await in_review(ops, "tp-lost")
        r = await ops.post(RESOLVE, headers={"X-CSRF-Token": token}, json_body={
            "operation_key": "tp-lost", "outcome": "declined", "reason": "the bank has no such debit"})
        assert r.status == 200 and r.json()["ledger_state"] == "voided", r.text
        assert (await svc.balance(MSISDN, channel="t")).balance == 0
        assert bank.sim.card(DEBIT).balance == 500_00
        bank.sim.faults.clear()
        await books_agree(svc, bank)


@aio_test
async def test_a_payout_in_review_is_approved_from_the_page_and_its_batch_is_paid(stack, tmp_path):
    # just after local midnight: the payment's business day is the Shanghai one
    clock = TestClock(datetime(2026, 6, 15, 0, 30, tzinfo=ZoneInfo("Asia/Shanghai")))
    async with bank_daemon(stack, clock=clock) as (bank, daemon, base):
        svc = daemon.core.service
        assert (await svc.bind_merchant_account("M001", MERCHANT_PAN, "3012")).ok
        pin = await funded(svc, amount=100_00)
        assert (await svc.pay(MSISDN, "M001", 100_00, pin, channel="t", key="pay-1")).ok
        day = business_day(clock(), svc.tz)
        clock.advance(timedelta(days=1))
        settlement = Settlement(svc, file_dir=tmp_path)
        bank.answer_late_and_never_reverse()
        (first,) = await settlement.run(day)
        assert first.state == "paying"
        key = (await settlement.batches(day))[0].operation_key
        ops, _ = await logged_in(daemon, base, "ops1", "ops_admin")
        row = await in_review(ops, key)
        assert row["settlement"] is True and row["kind"] == "credit"
        (second,) = await settlement.run(day)              # the batch learns it waits for an operator
        assert second.state == "review"

        page = await ops.get("/ops/bank")
        assert page.status == 200
        assert f'data-key="{key}" data-state="review"' in page.text and 'data-state="review"><td>M001' in page.text
        token = csrf_of(page.text)
        form = {"csrf_token": token, "operation_key": key, "outcome": "approved",
                "reason": "bank statement shows the credit"}
        r = await ops.post("/ops/bank/resolve", form={k: v for k, v in form.items() if k != "csrf_token"})
        assert r.status == 403
        r = await ops.post("/ops/bank/resolve", form={**form, "outcome": ""})
        assert r.status == 400 and "missing field: outcome" in r.text
        r = await ops.post("/ops/bank/resolve", form=form)
        assert r.status == 200 and "approved by ops1" in r.text and "posted" in r.text, r.text
        assert "No bank operation is in doubt." in r.text and "No batch is waiting." in r.text
        assert f'<tr data-key="{key}"><td>' in r.text and "bank statement shows the credit" in r.text
        (batch,) = await settlement.batches(day)
        assert batch.state == "paid" and bank.sim.card(MERCHANT_PAN).balance == first.net
        again = await ops.post("/ops/bank/resolve", form=form)
        assert again.status == 409 and "not in review" in again.text
        (third,) = await settlement.run(day)               # never paid twice
        assert third.state == "paid" and bank.sim.card(MERCHANT_PAN).balance == first.net
        bank.sim.faults.clear()
        await books_agree(svc, bank)


@aio_test
async def test_the_page_is_for_operations_admins_only(stack):
    async with bank_daemon(stack) as (bank, daemon, base):
        assert (await Browser(base).get("/ops/bank")).header("location") == "/login"
        agent, _ = await logged_in(daemon, base, "agent1", "agent", agent_code="AG001")
        assert (await agent.get("/ops/bank")).status == 403
        assert (await agent.post("/ops/bank/resolve", form={"operation_key": "x"})).status == 403
        ops, _ = await logged_in(daemon, base, "ops1", "ops_admin")
        page = await ops.get("/ops/bank")
        assert page.status == 200 and "No bank operation is in doubt." in page.text
        assert "does not run in this process" not in page.text


@aio_test
async def test_a_web_only_instance_decides_on_the_shared_database(stack):
    """The bridge runs in one daemon; another, with its web section only,
    lists and decides the same operation from the shared database (as
    `telecom-pay bank resolve` does from its own process) and says where
    the bridge is."""
    async with bank_daemon(stack) as (bank, daemon, base):
        await topup_in_doubt(daemon, bank, "tp-elsewhere", 40_00)
        async with web_daemon(stack) as (web_only, web_base):
            ops, token = await logged_in(web_only, web_base, "ops1", "ops_admin")
            row = await in_review(ops, "tp-elsewhere")
            assert row["amount"] == 40_00
            listed = (await ops.get("/api/v1/ops/bank/in-doubt")).json()
            assert listed["bank_in_process"] is False
            assert "does not run in this process" in (await ops.get("/ops/bank")).text
            r = await ops.post(RESOLVE, headers={"X-CSRF-Token": token}, json_body={
                "operation_key": "tp-elsewhere", "outcome": "approved", "reason": "issuer confirms, ticket 9"})
            assert r.status == 200 and r.json()["ledger_state"] == "posted", r.text
        svc = daemon.core.service
        assert (await svc.ledger.get_operation("tp-elsewhere")).state == "posted"
        assert (await svc.balance(MSISDN, channel="t")).balance == 40_00
        bank.sim.faults.clear()
        await books_agree(svc, bank)


@aio_test
async def test_a_decision_stands_when_the_ledger_cannot_follow_it_at_once(stack):
    """A real database failure at the post (a trigger): the decision is
    committed, the answer is a 202 saying so (never a 500), and the
    daemon's recovery sweep posts the operation once the database works."""
    async with bank_daemon(stack) as (bank, daemon, base):
        svc = daemon.core.service
        await topup_in_doubt(daemon, bank, "tp-stuck", 50_00)
        ops, token = await logged_in(daemon, base, "ops1", "ops_admin")
        await in_review(ops, "tp-stuck")
        await fail_posts(stack["database_url"], True)
        try:
            r = await ops.post(RESOLVE, headers={"X-CSRF-Token": token}, json_body={
                "operation_key": "tp-stuck", "outcome": "approved", "reason": "issuer confirms, ticket 12"})
            assert r.status == 202, r.text
            assert r.json()["ledger_state"] == "pending" and "decision is recorded" in r.json()["message"]
            assert (await svc.ledger.get_operation("tp-stuck")).state == "pending"
        finally:
            await fail_posts(stack["database_url"], False)
        await svc.recover_bank_operations()
        assert (await svc.ledger.get_operation("tp-stuck")).state == "posted"
        assert (await svc.balance(MSISDN, channel="t")).balance == 50_00
        (audited,) = await audit_rows(daemon, "ops_bank_resolve")
        assert audited.details["outcome"] == "approved"
