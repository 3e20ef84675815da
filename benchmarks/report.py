"""Figures from a run: latency percentiles, throughput, cost; the JSON
result file and the one-line summaries."""
from __future__ import annotations

import json
import math
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.load import RunRecord

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


def run_figures(run: RunRecord, *, daemon_cpu_s: float, daemon_peak_rss_mb: float,
                driver_cpu_s: float) -> dict:
    confirmed = run.confirmed
    duration = max(run.t_end - run.t0, 1e-9)
    return {
        "mode": run.mode,
        "rate": run.rate,
        "concurrency": run.concurrency,
        "offered": run.offered,
        "confirmed": len(confirmed),
        "failed": len(run.failed),
        "errors": run.errors(),
        "error_samples": run.error_samples(),
        "duration_s": round(duration, 3),
        "payments_per_s": round(len(confirmed) / duration, 1),
        # from the PIN reply MO being sent to the confirmation arriving
        "latency_ms": percentiles([(p.done - p.pin_sent) * 1000 for p in confirmed]),
        # from `ZF` being sent to the PIN prompt arriving (a round trip that books nothing)
        "prompt_latency_ms": percentiles([(p.prompted - p.started) * 1000 for p in run.payments if p.prompted]),
        # from the payment being due (open loop) or started (closed loop) to its confirmation,
        # including any wait for an idle handset: what an open-loop client really sees
        "end_to_end_ms": percentiles([(p.done - p.scheduled) * 1000 for p in confirmed]),
        "waited_for_handset": run.waited,
        "dropped": run.dropped,
        "max_backlog": run.max_backlog,
        "daemon_cpu_s": round(daemon_cpu_s, 2),
        "daemon_cpu_per_payment_ms": round(daemon_cpu_s * 1000 / len(confirmed), 3) if confirmed else None,
        "daemon_cpu_utilisation": round(daemon_cpu_s / duration, 3),
        "daemon_peak_rss_mb": round(daemon_peak_rss_mb, 1),
        "driver_cpu_s": round(driver_cpu_s, 2),
    }


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
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "kernel": platform.release()}


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
    lat = fig["latency_ms"]
    what = "full speed" if fig["rate"] is None else f"{fig['rate']:g}/s"
    dropped = f", {fig['dropped']} dropped" if fig.get("dropped") else ""
    return (f"{config:8s} {what:>10s}: {fig['confirmed']} confirmed, {fig['failed']} failed{dropped} in "
            f"{fig['duration_s']:.2f} s = {fig['payments_per_s']:.0f} payments/s; latency ms "
            f"p50 {_ms(lat['p50'])} p95 {_ms(lat['p95'])} p99 {_ms(lat['p99'])} max {_ms(lat['max'])}; "
            f"daemon cpu {fig['daemon_cpu_s']:.1f} s ({fig['daemon_cpu_utilisation'] * 100:.0f}%), "
            f"peak rss {fig['daemon_peak_rss_mb']:.0f} MB")
