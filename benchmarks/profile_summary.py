"""Summarise a py-spy collapsed-stack profile (`--format raw`, what
`python -m benchmarks.run --profile` writes): the functions with the most
samples on top of the stack (self) and anywhere on it (inclusive).

    python -m benchmarks.profile_summary benchmarks/results/<stamp>-<config>-full_speed.txt [--top 25]
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _name(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (file.py)`, the line dropped so a function is one entry."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    short = "/".join(path.split("/")[-2:]) if "site-packages" not in path else path.split("site-packages/")[-1]
    return f"{m.group('func')} ({short})"


# Where a sample's time goes, by the innermost frame that matches (first
# matching rule wins): the parts of the daemon a reader can act on.
AREAS = (("logging", "twisted/logger"), ("smpp codec", "smpp/pdu.py"), ("smpplib", "smpplib/"),
         ("smpp session/client", "channels/smpp/"), ("sqlalchemy", "sqlalchemy/"), ("aiosqlite", "aiosqlite/"),
         ("psycopg", "psycopg"), ("redis client", "redis/"), ("conversation", "telecom_pay/commands/"),
         ("service", "telecom_pay/service/"), ("message record", "telecom_pay/messaging.py"),
         ("ledger", "telecom_pay/ledger/"), ("sessions", "telecom_pay/sessions/"), ("json", "json/"),
         ("asyncio", "asyncio/"), ("twisted reactor", "twisted/"))


def _samples(path: Path):
    """(raw frames outermost first, sample count) per line of a collapsed-stack file."""
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield [f for f in stack.split(";") if f], int(count)


def breakdown(path: Path) -> dict[str, float]:
    """Percent of samples per area (AREAS), the rest as `other`."""
    areas: Counter[str] = Counter()
    total = 0
    for frames, n in _samples(path):
        total += n
        area = "other"
        for frame in reversed(frames):
            hit = next((name for name, pattern in AREAS if pattern in frame), None)
            if hit:
                area = hit
                break
        areas[area] += n
    return {a: round(n * 100 / total, 1) for a, n in areas.most_common()} if total else {}


def summarise(path: Path, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for raw, n in _samples(path):
        total += n
        frames = [_name(f) for f in raw]
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    if not total:
        return f"{path}: no samples"
    out = [f"{path}: {total} samples", "", f"top {top} by self time:"]
    out += [f"  {n * 100 / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += ["", f"top {top} by inclusive time:"]
    out += [f"  {n * 100 / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "by area (innermost matching frame):"]
    out += [f"  {pct:5.1f}%  {area}" for area, pct in breakdown(path).items()]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_summary", description=__doc__.split("\n\n")[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    print(summarise(args.profile, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
