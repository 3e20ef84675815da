"""Reconciliation of the platform's books with a bank's end-of-day
settlement file: does the ledger's `bank_settlement` system account agree
with what the bank says it moved that business day?

`bank_bridge.reconciliation` matches the file with the bridge's records
(bank_operations). This module goes one step further, to the ledger: every
card operation the bridge sent is a ledger operation under the same key (the
bridge's `operation_key`): topup, withdrawal, close_refund or settlement,
each with one leg on `bank_settlement`. Per movement (an RRN) it compares

    bank    = the file's movement of bank_settlement: debit row -amount
              (the bank took it from the card, we hold it), credit row +amount
    ledger  = the signed bank_settlement legs of the ledger operation if it
              is POSTED, else 0 (pending or voided moved nothing)

and sorts it into a bucket:

    matched          in the file, posted, same money, type and card
    missing_at_bank  posted here, not in the file
    unknown_to_us    in the file, not posted here (voided, pending, or an
                     RRN the bridge never sent for this bank)
    mismatched       in the file and posted, but the money or card differs

Nothing is booked automatically. For each discrepancy a correction of
`bank - ledger` is proposed: a new transfer between `bank_settlement` and
`suspense`, so that `bank_settlement` reflects the bank and suspense holds
what is owed to or by a cardholder until someone resolves it by hand.
`apply=True` books them as operations of kind "reconciliation" under the
key `recon:<date>:<rrn>`, idempotent: running twice books once. If a
movement's state changed after a correction was booked (an in-doubt
operation resolved, say), the next run books only the remaining difference
under `recon:<date>:<rrn>:2`, `:3` ... so corrections are never doubled.

Corrections for a movement whose ledger operation is still pending (or
whose bridge record is in doubt) are held, never booked: the bridge is about
to post or void it, and a correction now would be wrong a moment later.

Business day: the local calendar day in the platform's zone
(`settings.timezone`, Asia/Shanghai), which is how subscribers and the
bank date things; the bridge's operations belong to the day they were
created (see `reconciliation.business_day_bounds`).

Cut-off: an operation the bridge created just before midnight that the bank
booked just after is missing_at_bank on its own day (corrected there) and
appears in the next day's file; that day takes the earlier correction back,
so each day's report agrees with its file and the account with the bank.
The reverse (the bank dating a movement a day *before* the bridge created
it, which takes clocks that disagree) leaves the later day's missing_at_bank
correction in suspense, to be reversed by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date as Date, tzinfo
from typing import Any

import sqlalchemy as sa

from bank_bridge.reconciliation import SettlementRow, business_day_bounds
from bank_bridge.store import BankStore
from telecom_pay.ledger.ledger import Leg, Ledger, OperationRequest
from telecom_pay.ledger.tables import T_PENDING, T_POSTED, operations, transfers
from telecom_pay.money import format_amount

MATCHED, MISSING_AT_BANK, UNKNOWN_TO_US, MISMATCHED = "matched", "missing_at_bank", "unknown_to_us", "mismatched"
BUCKETS = (MATCHED, MISSING_AT_BANK, UNKNOWN_TO_US, MISMATCHED)
KIND = "reconciliation"
CHANNEL = "reconcile"
IN_DOUBT_AT_BRIDGE = ("sent", "reversing")

# what became of a proposed correction
PROPOSED, BOOKED, BOOKED_EARLIER, HELD = "proposed", "booked", "booked earlier", "held"


def file_movement(row: SettlementRow) -> int:
    """The bank's movement of our settlement account for one file row."""
    return -row.amount if row.type == "debit" else row.amount


@dataclass(frozen=True)
class Correction:
    """`change` is the signed movement of bank_settlement: positive means
    suspense -> bank_settlement, negative bank_settlement -> suspense."""
    key: str
    change: int
    memo: str

    @property
    def amount(self) -> int:
        return abs(self.change)

    def legs(self, system: dict[str, int]) -> tuple[Leg, ...]:
        if self.change > 0:
            return (Leg(system["suspense"], system["bank_settlement"], self.change, KIND),)
        return (Leg(system["bank_settlement"], system["suspense"], -self.change, KIND),)

    def describe(self) -> str:
        route = "suspense -> bank_settlement" if self.change > 0 else "bank_settlement -> suspense"
        return f"{route} {format_amount(self.amount)}"


