"""End-of-day settlement file: CSV with columns date, stan, rrn, card_last4,
amount (minor units), type (debit|credit), response. Approved movements of
the day that stand; reversed movements are excluded."""
from __future__ import annotations

import csv
import io
from pathlib import Path

COLUMNS = ("date", "stan", "rrn", "card_last4", "amount", "type", "response")


def settlement_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in COLUMNS})
    return out.getvalue()


def write_settlement_file(rows: list[dict], directory: str | Path, date: str, bank_code: str) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"settlement-{bank_code}-{date}.csv"
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(settlement_csv(rows), encoding="utf-8")
    tmp.replace(path)
    return path
