"""Operations statistics against a known day of activity made through the
real channels: a subscriber opening by SMS, tops up through the bank bridge
(one approved, one declined by the bank simulator), pays, mistypes a PIN
and dials USSD; another opened by an agent and confirmed by SMS, then
cashed in at the counter; an IVR call recorded by the call log. The
expected figures are computed here from the raw rows (Python, not the
module's SQL) and from what the test itself did, then compared with
telecom_pay.stats, `telecom-pay stats --json` (a real process), the API,
the page and its CSV over a real socket; an agent gets 403 everywhere."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sys
from pathlib import Path
from collections import Counter, defaultdict
from datetime import timedelta

import pytest
import sqlalchemy as sa
from twisted.internet import reactor

from simulators.bank.simulator import BankSimulator
from telecom_pay import stats
from telecom_pay.aio import wait_deferred
from telecom_pay.business_time import business_day, local_midnight
from telecom_pay.calls import CallLog
from telecom_pay.config import DEFAULT_CONFIG
from telecom_pay.ledger.tables import accounts, audit_log, operations
from telecom_pay.messaging import inbound_messages, outbox
from tests.aio import aio_test
from tests.e2ekit import PIN_RE, eventually, reply, say, settings_for, start_daemon, start_smsc, stop_daemon
from tests.servicekit import CHOSEN_PIN
from tests.test_cli import cli
from tests.webkit import FAST_HASHER, Browser, add_user

DEBIT = "6222020000001234"
PASSWORD = "s3cret-enough-pw"
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).with_name("artifacts")
A_MSISDN, B_MSISDN = "8613800138000", "8613900139000"


async def up(stack):
    bank = BankSimulator({"bank_code": "simbank"}, reactor)
    iso = await wait_deferred(bank.listen("tcp:0:interface=127.0.0.1"))
    bank.add_card(DEBIT, "3012", "debit", balance=30_000)
    sim, smpp_port = await start_smsc()
    settings = settings_for(stack["database_url"], smpp_port, sessions_url=stack["sessions_url"],
                            prefix=stack["prefix"], **{
                                "bank.banks": [{"code": "simbank", "bins": ["622202"], "terminal_id": "TP000001",
                                                "endpoint": f"tcp:host=127.0.0.1:port={iso.getHost().port}",
                                                "acquirer_id": "48020000", "timeout": 2.0}]})
    daemon = await start_daemon(settings)
    await asyncio.wait_for(daemon.components["bank"].port.wait_ready(), 10)
    from telecom_pay.security import PasswordHasher
    daemon.components["web"].app.users.hasher = PasswordHasher(**FAST_HASHER)
    port = await daemon.components["web"].wait_listening()
    return bank, iso, sim, daemon, f"http://127.0.0.1:{port}"


async def a_day_of_activity(daemon, sim) -> int:
    """Returns how many SMS the handsets sent."""
    svc = daemon.core.service
    a = sim.handset("13800138000")
    assert "A" in await say(a, "KT")
    await wait_deferred(a.send("A"))
    pin = PIN_RE.search(await reply(a, expect="MM")).group(1)
    await say(a, f"MM {pin} {CHOSEN_PIN}", expect="支付密码已修改")
    assert (await svc.bind_card(A_MSISDN, DEBIT, "3012", channel="test")).ok          # 0100 -> 0110 00
    await say(a, "CZ 200")
    await say(a, CHOSEN_PIN, expect="200.00")                                         # 0200 -> 0210 00
    await say(a, "CZ 600")                                                            # the card holds 100.00
    assert "余额不足" in await say(a, CHOSEN_PIN)                                       # 0210 51: voided
    await say(a, "ZF M001 12.50")
    assert "187.50" in await say(a, CHOSEN_PIN)
    await say(a, "ZF M001 5")
    await say(a, "000000")                                                             # a wrong PIN
    sent = 11

    b = sim.handset("13900139000")
    assert (await svc.agent_open("AG001", B_MSISDN, holder_name="Li Lei", id_type="id_card",
                                 id_number="110101199001011234")).ok
    await reply(b)                                                                     # the agreement SMS
    await wait_deferred(b.send("A"))
    await reply(b, expect="MM")
    sent += 1
    assert (await svc.cash_in("AG001", B_MSISDN, 5000, key="receipt-1")).ok
    await reply(b, expect="50.00")

    await wait_deferred(a.dial_ussd("*188#", timeout=10))                             # one USSD dialogue
    assert a.hang_up()

    calls = CallLog(daemon.core.ledger)                                                # as the FastAGI call records it
    await calls.record_event("1700000000.1", "agi_start", msisdn=A_MSISDN, detail={"script": "ivr", "callback": False})
    await calls.record_event("1700000000.1", "agi_end", msisdn=A_MSISDN, duration_s=42,
                             detail={"reason": "hangup", "steps": 3})
    return sent


async def raw_rows(ledger, table):
    async def read(conn):
        return [r._mapping for r in await conn.execute(sa.select(table))]
    return await ledger.read(read)


async def expected_figures(ledger, start, end) -> dict:
    """From the raw rows, grouped in Python: what stats must say for [start, end)."""
    inside = (lambda at: start <= at < end)
    ops = [o for o in await raw_rows(ledger, operations) if inside(o["created_at"])]
    tx: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for o in ops:
        t = tx[(o["kind"], o["channel"], o["state"])]
        t[0] += 1
        t[1] += o["amount"]
        t[2] += o["fee"]
    audits = await raw_rows(ledger, audit_log)
    asked = {r["account_id"]: r["channel"] for r in audits if r["action"] == "open_requested"}
    opened = Counter(asked[r["account_id"]] for r in audits if r["action"] == "confirm" and inside(r["at"]))
    opened.update(r["channel"] for r in audits if r["action"] == "opened" and inside(r["at"]))
    failures = Counter((r["action"], r["channel"]) for r in audits
                       if r["action"] in stats.FAILURE_ACTIONS and inside(r["at"]))
    wallets = {a["id"] for a in await raw_rows(ledger, accounts) if a["kind"] == "wallet"}
    active = {o["account_id"] for o in ops if o["state"] == "posted" and o["account_id"] in wallets}
    sms_in = [m for m in await raw_rows(ledger, inbound_messages) if m["channel"] == "sms" and inside(m["received_at"])]
    out = [m for m in await raw_rows(ledger, outbox) if inside(m["created_at"])]
    journal = [j for j in await raw_rows(ledger, stats.bank_journal) if inside(j["at"])]
    return {
        "transactions": sorted([{"kind": k, "channel": c, "state": s, "count": n, "amount": amt, "fee": fee}
                                for (k, c, s), (n, amt, fee) in tx.items()],
                               key=lambda t: (t["kind"], t["channel"], t["state"])),
        "accounts_opened": dict(sorted(opened.items())),
        "failures": sorted(failures.items()),
        "active_subscribers": len(active),
        "sms_in": len(sms_in),
        "sms_out": sum(1 for m in out if (m["meta"] or {}).get("ussd_op") is None),
        "ussd_pages": sum(1 for m in out if (m["meta"] or {}).get("ussd_op") is not None),
        "response_codes": Counter((j["mti"], j["response_code"]) for j in journal
                                  if j["event"] == "response" and j["direction"] == "in"),
    }


def check(report_total: dict, exp: dict, sms_sent: int) -> None:
    t = report_total
    assert t["transactions"] == exp["transactions"]
    assert t["accounts_opened"] == exp["accounts_opened"] == {"agent": 1, "sms": 1}
    assert sorted(((f["reason"], f["channel"]), f["count"]) for f in t["failures"]["audited"]) == exp["failures"]
    assert ("pin_wrong", "sms") in dict(exp["failures"])
    assert t["failures"]["voided"] == [{"kind": "topup", "channel": "sms", "reason": "insufficient_funds",
                                        "response_code": "51", "count": 1, "amount": 60_000}]
    assert t["active_subscribers"] == exp["active_subscribers"] == 2
    assert t["messages"]["sms_in"] == exp["sms_in"] == sms_sent
    assert t["messages"]["sms_out"] == exp["sms_out"]
    assert t["messages"]["ussd"]["sessions"] == 1 and t["messages"]["ussd"]["pages_out"] == exp["ussd_pages"] >= 1
    assert Counter({(r["mti"], r["response_code"]): r["count"] for r in t["bank"]["response_codes"]}) \
        == exp["response_codes"]
    assert exp["response_codes"][("0210", "00")] == 1 and exp["response_codes"][("0210", "51")] == 1
    assert {(b["kind"], b["status"], b["response_code"]): b["count"] for b in t["bank"]["operations"]} \
        == {("debit", "approved", "00"): 1, ("debit", "declined", "51"): 1}
    assert t["ivr"] == {"calls": 1, "callbacks": 0, "ended": 1, "duration_s": 42, "longest_s": 42,
                        "ended_by": {"hangup": 1}, "handoffs": 0, "handoffs_pin_verified": 0}
    posted = {(x["kind"], x["channel"]): x["amount"] for x in t["transactions"] if x["state"] == "posted"}
    assert posted[("topup", "sms")] == 20_000 and posted[("payment", "sms")] == 1250
    assert posted[("cash_in", "agent")] == 5000


def write_config(tmp_path, database_url: str):
    text = DEFAULT_CONFIG.read_text(encoding="utf-8").replace(
        'url = "sqlite+aiosqlite:///var/telecom-pay.sqlite3"', f'url = "{database_url}"').replace(
        "[security]\n", "[security]\nallow_development_keys = true\n", 1)
    path = tmp_path / "tp.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def cli_json(cfg, *args) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "telecom_pay.cli", "--config", str(cfg), "stats", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def in_chromium(base: str, path: str) -> dict:
    """The page in real headless Chromium (Playwright's asyncio API, on the
    test's own loop, so the in-process server keeps serving): log in by the
    form, open the page, read its figures, save a screenshot."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: scripts/ensure-services.sh installs it (make test)")
    from playwright.async_api import async_playwright
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(base + "/login")
            await page.fill("input[name=username]", "ops1")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url("**/home")
            await page.goto(base + path)
            shown = {name: (await page.locator(f'[data-figure="{name}"]').inner_text()).strip()
                     for name in ("active_subscribers", "sms_in", "accounts_opened")}
            shown["charts"] = await page.locator("svg.chart").count()
            await page.screenshot(path=str(ARTIFACTS / "ops-stats.png"), full_page=True)
            return shown
        finally:
            await browser.close()


