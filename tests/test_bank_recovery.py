"""Bank answers the ledger must follow to the end, whichever process learns
them: a reversal the bank does not confirm stays in doubt until an operator
decides (`telecom-pay bank`), an approved answer whose post failed is posted
on the next start, and a settlement batch ends paid, failed-and-retryable or
in review. The PaymentService talks to the bank bridge, the bridge to the
bank simulator over ISO 8583 on 127.0.0.1, on SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
import json
import sys
from datetime import date, datetime, time, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from twisted.internet import reactor

from bank_bridge import review
from bank_bridge.service import BankBridgeService
from bank_bridge.store import BankStore
from simulators.bank import BankSimulator
from telecom_pay.aio import wait_deferred
from telecom_pay.ledger.schema import async_url, upgrade
from telecom_pay.outcomes import Outcome
from telecom_pay.settlement import Settlement
from tests.aio import aio_test
from tests.servicekit import MSISDN, funded, make_service, open_active, shutdown

DEBIT = "6222020000001234"
MERCHANT_PAN = "6222020000000001"
DAY = date(2026, 11, 20)
KEY = "test-card-key"


class Stack:
    """One process's view: a bank bridge and a PaymentService on the shared
    database. Two stacks on one database are the daemon and `settle`."""

    def __init__(self, sim: "Bank", database_url: str, **config):
        self.sim, self.database_url, self.config = sim, database_url, config
        self.bridge: BankBridgeService | None = None
        self.svc = None

    async def start(self):
        upgrade(self.database_url)
        cfg = {"card_token_key": KEY, "reversal_retry_initial": 0.1, "reversal_retry_max": 0.5,
               "reconnect_initial": 0.05, "reconnect_max": 0.5,
               "banks": [{"code": "simbank", "endpoint": f"tcp:host=127.0.0.1:port={self.sim.port}",
                          "bins": ["622202"], "terminal_id": "TP000001", "acquirer_id": "48020000",
                          "timeout": 1.0, "echo_interval": 30}], **self.config}
        self.bridge = BankBridgeService(cfg, database_url=self.database_url, reactor=reactor)
        await wait_deferred(self.bridge.startService())
        await self.bridge.port.wait_ready()
        self.svc = await make_service(self.database_url, bank=self.bridge.port, overrides={
            "merchants": [{"code": "M001", "name": "福彩中心"}]})
        return self

    async def stop(self):
        await shutdown(self.svc)
        await wait_deferred(self.bridge.stopService())

    async def restart(self):
        await self.stop()
        return await self.start()


class Bank:
    def __init__(self):
        self.sim = BankSimulator({"bank_code": "simbank"}, reactor)
        self.sim.add_card(DEBIT, "3012", "debit", balance=500_00)
        self.sim.add_card(MERCHANT_PAN, "3012", "debit", balance=0)
        self.listening = None

    async def listen(self):
        self.listening = await wait_deferred(self.sim.listen("tcp:0:interface=127.0.0.1"))
        self.port = self.listening.getHost().port
        return self

    def moved(self) -> int:
        return sum(m.amount for pan in (DEBIT, MERCHANT_PAN) for m in self.sim.card(pan).movements)

    async def close(self):
        self.sim.drop_connections()
        await wait_deferred(self.listening.stopListening())


async def eventually(predicate, timeout: float = 15.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


async def reversal_state(url: str, key: str) -> str | None:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text("SELECT state FROM bank_reversals WHERE operation_key = :k"),
                                       {"k": key})).scalar()
    finally:
        await engine.dispose()


async def fail_posts(url: str, on: bool) -> None:
    """A real database failure at the post: a trigger refuses to mark an
    operation posted (the bridge's own tables are untouched)."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                await conn.execute(sa.text(
                    "CREATE TRIGGER tp_fail_post BEFORE UPDATE OF state ON operations WHEN NEW.state = 'posted' "
                    "BEGIN SELECT RAISE(ABORT, 'injected: post fails'); END" if on else
                    "DROP TRIGGER tp_fail_post"))
            elif on:
                await conn.execute(sa.text(
                    "CREATE OR REPLACE FUNCTION tp_fail_post() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'injected: post fails'; END $$ LANGUAGE plpgsql"))
                await conn.execute(sa.text(
                    "CREATE TRIGGER tp_fail_post BEFORE UPDATE ON operations FOR EACH ROW "
                    "WHEN (NEW.state = 'posted') EXECUTE FUNCTION tp_fail_post()"))
            else:
                await conn.execute(sa.text("DROP TRIGGER tp_fail_post ON operations"))
    finally:
        await engine.dispose()


