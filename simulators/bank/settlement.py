"""End-of-day settlement file: CSV with columns date, stan, rrn, card_last4,
amount (minor units), type (debit|credit), response. Approved movements of
the day that stand; reversed movements are excluded."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path, PurePosixPath

COLUMNS = ("date", "stan", "rrn", "card_last4", "amount", "type", "response")


def settlement_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in COLUMNS})
    return out.getvalue()


class UnsafePath(ValueError):
    """A requested directory outside the configured settlement directory."""


def confined_directory(base: str | Path, sub: str | None) -> Path:
    """`sub` (a relative path, as the control API is given it) under `base`,
    refused when it could lead anywhere else: an absolute path, a `..`
    component, or a symbolic link on the way (inside `base`), since the API
    is reachable by anything that can open a local HTTP connection."""
    base = Path(base)
    if not sub:
        return base
    if not isinstance(sub, str) or "\0" in sub or "\\" in sub:
        raise UnsafePath("path must be a relative directory name")
    parts = PurePosixPath(sub).parts
    if PurePosixPath(sub).is_absolute() or any(p == ".." for p in parts):
        raise UnsafePath("path must stay inside the settlement directory (no absolute path, no '..')")
    target = base
    for part in parts:
        if part == ".":
            continue
        target = target / part
        if target.is_symlink():
            raise UnsafePath(f"path must not go through a symbolic link ({part})")
    return target


def write_settlement_file(rows: list[dict], directory: str | Path, date: str, bank_code: str) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"settlement-{bank_code}-{date}.csv"
    tmp = path.with_suffix(".csv.tmp")
    # never through a link planted at the temporary name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(settlement_csv(rows))
    tmp.replace(path)
    return path
