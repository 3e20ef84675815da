"""Audit search over real sockets: each filter (subscriber in local and
E.164 form, actor, action, local business days) narrows to exactly the rows
it should, days end at local midnight (Shanghai's starts at 16:00 UTC),
pages follow one another without a gap or a repeat, secrets never show,
the search is itself audited, roles hold (401, 403) and bad input is a
400 with a clear JSON error; the page does the same through its form."""
from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import urlencode
from zoneinfo import ZoneInfo


from telecom_pay.ledger.tables import audit_log
from tests.aio import aio_test
from tests.opskit import PASSWORD, csrf_of, logged_in, web_daemon
from tests.webkit import Browser

SHANGHAI = ZoneInfo("Asia/Shanghai")
A, A_E164 = "13800138000", "8613800138000"
B = "13900139000"
JUNE = {"from": "2026-06-01", "to": "2026-06-30"}


def local(*args) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI).astimezone(timezone.utc)


async def subscriber(daemon, msisdn: str) -> int:
    svc = daemon.core.service
    assert (await svc.open_account(msisdn, channel="sms")).ok
    assert (await svc.confirm_open(msisdn, channel="sms")).ok
    return (await svc.account_info(msisdn)).id


async def seed(daemon, rows: dict[str, dict]) -> dict[str, int]:
    """Audit rows at chosen instants, written in an order that is not the
    order of their times (so `newest first` cannot come from the ids)."""
    ids = {}

    async def write(conn):
        for name, row in rows.items():
            ids[name] = (await conn.execute(audit_log.insert().values(channel="test", **row)
                                            .returning(audit_log.c.id))).scalar()
    await daemon.core.ledger.write(write)
    return ids


async def seeded(daemon):
    a, b = await subscriber(daemon, A), await subscriber(daemon, B)
    return await seed(daemon, {
        "s3": dict(at=local(2026, 6, 15, 7, 59), actor="agent:AG001", action="freeze", account_id=a, details={}),
        "s1": dict(at=local(2026, 6, 14, 23, 59, 59), actor="agent:AG001", action="agent_lookup", account_id=a,
                   details={"found": True}),
        # a writer's slip: a PIN and a password in the details are never shown
        "s5": dict(at=local(2026, 6, 13, 9, 0), actor="alice", action="freeze", account_id=a,
                   details={"pin": "147258", "nested": {"new_password": "hunter2-secret"}, "pin_verified": True}),
        "s4": dict(at=local(2026, 6, 16, 12, 0), actor="bob", action="freeze", account_id=b, details={}),
        "s2": dict(at=local(2026, 6, 15, 0, 0), actor="alice", action="web_login", account_id=None, details={}),
    })


async def found(b: Browser, ids: dict[str, int], **params) -> list[str]:
    r = await b.get("/api/v1/ops/audit?" + urlencode(params))
    assert r.status == 200, r.text
    names = {v: k for k, v in ids.items()}
    return [names.get(row["id"], row["action"]) for row in r.json()["rows"]]


@aio_test
async def test_each_filter_narrows_to_exactly_its_rows_and_days_end_at_local_midnight(stack):
    async with web_daemon(stack) as (daemon, base):
        ids = await seeded(daemon)
        ops, _ = await logged_in(daemon, base, "ops1", "ops_admin")
        assert await found(ops, ids, msisdn=A, **JUNE) == ["s3", "s1", "s5"]
        assert await found(ops, ids, msisdn="+" + A_E164, **JUNE) == ["s3", "s1", "s5"]
        assert await found(ops, ids, msisdn=A_E164, **JUNE) == ["s3", "s1", "s5"]
        assert await found(ops, ids, msisdn=B, **JUNE) == ["s4"]
        assert await found(ops, ids, actor="alice", **JUNE) == ["s2", "s5"]
        assert await found(ops, ids, action="freeze", **JUNE) == ["s4", "s3", "s5"]
        assert await found(ops, ids, actor="agent:AG001", action="freeze", **JUNE) == ["s3"]
        assert await found(ops, ids, msisdn=A, action="freeze", actor="alice") == ["s5"]
        # the local day 2026-06-15 is [06-14 16:00 UTC, 06-15 16:00 UTC): 00:00 and 07:59 are in it
        assert await found(ops, ids, **{"from": "2026-06-15", "to": "2026-06-15"}) == ["s3", "s2"]
        assert await found(ops, ids, **{"from": "2026-06-01", "to": "2026-06-14"}) == ["s1", "s5"]
        assert await found(ops, ids, **{"from": "2026-06-16", "to": "2026-06-16"}) == ["s4"]
        # no date: the subscriber's whole trail, the account opening of today included
        whole = await found(ops, ids, msisdn=A)
        assert whole[-3:] == ["s3", "s1", "s5"] and {"open_requested", "opened"} & set(whole[:-3])
        assert await found(ops, ids, msisdn="13700137000") == []          # a number with no account
        # newest first by time, not by id; local times shown in the business zone
        r = await ops.get("/api/v1/ops/audit?" + urlencode({"msisdn": A, **JUNE}))
        assert [row["local_time"] for row in r.json()["rows"]] == [
            "2026-06-15 07:59:00", "2026-06-14 23:59:59", "2026-06-13 09:00:00"]
        assert r.json()["timezone"] == "Asia/Shanghai"


