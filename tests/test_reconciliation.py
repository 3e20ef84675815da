"""Reconciliation of the books with the bank's settlement file: a day of
top-ups and withdrawals through the PaymentService and the real bank bridge
over TCP to the bank simulator, then the simulator's file, clean and
doctored (a row removed, rows added for a voided operation and an unknown
RRN, an amount changed). Corrections are proposed, booked only with apply,
booked once, and leave bank_settlement agreeing with the file.

The bank simulator dates movements by the process's local date; the
platform by `settings.timezone` (Asia/Shanghai). A Chinese bank and the
platform share that zone, so these tests run with TZ set to it."""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from twisted.internet import reactor

from bank_bridge.ledger_reconciliation import (
    BOOKED, BOOKED_EARLIER, HELD, MATCHED, MISMATCHED, MISSING_AT_BANK, PROPOSED, UNKNOWN_TO_US, Reconciler)
from bank_bridge.reconciliation import SettlementRow, parse_settlement_file, reconcile
from bank_bridge.service import BankBridgeService
from simulators.bank import BankSimulator
from simulators.bank.settlement import settlement_csv
from telecom_pay.aio import wait_deferred
from telecom_pay.config import DEFAULT_CONFIG
from telecom_pay.ledger.tables import operations
from telecom_pay.outcomes import Outcome
from tests.aio import aio_test
from tests.servicekit import make_service, open_active, shutdown

ZONE = "Asia/Shanghai"
BANK = "icbc"
CARDS = {"8613800138000": "6222020000001111", "8613900139000": "6222020000002222",
         "8613700137000": "6222020000003333"}
A, B, C = CARDS


