"""Figures from a run: latency percentiles, throughput, cost; the JSON
result file and the one-line summaries."""
from __future__ import annotations

import json
import math
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.loadgen import LoadRun

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"


def percentiles(values_ms: list[float]) -> dict[str, float | None]:
    """Nearest-rank p50/p95/p99, max and mean, in milliseconds (None when empty)."""
    if not values_ms:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    v = sorted(values_ms)

    def rank(q: float) -> float:
        return v[max(0, math.ceil(q * len(v)) - 1)]
    return {"p50": round(rank(0.50), 2), "p95": round(rank(0.95), 2), "p99": round(rank(0.99), 2),
            "max": round(v[-1], 2), "mean": round(sum(v) / len(v), 2)}


def run_figures(run: LoadRun, *, daemon_cpu_s: float, daemon_peak_rss_mb: float,
                driver_cpu_s: float) -> dict:
    """The figures of one run. Payment runs keep the fields of the first
    harness (`latency_ms` is PIN sent -> confirmation); both workloads add
    per-step latencies (MO sent -> reply received) and the load
    generator's own CPU."""
    confirmed = run.confirmed
    duration = max(run.t_end - run.t0, 1e-9)
    fig = {
        "workload": run.workload,
        "mode": run.mode,
        "rate": run.rate,
        "concurrency": run.concurrency,
        "offered": run.offered,
        "confirmed": len(confirmed),
        "failed": len(run.failed),
        "errors": run.errors(),
        "error_samples": run.error_samples(),
        "duration_s": round(duration, 3),
    }
    if run.workload == "payment":
        prompt = percentiles([(p.r1 - p.t1) * 1000 for p in run.records if p.r1])
        confirmation = percentiles([(p.r2 - p.t2) * 1000 for p in confirmed])
        fig.update({
            "payments_per_s": round(len(confirmed) / duration, 1),
            # from the PIN reply MO being sent to the confirmation arriving
            "latency_ms": confirmation,
            # from `ZF` being sent to the PIN prompt arriving (a round trip that books nothing)
            "prompt_latency_ms": prompt,
            # each step, MO sent -> reply received: the `ZF` step and the PIN step
            "step_latency_ms": {"prompt": prompt, "confirmation": confirmation},
            # the worse step's p50 / p99: what the latency targets are read against
            "step_p50_ms": _worst(prompt, confirmation, "p50"),
            "step_p99_ms": _worst(prompt, confirmation, "p99"),
            # `ZF` sent -> confirmation arrived: the subscriber's whole conversation
            "conversation_ms": percentiles([(p.r2 - p.t1) * 1000 for p in confirmed]),
            # from the payment being due (open loop) or started (closed loop) to its confirmation,
            # including any wait for an idle handset: what an open-loop client really sees
            "end_to_end_ms": percentiles([(p.r2 - p.scheduled) * 1000 for p in confirmed]),
        })
        per = "payment"
    else:
        latency = percentiles([(p.r1 - p.t1) * 1000 for p in confirmed])
        fig.update({
            "round_trips_per_s": round(len(confirmed) / duration, 1),
            # the keyword MO sent -> its reply received
            "latency_ms": latency,
            "step_p50_ms": latency["p50"],
            "step_p99_ms": latency["p99"],
            "end_to_end_ms": percentiles([(p.r1 - p.scheduled) * 1000 for p in confirmed]),
        })
        per = "round_trip"
    fig.update({
        "waited_for_handset": run.waited,
        "dropped": run.dropped,
        "max_backlog": run.max_backlog,
        "daemon_cpu_s": round(daemon_cpu_s, 2),
        f"daemon_cpu_per_{per}_ms": round(daemon_cpu_s * 1000 / len(confirmed), 3) if confirmed else None,
        "daemon_cpu_utilisation": round(daemon_cpu_s / duration, 3),
        "daemon_peak_rss_mb": round(daemon_peak_rss_mb, 1),
        # the load-generator workers (their own processes), and the benchmark process itself
        "loadgen_cpu_s": round(run.loadgen_cpu_s, 2),
        "loadgen_cpu_utilisation": round(run.loadgen_cpu_s / duration, 3),
        "driver_cpu_s": round(driver_cpu_s, 2),
    })
    return fig


def _worst(a: dict, b: dict, key: str):
    values = [v[key] for v in (a, b) if v[key] is not None]
    return max(values) if values else None


