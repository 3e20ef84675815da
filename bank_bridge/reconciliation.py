"""Reconciliation of a bank's end-of-day settlement file with the bridge's
own records (bank_operations).

The file (as the bank simulator writes it) is CSV with a header:
date, stan, rrn, card_last4, amount (minor units), type (debit|credit),
response; it lists the approved movements of the business day that stand
(reversed ones are excluded). Rows are matched to operations by RRN, which
the bridge makes unique.

Result buckets:
- matched: same RRN, amount, type and last 4 digits, and approved here;
- missing_at_bank: approved here (created that UTC day) but not in the file;
- unknown_to_us: in the file but not approved here (never sent, declined,
  in doubt or reversed here) - money the bank moved that our books do not;
- mismatched: same RRN but different amount, type or card.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date as Date, datetime, time, timedelta, timezone
from typing import Any

from bank_bridge.store import BankStore

COLUMNS = ("date", "stan", "rrn", "card_last4", "amount", "type", "response")


class SettlementFileError(ValueError):
    pass


@dataclass(frozen=True)
class SettlementRow:
    date: str
    stan: str
    rrn: str
    card_last4: str
    amount: int
    type: str
    response: str


def parse_settlement_file(text: str) -> list[SettlementRow]:
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise SettlementFileError(f"header must be {','.join(COLUMNS)}")
    rows = []
    for line, raw in enumerate(reader, start=2):
        try:
            amount = int(raw["amount"])
        except (TypeError, ValueError):
            raise SettlementFileError(f"line {line}: amount must be an integer") from None
        if raw["type"] not in ("debit", "credit") or amount <= 0 or not raw["rrn"]:
            raise SettlementFileError(f"line {line}: bad type, amount or rrn")
        rows.append(SettlementRow(date=raw["date"], stan=raw["stan"], rrn=raw["rrn"],
                                  card_last4=raw["card_last4"], amount=amount, type=raw["type"],
                                  response=raw["response"]))
    return rows


@dataclass
class Reconciliation:
    matched: list[str] = field(default_factory=list)                       # RRNs
    missing_at_bank: list[dict[str, Any]] = field(default_factory=list)    # our operations
    unknown_to_us: list[SettlementRow] = field(default_factory=list)
    mismatched: list[tuple[dict[str, Any], SettlementRow]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_at_bank or self.unknown_to_us or self.mismatched)


async def reconcile(store: BankStore, rows: list[SettlementRow], *, bank_code: str,
                    business_date: Date) -> Reconciliation:
    start = datetime.combine(business_date, time.min, tzinfo=timezone.utc)
    ours_that_day = await store.operations_created_between(bank_code, start, start + timedelta(days=1))
    by_rrn = {op["rrn"]: op for op in await store.operations_by_rrn([r.rrn for r in rows])}
    result = Reconciliation()
    seen: set[str] = set()
    for row in rows:
        seen.add(row.rrn)
        op = by_rrn.get(row.rrn)
        if op is None or op["status"] != "approved" or op["bank_code"] != bank_code:
            result.unknown_to_us.append(row)
        elif (op["amount"], op["kind"], op["last4"]) != (row.amount, row.type, row.card_last4):
            result.mismatched.append((op, row))
        else:
            result.matched.append(row.rrn)
    for op in ours_that_day:
        if op["status"] == "approved" and op["rrn"] not in seen:
            result.missing_at_bank.append(op)
    return result
