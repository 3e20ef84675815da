"""The ledger alone (no SMS, no daemon): how many two-leg payments per second
`telecom_pay.ledger.Ledger` books, with pgbench's TPC-B beside it on the same
PostgreSQL server in the same run.

    python -m benchmarks.ledger_bench --config postgres|sqlite [--payments N] [--concurrency C]
                                      [--accounts A] [--extra-accounts X] [--max-batch B]
                                      [--no-pgbench] [--json FILE]

A payment is what `PaymentService.pay` books: subscriber -> merchant, plus the
merchant's fee leg to fee income (6 per mille, at least 1), through
`Ledger.execute` with C callers in a closed loop on a fresh database (made
and dropped the way benchmarks/deployment.py does). Reported: ops/s,
p50/p99 latency of `execute`, CPU of this process per op (the writer thread
included), SQL statements per op (each statement the client issues,
counted by a SQLAlchemy `before_cursor_execute` listener plus the ledger's
own count of statements it sends on the raw driver) and commits per op.
The invariants (`check_invariants`) are checked afterwards and the merchant
must hold exactly what was paid, less its fees.

pgbench runs against its own scratch database: `pgbench -i -s S`, then
`pgbench -c C -j 2 -T 10` (the TPC-B-like default script), and the ratio
ledger ops/s : pgbench tps is reported. pgbench's transactions are
durable commits of one account, teller and branch update and a history
insert each; the ledger's group commit is what lets it go faster.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

from sqlalchemy import event
from sqlalchemy.engine import make_url

from benchmarks import deployment
from benchmarks.report import git_commit, host, percentiles

FEE_PER_MILLE = 6


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fee_of(amount: int) -> int:
    return max(1, (amount * FEE_PER_MILLE + 500) // 1000)


async def _setup(url: str, accounts: int, balance: int, max_batch: int | None = None, extra: int = 0):
    """Schema, system accounts, `accounts` wallets and one merchant (bulk
    inserted: the set-up is not measured), then each wallet topped up
    through the ledger (which also warms it up)."""
    from telecom_pay.ledger import schema
    from telecom_pay.ledger.chart import ensure_system_accounts, insert_account
    from telecom_pay.ledger.database import open_database
    from telecom_pay.ledger.ledger import Leg, Ledger, OperationRequest
    from telecom_pay.ledger.tables import MERCHANT

    from benchmarks.population import bulk_accounts

    schema.upgrade(url)
    db = open_database(url)
    ledger = Ledger(db, **({"max_batch": max_batch} if max_batch else {}))
    system = await ensure_system_accounts(ledger)
    merchant = await ledger.write(lambda conn: insert_account(conn, kind=MERCHANT, code="M888", name="bench"))
    first, last = await asyncio.get_running_loop().run_in_executor(
        None, lambda: bulk_accounts(db.sync_write, accounts, with_credentials=False))
    wallets = list(range(first, last + 1))
    if extra:          # passive accounts beside the paying ones (the database at scale)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: bulk_accounts(db.sync_write, extra, first_msisdn=13500000000, with_credentials=False))
        await asyncio.get_running_loop().run_in_executor(None, lambda: _analyze(db.sync_write))

    async def topup(w):
        await ledger.execute(OperationRequest(
            key=f"fund-{w}", kind="topup", account_id=w, channel="bench",
            legs=(Leg(system["bank_settlement"], w, balance, "topup"),)))
    await asyncio.gather(*(topup(w) for w in wallets))
    return ledger, system, merchant, wallets


def _server_cpu(ledger) -> Callable[[], float | None]:
    """CPU seconds the PostgreSQL backends of the bench's database used
    from now until the returned function is called (None where the server's
    processes cannot be read: not PostgreSQL, or not on this host)."""
    if ledger.db.is_sqlite:
        return lambda: None
    import sqlalchemy as sa
    with ledger.db.sync_write.connect() as c:
        pids = [r[0] for r in c.execute(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))]
    tick = os.sysconf("SC_CLK_TCK")

    def total() -> float | None:
        s = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue              # a backend that went away
            s += int(fields[11]) + int(fields[12])
        return s / tick
    try:
        start = total()
    except (OSError, ValueError):
        return lambda: None
    return lambda: total() - start


def _analyze(engine) -> None:
    with engine.connect() as c:
        c.exec_driver_sql("ANALYZE")
        c.commit()


class StatementCounter:
    """Every statement SQLAlchemy sends on the writer's engine."""

    def __init__(self, engine):
        self.n = 0
        self.engine = engine
        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *_args, **_kw):
        self.n += 1

    def remove(self):
        event.remove(self.engine, "before_cursor_execute", self._count)


