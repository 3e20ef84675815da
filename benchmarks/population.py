"""The benchmark's subscribers and merchant, created in-process through the
core on the deployment's database before the daemon starts, and the ledger
checks run through the core after it stopped.

Opening an account hashes a web password with argon2 (about 0.2 s of CPU
each here); the benchmark measures payments, not opening, so its accounts
are opened with a cheap argon2 setting. Their passwords are never used.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

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


# Passive accounts (`bulk_accounts`): 137xxxxxxxx, apart from the funded 139 range.
PASSIVE_FIRST_MSISDN = 13700000000
_ACCOUNT_COLUMNS = ("id", "kind", "msisdn", "name", "status", "language", "kyc_tier", "balance", "pending_out",
                    "pending_in", "consumption", "allow_negative", "created_at", "updated_at", "expires_at")
_CREDENTIAL_COLUMNS = ("account_id", "pin_hash", "password_hash", "pin_failures", "must_change", "updated_at")


def bulk_accounts(engine, count: int, *, first_msisdn: int = PASSIVE_FIRST_MSISDN, pin_key: bytes | None = None,
                  pin: str = BENCH_PIN, password_hash: str | None = None,
                  with_credentials: bool = True) -> tuple[int, int]:
    """Insert `count` active, empty wallets (and their credentials rows) in
    one transaction: COPY on PostgreSQL, executemany on SQLite, so a million
    take seconds rather than the hours the service API would. Returns the
    first and last account id (consecutive).

    The rows are what opening and confirming through the service leaves
    (`accounts.create_pending_wallet` then the confirm transition and
    `set_credentials`), without the audit rows: a valid PIN hash per row
    (the keyed hash binds the account id, so it is computed per row, which
    HMAC-SHA-256 makes cheap) and one argon2 password hash shared by all (an
    argon2 hash carries its own salt and parameters, so each row verifies;
    these passwords are never used). Meant for a database no one else is
    writing to: the id range is taken from the sequence in one step."""
    from telecom_pay.msisdn import normalize

    if count <= 0:
        raise ValueError("count must be positive")
    if with_credentials and pin_key is None:
        raise ValueError("a PIN key is needed to hash the PINs")
    now = datetime.now(timezone.utc)
    expires = now + timedelta(minutes=10)
    prefix = normalize(str(first_msisdn + 1))[:-len(str(first_msisdn))]     # the country code
    pin_b = pin.encode()
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        dbapi = conn.connection.dbapi_connection
        cur = dbapi.cursor()
        if sqlite:
            cur.execute("SELECT coalesce(max(id), 0) FROM accounts")
            first = cur.fetchone()[0] + 1
        else:
            cur.execute("LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE")
            cur.execute("SELECT nextval(pg_get_serial_sequence('accounts', 'id'))")
            first = cur.fetchone()[0]
            cur.execute("SELECT setval(pg_get_serial_sequence('accounts', 'id'), %s)", (first + count - 1,))
        last = first + count - 1

        def pin_hash(account_id: int) -> str:
            return "h1$" + hmac.new(pin_key, b"%d:%s" % (account_id, pin_b), hashlib.sha256).hexdigest()

        if sqlite:
            stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
            exp = expires.strftime("%Y-%m-%d %H:%M:%S.%f")
            cur.executemany(
                f"INSERT INTO accounts ({', '.join(_ACCOUNT_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_ACCOUNT_COLUMNS))})",
                ((i, "wallet", f"{prefix}{first_msisdn + 1 + i - first}", "", "active", "zh", 1, 0, 0, 0, 0, 0,
                  stamp, stamp, exp) for i in range(first, last + 1)))
            if with_credentials:
                cur.executemany(
                    f"INSERT INTO credentials ({', '.join(_CREDENTIAL_COLUMNS)}) VALUES (?, ?, ?, 0, 1, ?)",
                    ((i, pin_hash(i), password_hash, stamp) for i in range(first, last + 1)))
        else:
            stamp, exp = now.isoformat(), expires.isoformat()
            _copy(cur, "accounts", _ACCOUNT_COLUMNS,
                  (f"{i}\twallet\t{prefix}{first_msisdn + 1 + i - first}\t\tactive\tzh\t1\t0\t0\t0\t0\tf\t"
                   f"{stamp}\t{stamp}\t{exp}\n" for i in range(first, last + 1)))
            if with_credentials:
                pw = "\\N" if password_hash is None else password_hash.replace("\\", "\\\\")
                _copy(cur, "credentials", _CREDENTIAL_COLUMNS,
                      (f"{i}\t{pin_hash(i)}\t{pw}\t0\tt\t{stamp}\n" for i in range(first, last + 1)))
        cur.close()
    return first, last


def _copy(cur, table: str, columns, lines, chunk: int = 20000) -> None:
    """COPY text-format lines, sent in blocks (far fewer Python calls than
    a write_row per row)."""
    with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        buf: list[str] = []
        for line in lines:
            buf.append(line)
            if len(buf) >= chunk:
                copy.write("".join(buf))
                buf.clear()
        if buf:
            copy.write("".join(buf))


def populate_passive(config_path, count: int) -> tuple[int, int]:
    """`count` passive accounts beside the benchmark's funded ones (see
    `bulk_accounts`), with the deployment's PIN key; then ANALYZE, as a
    database that grew to this size would have been."""
    import sqlalchemy as sa

    from telecom_pay.ledger import schema
    settings = config_mod.load(config_path)
    schema.upgrade(settings.database_url)
    engine = sa.create_engine(schema.sync_url(settings.database_url))
    try:
        password_hash = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)._ph.hash("bench-unused")
        ids = bulk_accounts(engine, count, pin_key=settings.pin_key, password_hash=password_hash)
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
            conn.commit()
        return ids
    finally:
        engine.dispose()


class SetupError(RuntimeError):
    pass


def _expect(ok: bool, what: str, result) -> None:
    if not ok:
        raise SetupError(f"{what} failed: {result.outcome.value} {result.params}")