@aio_test
async def test_a_known_day_in_every_view(stack, tmp_path):
    bank, iso, sim, daemon, base = await up(stack)
    try:
        sent = await a_day_of_activity(daemon, sim)
        ledger, tz = daemon.core.ledger, daemon.core.service.tz
        day = business_day(ledger.clock(), tz)
        first, last = day - timedelta(days=1), day + timedelta(days=1)     # the test may run across midnight

        async def settled():       # every SMS accepted and its receipt in: the figures stop moving
            rows = await raw_rows(ledger, outbox)
            return rows and all(r["state"] == "accepted" and (r["delivery"] or (r["meta"] or {}).get("ussd_op"))
                                for r in rows)
        await eventually(settled)
        report = await stats.statistics(ledger, first, last, tz)
        exp = await expected_figures(ledger, local_midnight(first, tz), local_midnight(last + timedelta(days=1), tz))
        check(report["total"], exp, sent)
        assert [d["date"] for d in report["days"]] == [first.isoformat(), day.isoformat(), last.isoformat()]
        for figure in ("active_subscribers",):      # days add up where the figure is additive
            assert sum(d[figure] for d in report["days"]) >= report["total"][figure]
        assert sum(d["messages"]["sms_in"] for d in report["days"]) == report["total"]["messages"]["sms_in"]
        assert sum(d["ivr"]["calls"] for d in report["days"]) == 1

        # the CLI prints the same figures (a real process on the same database)
        cfg = write_config(tmp_path, stack["database_url"])
        code, out, err = await cli_json(cfg, "--from", first.isoformat(), "--to", last.isoformat(), "--json")
        assert code == 0, err
        assert json.loads(out) == report
        if stack["sessions_url"] == "memory://":            # once is enough; cli.main in process (test_cli.cli)
            backwards = cli(cfg, "stats", "--from", last.isoformat(), "--to", first.isoformat())
            assert backwards.returncode == 2 and "before" in backwards.stderr

        # the API, the page and the CSV, for an operations admin
        await add_user(daemon, "ops1", "ops_admin", password=PASSWORD)
        await add_user(daemon, "agent1", "agent", password=PASSWORD, agent_code="AG001")
        ops = Browser(base)
        assert (await ops.api_login("ops1", PASSWORD)).status == 200
        q = f"from={first.isoformat()}&to={last.isoformat()}"
        r = await ops.get(f"/api/v1/stats?{q}")
        assert r.status == 200 and r.json() == report
        today = await ops.get("/api/v1/stats")
        assert today.status == 200 and today.json()["from"] == today.json()["to"] == day.isoformat()
        for bad in ("from=2026-13-01", "from=yesterday", f"from={last}&to={first}", "from=2020-01-01&to=2024-01-01",
                    "to=%ff"):
            r = await ops.get(f"/api/v1/stats?{bad}")
            assert r.status == 400 and r.header("content-type").startswith("application/json"), (bad, r.text)
            assert r.json()["error"]
        page = await ops.get(f"/ops/stats?{q}")
        assert page.status == 200, page.text
        html = page.text
        assert html.count("<svg") >= 6 and "<script" not in html.split("</head>")[1]
        assert "https://" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")

        def figure(name):
            return int(re.search(rf'data-figure="{name}">(\d+)', html).group(1))
        assert figure("active_subscribers") == 2 and figure("sms_in") == sent and figure("accounts_opened") == 2
        assert figure("ivr_calls") == 1 and figure("ussd_sessions") == 1
        assert re.search(r'data-kind="payment" data-channel="sms" data-state="posted">.*?<td>12\.50</td>', html, re.S)
        assert "insufficient_funds" in html
        bad_page = await ops.get("/ops/stats?from=2026-02-30")
        assert bad_page.status == 400 and "not a date" in bad_page.text

        c = await ops.get(f"/ops/stats.csv?{q}")
        assert c.status == 200 and c.header("content-type").startswith("text/csv")
        assert "attachment" in c.header("content-disposition")
        rows = list(csv.DictReader(io.StringIO(c.text)))
        assert rows == [{k: str(v) for k, v in row.items()} for row in stats.flat_rows(report)]
        assert {"date": "total", "figure": "active_subscribers", "item": "wallets", "count": "2", "amount": "",
                "fee": ""} in rows
        assert (await ops.get("/ops/stats.csv?to=bad")).status == 400

        if stack["sessions_url"] == "memory://":
            shown = await in_chromium(base, f"/ops/stats?{q}")
            assert shown["active_subscribers"] == "2" and shown["sms_in"] == str(sent)
            assert shown["accounts_opened"] == "2" and shown["charts"] >= 6

        # an agent sees none of it
        agent = Browser(base)
        assert (await agent.api_login("agent1", PASSWORD)).status == 200
        assert (await agent.get(f"/api/v1/stats?{q}")).status == 403
        assert (await agent.get(f"/ops/stats?{q}")).status == 403
        assert (await agent.get(f"/ops/stats.csv?{q}")).status == 403
        assert (await Browser(base).get("/api/v1/stats")).status == 401
        assert (await Browser(base).get("/ops/stats")).status == 303
    finally:
        await stop_daemon(daemon)
        await wait_deferred(sim.stop())
        bank.drop_connections()
        await wait_deferred(iso.stopListening())


