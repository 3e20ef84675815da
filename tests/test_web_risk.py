"""Risk review over real sockets: an operations admin lists held cases and
decides them by API and by form, once (409 for the second); an agent gets
403 and nobody logged in 401; CSRF holds; bad input is a clear 4xx JSON
error (and a message on the page); each decision is audited with the web
user, role and address."""
from __future__ import annotations

import asyncio

import sqlalchemy as sa

from telecom_pay.ledger.tables import audit_log
from telecom_pay.outcomes import Outcome
from tests.aio import aio_test
from tests.servicekit import MSISDN, funded
from tests.test_web_console import PASSWORD, agent_browser, csrf_of, rows
from tests.webkit import Browser, add_user, start_web, stop_web, web_settings

RULES = {"risk.large_amount": {"action": "hold", "amount": 5000},
         "risk.velocity": {"action": "alert", "max_count": 100, "window_minutes": 1},
         "security.velocity_payments_per_minute": 0}


async def ops_browser(daemon, base, username="ops1"):
    await add_user(daemon, username, "ops_admin", password=PASSWORD)
    b = Browser(base)
    r = await b.api_login(username, PASSWORD)
    assert r.status == 200, r.text
    return b, r.json()["csrf_token"]


async def held_payments(daemon, n=1):
    svc = daemon.core.service
    pin = await funded(svc, amount=50_000)
    out = []
    for i in range(n):
        r = await svc.pay(MSISDN, "M001", 6000 + i, pin, channel="web")
        assert r.outcome is Outcome.RISK_HELD, r
        out.append(r)
    return out


@aio_test
async def test_ops_admin_releases_by_api_once_and_others_are_refused(sqlite_url):
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}, **RULES))
    try:
        [held] = await held_payments(daemon)
        anon = Browser(base)
        assert (await anon.get("/api/v1/ops/risk")).status == 401
        agent, agent_token = await agent_browser(daemon, base)
        r = await agent.get("/api/v1/ops/risk")
        assert r.status == 403 and "error" in r.json()
        r = await agent.post("/api/v1/ops/risk/decide", headers={"X-CSRF-Token": agent_token},
                             json_body={"case_id": 1, "decision": "release", "reason": "agent"})
        assert r.status == 403
        assert (await agent.get("/ops/risk")).status == 403

        ops, token = await ops_browser(daemon, base)
        listed = (await ops.get("/api/v1/ops/risk")).json()
        [case] = listed["open"]
        assert (case["status"], case["ref"], case["amount"], case["rules"]) == ("held", held.ref, 6000,
                                                                                ["large_amount"])
        h = {"X-CSRF-Token": token}
        body = {"case_id": case["case_id"], "decision": "release", "reason": "known customer"}
        assert (await ops.post("/api/v1/ops/risk/decide", json_body=body)).status == 403     # no CSRF token
        first, second = await asyncio.gather(ops.post("/api/v1/ops/risk/decide", headers=h, json_body=body),
                                             ops.post("/api/v1/ops/risk/decide", headers=h, json_body=body))
        assert sorted((first.status, second.status)) == [200, 409], (first.text, second.text)
        ok, refused = (first, second) if first.status == 200 else (second, first)
        assert ok.json()["status"] == "released" and ok.json()["paid_ref"]
        assert "already" in refused.json()["error"] and refused.json()["case"]["status"] == "released"
        assert (await daemon.core.service.balance(MSISDN, channel="t")).balance == 50_000 - 6000
        [audit] = await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "risk_release"))
        assert audit.actor == "ops1" and audit.channel == "web"
        assert audit.details["role"] == "ops_admin" and audit.details["address"] == "127.0.0.1"
        assert audit.details["before"]["status"] == "held" and audit.details["after"]["status"] == "released"
    finally:
        await stop_web(daemon)


