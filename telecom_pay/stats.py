"""Operations statistics (the seed's 业务统计): per local business day and
for a whole range, read from the tables the platform already writes.

Days are the platform's local calendar days (`business_time`, Asia/Shanghai
by default): each figure is counted in the day of the instant the row
records (below), and the range's total is counted over the whole window at
once, so a subscriber active on two days is one active subscriber of the
range, not two. Everything is read in one snapshot (REPEATABLE READ on
PostgreSQL, one transaction on SQLite), so payments committing meanwhile
cannot make the days disagree with the total. Money is integer minor units.

What each figure is, and what the data does not hold:

- accounts_opened: wallets confirmed (`A`, audit `confirm`) in the day, by
  the channel the opening was asked on (the account's `open_requested`
  audit row: sms, ussd, agent, web ...), plus wallets created active
  (audit `opened`: the new holder of an ownership transfer) by their row's
  channel. open_requests counts the asks themselves, confirmed or not.
- transactions: operations by kind, channel and state (posted, pending,
  voided) with their count, amount and fee, dated by `created_at` (when
  booked; a pending one posted the next day stays in the day it was asked).
- failures: what is recorded of refusals. The audit log keeps wrong PINs,
  lockouts, security alerts, web login failures and lockouts, and freezes;
  voided operations keep their kind, and the bank's decline reason when the
  bank bridge handled them (joined on the operation key; the ledger keeps no
  reason of its own for a void). Refusals that book nothing and audit
  nothing (over a limit, not enough in the wallet, an unknown merchant, a
  frozen account, a velocity hold, a malformed command) are NOT recorded
  anywhere but in the reply text, so they are not counted here.
- bank: the bridge's operations by kind, status, response code and decline,
  and every response the bank sent (journal `response`) by message type
  and response code. Empty where the bank bridge is not used. telecom_pay
  must not import bank_bridge, so the two tables are declared below with
  only the columns read (bank_bridge/tables.py is their definition).
- active_subscribers: distinct wallets that are the subscriber side
  (`operations.account_id`) of a posted operation booked in the window; a
  wallet that only received money (p2p) is not counted.
- messages: SMS in (inbound channel "sms") by state; SMS out (outbox rows
  that are not USSD pages) by state and delivery receipt; USSD: dialogue
  starts (inbound "ussd" inputs that are a dialled service code, `*...#`:
  the channel stores no session id, so this is how a start is told from an
  answer), all inputs, pages sent (outbox rows whose meta carries `ussd_op`)
  and platform-initiated sessions (meta `push`).
- ivr: calls the IVR answered (call_events `agi_start`; call-backs apart),
  ended (`agi_end`) with their total and longest duration and how they
  ended, and hand-offs to an agent (ivr_handoffs) with and without the PIN
  checked.

Cost: each figure is one scan of the range (two: by day, and the total),
whatever its length. operations.created_at, audit_log.at,
inbound_messages.received_at, outbox.created_at and the bank tables' times
have no index of their own (call_events and ivr_handoffs have), so on a
large database a range reads those tables whole; indexes on them would be
a migration.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

import sqlalchemy as sa

from telecom_pay.business_time import local_midnight
from telecom_pay.calls import call_events, ivr_handoffs
from telecom_pay.ledger.ledger import Ledger
from telecom_pay.ledger.tables import T_POSTED, WALLET, Stamp, accounts, audit_log, operations
from telecom_pay.messaging import inbound_messages, outbox

MAX_DAYS = 366

# The bank bridge's tables (bank_bridge/tables.py, migration 0002_bank):
# only the columns read here, on a metadata of their own.
_bank = sa.MetaData()
bank_operations = sa.Table(
    "bank_operations", _bank,
    sa.Column("operation_key", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(16)),
    sa.Column("status", sa.String(16)),
    sa.Column("response_code", sa.String(2)),
    sa.Column("decline", sa.String(32)),
    sa.Column("amount", sa.BigInteger),
    sa.Column("created_at", Stamp),
)
bank_journal = sa.Table(
    "bank_journal", _bank,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("at", Stamp),
    sa.Column("direction", sa.String(3)),
    sa.Column("event", sa.String(32)),
    sa.Column("mti", sa.String(4)),
    sa.Column("response_code", sa.String(2)),
)

FAILURE_ACTIONS = ("pin_wrong", "pin_locked", "security_alert", "freeze", "web_login_failed", "web_login_locked")
NOT_RECORDED = "not recorded"
_SERVICE_CODE = re.compile(r"^\*[0-9*#]*#$")
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class StatsError(ValueError):
    """A range that cannot be counted (the caller's input)."""


def parse_range(start: str | None, end: str | None, *, today: date) -> tuple[date, date]:
    """`from`/`to` as given by a person (YYYY-MM-DD, both days included);
    either missing means today. Raises StatsError."""
    def day(text: str | None, name: str) -> date:
        if text is None or text == "":
            return today
        try:
            if not _DAY.match(text):        # fromisoformat would also take 20261202 and 2026-W49-3
                raise ValueError(text)
            return date.fromisoformat(text)
        except (TypeError, ValueError):
            raise StatsError(f"{name} is not a date (YYYY-MM-DD): {text!r}"[:120])
    first, last = day(start, "from"), day(end, "to")
    check_range(first, last)
    return first, last


def check_range(first: date, last: date) -> None:
    if last < first:
        raise StatsError("to is before from")
    if (last - first).days + 1 > MAX_DAYS:
        raise StatsError(f"the range is over {MAX_DAYS} days")


@dataclass(frozen=True)
class Window:
    """The range [start, end) as UTC instants, and where each local day of
    it begins: a figure is read in one scan of the range, its rows put in
    their day by a CASE over the day boundaries (which a zone with daylight
    saving makes 23 or 25 hours apart), or not split at all (`split`
    False: the range's total)."""
    starts: tuple[datetime, ...]     # each day's first instant, UTC
    end: datetime                    # the range's end, exclusive
    split: bool = True

    @property
    def start(self) -> datetime:
        return self.starts[0]

    def of(self, column):
        return sa.and_(column >= self.start, column < self.end)

    def whole(self) -> "Window":
        return Window(self.starts, self.end, split=False)

    def day(self, column):
        """The day index of `column`'s instant (rows already within the window)."""
        bounds = [*self.starts[1:], self.end]
        return sa.case(*[(column < b, i) for i, b in enumerate(bounds)], else_=len(bounds) - 1).label(DAY)

    def day_of(self, instant: datetime) -> int:
        return bisect_right(self.starts, instant) - 1 if self.split else 0

    @property
    def size(self) -> int:
        return len(self.starts) if self.split else 1


DAY = "day_ix"


def _grouped(w: Window, time_column, *columns):
    """SELECT [day,] columns ... (the caller adds aggregates, WHERE, GROUP BY
    of its own keys through `_by`)."""
    day = w.day(time_column) if w.split else sa.literal_column("0").label(DAY)
    return sa.select(day, *columns)


def _by(w: Window, *keys):
    # by the output column's name: the CASE again would be new bind
    # parameters, which PostgreSQL does not see as the same expression
    return (sa.literal_column(DAY), *keys) if w.split else keys


async def statistics(ledger: Ledger, first: date, last: date, tz: tzinfo) -> dict[str, Any]:
    """The figures of each local day from `first` to `last` (both included)
    and of the whole range, as a JSON-ready dict."""
    check_range(first, last)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    window = Window(tuple(local_midnight(d, tz) for d in days), local_midnight(last + timedelta(days=1), tz))

    async def read(conn):
        if conn.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            return await _figures(conn, window), (await _figures(conn, window.whole()))[0]
    per_day, total = await ledger.read(read)
    return {"from": first.isoformat(), "to": last.isoformat(), "timezone": getattr(tz, "key", str(tz)),
            "days": [{"date": d.isoformat(), **f} for d, f in zip(days, per_day)], "total": total}


async def _figures(conn, w: Window) -> list[dict[str, Any]]:
    parts = {
        "accounts_opened": await _accounts_opened(conn, w),
        "open_requests": await _counted(conn, w, audit_log.c.at, audit_log.c.channel,
                                        audit_log.c.action == "open_requested"),
        "transactions": await _transactions(conn, w),
        "failures": await _failures(conn, w),
        "bank": await _bank_figures(conn, w),
        "active_subscribers": await _active_subscribers(conn, w),
        "messages": await _messages(conn, w),
        "ivr": await _ivr(conn, w),
    }
    return [{name: values[i] for name, values in parts.items()} for i in range(w.size)]


def _int(v) -> int:
    return int(v or 0)          # PostgreSQL sums BIGINT as NUMERIC (Decimal)


async def _counted(conn, w: Window, time_column, key, *where) -> list[dict[str, int]]:
    out: list[dict[str, int]] = [{} for _ in range(w.size)]
    rows = await conn.execute(_grouped(w, time_column, key, sa.func.count()).where(w.of(time_column), *where)
                              .group_by(*_by(w, key)))
    for d, k, n in rows:
        out[d][str(k) if k is not None else NOT_RECORDED] = int(n)
    return [dict(sorted(x.items())) for x in out]


async def _accounts_opened(conn, w: Window) -> list[dict[str, int]]:
    asked = audit_log.alias("asked")
    confirmed = audit_log.alias("confirmed")
    rows = await conn.execute(
        _grouped(w, confirmed.c.at, asked.c.channel, sa.func.count())
        .select_from(confirmed.join(asked, sa.and_(asked.c.account_id == confirmed.c.account_id,
                                                   asked.c.action == "open_requested")))
        .where(confirmed.c.action == "confirm", w.of(confirmed.c.at))
        .group_by(*_by(w, asked.c.channel)))
    out = [Counter() for _ in range(w.size)]
    for d, ch, n in rows:
        out[d][ch] += int(n)
    direct = await _counted(conn, w, audit_log.c.at, audit_log.c.channel, audit_log.c.action == "opened")
    for counter, more in zip(out, direct):
        counter.update(more)
    return [dict(sorted(c.items())) for c in out]


async def _transactions(conn, w: Window) -> list[list[dict[str, Any]]]:
    o = operations.c
    rows = await conn.execute(
        _grouped(w, o.created_at, o.kind, o.channel, o.state, sa.func.count(), sa.func.sum(o.amount),
                 sa.func.sum(o.fee))
        .where(w.of(o.created_at)).group_by(*_by(w, o.kind, o.channel, o.state)))
    out: list[list[dict[str, Any]]] = [[] for _ in range(w.size)]
    for d, k, ch, st, n, a, f in rows:
        out[d].append({"kind": k, "channel": ch, "state": st, "count": int(n), "amount": _int(a), "fee": _int(f)})
    return [sorted(x, key=lambda t: (t["kind"], t["channel"], t["state"])) for x in out]


async def _failures(conn, w: Window) -> list[dict[str, Any]]:
    a = audit_log.c
    out = [{"audited": [], "voided": []} for _ in range(w.size)]
    rows = await conn.execute(
        _grouped(w, a.at, a.action, a.channel, sa.func.count())
        .where(a.action.in_(FAILURE_ACTIONS), w.of(a.at)).group_by(*_by(w, a.action, a.channel)))
    for d, act, ch, n in rows:
        out[d]["audited"].append({"reason": act, "channel": ch, "count": int(n)})
    o, b = operations.c, bank_operations.c
    rows = await conn.execute(
        _grouped(w, o.created_at, o.kind, o.channel, b.decline, b.response_code, sa.func.count(),
                 sa.func.sum(o.amount))
        .select_from(operations.outerjoin(bank_operations, b.operation_key == o.idempotency_key))
        .where(o.state == "voided", w.of(o.created_at))
        .group_by(*_by(w, o.kind, o.channel, b.decline, b.response_code)))
    for d, k, ch, dec, rc, n, amt in rows:
        out[d]["voided"].append({"kind": k, "channel": ch, "reason": dec or NOT_RECORDED, "response_code": rc,
                                 "count": int(n), "amount": _int(amt)})
    for x in out:
        x["audited"].sort(key=lambda f: (f["reason"], f["channel"]))
        x["voided"].sort(key=lambda v: (v["kind"], v["channel"], v["reason"], v["response_code"] or ""))
    return out


async def _bank_figures(conn, w: Window) -> list[dict[str, Any]]:
    b = bank_operations.c
    out = [{"operations": [], "response_codes": []} for _ in range(w.size)]
    rows = await conn.execute(
        _grouped(w, b.created_at, b.kind, b.status, b.response_code, b.decline, sa.func.count(), sa.func.sum(b.amount))
        .where(w.of(b.created_at)).group_by(*_by(w, b.kind, b.status, b.response_code, b.decline)))
    for d, k, st, rc, dec, n, amt in rows:
        out[d]["operations"].append({"kind": k, "status": st, "response_code": rc, "decline": dec, "count": int(n),
                                     "amount": _int(amt)})
    j = bank_journal.c
    rows = await conn.execute(
        _grouped(w, j.at, j.mti, j.response_code, sa.func.count())
        .where(j.event == "response", j.direction == "in", w.of(j.at)).group_by(*_by(w, j.mti, j.response_code)))
    for d, mti, rc, n in rows:
        out[d]["response_codes"].append({"mti": mti, "response_code": rc, "count": int(n)})
    for x in out:
        x["operations"].sort(key=lambda r: (r["kind"], r["status"], r["response_code"] or "", r["decline"] or ""))
        x["response_codes"].sort(key=lambda r: (r["mti"] or "", r["response_code"] or ""))
    return out


async def _active_subscribers(conn, w: Window) -> list[int]:
    o = operations.c
    rows = await conn.execute(
        _grouped(w, o.created_at, sa.func.count(sa.distinct(o.account_id)))
        .select_from(operations.join(accounts, accounts.c.id == o.account_id))
        .where(accounts.c.kind == WALLET, o.state == T_POSTED, w.of(o.created_at)).group_by(*_by(w)))
    out = [0] * w.size
    for d, n in rows:
        out[d] = int(n)
    return out


async def _messages(conn, w: Window) -> list[dict[str, Any]]:
    i, ob = inbound_messages.c, outbox.c
    sms_in = await _counted(conn, w, i.received_at, i.state, i.channel == "sms")
    rows = await conn.execute(
        _grouped(w, ob.created_at, ob.state, ob.delivery, sa.func.count())
        .where(ob.channel == "sms", ob.meta["ussd_op"].as_string().is_(None), w.of(ob.created_at))
        .group_by(*_by(w, ob.state, ob.delivery)))
    sms_out: list[list[dict]] = [[] for _ in range(w.size)]
    for d, st, dl, n in rows:
        sms_out[d].append({"state": st, "delivery": dl, "count": int(n)})
    ussd = [{"sessions": 0, "inputs": 0, "pages_out": 0, "pushed": 0} for _ in range(w.size)]
    for at, text in await conn.execute(sa.select(i.received_at, i.text).where(i.channel == "ussd",
                                                                              w.of(i.received_at))):
        u = ussd[w.day_of(at)]
        u["inputs"] += 1
        u["sessions"] += bool(_SERVICE_CODE.match(text.strip()))
    for key, where in (("pages_out", ob.meta["ussd_op"].as_string().is_not(None)),
                       ("pushed", ob.meta["push"].as_string().is_not(None))):
        for d, n in await conn.execute(_grouped(w, ob.created_at, sa.func.count())
                                       .where(where, w.of(ob.created_at)).group_by(*_by(w))):
            ussd[d][key] = int(n)
    return [{"sms_in": sum(sms_in[d].values()), "sms_in_by_state": sms_in[d],
             "sms_out": sum(r["count"] for r in sms_out[d]),
             "sms_out_by_state": sorted(sms_out[d], key=lambda r: (r["state"], r["delivery"] or "")),
             "ussd": ussd[d]} for d in range(w.size)]


async def _ivr(conn, w: Window) -> list[dict[str, Any]]:
    c = call_events.c
    out = [{"calls": 0, "callbacks": 0, "ended": 0, "duration_s": 0, "longest_s": 0, "ended_by": Counter(),
            "handoffs": 0, "handoffs_pin_verified": 0} for _ in range(w.size)]
    for at, detail in await conn.execute(sa.select(c.at, c.detail).where(c.event == "agi_start", w.of(c.at))):
        out[w.day_of(at)]["callbacks" if (detail or {}).get("callback") else "calls"] += 1
    for at, duration, detail in await conn.execute(
            sa.select(c.at, c.duration_s, c.detail).where(c.event == "agi_end", w.of(c.at))):
        x = out[w.day_of(at)]
        x["ended"] += 1
        x["duration_s"] += duration or 0
        x["longest_s"] = max(x["longest_s"], duration or 0)
        x["ended_by"][str((detail or {}).get("reason") or NOT_RECORDED)] += 1
    h = ivr_handoffs.c
    for d, verified, n in await conn.execute(_grouped(w, h.at, h.pin_verified, sa.func.count())
                                             .where(w.of(h.at)).group_by(*_by(w, h.pin_verified))):
        out[d]["handoffs"] += int(n)
        if verified:
            out[d]["handoffs_pin_verified"] += int(n)
    for x in out:
        x["ended_by"] = dict(sorted(x["ended_by"].items()))
    return out


CSV_COLUMNS = ("date", "figure", "item", "count", "amount", "fee")


def flat_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report as one table (the CSV download, the CLI's text): a row per
    figure and item, for each day and then for the range ("total")."""
    out: list[dict[str, Any]] = []
    for day in [*report["days"], {"date": "total", **report["total"]}]:
        def row(figure: str, item: str, count: int, amount: int | str = "", fee: int | str = "") -> None:
            out.append({"date": day["date"], "figure": figure, "item": item, "count": count, "amount": amount,
                        "fee": fee})
        for ch, n in day["accounts_opened"].items():
            row("accounts_opened", ch, n)
        for ch, n in day["open_requests"].items():
            row("open_requests", ch, n)
        for t in day["transactions"]:
            row("transactions", f"{t['kind']}/{t['channel']}/{t['state']}", t["count"], t["amount"], t["fee"])
        for f in day["failures"]["audited"]:
            row("failures", f"{f['reason']}/{f['channel']}", f["count"])
        for v in day["failures"]["voided"]:
            row("failures", f"voided {v['kind']}/{v['channel']}: {v['reason']}", v["count"], v["amount"])
        for b in day["bank"]["operations"]:
            row("bank_operations", f"{b['kind']}/{b['status']}/{b['response_code'] or '-'}"
                + (f" {b['decline']}" if b["decline"] else ""), b["count"], b["amount"])
        for r in day["bank"]["response_codes"]:
            row("bank_response_codes", f"{r['mti']}/{r['response_code'] or '-'}", r["count"])
        row("active_subscribers", "wallets", day["active_subscribers"])
        m = day["messages"]
        row("sms_in", "all", m["sms_in"])
        for st, n in m["sms_in_by_state"].items():
            row("sms_in", st, n)
        row("sms_out", "all", m["sms_out"])
        for r in m["sms_out_by_state"]:
            row("sms_out", f"{r['state']}/{r['delivery'] or '-'}", r["count"])
        for k in ("sessions", "inputs", "pages_out", "pushed"):
            row("ussd", k, m["ussd"][k])
        v = day["ivr"]
        for k in ("calls", "callbacks", "ended", "duration_s", "longest_s", "handoffs", "handoffs_pin_verified"):
            row("ivr", k, v[k])
        for reason, n in v["ended_by"].items():
            row("ivr", f"ended_by/{reason}", n)
    return out
