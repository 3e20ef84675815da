"""`make bench`: complete SMS payments against the daemon, per configuration.

    python -m benchmarks.run [--configs sqlite,postgres] [--accounts N] [--payments M]
                             [--rates 500,1000] [--load-procs P] [--concurrency C] ...

First the harness's own ceiling: the load generator against a trivial echo
ESME (benchmarks.echo_esme). Then, for each configuration
(benchmarks.deployment): create N funded accounts and the benchmark
merchant through the core, start the load generator (benchmarks.loadgen:
P worker processes, each an SMSC on its own port) and the daemon as its own
process (`telecom-pay run --config <generated toml>`, one bind per worker
port), drive payments at full speed (closed loop) and at each fixed rate
(open loop), then keyword round trips at full speed, stop the daemon, check
the ledger invariants and that the merchant received exactly the confirmed
payments, and run the extra sections (`EXTRA_SECTIONS`). Each
configuration's figures go to benchmarks/results/<timestamp>-<config>.json,
with a summary line per run on stdout, and a chart of all of them to
<timestamp>-chart.png. Exit status 1 when a ledger check failed or a
configuration could not run.
"""
from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from telecom_pay.daemon import install_asyncio_reactor

from benchmarks import deployment, report
from benchmarks.loadgen import EchoEsme, LoadGenerator
from benchmarks.smsc_load import MAX_AMOUNT, TPMR_VALUES

#: Extra benchmark sections, run once per configuration after its SMS runs
#: and ledger checks, while its database still exists (the daemon has
#: stopped). Each is a callable taking a `SectionContext` and returning a
#: dict (or an awaitable of one); the dict goes into the result JSON under
#: ``sections[<name>]`` (name: the callable's ``section_name`` attribute or
#: its ``__name__``). A section that raises is recorded as
#: ``{"error": ...}`` and fails the run. Append to it (or pass ``sections=``
#: to `run_config`) to wire a benchmark in, e.g. the ledger-alone bench.
EXTRA_SECTIONS: list = []

#: Like EXTRA_SECTIONS, but run after the accounts were opened and before
#: the daemon starts (e.g. filling the database with a million more
#: accounts); their dicts go under ``setup_sections[<name>]``.
SETUP_SECTIONS: list = []