async def _measure(ledger, system, merchant, wallets, payments: int, concurrency: int, tag: str) -> dict:
    from telecom_pay.ledger.ledger import Leg, OperationRequest

    counter = StatementCounter(ledger.db.sync_write)
    raw0 = getattr(ledger, "raw_statements", 0)
    batches0, jobs0 = ledger.batches, ledger.jobs
    writer0 = getattr(ledger, "writer_cpu_s", 0.0)
    latencies: list[float] = []
    failures: list[str] = []
    next_i = iter(range(payments))
    fee_income = system["fee_income"]
    paid = {"sum": 0, "fees": 0}

    async def caller(c: int):
        for i in next_i:
            w = wallets[(i * concurrency + c) % len(wallets)]
            amount = 100 + (i % 900)
            fee = fee_of(amount)
            req = OperationRequest(
                key=f"bench-{tag}-{i}", kind="payment", channel="bench", actor=f"bench:{w}",
                account_id=w, counterparty_id=merchant,
                legs=(Leg(w, merchant, amount, "payment"), Leg(merchant, fee_income, fee, "fee")),
                details={"merchant_fee": fee})
            t = time.perf_counter()
            try:
                await ledger.execute(req)
            except Exception as exc:  # noqa: BLE001 - counted and shown
                failures.append(repr(exc))
                continue
            latencies.append((time.perf_counter() - t) * 1000)
            paid["sum"] += amount
            paid["fees"] += fee

    server = _server_cpu(ledger)
    cpu0, t0 = _cpu(), time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(concurrency)))
    elapsed, cpu = time.perf_counter() - t0, _cpu() - cpu0
    server_cpu = server()
    counter.remove()
    ok = len(latencies)
    statements = counter.n + getattr(ledger, "raw_statements", 0) - raw0
    commits = ledger.batches - batches0
    per = max(ok, 1)
    return {
        "payments": payments, "concurrency": concurrency, "booked": ok, "failed": len(failures),
        "failure_samples": failures[:5], "elapsed_s": round(elapsed, 3),
        "ops_per_s": round(ok / elapsed, 1), "latency_ms": percentiles(latencies),
        "cpu_s": round(cpu, 3), "cpu_ms_per_op": round(cpu * 1000 / per, 4),
        "server_cpu_ms_per_op": None if server_cpu is None else round(server_cpu * 1000 / per, 4),
        "writer_cpu_ms_per_op": round((getattr(ledger, "writer_cpu_s", 0.0) - writer0) * 1000 / per, 4),
        "statements": statements, "statements_per_op": round(statements / per, 3),
        "commits": commits, "commits_per_op": round(commits / per, 4),
        "mean_batch": round((ledger.jobs - jobs0) / max(commits, 1), 1),
        "paid": paid["sum"], "fees": paid["fees"],
    }


async def _check(ledger, merchant: int, expect_paid: int, expect_fees: int, wallets_total: int) -> dict:
    import sqlalchemy as sa

    from telecom_pay.ledger.invariants import check_invariants
    from telecom_pay.ledger.tables import accounts

    problems = await ledger.read(check_invariants)

    async def merchant_balance(conn):
        return (await conn.execute(sa.select(accounts.c.balance).where(accounts.c.id == merchant))).scalar_one()
    balance = await ledger.read(merchant_balance)
    merchant_ok = balance == expect_paid - expect_fees
    return {"invariants_ok": not problems, "invariant_problems": problems[:10],
            "merchant_balance": int(balance), "merchant_expected": expect_paid - expect_fees,
            "merchant_ok": merchant_ok}


def run_pgbench(admin_url: str, clients: int, *, seconds: int = 10, scale: int = 10, threads: int = 2) -> dict:
    """pgbench TPC-B-like on a scratch database of the same server; dropped after."""
    exe = shutil.which("pgbench")
    if exe is None:
        for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (d / "pgbench").exists():
                exe = str(d / "pgbench")
                break
    if exe is None:
        return {"error": "pgbench not found"}
    database = f"tp_pgbench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    deployment._create_pg_database(admin_url, database)
    u = make_url(admin_url)
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = u.password
    conn = ["-h", u.host or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres", database]
    try:
        t = time.perf_counter()
        subprocess.run([exe, "-i", "-q", "-s", str(scale), *conn], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        init_s = time.perf_counter() - t
        out = subprocess.run([exe, "-c", str(clients), "-j", str(threads), "-T", str(seconds), *conn],
                             env=env, check=True, capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as exc:
        return {"error": f"pgbench failed: {exc.stderr!s:.500}"}
    finally:
        deployment._drop_pg_database(admin_url, database)
    tps = re.search(r"tps = ([\d.]+) \((?:without initial connection time|excluding connections establishing)",
                    out)
    lat = re.search(r"latency average = ([\d.]+) ms", out)
    return {"clients": clients, "threads": threads, "seconds": seconds, "scale": scale,
            "init_s": round(init_s, 2), "tps": float(tps.group(1)) if tps else None,
            "latency_avg_ms": float(lat.group(1)) if lat else None}


async def _ledger_part(dep, args) -> dict:
    balance = 10 ** 9
    t = time.perf_counter()
    ledger, system, merchant, wallets = await _setup(dep.database_url, args.accounts, balance, args.max_batch,
                                                     args.extra_accounts)
    setup_s = time.perf_counter() - t
    try:
        if args.warmup:
            await _measure(ledger, system, merchant, wallets, args.warmup, args.concurrency, "warmup")
            # the warm-up's payments stay in the books: the check below counts them
        warm_paid, warm_fees = await _merchant_flows(ledger, merchant)
        fig = await _measure(ledger, system, merchant, wallets, args.payments, args.concurrency, "run")
        fig["setup_s"] = round(setup_s, 2)
        fig["accounts"] = args.accounts
        fig["extra_accounts"] = args.extra_accounts
        fig["max_batch"] = ledger.max_batch
        fig["check"] = await _check(ledger, merchant, warm_paid + fig["paid"], warm_fees + fig["fees"],
                                    len(wallets))
        return fig
    finally:
        await ledger.close()
        await ledger.db.dispose()


async def _merchant_flows(ledger, merchant: int) -> tuple[int, int]:
    import sqlalchemy as sa

    from telecom_pay.ledger.tables import transfers

    async def q(conn):
        paid = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(transfers.c.amount), 0)).where(
            transfers.c.credit_account_id == merchant))).scalar_one()
        fees = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(transfers.c.amount), 0)).where(
            transfers.c.debit_account_id == merchant))).scalar_one()
        return int(paid), int(fees)
    return await ledger.read(q)