@aio_test
async def test_pages_follow_one_another_and_secrets_never_show(stack):
    async with web_daemon(stack) as (daemon, base):
        ids = await seeded(daemon)
        ops, _ = await logged_in(daemon, base, "ops1", "ops_admin")
        pages, before = [], None
        while True:
            r = await ops.get("/api/v1/ops/audit?" + urlencode({**JUNE, "limit": 2, **(
                {"before": before} if before else {})}))
            assert r.status == 200, r.text
            pages.append([row["id"] for row in r.json()["rows"]])
            before = r.json()["next_before"]
            if before is None:
                break
        assert pages == [[ids["s4"], ids["s3"]], [ids["s2"], ids["s1"]], [ids["s5"]]]

        r = await ops.get("/api/v1/ops/audit?" + urlencode({"actor": "alice", "action": "freeze"}))
        (row,) = r.json()["rows"]
        assert row["details"] == {"pin": "[redacted]", "nested": {"new_password": "[redacted]"},
                                  "pin_verified": True}
        assert "147258" not in r.text and "hunter2" not in r.text
        # what the real writers wrote: a user's creation and logins carry no password
        for action in ("web_user_created", "web_login"):
            r = await ops.get("/api/v1/ops/audit?" + urlencode({"action": action}))
            assert r.json()["rows"] and PASSWORD not in r.text
            assert all("password" not in str(k).lower() or v == "[redacted]" for row in r.json()["rows"]
                       for k, v in row["details"].items())


@aio_test
async def test_the_search_is_audited_on_the_subscribers_account(stack):
    async with web_daemon(stack) as (daemon, base):
        a = await subscriber(daemon, A)
        ops, _ = await logged_in(daemon, base, "ops1", "ops_admin")
        assert (await ops.get("/api/v1/ops/audit?" + urlencode({"msisdn": "+" + A_E164}))).status == 200
        r = await ops.get("/api/v1/ops/audit?" + urlencode({"action": "ops_audit_search"}))
        (row,) = r.json()["rows"]
        assert (row["actor"], row["channel"], row["account_id"]) == ("ops1", "web", a)
        assert row["details"]["role"] == "ops_admin" and row["details"]["address"] == "127.0.0.1"
        assert row["details"]["filters"]["msisdn"] == "86138****8000" and A_E164 not in r.text
        assert row["details"]["results"] >= 2


@aio_test
async def test_roles_and_bad_input(stack):
    async with web_daemon(stack) as (daemon, base):
        anonymous = Browser(base)
        r = await anonymous.get("/api/v1/ops/audit")
        assert r.status == 401 and "log in" in r.json()["error"]
        assert (await anonymous.get("/ops/audit")).header("location") == "/login"
        agent, _ = await logged_in(daemon, base, "agent1", "agent", agent_code="AG001")
        r = await agent.get("/api/v1/ops/audit?" + urlencode({"actor": "ops1"}))
        assert r.status == 403 and "agent" in r.json()["error"]
        assert (await agent.get("/ops/audit")).status == 403
        ops, _ = await logged_in(daemon, base, "ops1", "ops_admin")
        for params, field, words in [
            ({"from": "2026-13-01"}, "from", "not a date"), ({"to": "20260601"}, "to", "not a date"),
            ({"from": "2026-06-02", "to": "2026-06-01"}, "to", "before from"),
            ({"limit": "201"}, "limit", "between 1 and 200"), ({"limit": "0"}, "limit", "between"),
            ({"limit": "ten"}, "limit", "whole number"), ({"msisdn": "12345"}, "msisdn", "not a mobile number"),
            ({"msisdn": "not-a-number"}, "msisdn", "not a mobile number"),
            ({"before": "999999999"}, "before", "names no audit row"), ({"actor": "x" * 65}, "actor", "longer"),
            ({"actor": "a\x00b"}, "actor", "control character"), ({"from": "0001-01-01"}, "from", "between 1970"),
            ({"to": "9999-12-31"}, "to", "between 1970"), ({"from": "２０２６-06-01"}, "from", "not a date"),
        ]:
            r = await ops.get("/api/v1/ops/audit?" + urlencode(params))
            assert r.status == 400, (params, r.text)
            assert r.json()["field"] == field and words in r.json()["error"], (params, r.json())
        r = await ops.get("/api/v1/ops/audit?from=%ff")
        assert r.status == 400 and "UTF-8" in r.json()["error"]


@aio_test
async def test_the_page_searches_through_its_form(stack):
    async with web_daemon(stack) as (daemon, base):
        ids = await seeded(daemon)
        ops, _ = await logged_in(daemon, base, "ops1", "ops_admin")
        form_page = await ops.get("/ops/audit")
        assert form_page.status == 200 and '<option value="freeze">' in form_page.text     # the actions there are
        token = csrf_of(form_page.text)
        r = await ops.post("/ops/audit", form={"csrf_token": token, "msisdn": A, "action": "freeze", **JUNE,
                                               "limit": "1"})
        assert r.status == 200
        assert f'data-id="{ids["s3"]}"' in r.text and f'data-id="{ids["s5"]}"' not in r.text
        assert 'id="next-page"' in r.text and f'name="before" value="{ids["s3"]}"' in r.text
        r = await ops.post("/ops/audit", form={"csrf_token": token, "msisdn": A, "action": "freeze", **JUNE,
                                               "limit": "1", "before": str(ids["s3"])})
        assert f'data-id="{ids["s5"]}"' in r.text and "147258" not in r.text and 'id="next-page"' not in r.text
        r = await ops.post("/ops/audit", form={"csrf_token": token, "from": "2026-06-31"})
        assert r.status == 400 and "from is not a date" in r.text
        r = await ops.post("/ops/audit", form={"msisdn": A})
        assert r.status == 403 and 'data-id' not in r.text                           # no CSRF token