@dataclass
class SectionContext:
    name: str                      # the configuration: "sqlite" or "postgres"
    args: argparse.Namespace       # the command line
    deployment: "deployment.Deployment"
    config_path: Path              # the daemon's generated config
    result: dict                   # this configuration's result so far (read only, please)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="sqlite,postgres",
                   help="comma-separated configurations: sqlite, postgres (default: both)")
    p.add_argument("--accounts", type=int, default=400, help="funded accounts = handsets (default 400)")
    p.add_argument("--payments", type=int, default=50_000,
                   help="most payments per run (default 50000: runs end on --max-run-seconds)")
    p.add_argument("--rates", default="500,1000",
                   help="open-loop rates in payments/s, comma-separated; empty for none (default 500,1000)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="handsets in use at once, closed and open loop (default: the accounts, at most 200: "
                        "what is in flight when a run's time is up must still finish soon)")
    p.add_argument("--max-run-seconds", type=float, default=8.0,
                   help="no conversation starts (closed loop) or arrives (open loop) after this long into a "
                        "run, so a slow platform still finishes in minutes; 0 for no limit (default 8)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each reply (default 30)")
    p.add_argument("--warmup", type=int, default=100,
                   help="payments before the first measured run, not reported (default 100)")
    p.add_argument("--keywords", type=int, default=100_000,
                   help="most keyword round trips (YE) in the keyword run; 0 for no keyword run "
                        "(default 100000: the run ends on --keyword-seconds)")
    p.add_argument("--keyword-seconds", type=float, default=5.0, help="time bound of each keyword run (default 5)")
    p.add_argument("--keyword-rates", default="",
                   help="open-loop rates of keyword round trips/s after the full-speed one, comma-separated "
                        "(default: none)")
    p.add_argument("--load-procs", type=int, default=1,
                   help="load-generator worker processes, each an SMSC on its own port (default 1)")
    p.add_argument("--binds", type=int, default=1, help="the daemon's SMPP binds to each worker port (default 1)")
    p.add_argument("--window", type=int, default=64,
                   help="the daemon's SMPP window per bind (default: the shipped config's)")
    p.add_argument("--smsc-window", type=int, default=64,
                   help="the load generator's deliver_sm window per bind (default 64)")
    p.add_argument("--no-receipts", action="store_true",
                   help="send no delivery receipts (default: a receipt for every submit_sm that asks)")
    p.add_argument("--receipt-delay", type=float, default=0.2, help="seconds before a receipt (default 0.2)")
    p.add_argument("--no-uvloop", action="store_true", help="run the load generator on plain asyncio")
    p.add_argument("--ceiling-seconds", type=float, default=4.0,
                   help="length of each harness-ceiling run against the echo ESME; 0 to skip (default 4)")
    p.add_argument("--no-chart", action="store_true", help="write no PNG chart")
    p.add_argument("--daemon-log-level", default="info", choices=["debug", "info", "warn", "error"])
    p.add_argument("--results-dir", type=Path, default=report.RESULTS_DIR)
    p.add_argument("--keep", action="store_true", help="keep each configuration's working directory "
                   "(generated config, daemon and load-generator logs; the PostgreSQL database is dropped "
                   "regardless)")
    p.add_argument("--profile", action="store_true",
                   help="sample the daemon with py-spy (if installed) during the full-speed run; "
                        "writes <results>/<timestamp>-<config>-full_speed.txt (collapsed stacks)")
    p.add_argument("--instances", default="1,2",
                   help="daemon instances to measure on PostgreSQL, comma-separated; each above 1 is an "
                        "extra run with that many daemons over the one database and Redis, each bound to "
                        "its share of the load generator's workers (--load-procs is raised to match; "
                        "default 1,2)")
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
        args.instances = sorted({int(n) for n in args.instances.split(",") if n.strip()} or {1})
    except ValueError:
        p.error("--rates takes numbers separated by commas, e.g. 500,1000")
    try:
        args.keyword_rates = [float(r) for r in args.keyword_rates.split(",") if r.strip()]
    except ValueError:
        p.error("--keyword-rates takes numbers separated by commas, e.g. 1000,3000")
    if args.accounts < 1 or args.payments < 1 or any(r <= 0 for r in args.rates + args.keyword_rates):
        p.error("--accounts, --payments and each rate must be positive")
    if args.load_procs < 1 or args.binds < 1:
        p.error("--load-procs and --binds must be positive")
    args.concurrency = min(args.concurrency or min(args.accounts, 200), args.accounts)
    if args.concurrency < 1:
        p.error("--concurrency must be positive")
    return args


def account_balance(args) -> int:
    """Enough for the most payments one account can make in a configuration
    (minor units): a handset pays at most once per TP-MR value of its PIN
    text (benchmarks.smsc_load), whatever the runs."""
    return max(10_000, (TPMR_VALUES + 1) * MAX_AMOUNT)


def _py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def _loadgen(args, subscribers, workdir: Path, *, procs: int | None = None) -> LoadGenerator:
    return LoadGenerator(subscribers, workdir, procs=procs or args.load_procs, window=args.smsc_window,
                         receipts=not args.no_receipts, receipt_delay=args.receipt_delay,
                         merchant=deployment.BENCH_MERCHANT["code"], uvloop=not args.no_uvloop)


async def measure_ceiling(args) -> dict:
    """The load generator's own ceiling: the same workloads, closed loop,
    against the echo ESME (which does no work). A daemon figure near it
    means the harness, not the daemon, was the limit."""
    from benchmarks.population import Subscriber, msisdns
    workdir = Path(tempfile.mkdtemp(prefix="telecom-pay-bench-ceiling-"))
    subscribers = [Subscriber(m, "258147") for m in msisdns(args.accounts)]
    lg = _loadgen(args, subscribers, workdir)
    _on_interrupt.insert(0, lg.kill)
    echo = EchoEsme([], workdir, uvloop=not args.no_uvloop)
    out: dict = {"load_procs": args.load_procs, "accounts": args.accounts, "seconds": args.ceiling_seconds,
                 "receipts": not args.no_receipts, "concurrency": args.concurrency,
                 "loadavg_1_5_15": report.host()["loadavg_1_5_15"]}
    try:
        echo.ports = await lg.start()
        _on_interrupt.insert(0, echo.kill)
        await echo.start()
        await lg.wait_bound(1)
        await lg.run("payment", 200, concurrency=args.concurrency, limit=1.0, timeout=args.timeout, mode="warmup")
        await lg.drain()
        pay = await lg.run("payment", 10**7, concurrency=args.concurrency, limit=args.ceiling_seconds,
                           timeout=args.timeout)
        await lg.drain()
        kw = await lg.run("keyword", 10**7, concurrency=args.concurrency, limit=args.ceiling_seconds,
                          timeout=args.timeout)
        await lg.drain()
        # the harness's own latency floor at the offered rates the daemon gets
        fixed = []
        for rate in args.rates:
            run = await lg.run("payment", 10**7, rate=rate, concurrency=args.concurrency,
                               limit=min(2.0, args.ceiling_seconds), timeout=args.timeout)
            f = report.run_figures(run, daemon_cpu_s=0.0, daemon_peak_rss_mb=0.0, driver_cpu_s=0.0)
            fixed.append({k: f[k] for k in ("rate", "offered", "confirmed", "failed", "dropped", "payments_per_s",
                                            "step_p50_ms", "step_p99_ms", "loadgen_cpu_utilisation")})
            await lg.drain()
        out["fixed_rates"] = fixed
        pf = report.run_figures(pay, daemon_cpu_s=0.0, daemon_peak_rss_mb=0.0, driver_cpu_s=0.0)
        kf = report.run_figures(kw, daemon_cpu_s=0.0, daemon_peak_rss_mb=0.0, driver_cpu_s=0.0)
        out.update({
            "payments_per_s": pf["payments_per_s"], "payment_failed": pf["failed"],
            "payment_step_p50_ms": pf["step_p50_ms"], "payment_step_p99_ms": pf["step_p99_ms"],
            "keyword_round_trips_per_s": kf["round_trips_per_s"], "keyword_failed": kf["failed"],
            "keyword_p99_ms": kf["step_p99_ms"],
            "loadgen_cpu_utilisation": pf["loadgen_cpu_utilisation"],
            "keyword_loadgen_cpu_utilisation": kf["loadgen_cpu_utilisation"],
            "loadgen_cpu_per_payment_ms": round(pay.loadgen_cpu_s * 1000 / max(1, pf["confirmed"]), 3),
            "loadgen_cpu_per_round_trip_ms": round(kw.loadgen_cpu_s * 1000 / max(1, kf["confirmed"]), 3),
        })
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        await echo.stop()
        await lg.stop()
        for fn in (lg.kill, echo.kill):
            if fn in _on_interrupt:
                _on_interrupt.remove(fn)
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def _instance_configs(config_path: Path, dep, instances: int) -> list[tuple[Path, Path]]:
    """`instances` daemons over the one database and Redis: each its own
    instance id, stats file and share of the load generator's ports."""
    import tomllib

    from benchmarks.tomlwriter import dumps
    raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    binds = raw["sms"]["binds"]
    if len(binds) < instances:
        raise ValueError(f"{instances} instances need at least as many binds (--load-procs {instances})")
    out = []
    for n in range(instances):
        mine = dict(raw, sms=dict(raw["sms"], binds=binds[n::instances]))
        stats = dep.workdir / f"daemon{n + 1}-stats.json"
        mine["daemon"] = dict(raw.get("daemon", {}), instance_id=f"bench-{n + 1}", stats_file=str(stats))
        path = config_path.with_name(f"{config_path.stem}-{n + 1}.toml")
        path.write_text(dumps(mine), encoding="utf-8")
        out.append((path, stats))
    return out


class _Daemons:
    """One or more daemon processes measured as one platform."""

    def __init__(self, procs: list, stats_paths: list[Path]):
        self.procs, self.stats_paths = procs, stats_paths

    @property
    def pid(self):
        return self.procs[0].pid if len(self.procs) == 1 else [p.pid for p in self.procs]

    @property
    def log_path(self) -> Path:
        return self.procs[0].log_path

    async def start(self) -> None:
        await asyncio.gather(*(p.start() for p in self.procs))

    async def stop(self):
        codes = [await p.stop() for p in self.procs]
        return codes[0] if len(codes) == 1 else codes

    def kill(self) -> None:
        for p in self.procs:
            p.kill()

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.procs)

    def peak_rss_mb(self) -> float:
        return max(p.peak_rss_mb() for p in self.procs)

    def reset_peak_rss(self) -> None:
        for p in self.procs:
            p.reset_peak_rss()

    def log_tail(self) -> str:
        return "\n".join(p.log_tail() for p in self.procs)

    def stats(self) -> dict:
        """The instances' counters summed (CPU included)."""
        snaps = [report.read_daemon_stats(path) for path in self.stats_paths]
        if not all(snaps):
            return {}
        counters: dict = {}
        for snap in snaps:
            for k, v in snap.get("counters", {}).items():
                counters[k] = counters.get(k, 0) + v
        return {"cpu_s": sum(snap.get("cpu_s", 0) for snap in snaps), "counters": counters}


