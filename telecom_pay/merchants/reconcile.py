"""A merchant's own reconciliation: its order list for a business day
(CSV lines `order, amount in yuan`) against the platform's confirmed
payments of that day, the same day the settlement counts (posted payment
operations created within the local day).

A line's order is matched by any name the platform knows the payment by:
the SP order id, the reference a subscriber typed after ZF, the ledger ref
or the pay_ id. The file is refused whole, naming the line, when a line is
not an order and an amount, or names an order twice: a half-read file
would make the missing lists lie.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, tzinfo
from typing import Any

import sqlalchemy as sa

from telecom_pay import business_time
from telecom_pay.ledger.tables import T_POSTED, operations
from telecom_pay.money import AmountError, format_amount, parse_amount

from .tables import sp_payments

MAX_BYTES = 32 * 1024
MAX_LINES = 2000
HEADER_NAMES = {"order", "order_id", "order_no", "ref", "reference", "订单号"}


class FileError(ValueError):
    """The uploaded list cannot be read; the message names the line."""


@dataclass(frozen=True)
class Line:
    line: int
    order: str
    amount: int


@dataclass
class Result:
    day: date
    matched: list[dict] = field(default_factory=list)
    mismatched: list[dict] = field(default_factory=list)
    missing_on_platform: list[dict] = field(default_factory=list)
    missing_in_file: list[dict] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, int]:
        return {"matched": len(self.matched), "mismatched": len(self.mismatched),
                "missing_on_platform": len(self.missing_on_platform), "missing_in_file": len(self.missing_in_file)}


def parse(raw: bytes | str) -> list[Line]:
    """The merchant's file: UTF-8 (a BOM allowed), comma-separated, one
    `order,amount` a line, an optional header line; blank lines skipped."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > MAX_BYTES:
        raise FileError(f"the file is over {MAX_BYTES // 1024} KB: split the day's list")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise FileError(f"line {line}: the file is not UTF-8 text")
    if "\x00" in text:
        raise FileError("the file is not text (a NUL byte)")
    out: list[Line] = []
    seen: dict[str, int] = {}
    for number, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in cells]
        if not any(cells):
            continue
        if not out and not seen and cells[0].lower() in HEADER_NAMES:
            continue
        if len(cells) < 2 or not cells[0]:
            raise FileError(f"line {number}: expected an order id and an amount, separated by a comma")
        order = cells[0]
        if len(order) > 64:
            raise FileError(f"line {number}: the order id is longer than 64 characters")
        try:
            amount = parse_amount(cells[1])
        except AmountError:
            raise FileError(f"line {number}: {cells[1][:20]!r} is not an amount in yuan (like 12.50)")
        if order in seen:
            raise FileError(f"line {number}: the order {order} is on line {seen[order]} already")
        seen[order] = number
        out.append(Line(number, order, amount))
        if len(out) > MAX_LINES:
            raise FileError(f"line {number}: more than {MAX_LINES} orders: split the day's list")
    if not out:
        raise FileError("the file lists no orders")
    return out


async def platform_payments(conn, merchant_id: int, day: date, tz: tzinfo | None) -> list[dict[str, Any]]:
    """The merchant's confirmed (posted) payments of local day `day`."""
    start, end = business_time.day_window(day, tz)
    o, sp = operations, sp_payments
    rows = await conn.execute(
        sa.select(o.c.ref, o.c.amount, o.c.memo, o.c.channel, o.c.created_at, sp.c.public_id, sp.c.order_id)
        .select_from(o.outerjoin(sp, sa.and_(sp.c.ref == o.c.ref, sp.c.merchant_id == merchant_id)))
        .where(o.c.kind == "payment", o.c.counterparty_id == merchant_id, o.c.state == T_POSTED,
               o.c.created_at >= start, o.c.created_at < end)
        .order_by(o.c.created_at, o.c.id))
    return [{"ref": r.ref, "amount": r.amount, "order_no": r.order_id or r.memo or "", "pay_id": r.public_id,
             "type": "api" if r.public_id else r.channel} for r in rows]


def match(day: date, lines: list[Line], platform: list[dict[str, Any]]) -> Result:
    names: dict[str, dict] = {}
    for p in platform:
        for name in (p["ref"], p["pay_id"], p["order_no"]):
            if name:
                names.setdefault(name, p)
    result, used = Result(day), set()
    for line in lines:
        p = names.get(line.order)
        if p is None or p["ref"] in used:
            result.missing_on_platform.append({"line": line.line, "order": line.order, "amount": line.amount})
            continue
        used.add(p["ref"])
        entry = {"line": line.line, "order": line.order, "amount": line.amount, "ref": p["ref"],
                 "platform_amount": p["amount"], "type": p["type"]}
        (result.matched if p["amount"] == line.amount else result.mismatched).append(entry)
    result.missing_in_file = [{"ref": p["ref"], "order": p["order_no"] or p["pay_id"] or p["ref"],
                               "platform_amount": p["amount"], "type": p["type"]}
                              for p in platform if p["ref"] not in used]
    return result


def result_csv(result: Result) -> bytes:
    """One line per finding; amounts in yuan; cells a spreadsheet would run
    as formulas are quoted with a leading apostrophe."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(["business_date", "finding", "file_line", "order", "ref", "file_amount_yuan", "platform_amount_yuan"])

    def yuan(v):
        return format_amount(v) if v is not None else ""
    day = result.day.isoformat()
    for finding, rows in (("matched", result.matched), ("amount_mismatch", result.mismatched),
                          ("missing_on_platform", result.missing_on_platform),
                          ("missing_in_file", result.missing_in_file)):
        for r in rows:
            w.writerow([day, finding, r.get("line", ""), _cell(r.get("order")), r.get("ref", ""),
                        yuan(r.get("amount")), yuan(r.get("platform_amount"))])
    return out.getvalue().encode("utf-8")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