async def books_agree(svc, bank: Bank) -> None:
    assert await svc.check_books() == []
    assert (await svc.ledger.balance(svc.system["bank_settlement"])).balance == bank.moved()


def at(day: date, hour: int, svc) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=svc.tz).astimezone(timezone.utc)


# ---------------------------------------------------------------- defect 5

@aio_test
async def test_approved_topup_whose_post_failed_is_posted_on_the_next_start(database_url, tmp_path):
    bank = await Bank().listen()
    st = await Stack(bank, database_url).start()
    try:
        await open_active(st.svc)
        assert (await st.svc.bind_card(MSISDN, DEBIT, "3012", channel="t")).ok
        await fail_posts(database_url, True)
        two_hours_ago = datetime.now(timezone.utc) - timedelta(hours=2)
        st.svc.ledger.clock = lambda: two_hours_ago                     # the operation is old at once
        with pytest.raises(Exception):
            await st.svc.topup(MSISDN, 200_00, channel="t", key="tp-1")
        assert bank.sim.card(DEBIT).balance == 300_00                   # the bank approved it
        assert (await st.svc.ledger.get_operation("tp-1")).state == "pending"
        st.svc.ledger.clock = lambda: datetime.now(timezone.utc)        # one clock: the service's is the ledger's
        stale = [p for p in await st.svc.check_books() if "tp-1" in p]  # older than pending_alarm_minutes
        assert len(stale) == 1 and "pending since" in stale[0]
        code, out, _ = await cli(database_url, tmp_path, "db", "check")
        assert code == 1 and "tp-1" in out
        code, out, _ = await cli(database_url, tmp_path, "db", "check", **{"ledger.pending_alarm_minutes": 180})
        assert code == 0 and "books sound" in out
        await fail_posts(database_url, False)
        await st.restart()                                              # recovery on start
        assert (await st.svc.ledger.get_operation("tp-1")).state == "posted"
        assert (await st.svc.balance(MSISDN, channel="t")).balance == 200_00
        await books_agree(st.svc, bank)
        await st.restart()                                              # exactly once
        assert (await st.svc.balance(MSISDN, channel="t")).balance == 200_00
        again = await st.svc.topup(MSISDN, 200_00, channel="t", key="tp-1")
        assert again.outcome is Outcome.OK and bank.sim.card(DEBIT).balance == 300_00
        await books_agree(st.svc, bank)
    finally:
        await st.stop()
        await bank.close()


# ---------------------------------------------------------------- defect 2, through the service and the CLI

