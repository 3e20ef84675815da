"""`make bench`: complete SMS payments against the daemon, per configuration.

    python -m benchmarks.run [--configs sqlite,postgres] [--accounts N] [--payments M]
                             [--rates 100,500] [--concurrency C] [--timeout S] ...

For each configuration (benchmarks.deployment): create N funded accounts and
the benchmark merchant through the core, start the daemon as its own process
(`telecom-pay run --config <generated toml>`) bound to the SMSC simulator in
this process, drive M payments at full speed (closed loop) and M more at each
fixed rate (open loop), stop the daemon, check the ledger invariants and that
the merchant received exactly the confirmed payments. Each configuration's
figures go to benchmarks/results/<timestamp>-<config>.json with a summary line
per run on stdout. Exit status 1 when a ledger check failed or a
configuration could not run.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from telecom_pay.daemon import install_asyncio_reactor

from benchmarks import deployment, report
from benchmarks.load import MAX_AMOUNT, MO_LIMIT


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="sqlite,postgres",
                   help="comma-separated configurations: sqlite, postgres (default: both)")
    p.add_argument("--accounts", type=int, default=200, help="funded accounts = handsets (default 200)")
    p.add_argument("--payments", type=int, default=2000, help="payments per run (default 2000)")
    p.add_argument("--rates", default="100,500",
                   help="open-loop rates in payments/s, comma-separated; empty for none (default 100,500)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="handsets paying at once at full speed (default: all accounts)")
    p.add_argument("--max-run-seconds", type=float, default=20.0,
                   help="no payment starts (closed loop) or arrives (open loop) after this long into a run, "
                        "so a slow platform still finishes in minutes; 0 for no limit (default 20)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each reply (default 30)")
    p.add_argument("--warmup", type=int, default=50,
                   help="payments before the first measured run, not reported (default 50)")
    p.add_argument("--binds", type=int, default=1, help="SMPP binds of the daemon (default 1)")
    p.add_argument("--window", type=int, default=None,
                   help="the daemon's SMPP window per bind (default: the shipped config's)")
    p.add_argument("--smsc-window", type=int, default=None,
                   help="the simulated SMSC's deliver_sm window per bind (default: its config's)")
    p.add_argument("--daemon-log-level", default="info", choices=["debug", "info", "warn", "error"])
    p.add_argument("--results-dir", type=Path, default=report.RESULTS_DIR)
    p.add_argument("--keep", action="store_true", help="keep each configuration's working directory "
                   "(generated config, daemon log; the PostgreSQL database is dropped regardless)")
    p.add_argument("--profile", action="store_true",
                   help="sample the daemon with py-spy (if installed) during the full-speed run; "
                        "writes <results>/<timestamp>-<config>-full_speed.txt (collapsed stacks)")
    p.add_argument("--extra-accounts", type=int, default=0,
                   help="passive accounts (active, empty, with credentials) bulk-inserted beside the funded "
                        "ones before the daemon starts, e.g. 1000000 (default 0)")
    p.add_argument("--no-ledger-alone", dest="ledger_alone", action="store_false",
                   help="skip the ledger-alone run with pgbench beside it (benchmarks.ledger_bench; "
                        "runs once when postgres is among the configurations)")
    args = p.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in args.configs:
        if c not in deployment.CONFIGS:
            p.error(f"unknown configuration {c!r}; choose from {', '.join(deployment.CONFIGS)}")
    try:
        args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        p.error("--rates takes numbers separated by commas, e.g. 100,500")
    if args.accounts < 1 or args.payments < 1 or any(r <= 0 for r in args.rates):
        p.error("--accounts, --payments and each rate must be positive")
    args.concurrency = min(args.concurrency or args.accounts, args.accounts)
    if args.concurrency < 1:
        p.error("--concurrency must be positive")
    return args


def account_balance(args) -> int:
    """Enough for the most payments one account may make (minor units): a
    closed loop spreads its payments over `concurrency` handsets, an open
    loop over all of them (round robin while they keep up; 3x margin for
    the faster ones taking more when they do not)."""
    def share(payments: int, handsets: int) -> int:
        return -(-payments // handsets)
    most = (share(args.warmup, args.concurrency) + share(args.payments, args.concurrency)
            + 3 * len(args.rates) * share(args.payments, args.accounts))
    return max(10_000, (most + 1) * MAX_AMOUNT)


async def _wait_bound(sim, binds: int, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while sum(1 for b in sim.binds if b.bound_at is not None) < binds:
        if loop.time() > deadline:
            raise RuntimeError(f"the daemon did not bind to the SMSC simulator within {timeout:.0f} s")
        await asyncio.sleep(0.05)


def _py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


async def run_config(name: str, args, reactor) -> tuple[dict, bool]:
    """One configuration, start to finish. Returns (result, ledger_ok)."""
    from simulators.smsc import SmscConfig, SmscSimulator
    from telecom_pay.aio import wait_deferred
    from telecom_pay.config import DEFAULT_CONFIG, load

    from benchmarks.daemon_process import DaemonProcess
    from benchmarks.load import PaymentDriver
    from benchmarks.population import check_ledger, populate

    stamp = report.timestamp()
    result: dict = {"config": name, "accounts": args.accounts, "payments": args.payments,
                    "rates": args.rates, "concurrency": args.concurrency, "warmup": args.warmup,
                    "timeout_s": args.timeout, "started_at": stamp, **report.git_commit(), "host": report.host()}
    result["invariants_ok"] = None    # unknown until the ledger was checked
    dep = deployment.prepare(name, keep_workdir=args.keep)
    _on_interrupt.append(dep.close)
    sim = daemon = None
    ledger_ok = False
    try:
        sim_cfg = dict(load(DEFAULT_CONFIG).section("smsc_sim"))
        if args.smsc_window:
            sim_cfg["window"] = args.smsc_window
        sim = SmscSimulator(SmscConfig.from_mapping(sim_cfg), reactor)
        port = await wait_deferred(sim.listen("tcp:0:interface=127.0.0.1"))
        config_path = dep.write_config(port.getHost().port, binds=args.binds, window=args.window)
        result["database"] = dep.database_url.split(":", 1)[0]
        result["sessions"] = dep.sessions_url.split(":", 1)[0]

        if args.extra_accounts:
            from benchmarks.population import populate_passive
            t = time.perf_counter()
            await asyncio.get_running_loop().run_in_executor(None, populate_passive, config_path,
                                                             args.extra_accounts)
            result["extra_accounts"] = args.extra_accounts
            result["extra_accounts_s"] = round(time.perf_counter() - t, 2)
            print(f"{name:8s} {args.extra_accounts} passive accounts in {result['extra_accounts_s']} s", flush=True)
        t = time.perf_counter()
        subscribers = await populate(config_path, args.accounts, account_balance(args))
        result["setup_s"] = round(time.perf_counter() - t, 2)

        daemon = DaemonProcess(config_path, dep.workdir, log_level=args.daemon_log_level)
        _on_interrupt.insert(0, daemon.kill)
        t = time.perf_counter()
        await daemon.start()
        await _wait_bound(sim, args.binds)
        result["daemon_start_s"] = round(time.perf_counter() - t, 2)
        result["daemon_pid"] = daemon.pid

        driver = PaymentDriver(sim, subscribers, deployment.BENCH_MERCHANT["code"], timeout=args.timeout)
        all_runs = []

        async def measure(start, label: str, profile: bool = False) -> dict:
            cpu0 = daemon.cpu_seconds()
            daemon.reset_peak_rss()
            self0 = resource.getrusage(resource.RUSAGE_SELF)
            spy = _start_py_spy(daemon.pid, args.results_dir / f"{stamp}-{name}-{label}.txt") if profile else None
            run = await wait_deferred(start())
            if spy is not None:
                _stop_py_spy(spy)
            self1 = resource.getrusage(resource.RUSAGE_SELF)
            all_runs.append(run)
            return report.run_figures(
                run, daemon_cpu_s=daemon.cpu_seconds() - cpu0, daemon_peak_rss_mb=daemon.peak_rss_mb(),
                driver_cpu_s=(self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime))

        if args.warmup:
            warm = await measure(lambda: driver.run_closed(args.warmup, args.concurrency, limit=args.max_run_seconds,
                                                           mode="warmup"), "warmup")
            result["warmup_run"] = {k: warm[k] for k in ("confirmed", "failed", "errors", "error_samples")}
        runs = result["runs"] = []
        fig = await measure(lambda: driver.run_closed(args.payments, args.concurrency, limit=args.max_run_seconds),
                            "full_speed", profile=args.profile)
        runs.append(fig)
        print(report.summary_line(name, fig), flush=True)
        for rate in args.rates:
            await asyncio.sleep(1.0)   # let the previous run's receipts drain
            fig = await measure(lambda rate=rate: driver.run_open(args.payments, rate, reactor,
                                                                  limit=args.max_run_seconds), f"rate-{rate:g}")
            runs.append(fig)
            print(report.summary_line(name, fig), flush=True)

        result["handsets_rested"] = driver.rested
        if driver.rested:
            print(f"{name:8s} warning: {driver.rested} handset(s) sent {MO_LIMIT} MOs and were rested (their "
                  "TP-MR would repeat); give more --accounts", flush=True)
        await asyncio.sleep(0.5)
        result["daemon_exit_status"] = await daemon.stop()
        result["daemon_log_errors"] = _count_log_errors(daemon.log_path)
        late = driver.collect_late()
        await wait_deferred(sim.stop())
        sim = None

        # late confirmations got their reference in collect_late: the money moved
        confirmed = [p for run in all_runs for p in run.confirmed]
        checks = reconcile(await check_ledger(config_path), confirmed, late)
        result["ledger"] = checks
        ledger_ok = checks["invariants_ok"] and checks["merchant_ok"]
        result["invariants_ok"] = ledger_ok
        for fig in runs:
            fig.update({"config": name, "accounts": args.accounts, "payments": args.payments,
                        "invariants_ok": ledger_ok, "git_commit": result["git_commit"]})
        print(f"{name:8s} ledger: invariants {'ok' if checks['invariants_ok'] else 'VIOLATED'}; merchant got "
              f"{checks['ledger_payments']} payments = {checks['ledger_paid_to_merchant']} (confirmed "
              f"{checks['confirmed_total']} = {checks['confirmed_sum']}): "
              f"{'ok' if checks['merchant_ok'] else 'MISMATCH'}", flush=True)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        if daemon is not None:
            print(f"daemon log ({daemon.log_path}):\n{daemon.log_tail()}", file=sys.stderr)
    finally:
        if daemon is not None:
            await daemon.stop()
            _on_interrupt.remove(daemon.kill)
        _on_interrupt.remove(dep.close)
        if sim is not None:
            await wait_deferred(sim.stop())
        problems = dep.close()
        if problems:
            result["cleanup_problems"] = problems
    path = report.write_result(result, args.results_dir, stamp)
    print(f"{name:8s} results: {path}", flush=True)
    return result, ledger_ok


def reconcile(ledger, confirmed: list, late: list) -> dict:
    """The ledger against what the handsets were told: every confirmed
    payment (late ones included) booked once, nothing else booked, and the
    merchant's balance is what it was paid less the fees it pays."""
    expected_sum = sum(p.amount for p in confirmed)
    distinct = len({p.ref for p in confirmed}) == len(confirmed)
    checks = {
        "invariants_ok": ledger.invariants_ok,
        "invariant_problems": ledger.problems[:20],
        "confirmed_total": len(confirmed),
        "late_confirmations": len(late),
        "distinct_refs": distinct,
        "ledger_payments": ledger.payments,
        "ledger_paid_to_merchant": ledger.paid_to_merchant,
        "confirmed_sum": expected_sum,
        "merchant_fees": ledger.merchant_fees,
        "merchant_balance": ledger.merchant_balance,
    }
    checks["merchant_ok"] = (distinct and ledger.payments == len(confirmed)
                             and ledger.paid_to_merchant == expected_sum
                             and ledger.merchant_balance == ledger.paid_to_merchant - ledger.merchant_fees)
    return checks


