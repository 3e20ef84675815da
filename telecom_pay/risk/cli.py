"""`telecom-pay risk list|release|refuse|review`: the review of /ops/risk
from a shell (the same PaymentService.decide_risk_case: one transaction,
audited as the operator named, decided once). The SMS to the payer is
queued in the outbox with the decision; the running daemon sends it."""
from __future__ import annotations

import argparse
import getpass
import json
import sys

from telecom_pay.cli import EXTRA_COMMANDS, _settings
from telecom_pay.money import format_amount


def _configure(p: argparse.ArgumentParser) -> None:
    ops = p.add_subparsers(dest="op", required=True)
    ls = ops.add_parser("list", help="open cases (held and alerts), oldest first; --all adds decided ones")
    ls.add_argument("--all", action="store_true")
    ls.add_argument("--json", action="store_true", help="as GET /api/v1/ops/risk")
    for name, helptext in (("release", "pay a held operation"), ("refuse", "void a held operation: the money "
                                                                            "is free again"),
                           ("review", "close an alert as reviewed")):
        x = ops.add_parser(name, help=helptext)
        x.add_argument("case_id", type=int)
        x.add_argument("--reason", required=True, help="why (recorded in the audit log)")
        x.add_argument("--operator", default=None, help="who decides (default: the login name)")


def _line(c: dict) -> str:
    decided = f"\t{c['decided_by']}: {c['reason']}" if c["decided_by"] else ""
    return (f"{c['case_id']}\t{c['status']}\t{c['operation']} {c['ref']}\t{format_amount(c['amount'])}\t"
            f"{','.join(c['rules'])}\t{c['payer']} -> {c['payee']}\t{c['created_at'][:19]}{decided}")


async def _risk(args) -> int:
    from telecom_pay.core import open_core
    from telecom_pay.service.risk_review import Reviewer, RiskCaseError
    core = await open_core(_settings(args))
    try:
        svc = core.service
        if args.op == "list":
            cases = await svc.risk_cases(open_only=not args.all)
            if args.json:
                print(json.dumps(cases, ensure_ascii=False, indent=2))
                return 0
            for c in cases["open"] + cases["decided"]:
                print(_line(c))
            if not cases["open"]:
                print("no open cases")
            return 0
        who = (args.operator or f"cli:{getpass.getuser()}")[:64]
        try:
            case = await svc.decide_risk_case(args.case_id, args.op, reason=args.reason,
                                              by=Reviewer(who, "operator_cli", "cli", channel="operator"))
        except RiskCaseError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 1
        print(_line(case))
        return 0
    finally:
        await core.close()


EXTRA_COMMANDS["risk"] = ("risk and AML cases: list them, release, refuse or close as reviewed", _configure, _risk)