@dataclass
class Line:
    """One movement (an RRN) and what the reconciliation made of it."""
    bucket: str
    rrn: str
    reason: str
    bank: int                             # file movement of bank_settlement (0: not in the file)
    ledger: int                           # posted ledger movement of bank_settlement
    booked_before: int = 0                # corrections booked for this RRN and day by earlier runs
    operation_key: str | None = None
    ledger_kind: str | None = None
    ledger_state: str | None = None
    bridge_status: str | None = None
    row: SettlementRow | None = None
    correction: Correction | None = None
    status: str | None = None             # PROPOSED, BOOKED, BOOKED_EARLIER, HELD or None (nothing to book)

    @property
    def difference(self) -> int:
        """What bank_settlement still lacks to agree with the bank."""
        return self.bank - self.ledger - self.booked_before

    def as_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "rrn": self.rrn, "reason": self.reason,
                "operation_key": self.operation_key, "ledger_kind": self.ledger_kind,
                "ledger_state": self.ledger_state, "bridge_status": self.bridge_status,
                "bank_movement": self.bank, "ledger_movement": self.ledger,
                "booked_before": self.booked_before,
                "file_row": None if self.row is None else dict(self.row.__dict__),
                "correction": None if self.correction is None else {
                    "key": self.correction.key, "change": self.correction.change,
                    "amount": format_amount(self.correction.amount), "route": self.correction.describe(),
                    "memo": self.correction.memo},
                "status": self.status}


@dataclass
class LedgerReconciliation:
    business_date: Date
    bank_code: str
    timezone: str
    lines: list[Line] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # bridge and ledger disagree, money does not
    applied: bool = False

    def bucket(self, name: str) -> list[Line]:
        return [line for line in self.lines if line.bucket == name]

    @property
    def corrections(self) -> list[Line]:
        return [line for line in self.lines if line.correction is not None]

    @property
    def bank_net(self) -> int:
        """Net movement of bank_settlement according to the file."""
        return sum(line.bank for line in self.lines)

    @property
    def ledger_net(self) -> int:
        """Net movement of bank_settlement in our books for these movements,
        corrections included (those booked by this run too)."""
        return sum(line.ledger + line.booked_before for line in self.lines) + sum(
            line.correction.change for line in self.lines if line.status == BOOKED)

    @property
    def unresolved(self) -> list[Line]:
        """Discrepancies whose money difference is not booked yet."""
        return [line for line in self.lines if line.status in (PROPOSED, HELD)]

    @property
    def exit_status(self) -> int:
        """0: everything matched or every correction is booked; 1: not."""
        return 1 if self.unresolved else 0

    def as_json(self) -> dict[str, Any]:
        return {"business_date": self.business_date.isoformat(), "bank_code": self.bank_code,
                "timezone": self.timezone, "applied": self.applied,
                "counts": {b: len(self.bucket(b)) for b in BUCKETS},
                "bank_net": self.bank_net, "ledger_net": self.ledger_net,
                "agrees": self.bank_net == self.ledger_net,
                "lines": [line.as_json() for line in self.lines], "notes": list(self.notes),
                "exit_status": self.exit_status}

    def render(self) -> str:
        """A report for people: counts, every discrepancy and its correction."""
        out = [f"Reconciliation of bank {self.bank_code} for {self.business_date.isoformat()} "
               f"(business day in {self.timezone})"]
        out.append("  " + "   ".join(f"{b.replace('_', ' ')}: {len(self.bucket(b))}" for b in BUCKETS))
        problems = [line for line in self.lines
                    if line.bucket != MATCHED or line.correction is not None or line.booked_before]
        if problems:
            out.append("")
            header = ("bucket", "rrn", "operation", "bank", "ledger", "correction", "status")
            table = [header] + [(
                line.bucket, line.rrn, line.operation_key or "-", _signed(line.bank) if line.row else "-",
                _signed(line.ledger) if line.ledger_state == T_POSTED else (line.ledger_state or "-"),
                line.correction.describe() if line.correction else "-", line.status or "-")
                for line in problems]
            widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
            for r in table:
                out.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
            out.append("")
            for line in problems:
                out.append(f"  {line.rrn}: {line.reason}")
        for note in self.notes:
            out.append(f"  note: {note}")
        out.append("")
        out.append(f"bank_settlement for the day: bank file {_signed(self.bank_net)}, "
                   f"ledger {_signed(self.ledger_net)}"
                   + (" - they agree" if self.bank_net == self.ledger_net else " - they differ"))
        pending = [line for line in self.lines if line.status == PROPOSED]
        held = [line for line in self.lines if line.status == HELD]
        if pending:
            out.append(f"{len(pending)} correction(s) proposed, none booked: run again with --apply to book them")
        if held:
            out.append(f"{len(held)} correction(s) held until the ledger operations resolve; run again later")
        booked = [line for line in self.lines if line.status == BOOKED]
        if booked:
            out.append(f"{len(booked)} correction(s) booked through suspense")
        review = [line for line in self.lines if line.bucket == MISMATCHED and line.correction is None
                  and not line.booked_before]
        if review:
            out.append(f"{len(review)} mismatch(es) with no money to book (card differs): review by hand")
        return "\n".join(out)