async def run_config(name: str, args, reactor, *, ceiling: dict | None = None,
                     sections: list | None = None, setup_sections: list | None = None,
                     instances: int = 1) -> tuple[dict, bool]:
    """One configuration, start to finish. Returns (result, ok)."""
    from benchmarks.daemon_process import DaemonProcess
    from benchmarks.population import check_ledger, populate

    stamp = report.timestamp()
    result: dict = {"config": name, "accounts": args.accounts, "payments": args.payments,
                    "rates": args.rates, "concurrency": args.concurrency, "warmup": args.warmup,
                    "timeout_s": args.timeout, "load_procs": args.load_procs, "binds_per_port": args.binds,
                    "receipts": not args.no_receipts, "max_run_seconds": args.max_run_seconds,
                    "started_at": stamp, **report.git_commit(), "host": report.host()}
    if ceiling is not None:
        result["harness_ceiling"] = ceiling
    result["invariants_ok"] = None    # unknown until the ledger was checked
    dep = deployment.prepare(name, keep_workdir=args.keep)
    _on_interrupt.append(dep.close)
    lg = daemon = None
    ok = False
    try:
        result["database"] = dep.database_url.split(":", 1)[0]
        result["sessions"] = dep.sessions_url.split(":", 1)[0]
        # the ports first (the config names them); the handsets' PINs come with the accounts
        from benchmarks.population import BENCH_PIN, Subscriber, msisdns
        lg = _loadgen(args, [Subscriber(m, BENCH_PIN) for m in msisdns(args.accounts)], dep.workdir / "loadgen",
                      procs=max(args.load_procs, instances))
        _on_interrupt.insert(0, lg.kill)
        ports = await lg.start()
        config_path = dep.write_config(smsc_ports=ports, binds=args.binds, window=args.window)
        configs = _instance_configs(config_path, dep, instances) if instances > 1 else [(config_path, dep.stats_path)]
        result["instances"] = instances
        label = name if instances == 1 else f"{name}x{instances}"

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
        if [(s.msisdn, s.pin) for s in subscribers] != [(s.msisdn, s.pin) for s in lg.subscribers]:
            raise RuntimeError("the accounts opened are not the load generator's handsets")

        setup_ok = await _run_sections(SETUP_SECTIONS if setup_sections is None else setup_sections,
                                       "setup_sections", SectionContext(name, args, dep, config_path, result))

        daemon = _Daemons([DaemonProcess(path, dep.workdir, log_level=args.daemon_log_level,
                                         name="daemon" if n == 0 else f"daemon{n + 1}")
                           for n, (path, _) in enumerate(configs)], [stats for _, stats in configs])
        _on_interrupt.insert(0, daemon.kill)
        t = time.perf_counter()
        await daemon.start()
        await lg.wait_bound(args.binds)
        result["daemon_start_s"] = round(time.perf_counter() - t, 2)
        result["daemon_pid"] = daemon.pid
        payment_runs = []

        async def measure(label: str, workload: str, count: int, *, rate=None, concurrency=None, limit=0.0,
                          mode=None, profile: bool = False) -> dict:
            await lg.drain()           # the previous run's receipts are not this run's load
            await asyncio.sleep(1.2)   # the daemon rewrites its stats file every second
            stats0 = daemon.stats()
            cpu0 = daemon.cpu_seconds()
            daemon.reset_peak_rss()
            self0 = resource.getrusage(resource.RUSAGE_SELF)
            spy = _start_py_spy(daemon.procs[0].pid, args.results_dir / f"{stamp}-{name}-{label}.txt") if profile else None
            run = await lg.run(workload, count, rate=rate, concurrency=concurrency, limit=limit,
                               timeout=args.timeout, mode=mode)
            if spy is not None:
                _stop_py_spy(spy)
                profile_path = args.results_dir / f"{stamp}-{name}-{label}.txt"
            self1 = resource.getrusage(resource.RUSAGE_SELF)
            if workload == "payment":
                payment_runs.append(run)
            fig = report.run_figures(
                run, daemon_cpu_s=daemon.cpu_seconds() - cpu0, daemon_peak_rss_mb=daemon.peak_rss_mb(),
                driver_cpu_s=(self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime))
            await lg.drain()
            await asyncio.sleep(1.2)
            fig["work_per_confirmed"] = report.work_per_unit(stats0, daemon.stats(), fig.get("confirmed") or 0)
            fig["instances"] = instances
            if spy is not None and profile_path.exists():
                from benchmarks.profile_summary import breakdown
                fig["profile_file"] = str(profile_path)
                fig["profile_breakdown"] = breakdown(profile_path)
            return fig

        limit = args.max_run_seconds
        if args.warmup:
            warm = await measure("warmup", "payment", args.warmup, concurrency=args.concurrency, limit=limit,
                                 mode="warmup")
            result["warmup_run"] = {k: warm[k] for k in ("confirmed", "failed", "errors", "error_samples")}
        runs = result["runs"] = []
        fig = await measure("full_speed", "payment", args.payments, concurrency=args.concurrency, limit=limit,
                            profile=args.profile)
        runs.append(fig)
        print(report.summary_line(label, fig), flush=True)
        for rate in args.rates:
            fig = await measure(f"rate-{rate:g}", "payment", args.payments, rate=rate, concurrency=args.concurrency,
                                limit=limit)
            runs.append(fig)
            print(report.summary_line(label, fig), flush=True)
        keyword_runs = result["keyword_runs"] = []
        if args.keywords:
            fig = await measure("keywords", "keyword", args.keywords, concurrency=args.concurrency,
                                limit=args.keyword_seconds)
            keyword_runs.append(fig)
            print(report.summary_line(label, fig), flush=True)
            for rate in args.keyword_rates:
                fig = await measure(f"keywords-{rate:g}", "keyword", args.keywords, rate=rate,
                                    concurrency=args.concurrency, limit=args.keyword_seconds)
                keyword_runs.append(fig)
                print(report.summary_line(label, fig), flush=True)
        if ceiling is not None:
            print(f"{name:8s} {report.ceiling_line(ceiling)}", flush=True)

        result["handsets_rested"] = await lg.rested("payment")
        if result["handsets_rested"]:
            print(f"{name:8s} warning: {result['handsets_rested']} handset(s) used every TP-MR of their PIN "
                  f"and were rested; give more --accounts", flush=True)
        await lg.drain()
        await asyncio.sleep(0.5)
        result["daemon_exit_status"] = await daemon.stop()
        result["daemon_log_errors"] = sum(_count_log_errors(p.log_path) for p in daemon.procs)
        late = await lg.late()
        result["loadgen_counters"] = await lg.counters()
        await lg.stop()

        # late confirmations got their reference in the worker: the money moved
        confirmed = [p for run in payment_runs for p in run.confirmed]
        checks = reconcile(await check_ledger(config_path), confirmed + late, late)
        result["ledger"] = checks
        ledger_ok = checks["invariants_ok"] and checks["merchant_ok"]
        result["invariants_ok"] = ledger_ok
        ok = ledger_ok and setup_ok
        for fig in runs + keyword_runs:
            fig.update({"config": name, "accounts": args.accounts, "payments": args.payments,
                        "invariants_ok": ledger_ok, "git_commit": result["git_commit"]})
            if ceiling is not None and "error" not in ceiling:
                # beside every figure, what the harness alone reached on the same workload
                fig["harness_ceiling_per_s"] = ceiling["payments_per_s" if fig["workload"] == "payment"
                                                       else "keyword_round_trips_per_s"]
        print(f"{name:8s} ledger: invariants {'ok' if checks['invariants_ok'] else 'VIOLATED'}; merchant got "
              f"{checks['ledger_payments']} payments = {checks['ledger_paid_to_merchant']} (confirmed "
              f"{checks['confirmed_total']} = {checks['confirmed_sum']}): "
              f"{'ok' if checks['merchant_ok'] else 'MISMATCH'}", flush=True)

        if not await _run_sections(EXTRA_SECTIONS if sections is None else sections, "sections",
                                   SectionContext(name, args, dep, config_path, result)):
            ok = False
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        if daemon is not None:
            print(f"daemon log ({daemon.log_path}):\n{daemon.log_tail()}", file=sys.stderr)
    finally:
        if daemon is not None:
            await daemon.stop()
            _on_interrupt.remove(daemon.kill)
        if lg is not None:
            await lg.stop()
            _on_interrupt.remove(lg.kill)
        _on_interrupt.remove(dep.close)
        problems = dep.close()
        if problems:
            result["cleanup_problems"] = problems
    path = report.write_result(result, args.results_dir, stamp)
    print(f"{name:8s} results: {path}", flush=True)
    return result, ok


