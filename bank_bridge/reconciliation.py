"""Reconciliation of a bank's end-of-day settlement file with the bridge's
own records (bank_operations).

The file (as the bank simulator writes it) is CSV with a header:
date, stan, rrn, card_last4, amount (minor units), type (debit|credit),
response; it lists the approved movements of the business day that stand
(reversed ones are excluded). Rows are matched to operations by RRN, which
the bridge makes unique.

Result buckets:
- matched: same RRN, amount, type and last 4 digits, and approved here;
- missing_at_bank: approved here (created that business day) but not in the file;
- unknown_to_us: in the file but not approved here (never sent, declined,
  in doubt or reversed here) - money the bank moved that our books do not;
- mismatched: same RRN but different amount, type or card.

The business day is a local calendar day: the bank's file is dated by its
local date, which for a Chinese issuer is the platform's own zone
(`[platform] timezone`, Asia/Shanghai). `reconcile(tz=...)` takes that zone;
without one it uses the process's local zone, which is what the bank
simulator dates its movements by. The bounds come from
`telecom_pay.business_time`, where every local day is computed.

The ledger side (what our books moved and the corrections through the
suspense account) is `bank_bridge.ledger_reconciliation`.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date as Date, datetime, tzinfo
from typing import Any

from bank_bridge.store import BankStore
from telecom_pay import business_time

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


def parse_settlement_file(text: str, *, business_date: Date | None = None) -> list[SettlementRow]:
    """Rows of a settlement file. Refuses the whole file, naming the line,
    when anything is off: header, field count, amount (a positive integer in
    minor units), type, an empty or repeated RRN, or (when `business_date`
    is given) a row dated another day."""
    if text.startswith("\ufeff"):                    # a BOM from spreadsheet exports
        text = text[1:]
    reader = csv.DictReader(io.StringIO(text), strict=True)
    try:
        header = tuple(reader.fieldnames or ())
    except csv.Error as exc:
        raise SettlementFileError(f"line 1: {exc}") from None
    if header != COLUMNS:
        raise SettlementFileError(f"line 1: header must be {','.join(COLUMNS)}")
    rows = []
    seen: set[str] = set()
    try:
        for raw in reader:
            line = reader.line_num
            if None in raw or None in raw.values():
                raise SettlementFileError(f"line {line}: expected {len(COLUMNS)} fields")
            text_amount = raw["amount"].strip()
            if not text_amount.isdigit() or not text_amount.isascii():
                raise SettlementFileError(f"line {line}: amount must be an integer in minor units, "
                                          f"not {raw['amount']!r}")
            amount = int(text_amount)
            rrn = raw["rrn"].strip()
            if raw["type"] not in ("debit", "credit") or amount <= 0 or not rrn:
                raise SettlementFileError(f"line {line}: bad type, amount or rrn")
            if rrn in seen:
                raise SettlementFileError(f"line {line}: rrn {rrn} appears twice")
            seen.add(rrn)
            if business_date is not None and raw["date"] != business_date.isoformat():
                raise SettlementFileError(f"line {line}: dated {raw['date']!r}, not {business_date.isoformat()}")
            rows.append(SettlementRow(date=raw["date"], stan=raw["stan"], rrn=rrn,
                                      card_last4=raw["card_last4"], amount=amount, type=raw["type"],
                                      response=raw["response"]))
    except csv.Error as exc:
        raise SettlementFileError(f"line {reader.line_num}: {exc}") from None
    return rows


def business_day_bounds(business_date: Date, tz: tzinfo | None = None) -> tuple[datetime, datetime]:
    """[start, end) of a local calendar day as UTC datetimes. `tz` None: the
    process's local zone (the bank simulator's "local date")."""
    return business_time.day_window(business_date, tz)


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
                    business_date: Date, tz: tzinfo | None = None) -> Reconciliation:
    """Bank-level matching of the file's rows with the bridge's records of
    `bank_code`; operations belong to the day they were created (local day
    in `tz`, see business_day_bounds)."""
    start, end = business_day_bounds(business_date, tz)
    ours_that_day = await store.operations_created_between(bank_code, start, end)
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