def git_commit() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"git_commit": git("rev-parse", "HEAD") or None,
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def host() -> dict:
    import os
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    # the load average tells whether others shared the machine: on 2 cores a
    # load of 6 leaves each process a third of a core, whatever the harness does
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "kernel": platform.release(), "loadavg_1_5_15": load}


def timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def write_result(result: dict, results_dir: Path, stamp: str) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stamp}-{result['config']}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def summary_line(config: str, fig: dict) -> str:
    what = "full speed" if fig["rate"] is None else f"{fig['rate']:g}/s"
    dropped = f", {fig['dropped']} dropped" if fig.get("dropped") else ""
    if fig.get("workload", "payment") == "payment":
        rate = f"{fig['payments_per_s']:.0f} payments/s"
        steps = fig["step_latency_ms"]
        lat = (f"step p50/p99 ms: prompt {_ms(steps['prompt']['p50'])}/{_ms(steps['prompt']['p99'])}, "
               f"confirmation {_ms(steps['confirmation']['p50'])}/{_ms(steps['confirmation']['p99'])}")
        what = f"pay {what}"
    else:
        rate = f"{fig['round_trips_per_s']:.0f} round trips/s"
        lat = f"p50/p99 ms {_ms(fig['latency_ms']['p50'])}/{_ms(fig['latency_ms']['p99'])}"
        what = f"kw {what}"
    return (f"{config:8s} {what:>14s}: {fig['confirmed']} confirmed, {fig['failed']} failed{dropped} in "
            f"{fig['duration_s']:.2f} s = {rate}; {lat}; "
            f"daemon cpu {fig['daemon_cpu_s']:.1f} s ({fig['daemon_cpu_utilisation'] * 100:.0f}%), "
            f"loadgen cpu {fig['loadgen_cpu_utilisation'] * 100:.0f}%, "
            f"peak rss {fig['daemon_peak_rss_mb']:.0f} MB{_work(fig.get('work_per_confirmed'))}")


def _work(work: dict | None) -> str:
    if not work:
        return ""
    return (f"; each: {work['daemon_cpu_ms']:.2f} ms daemon cpu, {work['db_writer_statements_all']:g} writer + "
            f"{work['db_reader_statements']:g} reader SQL, {work['db_writer_commits']:g} commits, "
            f"{work['session_round_trips']:g} Redis round trips")


def ceiling_line(ceiling: dict) -> str:
    if "error" in ceiling:
        return f"harness ceiling: not measured ({ceiling['error']})"
    return (f"harness ceiling (load generator x{ceiling['load_procs']} against the echo ESME): "
            f"{ceiling['payments_per_s']:.0f} payments/s (step p99 {_ms(ceiling['payment_step_p99_ms'])} ms), "
            f"{ceiling['keyword_round_trips_per_s']:.0f} keyword round trips/s; "
            f"load generator cpu {ceiling['loadgen_cpu_utilisation'] * 100:.0f}% "
            f"({ceiling['loadgen_cpu_per_payment_ms']:.3f} ms a payment, "
            f"{ceiling['loadgen_cpu_per_round_trip_ms']:.3f} ms a round trip); "
            f"load average {ceiling.get('loadavg_1_5_15')}"
            + "".join(f"; at {f['rate']:g}/s offered: {f['payments_per_s']:.0f}/s, step p50/p99 "
                      f"{_ms(f['step_p50_ms'])}/{_ms(f['step_p99_ms'])} ms" for f in ceiling.get("fixed_rates", [])))


# The daemon's work counters (telecom_pay.perfstats, `[daemon] stats_file`)
# that say what a payment costs besides CPU time.
WORK_COUNTERS = ("db_writer_statements", "db_writer_raw_statements", "db_writer_commits", "db_reader_statements",
                 "ledger_jobs", "ledger_batches", "session_round_trips", "sms_mo", "sms_mt_accepted", "sms_receipts")


def read_daemon_stats(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def work_per_unit(before: dict, after: dict, units: int) -> dict:
    """Counter increments between two stats snapshots, per confirmed payment
    (or round trip); {} when the daemon wrote no stats."""
    if not before or not after or units <= 0:
        return {}
    b, a = before.get("counters", {}), after.get("counters", {})
    out = {name: round((a.get(name, 0) - b.get(name, 0)) / units, 2) for name in WORK_COUNTERS}
    out["db_writer_statements_all"] = round(out["db_writer_statements"] + out["db_writer_raw_statements"], 2)
    out["daemon_cpu_ms"] = round((after.get("cpu_s", 0) - before.get("cpu_s", 0)) * 1000 / units, 3)
    return out
