"""`telecom-pay reconcile`: the platform's books against a bank's end-of-day
settlement file.

    telecom-pay reconcile --date 2026-11-23 --file var/settlement/settlement-simbank-2026-11-23.csv
    telecom-pay reconcile --date 2026-11-23 --file F --apply     book the proposed corrections
    telecom-pay reconcile --date 2026-11-23 --file F --json      machine-readable report

Reads the database only: the bank is not contacted. Exit status 0 when
everything matched or every correction is booked, 1 when discrepancies
remain unbooked, 2 on a bad file or bad arguments.

`telecom-pay bank`: operations whose bank outcome is open (bank_bridge/review.py).

    telecom-pay bank in-doubt [--json]         open reversals; state "review" waits for an operator
    telecom-pay bank resolve KEY --outcome approved|declined --by NAME --reason TEXT

`resolve` records the decision with an audit row, then posts (approved) or
voids (declined) the ledger operation and settles its payout batch. Exit
status 0 when done, 1 when the operation is not in review, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from telecom_pay import config as config_mod
from telecom_pay.cli import EXTRA_COMMANDS


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}")


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", type=_date, required=True, help="the business day of the file (YYYY-MM-DD)")
    p.add_argument("--file", required=True, help="the bank's settlement file (CSV)")
    p.add_argument("--bank", help="bank code (default: the only bank in [bank] banks)")
    p.add_argument("--apply", action="store_true",
                   help="book the proposed corrections through the suspense account (idempotent)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _bank_code(settings: config_mod.Settings, wanted: str | None) -> str:
    codes = [str(b.get("code")) for b in settings.section("bank").get("banks", [])]
    if wanted:
        if codes and wanted not in codes:
            raise config_mod.ConfigError(f"bank {wanted!r} is not configured (banks: {', '.join(codes)})")
        return wanted
    if len(codes) != 1:
        raise config_mod.ConfigError("name the bank with --bank" + (f" (one of {', '.join(codes)})" if codes
                                                                    else ": [bank] lists no banks"))
    return codes[0]


async def _reconcile(args) -> int:
    from bank_bridge.ledger_reconciliation import Reconciler
    from bank_bridge.reconciliation import SettlementFileError, parse_settlement_file
    from bank_bridge.store import BankStore
    from telecom_pay.core import open_core

    settings = config_mod.load(args.config)
    bank_code = _bank_code(settings, args.bank)
    try:
        tz = ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise config_mod.ConfigError(f"platform.timezone {settings.timezone!r}: {exc}") from exc
    try:
        with open(args.file, encoding="utf-8", newline="") as fh:
            text = fh.read()
        rows = parse_settlement_file(text, business_date=args.date)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    except SettlementFileError as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 2
    core = await open_core(settings)
    try:
        reconciler = Reconciler(core.ledger, BankStore(core.ledger.db.read), core.service.system, tz=tz)
        report = await reconciler.run(rows, bank_code=bank_code, business_date=args.date, apply=args.apply)
    finally:
        await core.close()
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    else:
        print(report.render())
    return report.exit_status


def _configure_bank(p: argparse.ArgumentParser) -> None:
    ops = p.add_subparsers(dest="op", required=True)
    listing = ops.add_parser("in-doubt", help="operations whose bank outcome is open (review: an operator decides)")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    r = ops.add_parser("resolve", help="record what the bank says happened to an operation in review")
    r.add_argument("key", help="the operation key (see bank in-doubt)")
    r.add_argument("--outcome", required=True, choices=["approved", "declined"],
                   help="approved: the bank holds the original as done; declined: no money moved or it was reversed")
    r.add_argument("--by", required=True, help="who decided (recorded in the audit row)")
    r.add_argument("--reason", required=True, help="why, e.g. the bank's confirmation reference")


async def _bank(args) -> int:
    from bank_bridge import review
    from bank_bridge.store import BankStore
    from telecom_pay.core import open_core

    core = await open_core(config_mod.load(args.config))
    try:
        store = BankStore(core.ledger.db.write)
        if args.op == "in-doubt":
            rows = await review.in_doubt(store)
            if args.json:
                print(json.dumps([{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
                                  for r in rows], ensure_ascii=False, indent=2))
            else:
                for r in rows:
                    print(f"{r['operation_key']}  {r['state']:<12} {r['kind']:<6} {r['amount']:>12} "
                          f"card *{r['last4']} rrn {r['rrn']} attempts {r['attempts']} "
                          f"last answer {r['response_code'] or '-'}")
                print(f"{len(rows)} open, {sum(r['state'] == 'review' for r in rows)} in review")
            return 0
        try:
            row = await review.resolve(store, core.service, args.key, outcome=args.outcome, actor=args.by,
                                       reason=args.reason)
        except review.ReviewError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        rec = await core.ledger.get_operation(args.key)
        print(f"{args.key}: {row['outcome']} by {row['actor']}; ledger operation {rec.state if rec else 'none'}")
        return 0
    finally:
        await core.close()


EXTRA_COMMANDS["bank"] = ("bank operations in doubt: list them, record a manual decision", _configure_bank, _bank)
EXTRA_COMMANDS["reconcile"] = ("compare the books with a bank's settlement file; propose or book corrections",
                               _configure, _reconcile)