async def _run_sections(sections: list, key: str, context: SectionContext) -> bool:
    """Run each section, its dict (or its error) under ``result[key][name]``;
    False when one raised."""
    ok = True
    out = context.result.setdefault(key, {})
    for section in sections:
        section_name = getattr(section, "section_name", getattr(section, "__name__", repr(section)))
        try:
            value = section(context)
            if inspect.isawaitable(value):
                value = await value
            out[section_name] = value
        except Exception as exc:
            traceback.print_exc()
            out[section_name] = {"error": f"{type(exc).__name__}: {exc}"}
            ok = False
    return ok


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
    ceiling = None
    if args.ceiling_seconds > 0:
        ceiling = await measure_ceiling(args)
        print(report.ceiling_line(ceiling), flush=True)
    results = []
    for name in args.configs:
        result, ok = await run_config(name, args, reactor, ceiling=ceiling)
        results.append(result)
        if not ok or "error" in result:
            status = 1
    if "postgres" in args.configs:
        for instances in args.instances:
            if instances < 2:
                continue
            # several daemons over one PostgreSQL and one Redis, the load spread over their binds
            print(f"postgres with {instances} daemon instances:", flush=True)
            result, ok = await run_config("postgres", args, reactor, instances=instances,
                                          sections=[], setup_sections=[])
            if not ok or "error" in result:
                status = 1
    if not args.no_chart:
        try:
            from benchmarks import chart
            path = chart.write_chart(results, args.results_dir / f"{report.timestamp()}-chart.png")
            print(f"chart: {path}", flush=True)
        except ImportError as exc:
            print(f"no chart ({exc}); `make bench` installs matplotlib (the bench extra)", flush=True)
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