@pytest.fixture
def local_zone():
    """The simulator's local date is the platform's business day."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = ZONE
    time.tzset()
    now = datetime.now(ZoneInfo(ZONE))
    to_midnight = 86400 - (now.hour * 3600 + now.minute * 60 + now.second)
    if to_midnight < 30:          # a day's business must not straddle the date line
        time.sleep(to_midnight + 1)
    try:
        yield ZoneInfo(ZONE)
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


async def eventually(predicate, timeout: float = 10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


class Day:
    """Simulator, bridge and PaymentService on one database."""

    async def start(self, database_url: str):
        self.svc = await make_service(database_url, overrides={"security.velocity_payments_per_minute": 0})
        self.sim = BankSimulator({"bank_code": BANK}, reactor)
        for pan in CARDS.values():
            self.sim.add_card(pan, "3012", "debit", balance=1000_00)
        self.listening = await wait_deferred(self.sim.listen("tcp:0:interface=127.0.0.1"))
        config = {"card_token_key": "test-card-key", "reversal_retry_initial": 0.1, "reversal_retry_max": 0.5,
                  "reconnect_initial": 0.05, "reconnect_max": 0.5,
                  "banks": [{"code": BANK, "endpoint": f"tcp:host=127.0.0.1:port={self.listening.getHost().port}",
                             "bins": ["622202"], "terminal_id": "TP000001", "acquirer_id": "48020000",
                             "timeout": 0.5, "echo_interval": 30}]}
        self.bridge = BankBridgeService(config, database_url=database_url, reactor=reactor)
        await wait_deferred(self.bridge.startService())
        await self.bridge.port.wait_ready()
        self.svc.bank = self.bridge.port
        self.bridge.port.set_resolver(self.svc)
        self.settlement_opening = await self.balance("bank_settlement")
        return self

    async def close(self):
        await wait_deferred(self.bridge.stopService())
        self.sim.drop_connections()
        await wait_deferred(self.listening.stopListening())
        await shutdown(self.svc)

    async def balance(self, code: str) -> int:
        return (await self.svc.ledger.balance(self.svc.system[code])).balance

    def reconciler(self, tz) -> Reconciler:
        return Reconciler(self.svc.ledger, self.bridge.port.store, self.svc.system, tz=tz)

    async def corrections(self) -> list:
        return await self.svc.ledger.read(lambda conn: _all(conn, sa.select(operations).where(
            operations.c.kind == "reconciliation").order_by(operations.c.id)))

    async def business(self):
        """A, B and C open accounts and bind cards; top-ups and a withdrawal
        go through; a declined top-up and one the bank answered too late
        (reversed, voided here) do not."""
        svc = self.svc
        pins = {}
        for msisdn, pan in CARDS.items():
            pins[msisdn] = await open_active(svc, msisdn)
            assert (await svc.bind_card(msisdn, pan, "3012", channel="test")).ok
        for msisdn, amount, key in ((A, 300_00, "a1"), (B, 200_00, "b1"), (B, 100_00, "b2"), (C, 80_00, "c1")):
            assert (await svc.topup(msisdn, amount, channel="test", key=key)).outcome is Outcome.OK
        assert (await svc.withdraw(A, 50_00, pins[A], channel="test", key="a2")).outcome is Outcome.OK
        declined = await svc.topup(C, 5000_00, channel="test", key="c-declined")
        assert declined.outcome is Outcome.BANK_DECLINED
        self.sim.faults.update({"answer_after": 1.0, "mtis": ["0200"]})
        assert (await svc.topup(C, 20_00, channel="test", key="c2")).outcome is Outcome.IN_PROGRESS
        await eventually(lambda: self._state("c2", "voided"))
        self.sim.faults.clear()

    async def _state(self, key: str, state: str) -> bool:
        op = await self.svc.ledger.get_operation(key)
        return op is not None and op.state == state

    async def rrn(self, key: str) -> str:
        return (await self.bridge.port.store.get_operation(key))["rrn"]


async def _all(conn, query):
    return (await conn.execute(query)).all()


def today(tz) -> str:
    return datetime.now(tz).date().isoformat()


def net(rows: list[SettlementRow]) -> int:
    return sum(r.amount if r.type == "credit" else -r.amount for r in rows)


@aio_test
async def test_clean_day_matches_and_doctored_day_is_corrected_once(database_url, local_zone):
    day = await Day().start(database_url)
    try:
        await day.business()
        date = today(local_zone)
        business_date = datetime.fromisoformat(date).date()
        clean = parse_settlement_file(day.sim.settlement_csv(date), business_date=business_date)
        assert len(clean) == 5 and net(clean) == -300_00 - 200_00 - 100_00 - 80_00 + 50_00
        reconciler = day.reconciler(local_zone)

        report = await reconciler.run(clean, bank_code=BANK, business_date=business_date)
        assert [line.bucket for line in report.lines] == [MATCHED] * 5
        assert report.exit_status == 0 and report.corrections == [] and report.notes == []
        assert report.bank_net == report.ledger_net == net(clean)
        assert await day.balance("bank_settlement") - day.settlement_opening == net(clean)
        bank_level = await reconcile(day.bridge.port.store, clean, bank_code=BANK, business_date=business_date,
                                     tz=local_zone)
        assert bank_level.ok and len(bank_level.matched) == 5

        # doctor the file: lose b2, change a2's amount, add the voided c2 and an RRN nobody sent
        rrn = {key: await day.rrn(key) for key in ("a1", "a2", "b1", "b2", "c1", "c2")}
        doctored = []
        for row in clean:
            if row.rrn == rrn["b2"]:
                continue
            if row.rrn == rrn["a2"]:
                row = SettlementRow(**{**row.__dict__, "amount": 55_00})
            doctored.append(row)
        c2_row = SettlementRow(date, "000777", rrn["c2"], "3333", 20_00, "debit", "00")
        stranger = SettlementRow(date, "000778", "999999999999", "9999", 12_34, "credit", "00")
        doctored += [c2_row, stranger]
        doctored = parse_settlement_file(settlement_csv([r.__dict__ for r in doctored]), business_date=business_date)

        before = await day.balance("bank_settlement")
        proposed = await reconciler.run(doctored, bank_code=BANK, business_date=business_date)
        buckets = {line.rrn: line.bucket for line in proposed.lines}
        assert buckets == {rrn["a1"]: MATCHED, rrn["b1"]: MATCHED, rrn["c1"]: MATCHED, rrn["a2"]: MISMATCHED,
                           rrn["c2"]: UNKNOWN_TO_US, "999999999999": UNKNOWN_TO_US, rrn["b2"]: MISSING_AT_BANK}
        changes = {line.rrn: line.correction.change for line in proposed.corrections}
        assert changes == {rrn["a2"]: 5_00, rrn["c2"]: -20_00, "999999999999": 12_34, rrn["b2"]: 100_00}
        assert all(line.status == PROPOSED for line in proposed.corrections)
        assert proposed.corrections[0].correction.key.startswith(f"recon:{date}:")
        assert proposed.exit_status == 1 and proposed.bank_net != proposed.ledger_net
        text = proposed.render()
        for word in ("mismatched", "unknown_to_us", "missing_at_bank", "suspense -> bank_settlement 100.00",
                     "bank_settlement -> suspense 20.00", "--apply"):
            assert word in text, text
        assert await day.balance("bank_settlement") == before and await day.corrections() == []

        applied = await reconciler.run(doctored, bank_code=BANK, business_date=business_date, apply=True)
        assert [line.status for line in applied.corrections] == [BOOKED] * 4
        assert applied.exit_status == 0 and applied.bank_net == applied.ledger_net == net(doctored)
        booked = await day.corrections()
        assert sorted(op.idempotency_key for op in booked) == sorted(
            f"recon:{date}:{r}" for r in (rrn["a2"], rrn["c2"], "999999999999", rrn["b2"]))
        assert all(op.channel == "reconcile" and op.state == "posted" and op.memo for op in booked)

        again = await reconciler.run(doctored, bank_code=BANK, business_date=business_date, apply=True)
        assert again.corrections == [] and again.exit_status == 0
        assert {line.rrn for line in again.lines if line.status == BOOKED_EARLIER} == set(changes)
        assert len(await day.corrections()) == 4                  # booked once
        assert await day.svc.check_books() == []
        assert await day.balance("bank_settlement") - day.settlement_opening == net(doctored)
        assert await day.balance("suspense") == -sum(changes.values())

        # the bank sends a corrected file after all: only the difference is booked back
        fixed = await reconciler.run(clean, bank_code=BANK, business_date=business_date, apply=True)
        assert {line.rrn: line.correction.key for line in fixed.corrections} == {
            r: f"recon:{date}:{r}:2" for r in (rrn["a2"], rrn["c2"], "999999999999", rrn["b2"])}
        assert await day.balance("bank_settlement") - day.settlement_opening == net(clean)
        assert await day.balance("suspense") == 0 and await day.svc.check_books() == []
    finally:
        await day.close()


@aio_test
async def test_in_doubt_operation_is_held_not_corrected(sqlite_url, local_zone):
    """A top-up whose answer and reversal are both lost stays pending here:
    a file row for it is unknown_to_us, but its correction is held."""
    day = await Day().start(sqlite_url)
    try:
        await open_active(day.svc, A)
        assert (await day.svc.bind_card(A, CARDS[A], "3012", channel="test")).ok
        day.sim.faults.update({"no_answer": True, "mtis": ["0200", "0420", "0421"]})
        assert (await day.svc.topup(A, 40_00, channel="test", key="lost")).outcome is Outcome.IN_PROGRESS
        date = today(local_zone)
        row = SettlementRow(date, "000001", await day.rrn("lost"), "1111", 40_00, "debit", "00")
        report = await day.reconciler(local_zone).run([row], bank_code=BANK,
                                                      business_date=datetime.fromisoformat(date).date(), apply=True)
        (line,) = report.lines
        assert (line.bucket, line.status, line.ledger_state) == (UNKNOWN_TO_US, HELD, "pending")
        assert report.exit_status == 1 and await day.corrections() == []
        day.sim.faults.clear()
    finally:
        await day.close()


@aio_test
async def test_cut_off_settled_by_the_bank_the_next_day(database_url, local_zone):
    """Created here just before midnight, booked by the bank just after: the
    first day corrects it as missing_at_bank, the next day takes that back."""
    from datetime import timedelta

    from bank_bridge.reconciliation import business_day_bounds
    from bank_bridge.tables import bank_operations
    day = await Day().start(database_url)
    try:
        await open_active(day.svc, A)
        assert (await day.svc.bind_card(A, CARDS[A], "3012", channel="test")).ok
        for key, amount in (("x1", 30_00), ("x2", 70_00)):
            assert (await day.svc.topup(A, amount, channel="test", key=key)).outcome is Outcome.OK
        date = datetime.fromisoformat(today(local_zone)).date()
        yesterday = date - timedelta(days=1)
        start, _ = business_day_bounds(date, local_zone)
        async with day.bridge.engine.begin() as conn:
            await conn.execute(sa.update(bank_operations).where(bank_operations.c.operation_key == "x2")
                               .values(created_at=start - timedelta(seconds=1)))
        reconciler = day.reconciler(local_zone)
        first = await reconciler.run([], bank_code=BANK, business_date=yesterday, apply=True)
        ((line, ),) = [first.lines]
        assert (line.bucket, line.operation_key, line.correction.change, line.status) == (
            MISSING_AT_BANK, "x2", 70_00, BOOKED)
        rows = parse_settlement_file(day.sim.settlement_csv(date.isoformat()))
        second = await reconciler.run(rows, bank_code=BANK, business_date=date, apply=True)
        assert [(line.bucket, line.operation_key) for line in second.lines] == [(MATCHED, "x1"), (MATCHED, "x2")]
        assert second.lines[1].correction.change == -70_00 and second.exit_status == 0
        assert second.bank_net == second.ledger_net == -100_00
        assert "on another day" in second.render()
        assert await day.balance("bank_settlement") - day.settlement_opening == -100_00
        assert await day.balance("suspense") == 0
        for business_date, file_rows in ((yesterday, []), (date, rows)):      # reruns book nothing
            again = await reconciler.run(file_rows, bank_code=BANK, business_date=business_date, apply=True)
            assert again.corrections == [] and again.exit_status == 0 and again.bank_net == again.ledger_net
        assert len(await day.corrections()) == 2 and await day.svc.check_books() == []
    finally:
        await day.close()


@pytest.mark.parametrize("body, message", [
    ("date,stan,rrn\n", "line 1: header must be"),
    ("{h}2026-11-23,1,632700000001,1234,12.5,debit,00\n", "line 2: amount must be an integer"),
    ("{h}2026-11-23,1,632700000001,1234,-5,debit,00\n", "line 2: amount must be an integer"),
    ("{h}2026-11-23,1,632700000001,1234,500,refund,00\n", "line 2: bad type"),
    ("{h}2026-11-23,1,632700000001,1234,500,debit\n", "line 2: expected 7 fields"),
    ("{h}2026-11-23,1,632700000001,1234,500,debit,00\n2026-11-23,2,632700000001,1234,9,debit,00\n",
     "line 3: rrn 632700000001 appears twice"),
    ("{h}2026-11-22,1,632700000001,1234,500,debit,00\n", "line 2: dated '2026-11-22', not 2026-11-23"),
])
def test_a_bad_file_is_refused_naming_the_line(body, message):
    from datetime import date

    from bank_bridge.reconciliation import SettlementFileError
    header = "date,stan,rrn,card_last4,amount,type,response\n"
    with pytest.raises(SettlementFileError, match=re.escape(message)):
        parse_settlement_file(body.format(h=header), business_date=date(2026, 11, 23))
    assert parse_settlement_file("\ufeff" + header) == []


# ------------------------------------------------------------------ the command

def write_config(tmp_path: Path) -> Path:
    """The embedded config on a database under tmp_path, with the tests' bank."""
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    text = text.replace('url = "sqlite+aiosqlite:///var/telecom-pay.sqlite3"',
                        f'url = "sqlite+aiosqlite:///{tmp_path}/tp.sqlite3"')
    text = re.sub(r'(?m)^code = "simbank"$', f'code = "{BANK}"', text)
    text = text.replace("[security]\n", "[security]\nallow_development_keys = true\n", 1)
    path = tmp_path / "tp.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    """As the `telecom-pay` console script runs it (telecom_pay.cli:main).
    `python -m telecom_pay.cli` would run the module as __main__, a second
    copy whose EXTRA_COMMANDS the plug-in commands never reach."""
    entry = "import sys; from telecom_pay.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", entry, "--config", str(cfg), "reconcile", *args],
                          capture_output=True, text=True, timeout=120)


@aio_test
async def test_command_on_a_bad_file_a_clean_file_and_a_doctored_one(tmp_path, local_zone):
    cfg = write_config(tmp_path)
    day = await Day().start(f"sqlite+aiosqlite:///{tmp_path}/tp.sqlite3")
    try:
        pin = await open_active(day.svc, A)
        assert (await day.svc.bind_card(A, CARDS[A], "3012", channel="test")).ok
        for key, amount in (("x1", 30_00), ("x2", 70_00)):
            assert (await day.svc.topup(A, amount, channel="test", key=key)).outcome is Outcome.OK
        assert (await day.svc.withdraw(A, 20_00, pin, channel="test", key="x3")).outcome is Outcome.OK
        date = today(local_zone)
        clean = day.sim.write_settlement_file(date, tmp_path)
        lost = await day.rrn("x2")
    finally:
        await day.close()
    # the database is left alone from here on: blocking on the subprocesses is harmless

    r = run_cli(cfg, "--date", date, "--file", str(clean))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Reconciliation of bank {BANK} for {date}" in r.stdout and "matched: 3" in r.stdout, r.stdout
    assert "they agree" in r.stdout and "bank file -80.00, ledger -80.00" in r.stdout, r.stdout

    header, *lines = clean.read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([header, lines[0].replace(",3000,", ",30.00,")]) + "\n", encoding="utf-8")
    r = run_cli(cfg, "--date", date, "--file", str(bad))
    assert r.returncode == 2 and "line 2" in r.stderr and "amount" in r.stderr and not r.stdout, r.stderr
    r = run_cli(cfg, "--date", date, "--file", str(tmp_path / "absent.csv"))
    assert r.returncode == 2 and "cannot read" in r.stderr

    doctored = tmp_path / "doctored.csv"
    doctored.write_text("\n".join([header] + [line for line in lines if lost not in line]) + "\n", encoding="utf-8")
    r = run_cli(cfg, "--date", date, "--file", str(doctored))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "missing_at_bank" in r.stdout and "suspense -> bank_settlement 70.00" in r.stdout, r.stdout
    r = run_cli(cfg, "--date", date, "--file", str(doctored), "--apply", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["counts"] == {"matched": 2, "missing_at_bank": 1, "unknown_to_us": 0, "mismatched": 0}
    (line,) = [line for line in report["lines"] if line["correction"]]
    assert (line["rrn"], line["status"], line["correction"]["key"]) == (lost, "booked", f"recon:{date}:{lost}")
    assert report["agrees"] and report["bank_net"] == -10_00
    r = run_cli(cfg, "--date", date, "--file", str(doctored), "--apply")
    assert r.returncode == 0 and "booked earlier" in r.stdout and "correction(s) booked" not in r.stdout, r.stdout


@aio_test
async def test_the_business_day_is_the_local_day_at_fixed_instants(database_url):
    """The bridge's operations belong to the Shanghai day they were created
    in: stamped at 00:30 and 23:30 local on 15 June they are that day's, at
    00:30 on the 16th the next day's, whatever the hour the test runs at.
    The stamps are given as Shanghai times: the column stores UTC whatever
    zone an instant comes in."""
    from dataclasses import replace
    from datetime import timedelta

    from bank_bridge.tables import bank_operations
    from tests.clockkit import SHANGHAI
    day = await Day().start(database_url)
    try:
        await open_active(day.svc, A)
        assert (await day.svc.bind_card(A, CARDS[A], "3012", channel="test")).ok
        instants = {"x1": datetime(2026, 6, 15, 0, 30, tzinfo=SHANGHAI),
                    "x2": datetime(2026, 6, 15, 23, 30, tzinfo=SHANGHAI),
                    "x3": datetime(2026, 6, 16, 0, 30, tzinfo=SHANGHAI)}
        for key, amount in (("x1", 10_00), ("x2", 20_00), ("x3", 40_00)):
            assert (await day.svc.topup(A, amount, channel="test", key=key)).outcome is Outcome.OK
        async with day.bridge.engine.begin() as conn:
            for key, at in instants.items():
                await conn.execute(sa.update(bank_operations).where(bank_operations.c.operation_key == key)
                                   .values(created_at=at))
        sim_days = {m.date for card in day.sim.issuer.cards.values() for m in card.movements}
        rows = [r for d in sorted(sim_days) for r in parse_settlement_file(day.sim.settlement_csv(d))]
        by_key = {k: await day.rrn(k) for k in instants}
        file_15 = [replace(r, date="2026-06-15") for r in rows if r.rrn in (by_key["x1"], by_key["x2"])]
        reconciler = day.reconciler(SHANGHAI)
        d15 = datetime(2026, 6, 15).date()
        report = await reconciler.run(file_15, bank_code=BANK, business_date=d15)
        assert sorted((line.bucket, line.operation_key) for line in report.lines) == [
            (MATCHED, "x1"), (MATCHED, "x2")]
        empty = await reconciler.run([], bank_code=BANK, business_date=d15 + timedelta(days=1))
        assert [(line.bucket, line.operation_key) for line in empty.lines] == [(MISSING_AT_BANK, "x3")]
        before = await reconciler.run([], bank_code=BANK, business_date=d15 - timedelta(days=1))
        assert before.lines == []
    finally:
        await day.close()
