"""The benchmark harness runs end to end at a tiny size on the embedded
default (SQLite, in-process sessions): the daemon as its own process, the
SMSC simulator and the driver in the harness. It checks that every payment is
confirmed, the result file holds the documented fields and the ledger checks
passed. No timing is asserted: speed is what the benchmark reports."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUN_FIELDS = {"config", "accounts", "payments", "mode", "rate", "confirmed", "failed", "duration_s",
              "payments_per_s", "latency_ms", "daemon_cpu_s", "daemon_peak_rss_mb", "invariants_ok", "git_commit"}


def test_benchmark_runs_and_reconciles(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--configs", "sqlite", "--accounts", "8", "--payments", "20",
         "--rates", "40", "--warmup", "4", "--timeout", "20", "--max-run-seconds", "0",
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
    summaries = [line for line in proc.stdout.splitlines() if "payments/s" in line]
    assert len(summaries) == 2
