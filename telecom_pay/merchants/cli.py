"""`telecom-pay merchants add|list|show|rotate-key|set|add-user`: merchant
onboarding and management from a shell, the same directory functions as
/ops/merchants (verified by the bank, one transaction, audited as the
operator named). The API secret and a new user's password are printed once."""
from __future__ import annotations

import argparse
import getpass
import json
import sys

from telecom_pay.cli import EXTRA_COMMANDS
from telecom_pay.merchants.tables import CATEGORIES, REFUND_POLICIES, REVIEWED


def _configure(p: argparse.ArgumentParser) -> None:
    from telecom_pay.webusers import MERCHANT_ROLES
    ops = p.add_subparsers(dest="op", required=True)
    add = ops.add_parser("add", help="onboard a merchant: its settlement account is verified by the bank first")
    add.add_argument("code", help="the merchant code subscribers type (2-16 letters or digits)")
    add.add_argument("--name", required=True, help="the name in Chinese")
    add.add_argument("--name-en", default="", help="the name in English")
    add.add_argument("--category", required=True, choices=CATEGORIES)
    add.add_argument("--refund-policy", default=REVIEWED, choices=REFUND_POLICIES,
                     help="API refunds: reviewed by a merchant admin (default) or automatic")
    add.add_argument("--fee-per-mille", type=int, help="the merchant's fee plan (default: [fees.payment])")
    add.add_argument("--fee-fixed", type=int, help="fen per payment")
    add.add_argument("--fee-min", type=int, help="fen")
    add.add_argument("--fee-max", type=int, help="fen")
    add.add_argument("--notify-url", help="the default callback URL for its payments")
    add.add_argument("--payout-pan", required=True, help="the settlement account (card or account number)")
    add.add_argument("--payout-expiry", required=True, help="its expiry, YYMM")
    add.add_argument("--no-api-key", action="store_true", help="a merchant paid only by ZF, without the SP API")
    add.add_argument("--admin-user", help="also create this merchant admin web user (password printed once)")
    add.add_argument("--operator", help="who onboards (recorded in the audit log; default: the login name)")
    ls = ops.add_parser("list", help="the merchants and their profiles")
    ls.add_argument("--json", action="store_true")
    sh = ops.add_parser("show", help="one merchant's profile")
    sh.add_argument("code")
    rk = ops.add_parser("rotate-key", help="a new API key (the old one stops at once); the secret is printed once")
    rk.add_argument("code")
    rk.add_argument("--operator")
    st = ops.add_parser("set", help="change a profile")
    st.add_argument("code")
    st.add_argument("--status", choices=["active", "disabled"])
    st.add_argument("--refund-policy", choices=REFUND_POLICIES)
    st.add_argument("--category", choices=CATEGORIES)
    st.add_argument("--notify-url")
    st.add_argument("--operator")
    au = ops.add_parser("add-user", help="a web user of the merchant's back office")
    au.add_argument("code")
    au.add_argument("username")
    au.add_argument("--role", required=True, choices=MERCHANT_ROLES)
    au.add_argument("--operator")


def _fee_plan(args) -> dict | None:
    plan = {k: getattr(args, f"fee_{k}") for k in ("fixed", "per_mille", "min", "max")
            if getattr(args, f"fee_{k}") is not None}
    return plan or None


def _line(p) -> str:
    return (f"{p.code}\t{p.status}\t{p.category}\t{p.refund_policy}\t{p.api_key_id or '-'}\t"
            f"{p.name} / {p.name_en}")


def _who(args) -> str:
    return (getattr(args, "operator", None) or f"cli:{getpass.getuser()}")[:64]


async def _create_user(core, code: str, username: str, role: str, who: str) -> int:
    from telecom_pay.webusers import UserError, WebUsers
    try:
        user, initial = await WebUsers(core.ledger, core.sessions).create(
            username, role, actor=who, actor_role="operator_cli", address="cli", merchant_code=code)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"created {user.username} ({user.role} of {code.upper()})")
    print(f"initial password (shown once; to change at the first login): {initial}")
    return 0


def _merchants(args):
    if args.op == "add":
        return _add(args)
    return _manage(args)


def _add(args) -> int:
    """Onboarding needs the bank (the settlement account is verified over ISO 8583)."""
    from telecom_pay.daemon import run_job
    from telecom_pay.merchants.directory import MerchantError, onboard

    async def job(daemon) -> int:
        core = daemon.core
        try:
            done = await onboard(core.service, code=args.code, name=args.name, name_en=args.name_en,
                                 category=args.category, refund_policy=args.refund_policy,
                                 fee_plan=_fee_plan(args), notify_url=args.notify_url,
                                 payout_pan=args.payout_pan, payout_expiry=args.payout_expiry,
                                 actor=_who(args), channel="operator", with_api_key=not args.no_api_key)
        except MerchantError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        p = done.profile
        print(f"onboarded {p.code} ({p.name} / {p.name_en}), settlement account ****{done.last4}")
        if done.secret:
            print(f"API key id: {p.api_key_id}")
            print(f"API secret (shown once; give it to the merchant over a safe channel): {done.secret}")
        if args.admin_user:
            return await _create_user(core, p.code, args.admin_user, "merchant_admin", _who(args))
        return 0
    return run_job(args, job)


async def _manage(args) -> int:
    from telecom_pay.cli import _settings
    from telecom_pay.core import open_core
    from telecom_pay.merchants import directory
    core = await open_core(_settings(args))
    try:
        svc = core.service
        if args.op in ("list", "show"):
            rows = await svc.ledger.read(directory.list_profiles)
            if args.op == "show":
                rows = [p for p in rows if p.code == args.code.upper()]
                if not rows:
                    print(f"error: no merchant has the code {args.code.upper()}", file=sys.stderr)
                    return 1
                print(json.dumps(rows[0].public(), ensure_ascii=False, indent=2))
                return 0
            if args.json:
                print(json.dumps([p.public() for p in rows], ensure_ascii=False, indent=2))
            else:
                for p in rows:
                    print(_line(p))
            return 0
        try:
            if args.op == "rotate-key":
                key_id, secret = await directory.rotate_key(svc, args.code, actor=_who(args), channel="operator")
                print(f"API key id: {key_id}")
                print(f"API secret (shown once): {secret}")
                return 0
            if args.op == "set":
                changes = {k: v for k, v in (("status", args.status), ("refund_policy", args.refund_policy),
                                             ("category", args.category), ("notify_url", args.notify_url))
                           if v is not None}
                if not changes:
                    print("error: nothing to change", file=sys.stderr)
                    return 1
                print(_line(await directory.update_profile(svc, args.code, actor=_who(args), channel="operator",
                                                           **changes)))
                return 0
            if args.op == "add-user":
                return await _create_user(core, args.code, args.username, args.role, _who(args))
        except directory.MerchantError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 2
    finally:
        await core.close()


EXTRA_COMMANDS["merchants"] = ("merchants and SPs: onboard, list, rotate the API key, change, add back-office users",
                               _configure, _merchants)
