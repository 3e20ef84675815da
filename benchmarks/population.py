"""The benchmark's subscribers and merchant, created in-process through the
core on the deployment's database before the daemon starts, and the ledger
checks run through the core after it stopped.

Opening an account hashes a web password with argon2 (about 0.2 s of CPU
each here); the benchmark measures payments, not opening, so its accounts
are opened with a cheap argon2 setting. Their passwords are never used.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import sqlalchemy as sa

from telecom_pay import config as config_mod
from telecom_pay.core import open_core
from telecom_pay.ledger.tables import MERCHANT, T_POSTED, accounts, operations, transfers
from telecom_pay.outcomes import Outcome
from telecom_pay.security import PasswordHasher

from benchmarks.deployment import BENCH_MERCHANT

AGENT_CODE = "AG001"          # the agent of the shipped config; its float pays the cash-ins
FIRST_MSISDN = 13900000000    # 139xxxxxxxx: valid Chinese mobile numbers


@dataclass(frozen=True)
class Subscriber:
    msisdn: str        # local form, as a handset dials it
    pin: str


BENCH_PIN = "258147"


def msisdns(count: int) -> list[str]:
    return [str(FIRST_MSISDN + i + 1) for i in range(count)]


async def populate(config_path, count: int, balance: int, *, parallel: int = 64) -> list[Subscriber]:
    """Open, confirm and fund `count` accounts with `balance` each (minor
    units); register the benchmark merchant. Returns the subscribers with
    their PINs."""
    settings = config_mod.load(config_path)
    core = await open_core(settings)
    try:
        svc = core.service
        svc.passwords = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
        await svc.register_merchant(BENCH_MERCHANT["code"], BENCH_MERCHANT["name"],
                                    name_en=BENCH_MERCHANT["name_en"])
        funded = await svc.fund_agent(AGENT_CODE, count * balance, key=f"bench-float:{count}:{balance}",
                                      operator="benchmark")
        _expect(funded.outcome is Outcome.OK, f"funding agent {AGENT_CODE}", funded)
        gate = asyncio.Semaphore(parallel)

        async def one(msisdn: str) -> Subscriber:
            async with gate:
                r = await svc.open_account(msisdn, channel="bench")
                _expect(r.outcome is Outcome.CONFIRM_REQUIRED, f"opening {msisdn}", r)
                r = await svc.confirm_open(msisdn, channel="bench")
                _expect(r.outcome is Outcome.OK, f"confirming {msisdn}", r)
                pin = BENCH_PIN                  # an initial PIN moves no money: changed first
                r = await svc.change_pin(msisdn, r.params["pin"], pin, channel="bench")
                _expect(r.outcome is Outcome.OK, f"changing the PIN of {msisdn}", r)
                r = await svc.cash_in(AGENT_CODE, msisdn, balance, key=f"bench-cashin:{msisdn}")
                _expect(r.outcome is Outcome.OK, f"cash-in for {msisdn}", r)
                return Subscriber(msisdn, pin)
        subscribers = list(await asyncio.gather(*(one(m) for m in msisdns(count))))
        await svc.ledger.write(_drop_queued_notices)
        return subscribers
    finally:
        await core.close()


async def _drop_queued_notices(conn) -> None:
    """The cash-ins above queue an SMS each for the daemon to send; they are
    set-up, not measured traffic, and would reach the handsets mid-run."""
    from telecom_pay.messaging import QUEUED, outbox
    await conn.execute(outbox.delete().where(outbox.c.state == QUEUED, outbox.c.inbound_id.is_(None)))


@dataclass
class LedgerReport:
    problems: list[str]              # invariant violations (empty: the books are sound)
    payments: int                    # posted payment operations to the merchant
    paid_to_merchant: int            # sum of their payment legs (minor units)
    merchant_balance: int
    merchant_fees: int               # fee legs the merchant paid

    @property
    def invariants_ok(self) -> bool:
        return not self.problems


async def check_ledger(config_path) -> LedgerReport:
    """The ledger invariants (`check_books`) and what the merchant got."""
    settings = config_mod.load(config_path)
    core = await open_core(settings, upgrade=False)
    try:
        problems = await core.service.check_books()

        async def merchant_totals(conn):
            m = (await conn.execute(sa.select(accounts).where(
                accounts.c.kind == MERCHANT, accounts.c.code == BENCH_MERCHANT["code"]))).one()
            count = (await conn.execute(sa.select(sa.func.count()).select_from(operations).where(
                operations.c.kind == "payment", operations.c.counterparty_id == m.id,
                operations.c.state == T_POSTED))).scalar_one()
            paid = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(transfers.c.amount), 0)).where(
                transfers.c.kind == "payment", transfers.c.credit_account_id == m.id,
                transfers.c.state == T_POSTED))).scalar_one()
            fees = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(transfers.c.amount), 0)).where(
                transfers.c.kind == "fee", transfers.c.debit_account_id == m.id,
                transfers.c.state == T_POSTED))).scalar_one()
            return int(count), int(paid), int(m.balance), int(fees)
        count, paid, balance, fees = await core.ledger.read(merchant_totals)
        return LedgerReport(list(problems), count, paid, balance, fees)
    finally:
        await core.close()


class SetupError(RuntimeError):
    pass


def _expect(ok: bool, what: str, result) -> None:
    if not ok:
        raise SetupError(f"{what} failed: {result.outcome.value} {result.params}")
