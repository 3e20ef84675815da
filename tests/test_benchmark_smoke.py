"""The benchmark harness runs end to end at a tiny size on the embedded
default (SQLite, in-process sessions): the daemon as its own process, the
load generator in its own worker processes (two, so replies that arrive on
the other worker's bind are forwarded), the echo ESME for the harness
ceiling. It checks that every payment and keyword round trip is confirmed,
the result file holds the documented fields and the ledger checks passed.
No timing is asserted: speed is what the benchmark reports."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUN_FIELDS = {"config", "accounts", "payments", "mode", "rate", "confirmed", "failed", "duration_s",
              "payments_per_s", "latency_ms", "prompt_latency_ms", "step_latency_ms", "step_p99_ms",
              "end_to_end_ms", "daemon_cpu_s", "daemon_peak_rss_mb", "loadgen_cpu_s", "invariants_ok",
              "git_commit"}
KEYWORD_FIELDS = {"workload", "mode", "confirmed", "failed", "round_trips_per_s", "latency_ms", "step_p99_ms",
                  "daemon_cpu_s", "loadgen_cpu_s"}


def test_benchmark_runs_and_reconciles(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--configs", "sqlite", "--accounts", "8", "--payments", "20",
         "--rates", "40", "--warmup", "4", "--timeout", "20", "--max-run-seconds", "0",
         "--keywords", "30", "--ceiling-seconds", "1", "--load-procs", "2", "--no-chart",
         "--results-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    files = list(tmp_path.glob("*-sqlite.json"))
    assert len(files) == 1, proc.stdout
    result = json.loads(files[0].read_text(encoding="utf-8"))
    assert "error" not in result
    assert result["config"] == "sqlite" and result["accounts"] == 8 and result["payments"] == 20
    assert result["invariants_ok"] is True
    ledger = result["ledger"]
    assert ledger["invariant_problems"] == []
    assert ledger["merchant_ok"] is True
    assert ledger["ledger_payments"] == ledger["confirmed_total"] == 4 + 20 + 20
    assert ledger["ledger_paid_to_merchant"] == ledger["confirmed_sum"] > 0

    runs = result["runs"]
    assert [(r["mode"], r["rate"]) for r in runs] == [("full_speed", None), ("fixed_rate", 40.0)]
    for run in runs:
        assert RUN_FIELDS <= set(run), RUN_FIELDS - set(run)
        assert run["confirmed"] == 20 and run["failed"] == 0, run["error_samples"]
        lat = run["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert run["daemon_cpu_s"] > 0 and run["daemon_peak_rss_mb"] > 0
    (kw,) = result["keyword_runs"]
    assert KEYWORD_FIELDS <= set(kw), KEYWORD_FIELDS - set(kw)
    assert kw["workload"] == "keyword" and kw["confirmed"] == 30 and kw["failed"] == 0, kw["error_samples"]
    assert 0 < kw["latency_ms"]["p50"] <= kw["latency_ms"]["max"]

    ceiling = result["harness_ceiling"]
    assert "error" not in ceiling, ceiling
    assert ceiling["payments_per_s"] > 0 and ceiling["keyword_round_trips_per_s"] > 0
    assert [r["harness_ceiling_per_s"] for r in runs + [kw]] == [ceiling["payments_per_s"]] * 2 + [
        ceiling["keyword_round_trips_per_s"]]
    assert [f["rate"] for f in ceiling["fixed_rates"]] == [40.0]
    assert ceiling["payment_failed"] == 0 and ceiling["keyword_failed"] == 0
    counters = result["loadgen_counters"]
    assert counters["forwarded"] > 0, counters       # two binds: some replies came in on the other worker
    assert counters["receipts_sent"] > 0 and counters["stray_replies"] == 0, counters

    summaries = [line for line in proc.stdout.splitlines() if line.startswith("sqlite") and " confirmed, " in line]
    assert len(summaries) == 3, proc.stdout
    assert any(line.startswith("harness ceiling") for line in proc.stdout.splitlines()), proc.stdout