def _signed(minor: int) -> str:
    return ("+" if minor > 0 else "") + format_amount(minor)


class Reconciler:
    """Reconciles one bank's settlement file for one business day against the
    bridge's records (`store`) and the ledger; `system` maps system account
    codes to ids (PaymentService.system)."""

    def __init__(self, ledger: Ledger, store: BankStore, system: dict[str, int], *, tz: tzinfo,
                 actor: str = "reconcile"):
        self.ledger = ledger
        self.store = store
        self.system = system
        self.tz = tz
        self.actor = actor

    async def run(self, rows: list[SettlementRow], *, bank_code: str, business_date: Date,
                  apply: bool = False) -> LedgerReconciliation:
        report = LedgerReconciliation(business_date, bank_code, str(getattr(self.tz, "key", self.tz)),
                                      applied=apply)
        start, end = business_day_bounds(business_date, self.tz)
        ours_that_day = await self.store.operations_created_between(bank_code, start, end)
        by_rrn = {op["rrn"]: op for op in await self.store.operations_by_rrn([r.rrn for r in rows])
                  if op["bank_code"] == bank_code}
        for op in ours_that_day:
            by_rrn.setdefault(op["rrn"], op)
        ledger_ops = await self._ledger_movements([op["operation_key"] for op in by_rrn.values()])
        booked = await self._corrections_booked(business_date)
        ours = {op["operation_key"] for op in ours_that_day}
        late = [r.rrn for r in rows if r.rrn in by_rrn and by_rrn[r.rrn]["operation_key"] not in ours]
        elsewhere = await self._corrections_booked(business_date, other_days_for=late)

        in_file: set[str] = set()
        for row in rows:
            in_file.add(row.rrn)
            line = self._classify(row, by_rrn.get(row.rrn), ledger_ops, booked, report)
            if row.rrn in elsewhere:
                # settled by the bank on another day than the one our operation belongs to:
                # that day's correction (missing_at_bank) is taken back here
                line.booked_before += elsewhere[row.rrn][0]
                line.reason += f"; corrected {format_amount(elsewhere[row.rrn][0])} on another day"
            report.lines.append(line)
        for op in ours_that_day:
            if op["rrn"] in in_file:
                continue
            line = self._classify(None, op, ledger_ops, booked, report)
            if line is not None:
                report.lines.append(line)
        for rrn in sorted(set(booked) - {line.rrn for line in report.lines}):
            # corrected earlier, now neither in the file nor ours that day (the file was replaced)
            report.lines.append(Line(MISSING_AT_BANK, rrn, "corrected earlier; no longer in the file or the day",
                                     bank=0, ledger=0, booked_before=booked[rrn][0]))
        for line in report.lines:
            self._propose(line, business_date, booked)
        if apply:
            await self._apply(report)
        return report

    # -- classification --------------------------------------------------------

    def _classify(self, row: SettlementRow | None, op: dict | None, ledger_ops: dict[str, dict],
                  booked: dict[str, tuple[int, int]], report: LedgerReconciliation) -> Line | None:
        rrn = row.rrn if row is not None else op["rrn"]
        led = ledger_ops.get(op["operation_key"]) if op is not None else None
        state = led["state"] if led is not None else None
        ledger_move = led["movement"] if state == T_POSTED else 0
        bank_move = file_movement(row) if row is not None else 0
        line = Line(MATCHED, rrn, "", bank=bank_move, ledger=ledger_move,
                    booked_before=booked.get(rrn, (0, 0))[0], row=row,
                    operation_key=op["operation_key"] if op is not None else None,
                    ledger_kind=led["kind"] if led is not None else None, ledger_state=state,
                    bridge_status=op["status"] if op is not None else None)
        if op is not None and led is not None:
            bridge_says = op["status"] == "approved"
            if bridge_says != (state == T_POSTED) and state != T_PENDING and op["status"] not in IN_DOUBT_AT_BRIDGE:
                report.notes.append(f"{rrn} ({op['operation_key']}): bridge says {op['status']}, "
                                    f"ledger says {state}")
        if row is None:
            if state != T_POSTED:
                if op["status"] == "approved" and led is None:
                    report.notes.append(f"{rrn} ({op['operation_key']}): approved by the bank bridge "
                                        "but no such ledger operation; the bank's file does not list it either")
                if not line.booked_before:
                    return None                      # nothing moved on either side
                line.bucket, line.reason = MISSING_AT_BANK, "not in the file and not posted here; corrected earlier"
                return line
            line.bucket = MISSING_AT_BANK
            line.reason = (f"{led['kind']} {format_amount(abs(ledger_move))} posted here "
                           f"(bridge: {op['status']}), not in the bank's file")
            return line
        if op is None:
            line.bucket = UNKNOWN_TO_US
            line.reason = f"bank {row.type} {format_amount(row.amount)} on card {row.card_last4}: RRN unknown to the bridge"
        elif state != T_POSTED:
            line.bucket = UNKNOWN_TO_US
            what = "no ledger operation" if led is None else f"ledger operation {state}"
            line.reason = (f"bank {row.type} {format_amount(row.amount)} on card {row.card_last4}: "
                           f"{what} (bridge: {op['status']})")
        else:
            differs = []
            if ledger_move != bank_move:
                differs.append(f"ledger {_signed(ledger_move)} vs bank {_signed(bank_move)}")
            if (op["amount"], op["kind"]) != (row.amount, row.type):
                differs.append(f"bridge recorded {op['kind']} {format_amount(op['amount'])}, "
                               f"bank {row.type} {format_amount(row.amount)}")
            if op["last4"] != row.card_last4:
                differs.append(f"card {op['last4']} here, {row.card_last4} at the bank")
            if differs:
                line.bucket, line.reason = MISMATCHED, "; ".join(differs)
            else:
                line.reason = "matched"
        if line.bucket == MATCHED and line.booked_before:
            line.reason = "matched now; corrected earlier"
        return line

    def _propose(self, line: Line, business_date: Date, booked: dict[str, tuple[int, int]]) -> None:
        difference = line.difference
        if difference == 0:
            line.status = BOOKED_EARLIER if line.booked_before else None
            return
        count = booked.get(line.rrn, (0, 0))[1]
        key = f"recon:{business_date.isoformat()}:{line.rrn}" + (f":{count + 1}" if count else "")
        memo = f"recon {business_date.isoformat()} {line.bucket} rrn {line.rrn}"[:100]
        line.correction = Correction(key, difference, memo)
        in_doubt = line.ledger_state == T_PENDING or line.bridge_status in IN_DOUBT_AT_BRIDGE
        line.status = HELD if in_doubt else PROPOSED
        if in_doubt:
            line.reason += "; held: the operation is still in doubt"

    async def _apply(self, report: LedgerReconciliation) -> None:
        for line in report.lines:
            if line.status != PROPOSED:
                continue
            c = line.correction
            details = {"business_date": report.business_date.isoformat(), "bank_code": report.bank_code,
                       "rrn": line.rrn, "bucket": line.bucket, "operation_key": line.operation_key,
                       "bank_movement": line.bank, "ledger_movement": line.ledger}
            await self.ledger.execute(OperationRequest(
                key=c.key, kind=KIND, legs=c.legs(self.system), channel=CHANNEL, actor=self.actor,
                memo=c.memo, details=details))
            line.status = BOOKED

    # -- ledger reads -----------------------------------------------------------

    async def _ledger_movements(self, keys: list[str]) -> dict[str, dict]:
        """operation key -> kind, state and the signed bank_settlement movement
        of its legs (what posting it moves)."""
        bank = self.system["bank_settlement"]

        async def q(conn):
            found: dict[str, dict] = {}
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                for r in (await conn.execute(sa.select(operations.c.id, operations.c.idempotency_key,
                                                       operations.c.kind, operations.c.state)
                                             .where(operations.c.idempotency_key.in_(chunk)))).all():
                    found[r.idempotency_key] = {"id": r.id, "kind": r.kind, "state": r.state, "movement": 0}
            by_id = {v["id"]: v for v in found.values()}
            ids = list(by_id)
            for i in range(0, len(ids), 500):
                legs = (await conn.execute(sa.select(transfers.c.operation_id, transfers.c.debit_account_id,
                                                     transfers.c.credit_account_id, transfers.c.amount)
                                           .where(transfers.c.operation_id.in_(ids[i:i + 500]),
                                                  sa.or_(transfers.c.debit_account_id == bank,
                                                         transfers.c.credit_account_id == bank)))).all()
                for leg in legs:
                    by_id[leg.operation_id]["movement"] += leg.amount if leg.credit_account_id == bank else -leg.amount
            return found
        return await self.ledger.read(q)

    async def _corrections_booked(self, business_date: Date, *,
                                  other_days_for: list[str] | None = None) -> dict[str, tuple[int, int]]:
        """rrn -> (net bank_settlement movement, number of corrections) of the
        reconciliation operations already booked for this day; or, with
        `other_days_for`, those booked for these RRNs on any other day."""
        bank = self.system["bank_settlement"]
        today = f"recon:{business_date.isoformat()}:"
        if other_days_for is None:
            conditions = [operations.c.idempotency_key.startswith(today, autoescape=True)]
        elif not other_days_for:
            return {}
        else:
            conditions = [~operations.c.idempotency_key.startswith(today, autoescape=True),
                          sa.or_(*[sa.or_(operations.c.idempotency_key.endswith(f":{rrn}", autoescape=True),
                                          operations.c.idempotency_key.contains(f":{rrn}:", autoescape=True))
                                   for rrn in other_days_for])]
        wanted = None if other_days_for is None else set(other_days_for)

        async def q(conn):
            rows = (await conn.execute(
                sa.select(operations.c.idempotency_key, operations.c.request, transfers.c.debit_account_id,
                          transfers.c.credit_account_id, transfers.c.amount)
                .join(transfers, transfers.c.operation_id == operations.c.id)
                .where(operations.c.kind == KIND, operations.c.state == T_POSTED,
                       operations.c.idempotency_key.startswith("recon:"), *conditions))).all()
            result: dict[str, tuple[int, int]] = {}
            for r in rows:
                rrn = (r.request.get("details") or {}).get("rrn")
                if rrn is None or (wanted is not None and rrn not in wanted):
                    continue
                move = r.amount if r.credit_account_id == bank else -r.amount if r.debit_account_id == bank else 0
                total, count = result.get(rrn, (0, 0))
                result[rrn] = (total + move, count + 1)
            return result
        return await self.ledger.read(q)