async def cli(database_url, tmp_path, *args, **overrides) -> tuple[int, str, str]:
    """`telecom-pay` as its own process on the same database."""
    from benchmarks.tomlwriter import dumps
    from telecom_pay import config
    raw = config.load(None, {"database.url": database_url, "sessions.url": "memory://",
                              "security.allow_development_keys": True, **overrides}).raw
    cfg = tmp_path / "cli.toml"
    cfg.write_text(dumps(raw), encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "telecom_pay.cli", "--config", str(cfg), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


@aio_test
async def test_topup_whose_reversal_is_answered_96_waits_for_an_operator(database_url, tmp_path):
    bank = await Bank().listen()
    st = await Stack(bank, database_url, reversal_max_attempts=2).start()
    try:
        await open_active(st.svc)
        assert (await st.svc.bind_card(MSISDN, DEBIT, "3012", channel="t")).ok
        bank.sim.faults.update({"answer_after": 3.0, "mtis": ["0200"], "reversal_answer": "96"})
        first = await st.svc.topup(MSISDN, 100_00, channel="t", key="tp-96")
        assert first.outcome is Outcome.IN_PROGRESS
        await eventually(lambda: _is(reversal_state(database_url, "tp-96"), "review"))
        assert (await st.svc.ledger.get_operation("tp-96")).state == "pending"    # never voided by guess
        assert bank.sim.card(DEBIT).balance == 400_00
        settings = database_url
        code, out, err = await cli(settings, tmp_path, "bank", "in-doubt", "--json")
        assert code == 0, err
        (listed,) = json.loads(out)
        assert (listed["operation_key"], listed["state"], listed["response_code"]) == ("tp-96", "review", "96")
        code, out, err = await cli(settings, tmp_path, "bank", "resolve", "tp-nope", "--outcome", "approved",
                                   "--by", "ops-wang", "--reason", "x")
        assert code == 1 and "no bank operation" in err
        code, out, err = await cli(settings, tmp_path, "bank", "resolve", "tp-96", "--outcome", "approved",
                                   "--by", "ops-wang", "--reason", "issuer confirms the debit, ticket 77")
        assert code == 0, err
        assert "posted" in out
        assert (await st.svc.ledger.get_operation("tp-96")).state == "posted"
        assert (await st.svc.balance(MSISDN, channel="t")).balance == 100_00
        (audit,) = await BankStore(st.bridge.engine).reviews_for("tp-96")
        assert (audit["actor"], audit["outcome"]) == ("ops-wang", "approved")
        assert audit["before"]["operation"] == "review" and audit["after"]["operation"] == "approved"
        code, out, err = await cli(settings, tmp_path, "bank", "in-doubt")
        assert code == 0 and "0 open" in out
        bank.sim.faults.clear()
        await books_agree(st.svc, bank)
    finally:
        await st.stop()
        await bank.close()


async def _is(awaitable, value) -> bool:
    return await awaitable == value


# ---------------------------------------------------------------- defect 8: settlement

async def paid_merchant(st: Stack, amount: int = 100_00) -> None:
    svc = st.svc
    assert (await svc.bind_merchant_account("M001", MERCHANT_PAN, "3012")).ok
    pin = await funded(svc, amount=amount)
    assert (await svc.pay(MSISDN, "M001", amount, pin, channel="t", key="pay-1")).ok


def fixed_clock(st_or_svc, instant: datetime):
    svc = getattr(st_or_svc, "svc", st_or_svc)
    svc.clock = svc.ledger.clock = lambda: instant


async def settle_stack(bank, database_url, **config) -> tuple[Stack, Settlement]:
    """`telecom-pay settle`: its own bridge and service, the next day."""
    st = await Stack(bank, database_url, **config).start()
    fixed_clock(st, at(DAY + timedelta(days=1), 10, st.svc))
    return st, Settlement(st.svc, file_dir="var/test-settlement")


@aio_test
async def test_declined_payout_fails_and_the_next_run_pays_once(database_url):
    bank = await Bank().listen()
    st = await Stack(bank, database_url).start()
    try:
        fixed_clock(st, at(DAY, 12, st.svc))
        await paid_merchant(st)
        fixed_clock(st, at(DAY + timedelta(days=1), 10, st.svc))
        settlement = Settlement(st.svc, file_dir="var/test-settlement")
        bank.sim.card(MERCHANT_PAN).status = "blocked"
        (first,) = await settlement.run(DAY)
        assert first.state == "failed" and "62" in first.note
        bank.sim.card(MERCHANT_PAN).status = "active"
        (second,) = await settlement.run(DAY)
        assert second.state == "paid" and second.net > 0
        (third,) = await settlement.run(DAY)
        assert third.state == "paid" and bank.sim.card(MERCHANT_PAN).balance == second.net
        await books_agree(st.svc, bank)
    finally:
        await st.stop()
        await bank.close()


@aio_test
async def test_payout_reversed_by_the_daemon_fails_the_batch_and_is_paid_once(database_url):
    bank = await Bank().listen()
    daemon = await Stack(bank, database_url).start()
    try:
        fixed_clock(daemon, at(DAY, 12, daemon.svc))
        await paid_merchant(daemon)
        settle, settlement = await settle_stack(bank, database_url)
        # the 0200 is processed but answered late; the settle process's reversals get "96"
        bank.sim.faults.update({"answer_after": 3.0, "mtis": ["0200"], "reversal_answer": "96"})
        (first,) = await settlement.run(DAY)
        assert first.state == "paying"
        await settle.stop()                               # `settle` exits with the payout in doubt
        bank.sim.faults.clear()                           # the daemon's bridge gets the "00"
        await eventually(lambda: _batch_state(daemon.svc, "failed"))
        assert bank.sim.card(MERCHANT_PAN).balance == 0
        settle, settlement = await settle_stack(bank, database_url)
        (second,) = await settlement.run(DAY)
        assert second.state == "paid" and bank.sim.card(MERCHANT_PAN).balance == second.net
        (third,) = await settlement.run(DAY)
        assert third.state == "paid" and bank.sim.card(MERCHANT_PAN).balance == second.net
        await settle.stop()
        await books_agree(daemon.svc, bank)
    finally:
        await daemon.stop()
        await bank.close()


async def _batch_state(svc, state: str) -> bool:
    from telecom_pay.settlement import settlement_batches
    rows = await svc.ledger.read(lambda c: _all(c, sa.select(settlement_batches.c.state)))
    return [r.state for r in rows] == [state]


async def _all(conn, q):
    return (await conn.execute(q)).all()


@aio_test
async def test_payout_whose_reversal_is_never_confirmed_goes_to_review_and_is_never_paid_twice(database_url):
    bank = await Bank().listen()
    daemon = await Stack(bank, database_url, reversal_max_attempts=2).start()
    try:
        fixed_clock(daemon, at(DAY, 12, daemon.svc))
        await paid_merchant(daemon)
        settle, settlement = await settle_stack(bank, database_url, reversal_max_attempts=2)
        bank.sim.faults.update({"answer_after": 3.0, "mtis": ["0200"], "reversal_answer": "96"})
        (first,) = await settlement.run(DAY)
        assert first.state == "paying"
        key = (await settlement.batches(DAY))[0].operation_key
        await eventually(lambda: _is(reversal_state(database_url, key), "review"))
        (second,) = await settlement.run(DAY)              # still in doubt: no second payout
        assert second.state == "review" and key in second.note
        credited = bank.sim.card(MERCHANT_PAN).balance
        assert credited == first.net                       # the bank did pay, once
        assert len([m for m in bank.sim.messages if m["direction"] == "in" and m["mti"] == "0200"]) == 1
        await settle.stop()
        bank.sim.faults.clear()
        await review.resolve(BankStore(daemon.bridge.engine), daemon.svc, key, outcome="approved",
                             actor="ops-zhao", reason="bank statement shows the credit")
        assert await _batch_state(daemon.svc, "paid")
        settle, settlement = await settle_stack(bank, database_url)
        (third,) = await settlement.run(DAY)
        assert third.state == "paid" and bank.sim.card(MERCHANT_PAN).balance == first.net
        await settle.stop()
        await books_agree(daemon.svc, bank)
    finally:
        await daemon.stop()
        await bank.close()


@aio_test
async def test_failure_between_attempt_and_credit_is_finished_by_the_next_run(database_url):
    bank = await Bank().listen()
    st = await Stack(bank, database_url).start()
    try:
        fixed_clock(st, at(DAY, 12, st.svc))
        await paid_merchant(st)
        fixed_clock(st, at(DAY + timedelta(days=1), 10, st.svc))
        settlement = Settlement(st.svc, file_dir="var/test-settlement")
        # 1. the attempt was booked, then the process stopped before the 0200 left
        from telecom_pay import accounts as acct
        merchant = await st.svc.ledger.read(lambda c: acct.find_merchant(c, "M001"))
        (batch,) = [await settlement._batch(merchant, DAY)]
        await settlement._start_attempt(merchant, batch, pending=True)
        assert bank.sim.card(MERCHANT_PAN).balance == 0
        (paid,) = await settlement.run(DAY)               # never sent: sent now, under the attempt's own key
        assert paid.state == "paid" and bank.sim.card(MERCHANT_PAN).balance == paid.net
        (rec1, rec2) = [await st.svc.ledger.get_operation(f"settle:M001:{DAY.isoformat()}:{n}") for n in (1, 2)]
        assert rec1.state == "posted" and rec2 is None
        (again,) = await settlement.run(DAY)              # paid once
        assert again.state == "paid" and bank.sim.card(MERCHANT_PAN).balance == paid.net
        await books_agree(st.svc, bank)
    finally:
        await st.stop()
        await bank.close()


@aio_test
async def test_approved_payout_whose_post_failed_is_paid_by_the_next_run(database_url):
    bank = await Bank().listen()
    st = await Stack(bank, database_url).start()
    try:
        fixed_clock(st, at(DAY, 12, st.svc))
        await paid_merchant(st)
        fixed_clock(st, at(DAY + timedelta(days=1), 10, st.svc))
        settlement = Settlement(st.svc, file_dir="var/test-settlement")
        await fail_posts(database_url, True)
        (first,) = await settlement.run(DAY)
        assert first.state == "paying" and bank.sim.card(MERCHANT_PAN).balance == first.net
        await fail_posts(database_url, False)
        (second,) = await settlement.run(DAY)
        assert second.state == "paid" and bank.sim.card(MERCHANT_PAN).balance == first.net
        await books_agree(st.svc, bank)
    finally:
        await st.stop()
        await bank.close()


# ---------------------------------------------------------------- defect 5, while the daemon runs

@aio_test
async def test_the_running_daemon_finishes_an_approved_topup_whose_post_failed(database_url):
    """No restart: the daemon's recovery sweep posts the approved top-up once
    the database accepts it again, and the subscriber is told over SMPP."""
    from tests.bankdouble import InProcessBank
    from tests.e2ekit import eventually, reply, settings_for, start_daemon, start_smsc, stop_daemon
    from tests.servicekit import PAN_DEBIT
    sim, port = await start_smsc()
    bank = InProcessBank()
    bank.add_card(PAN_DEBIT, card_type="debit", balance=100_000)
    daemon = await start_daemon(settings_for(database_url, port, **{"bank.recovery_interval": 0.2}), bank=bank)
    try:
        svc = daemon.core.service
        phone = sim.handset("13800138000")
        await open_active(svc)
        assert (await svc.bind_card(MSISDN, PAN_DEBIT, "3012", channel="t")).ok
        await fail_posts(database_url, True)
        with pytest.raises(Exception):
            await svc.topup(MSISDN, 200_00, channel="t", key="tp-run")
        assert (await svc.ledger.get_operation("tp-run")).state == "pending"
        await asyncio.sleep(0.5)                                  # sweeps run, the post still fails
        assert (await svc.ledger.get_operation("tp-run")).state == "pending"
        await fail_posts(database_url, False)

        async def posted():
            return (await svc.ledger.get_operation("tp-run")).state == "posted"
        await eventually(posted, timeout=10)
        assert "200.00" in await reply(phone, expect="200.00")
        assert (await svc.balance(MSISDN, channel="t")).balance == 200_00
        assert await svc.check_books() == []
        await asyncio.sleep(0.5)                                  # later sweeps change nothing
        assert (await svc.balance(MSISDN, channel="t")).balance == 200_00
    finally:
        await stop_daemon(daemon)
        await wait_deferred(sim.stop())


@aio_test
async def test_a_topup_booked_but_never_sent_is_claimed_as_not_sent_and_voided(database_url):
    """The process stopped between booking a top-up and its 0200. Recovery
    claims the key at the bridge as not sent and voids the booking; a late
    sender (the process that booked it, had it lived on) then finds the
    claim and sends nothing, so the card is never debited for a voided top-up."""
    from telecom_pay import accounts as acct
    from telecom_pay.bank_port import BankStatus, CardRef
    from telecom_pay.ledger.ledger import Leg, OperationRequest
    bank = await Bank().listen()
    st = await Stack(bank, database_url).start()
    try:
        await open_active(st.svc)
        assert (await st.svc.bind_card(MSISDN, DEBIT, "3012", channel="t")).ok
        w = await st.svc.ledger.read(lambda c: acct.find_wallet(c, MSISDN))
        card = await st.svc.ledger.read(lambda c: acct.active_card(c, w.id))
        st.svc.ledger.clock = lambda: datetime.now(timezone.utc) - timedelta(minutes=2)
        await st.svc.ledger.execute(OperationRequest(
            key="tp-unsent", kind="topup", pending=True, channel="sms", actor=f"msisdn:{MSISDN}", account_id=w.id,
            legs=(Leg(st.svc.system["bank_settlement"], w.id, 100_00, "topup"),), details={"card": card.last4}))
        st.svc.ledger.clock = lambda: datetime.now(timezone.utc)
        assert (await st.svc.ledger.get_operation("tp-unsent")).state == "pending"
        financial_before = [m for m in bank.sim.messages if m["mti"] == "0200"]
        await st.restart()                                              # recovery on start
        assert (await st.svc.ledger.get_operation("tp-unsent")).state == "voided"
        late = await st.bridge.port.debit_card(
            operation_key="tp-unsent", amount=100_00,
            card=CardRef(card.token, card.last4, card.bin, card.card_type, card.bank_code))
        assert late.status is BankStatus.DECLINED
        assert [m for m in bank.sim.messages if m["mti"] == "0200"] == financial_before
        assert bank.sim.card(DEBIT).balance == 500_00
        await books_agree(st.svc, bank)
    finally:
        await st.stop()
        await bank.close()