def _count_log_errors(path: Path) -> int:
    try:
        with open(path, errors="replace") as f:
            return sum(1 for line in f if "#error]" in line or "#critical]" in line or "Traceback" in line)
    except OSError:
        return -1


def _start_py_spy(pid: int, out: Path):
    exe = _py_spy()
    if exe is None:
        print("--profile: py-spy not found (pip install py-spy into the venv); not profiling", file=sys.stderr)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "100",
                             "--nonblocking", "--gil", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_py_spy(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


# Cleanups still due if the reactor stops under us (Ctrl-C, SIGTERM): the
# coroutine's `finally` would never run, leaving a daemon and a database.
_on_interrupt: list = []


def _interrupted() -> None:
    while _on_interrupt:
        try:
            _on_interrupt.pop(0)()
        except Exception:  # noqa: BLE001 - best effort on the way out
            traceback.print_exc()


async def bench(reactor, args) -> int:
    status = 0
    for name in args.configs:
        result, ok = await run_config(name, args, reactor)
        if not ok or "error" in result:
            status = 1
    if args.ledger_alone and "postgres" in args.configs:
        status |= await ledger_alone(args)
    return status


async def ledger_alone(args) -> int:
    """The ledger without SMS and pgbench beside it, in its own process
    (benchmarks.ledger_bench); its JSON goes beside the others."""
    out = args.results_dir / f"{report.timestamp()}-ledger-alone.json"
    cmd = [sys.executable, "-m", "benchmarks.ledger_bench", "--config", "postgres", "--json", str(out)]
    proc = await asyncio.get_running_loop().run_in_executor(
        None, lambda: subprocess.run(cmd, capture_output=True, text=True))
    sys.stdout.write(proc.stdout)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-3000:])
    print(f"ledger   results: {out}", flush=True)
    return 1 if proc.returncode else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reactor = install_asyncio_reactor()
    from telecom_pay.aio import as_deferred
    outcome = {"status": 1}

    def start():
        d = as_deferred(bench(reactor, args))

        def done(status):
            outcome["status"] = status
        d.addCallbacks(done, lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", _interrupted)
    reactor.run()
    return outcome["status"]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
