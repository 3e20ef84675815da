"""The PNG chart of a `make bench`: throughput and step latency against the
offered rate, one line per configuration.

    python -m benchmarks.chart RESULT.json [RESULT.json ...] [-o chart.png]

Left: confirmed payments/s against offered payments/s (the fixed-rate
runs; the full-speed run is a marker at the rate it reached, the harness
ceiling a dotted line, perfect keeping-up the diagonal). Middle: p50 and
p99 of the worse step (MO sent -> reply received) of the same runs, on a
log scale. Right: keyword round trips/s, the same way. matplotlib comes with the `bench` extra; the Agg backend needs
no display.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def write_chart(results: list[dict], path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_lat, ax_kw) = plt.subplots(1, 3, figsize=(17, 5))
    kw_top = 1.0
    colours = {"sqlite": "tab:blue", "postgres": "tab:orange"}
    top = 1.0
    ceiling = None
    for result in results:
        name = result.get("config", "?")
        colour = colours.get(name, None)
        runs = [r for r in result.get("runs", []) if r.get("confirmed")]
        fixed = sorted((r for r in runs if r.get("rate")), key=lambda r: r["rate"])
        full = [r for r in runs if r.get("rate") is None]
        ceiling = result.get("harness_ceiling") or ceiling
        if fixed:
            xs = [r["rate"] for r in fixed]
            ax_rate.plot(xs, [r["payments_per_s"] for r in fixed], "o-", color=colour, label=f"{name} fixed rate")
            ax_lat.plot(xs, [r["step_p50_ms"] for r in fixed], "o-", color=colour, label=f"{name} p50")
            ax_lat.plot(xs, [r["step_p99_ms"] for r in fixed], "s--", color=colour, label=f"{name} p99")
            top = max(top, *xs)
        for r in full:
            x = r["payments_per_s"]
            ax_rate.plot([x], [x], "*", markersize=14, color=colour, label=f"{name} full speed")
            ax_lat.plot([x], [r["step_p50_ms"]], "*", markersize=12, color=colour)
            ax_lat.plot([x], [r["step_p99_ms"]], "X", markersize=10, color=colour)
            top = max(top, x)
        for r in result.get("keyword_runs", []):
            if not r.get("confirmed"):
                continue
            x = r["rate"] or r["round_trips_per_s"]
            marker = "o" if r["rate"] else "*"
            ax_kw.plot([x], [r["round_trips_per_s"]], marker, markersize=10 if r["rate"] else 14, color=colour,
                       label=f"{name} {'fixed rate' if r['rate'] else 'full speed'}")
            kw_top = max(kw_top, x)
    if ceiling and ceiling.get("keyword_round_trips_per_s"):
        c = ceiling["keyword_round_trips_per_s"]
        ax_kw.axhline(c, linestyle=":", color="grey", label=f"harness ceiling {c:.0f}/s")
        kw_top = max(kw_top, c)
    ax_kw.plot([0, kw_top], [0, kw_top], color="lightgrey", linewidth=1)
    ax_kw.set_xlabel("offered round trips/s (full speed: the rate reached)")
    ax_kw.set_ylabel("keyword round trips/s")
    ax_kw.set_title("keyword round trips (YE)")
    handles, labels = ax_kw.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax_kw.legend(unique.values(), unique.keys(), fontsize=8)
    if ceiling and ceiling.get("payments_per_s"):
        c = ceiling["payments_per_s"]
        ax_rate.axhline(c, linestyle=":", color="grey", label=f"harness ceiling {c:.0f}/s")
        top = max(top, c)
    ax_rate.plot([0, top], [0, top], color="lightgrey", linewidth=1, label="offered = confirmed")
    ax_rate.set_xlabel("offered payments/s (full speed: the rate reached)")
    ax_rate.set_ylabel("confirmed payments/s")
    ax_rate.set_title("throughput")
    ax_rate.legend(fontsize=8)
    ax_lat.set_xlabel("offered payments/s")
    ax_lat.set_ylabel("step latency, ms (MO sent -> reply)")
    ax_lat.set_yscale("log")
    ax_lat.set_title("worse step p50 / p99 (stars, crosses: full speed)")
    ax_lat.axhline(50, linestyle=":", color="green", linewidth=1)
    ax_lat.axhline(100, linestyle=":", color="red", linewidth=1)
    ax_lat.legend(fontsize=8)
    commit = next((r.get("git_commit") for r in results if r.get("git_commit")), None)
    stamp = next((r.get("started_at") for r in results if r.get("started_at")), "")
    fig.suptitle(f"telecom-pay SMS payments {stamp} {(commit or '')[:10]}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chart", description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("-o", "--output", type=Path, default=None)
    args = p.parse_args(argv)
    results = [json.loads(f.read_text(encoding="utf-8")) for f in args.results]
    out = args.output or args.results[0].with_name(args.results[0].stem + "-chart.png")
    print(write_chart(results, out))


if __name__ == "__main__":
    main()