@aio_test
async def test_bad_input_is_a_clear_4xx(database_url):
    daemon, base = await start_web(web_settings({"database_url": database_url}, **RULES))
    try:
        [held] = await held_payments(daemon)
        ops, token = await ops_browser(daemon, base)
        case_id = (await ops.get("/api/v1/ops/risk")).json()["open"][0]["case_id"]
        h = {"X-CSRF-Token": token}
        for body, status, says in (
                ({"case_id": case_id, "decision": "release"}, 400, "missing field: reason"),
                ({"case_id": case_id, "decision": "release", "reason": "  "}, 400, "a reason is required"),
                ({"case_id": case_id, "decision": "approve", "reason": "x"}, 400, "decision must be one of"),
                ({"case_id": "1", "decision": "release", "reason": "x"}, 400, "case_id must be a integer"),
                ({"case_id": 2 ** 63, "decision": "release", "reason": "x"}, 400, "case_id must be between"),
                ({"case_id": 0, "decision": "release", "reason": "x"}, 400, "case_id must be between"),
                ({"case_id": case_id, "decision": "release", "reason": "x" * 201}, 400, "longer than 200"),
                ({"case_id": case_id, "decision": "release", "reason": "ok\x00"}, 400, "printable"),
                ({"case_id": case_id, "decision": "release", "reason": "\ud800"}, 400, "printable"),
                ({"case_id": case_id, "decision": "release", "reason": "x", "pin": "1"}, 400, "unknown field"),
                ({"case_id": 987654, "decision": "release", "reason": "x"}, 404, "no risk case"),
                ({"case_id": case_id, "decision": "review", "reason": "x"}, 409, "can only be released")):
            r = await ops.post("/api/v1/ops/risk/decide", headers=h, json_body=body)
            assert r.status == status and says in r.json()["error"], (body, r.status, r.text)
        r = await ops.post("/api/v1/ops/risk/decide", headers={**h, "Content-Type": "text/plain"}, data=b"x")
        assert r.status == 415 and "error" in r.json()
        r = await ops.post("/api/v1/ops/risk/decide", headers={**h, "Content-Type": "application/json"},
                           data=b"{not json")
        assert r.status == 400 and "JSON" in r.json()["error"]
        # the page: a form without a reason is shown again with the message, nothing decided
        page = await ops.get("/ops/risk")
        r = await ops.post("/ops/risk/decide", form={"csrf_token": csrf_of(page.text), "case_id": str(case_id),
                                                     "decision": "refuse", "reason": ""})
        assert r.status == 400 and "Missing field: reason" in r.text
        r = await ops.post("/ops/risk/decide", form={"csrf_token": csrf_of(page.text), "case_id": "abc",
                                                     "decision": "refuse", "reason": "x"})
        assert r.status == 400 and "whole number" in r.text
        r = await ops.post("/ops/risk/decide", form={"csrf_token": "forged", "case_id": str(case_id),
                                                     "decision": "refuse", "reason": "x"})
        assert r.status == 403
        assert (await ops.get("/api/v1/ops/risk")).json()["open"][0]["status"] == "held"
    finally:
        await stop_web(daemon)


@aio_test
async def test_the_page_lists_and_refuses_with_a_reason(sqlite_url):
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}, **RULES))
    try:
        first, second = await held_payments(daemon, 2)
        ops, _ = await ops_browser(daemon, base)
        page = await ops.get("/ops/risk")
        assert page.status == 200 and first.ref in page.text and second.ref in page.text
        assert "Large amount" in page.text and "threshold 50.00" in page.text
        case_id = (await ops.get("/api/v1/ops/risk")).json()["open"][0]["case_id"]
        r = await ops.post("/ops/risk/decide", form={"csrf_token": csrf_of(page.text), "case_id": str(case_id),
                                                     "decision": "refuse", "reason": "card testing pattern"})
        assert r.status == 200 and f"Case {case_id} ({first.ref}) refused" in r.text
        assert f'id="decided-{case_id}"' in r.text and "card testing pattern" in r.text
        assert f'id="case-{case_id}"' not in r.text
        assert (await daemon.core.service.balance(MSISDN, channel="t")).balance == 50_000 - 6001
        [audit] = await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "risk_refuse"))
        assert audit.actor == "ops1" and audit.details["reason"] == "card testing pattern"
        home = await ops.get("/home")
        assert 'href="/ops/risk"' in home.text
    finally:
        await stop_web(daemon)


@aio_test
async def test_a_subscriber_paying_on_the_web_is_told_held_not_paid(sqlite_url):
    from tests.selfkit import NUMBER, start_self
    from tests.test_web_selfservice_wallet import PIN, funded as web_funded
    daemon, base = await start_self({"database_url": sqlite_url}, **RULES)
    try:
        b, h = await web_funded(daemon, base)
        pay = {"merchant_code": "M001", "amount": "60", "pin": PIN, "idempotency_key": "risk-held-0001"}
        r = await b.post("/api/v1/self/pay", headers=h, json_body=pay)
        assert r.status == 202 and r.json()["outcome"] == "risk_held", r.text
        again = await b.post("/api/v1/self/pay", headers=h, json_body=pay)        # the double submit
        assert again.status == 202 and again.json()["ref"] == r.json()["ref"], again.text
        assert (await daemon.core.service.balance(NUMBER, channel="t")).balance == 20_000 - 6000
        [case] = (await daemon.core.service.risk_cases())["open"]
        assert case["channel"] == "web" and case["status"] == "held"
    finally:
        await stop_web(daemon)