def run(config: str = "postgres", *, payments: int = 20000, concurrency: int = 64, accounts: int = 1000,
        warmup: int = 500, max_batch: int | None = None, extra_accounts: int = 0, pgbench: bool = True,
        pgbench_seconds: int = 10,
        pgbench_scale: int = 10, pgbench_clients: int | None = None) -> dict:
    """The ledger-alone figures as a dict for a results JSON (see the module
    docstring); `ok` is False when the books or the merchant do not check out."""
    args = argparse.Namespace(payments=payments, concurrency=concurrency, accounts=accounts, warmup=warmup,
                              max_batch=max_batch, extra_accounts=extra_accounts)
    result: dict = {"config": config, **git_commit(), "host": host()}
    dep = deployment.prepare(config)
    try:
        result["ledger"] = asyncio.run(_ledger_part(dep, args))
    finally:
        problems = dep.close()
        if problems:
            result["cleanup_problems"] = problems
    if pgbench:
        admin = os.environ.get(deployment.PG_SERVER_URL_ENV, deployment.DEFAULT_PG_SERVER_URL)
        result["pgbench"] = run_pgbench(admin, pgbench_clients or concurrency, seconds=pgbench_seconds,
                                        scale=pgbench_scale)
        tps = result["pgbench"].get("tps")
        result["ratio_ledger_to_pgbench"] = round(result["ledger"]["ops_per_s"] / tps, 2) if tps else None
    check = result["ledger"]["check"]
    result["ok"] = check["invariants_ok"] and check["merchant_ok"] and result["ledger"]["failed"] == 0
    return result


def summary(result: dict) -> str:
    f = result["ledger"]
    line = (f"ledger {result['config']:8s} {f['ops_per_s']:8.1f} ops/s  p50 {f['latency_ms']['p50']} ms  "
            f"p99 {f['latency_ms']['p99']} ms  cpu {f['cpu_ms_per_op']} ms/op (writer {f['writer_cpu_ms_per_op']}, "
            f"server {f['server_cpu_ms_per_op']})  "
            f"{f['statements_per_op']} stmts/op  {f['commits_per_op']} commits/op (batch {f['mean_batch']})  "
            f"books {'ok' if result['ok'] else 'NOT OK'}")
    if "pgbench" in result:
        pg = result["pgbench"]
        line += (f"\npgbench  -c {pg.get('clients')} -j {pg.get('threads')} -s {pg.get('scale')}: "
                 f"{pg.get('tps')} tps; ledger/pgbench = {result.get('ratio_ledger_to_pgbench')}"
                 + (f" ({pg['error']})" if "error" in pg else ""))
    return line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ledger_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=deployment.CONFIGS, default="postgres")
    p.add_argument("--payments", type=int, default=20000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--accounts", type=int, default=1000, help="subscriber wallets paying (default 1000)")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--max-batch", type=int, default=None, help="the ledger's group-commit batch bound")
    p.add_argument("--extra-accounts", type=int, default=0,
                   help="passive accounts bulk-inserted beside the paying ones (e.g. 1000000)")
    p.add_argument("--no-pgbench", action="store_true")
    p.add_argument("--pgbench-seconds", type=int, default=10)
    p.add_argument("--pgbench-scale", type=int, default=10)
    p.add_argument("--pgbench-clients", type=int, default=None, help="default: --concurrency")
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    a = p.parse_args(argv)
    result = run(a.config, payments=a.payments, concurrency=a.concurrency, accounts=a.accounts,
                 warmup=a.warmup, max_batch=a.max_batch, extra_accounts=a.extra_accounts,
                 pgbench=not a.no_pgbench and a.config == "postgres",
                 pgbench_seconds=a.pgbench_seconds, pgbench_scale=a.pgbench_scale,
                 pgbench_clients=a.pgbench_clients)
    print(summary(result), flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