def test_ranges_are_checked():
    from datetime import date
    today = date(2026, 12, 2)
    assert stats.parse_range(None, None, today=today) == (today, today)
    assert stats.parse_range("2026-11-01", "", today=today) == (date(2026, 11, 1), today)
    for a, b in (("2026-12-03", "2026-12-02"), ("2026-1-1", None), ("20261201", None),
                 ("2024-01-01", "2026-12-02"), ("x", None)):
        with pytest.raises(stats.StatsError):
            stats.parse_range(a, b, today=today)


@aio_test
async def test_days_are_local_and_the_range_counts_a_subscriber_once(database_url):
    """Shanghai's day starts at 16:00 UTC: money booked at 23:50 and 00:10
    local falls in two days (the same UTC day), and the range's total counts
    the one subscriber active on both days once. A PostgreSQL-only or a
    UTC-day bucket would put both in one day."""
    from datetime import date, datetime

    from tests.clockkit import SHANGHAI, TestClock
    from tests.servicekit import MSISDN, funded, make_service, shutdown
    clock = TestClock(datetime(2026, 6, 15, 23, 50, tzinfo=SHANGHAI))
    svc = await make_service(database_url, clock=clock)
    try:
        await funded(svc, amount=3000)                                  # float and cash-in on the 15th
        clock.set(datetime(2026, 6, 16, 0, 10, tzinfo=SHANGHAI))
        assert (await svc.fund_agent("AG001", 700, key="float-2", operator="test")).ok
        assert (await svc.cash_in("AG001", MSISDN, 700, key="late")).ok  # the 16th
        report = await stats.statistics(svc.ledger, date(2026, 6, 14), date(2026, 6, 16), SHANGHAI)
        cash = [[t for t in d["transactions"] if t["kind"] == "cash_in"] for d in report["days"]]
        assert cash[0] == [] and [t["amount"] for t in cash[1]] == [3000] and [t["amount"] for t in cash[2]] == [700]
        assert [d["active_subscribers"] for d in report["days"]] == [0, 1, 1]
        assert report["total"]["active_subscribers"] == 1
        total = {(t["kind"], t["state"]): (t["count"], t["amount"]) for t in report["total"]["transactions"]}
        assert total[("cash_in", "posted")] == (2, 3700)
    finally:
        await shutdown(svc)
