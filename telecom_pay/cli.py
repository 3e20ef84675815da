"""The `telecom-pay` command.

    telecom-pay console --msisdn 13800138000     type SMS commands, read replies (in process)
    telecom-pay agent cash-in 13800138000 100    counter and call-center operations
    telecom-pay operator fund-agent AG001 1000 --operator NAME   agent float (bounded, audited)
    telecom-pay users add NAME --role agent      a web user (prints a one-time initial password)
    telecom-pay db upgrade | db check            schema and ledger invariants
    telecom-pay prompts build DIR                the menu prompts as 8 kHz WAV files for Asterisk
    telecom-pay prompts digits SOUNDS            the words Asterisk's SAY NUMBER needs, zh and en
    telecom-pay stats --from D --to D [--json]   operations statistics per local day (read-only)
    telecom-pay run | demo | smsc-sim | handset | bank-sim   (daemon, simulators)

Everything runs against the config given with --config (default: the
embedded config/telecom-pay.toml: SQLite under ./var, in-process sessions).
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Callable

from telecom_pay import config as config_mod
from telecom_pay.commands.replies import render
from telecom_pay.money import AmountError, parse_amount
from telecom_pay.msisdn import MsisdnError, normalize
from telecom_pay.outcomes import Outcome, Result

# Subcommands provided by other packages register here (daemon, simulators).
EXTRA_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def _settings(args) -> config_mod.Settings:
    return config_mod.load(args.config)


# ------------------------------------------------------------------ console

async def _console(args) -> int:
    from telecom_pay.core import open_core
    settings = _settings(args)
    core = await open_core(settings)
    try:
        msisdn = normalize(args.msisdn, settings.region)
    except MsisdnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        await core.close()
        return 2
    pending: list[tuple[str, Result]] = []
    core.service.add_notifier(lambda m, r: pending.append((m, r)))
    interactive = sys.stdin.isatty()
    try:
        while True:
            if interactive:
                print("> ", end="", flush=True)
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            line = line.rstrip("\n")
            if not line.strip() and not interactive:
                continue
            for reply in await core.conversation.handle(msisdn, line, channel="console"):
                print(reply, flush=True)
            while pending:
                to, result = pending.pop(0)
                for text in await core.conversation.render_for(to, result):
                    print(f"[to {to}] {text}" if to != msisdn else text, flush=True)
    finally:
        await core.close()
    return 0


# ------------------------------------------------------------------ agent

def _amount(text: str) -> int:
    try:
        return parse_amount(text)
    except AmountError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _agent_entry(args):
    """Card operations need the bank (verification over ISO 8583)."""
    if args.op in ("bind-card", "unbind-card"):
        from telecom_pay.daemon import run_job

        async def job(daemon) -> int:
            svc = daemon.core.service
            if not await svc.agent_authorized(args.agent):
                result = Result(Outcome.NOT_AUTHORIZED)
            elif args.op == "bind-card":
                result = await svc.bind_card(args.msisdn, args.pan, args.expiry, channel="agent",
                                             actor=f"agent:{args.agent}")
            else:
                result = await svc.unbind_card(args.msisdn, channel="agent", actor=f"agent:{args.agent}")
            for text in render(result, args.lang):
                print(text)
            return 0 if result.ok else 1
        return run_job(args, job)
    return _agent(args)


async def _agent(args) -> int:
    from telecom_pay.core import open_core
    core = await open_core(_settings(args))
    svc, code = core.service, args.agent
    notes: list[tuple[str, Result]] = []
    svc.add_notifier(lambda m, r: notes.append((m, r)))
    try:
        op = args.op
        if op == "open":
            result = await svc.agent_open(code, args.msisdn, holder_name=args.name, id_type=args.id_type,
                                          id_number=args.id_number, language=args.lang)
        elif op == "cash-in":
            result = await svc.cash_in(code, args.msisdn, args.amount, key=args.key)
        elif op == "freeze":
            result = await svc.agent_freeze(code, args.msisdn)
        elif op == "unfreeze":
            result = await svc.agent_unfreeze(code, args.msisdn)
        elif op == "pin-reset":
            result = await svc.reset_pin(code, args.msisdn)
        elif op == "statement":
            result = await svc.agent_statement(code, args.msisdn, page=args.page, lang=args.lang)
        elif op == "balance":
            result = await svc.agent_balance(code, args.msisdn)
        elif op == "security-log":
            result = await svc.agent_security_log(code, args.msisdn)
            if result.ok:
                for e in result.params["events"]:
                    details = " ".join(f"{k}={v}" for k, v in e["details"].items())
                    print(f"{e['at']} {e['action']} channel={e['channel']} actor={e['actor']} {details}".rstrip())
                return 0
        elif op == "kyc":
            result = await svc.set_kyc_tier(code, args.msisdn, args.tier)
        elif op == "number-change":
            result = await svc.change_number(code, args.msisdn, args.new_msisdn)
        elif op == "transfer":
            result = await svc.transfer_ownership(code, args.msisdn, holder_name=args.name, id_type=args.id_type,
                                                  id_number=args.id_number)
        elif op == "cancel-number":
            result = await svc.cancel_number(code, args.msisdn)
        elif op == "handoffs":
            return await _print_handoffs(core, code, args)
        else:  # argparse prevents this
            raise SystemExit(f"unknown agent operation {op}")
        for text in render(result, args.lang):
            print(text)
        for to, note in notes:
            for text in await core.conversation.render_for(to, note):
                print(f"[SMS to {to}] {text}")
        return 0 if result.ok else 1
    finally:
        await core.close()


async def _print_handoffs(core, code: str, args) -> int:
    from telecom_pay.calls import CallLog
    if not await core.service.agent_authorized(code):
        for text in render(Result(Outcome.NOT_AUTHORIZED), args.lang):
            print(text, file=sys.stderr)
        return 1
    tz = core.service.tz
    rows = await CallLog(core.ledger).handoffs(limit=max(1, args.limit))
    for h in rows:
        at = h["at"].astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
        who = h["msisdn"] or f"withheld ({h['caller_id'] or 'no caller id'})"
        pin = "PIN checked" if h["pin_verified"] else "PIN not checked"
        print(f"{at} {who} {pin} menu={h['menu_path']} call={h['call_id']} -> {h['target']} [{h['state']}]")
    if not rows:
        print("no hand-offs yet")
    return 0


# ------------------------------------------------------------------ operator

async def _operator(args) -> int:
    from telecom_pay.core import open_core
    core = await open_core(_settings(args))
    try:
        result = await core.service.fund_agent(args.agent, args.amount, operator=args.operator, key=args.key)
        for text in render(result, args.lang):
            print(text)
        return 0 if result.ok else 1
    finally:
        await core.close()


# ------------------------------------------------------------------ users (web)

async def _users(args) -> int:
    """Staff users of the web interface. The initial password is printed
    once, here; the user must change it at the first login."""
    import getpass

    from telecom_pay.core import open_core
    from telecom_pay.webusers import UserError, WebUsers
    core = await open_core(_settings(args))
    try:
        users = WebUsers(core.ledger, core.sessions)
        if args.op == "list":
            for u in await users.list():
                due = "\tmust change password" if u.must_change_password else ""
                print(f"{u.username}\t{u.role}\t{u.agent_code or '-'}\t{u.status}{due}")
            return 0
        try:
            user, initial = await users.create(args.username, args.role, actor=f"cli:{getpass.getuser()}"[:64],
                                               actor_role="operator_cli", address="cli",
                                               agent_code=args.agent_code)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"created {user.username} ({user.role})")
        print(f"initial password (shown once; to change at the first login): {initial}")
        return 0
    finally:
        await core.close()


# ------------------------------------------------------------------ db

async def _db(args) -> int:
    from telecom_pay.ledger import schema
    settings = _settings(args)
    if args.op == "upgrade":
        schema.upgrade(settings.database_url)
        print("schema at", ", ".join(sorted(schema.current(settings.database_url))))
        return 0
    from telecom_pay.core import open_core
    core = await open_core(settings)
    try:
        problems = await core.service.check_books()
    finally:
        await core.close()
    for p in problems:
        print(p)
    print("books sound" if not problems else f"{len(problems)} problem(s)")
    return 0 if not problems else 1


# ------------------------------------------------------------------ prompts

def _langs(text: str) -> list[str]:
    from telecom_pay.menus.build import VOICES
    langs = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in langs if x not in VOICES]
    if not langs or bad:
        raise argparse.ArgumentTypeError(f"languages are a comma-separated list of {', '.join(VOICES)}")
    return langs


def _prompts(args) -> int:
    from pathlib import Path
    from telecom_pay.menus.build import BuildError, build, build_digits
    from telecom_pay.menus.prompts import DEFAULT_PROMPTS, PromptError, Prompts
    try:
        if args.op == "digits":
            report = build_digits(args.dir, langs=args.lang, resampler=args.resampler)
            print(f"{len(report.built)} built, {len(report.up_to_date)} kept ({', '.join(args.lang)}; "
                  f"SAY NUMBER and SAY DIGITS words) in {Path(args.dir) / '<lang>' / 'digits'}"
                  + (f", resampled by {report.resampler}" if report.built else ""))
            return 0
        source = Path(args.prompts) if args.prompts else DEFAULT_PROMPTS
        prompts = Prompts.load(source)
        report = build(prompts, args.dir, source_mtime=source.stat().st_mtime, langs=args.lang,
                       resampler=args.resampler)
    except (OSError, PromptError, BuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(report.built)} built, {len(report.up_to_date)} up to date "
          f"({', '.join(args.lang)}; {len(prompts.names())} prompts from {source}) in {args.dir}"
          + (f", resampled by {report.resampler}" if report.built else ""))
    return 0


# ------------------------------------------------------------------ settle

def _date(text: str):
    from datetime import date
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}")


def _settle(args) -> int:
    from telecom_pay.daemon import run_job
    from telecom_pay.money import format_amount
    from telecom_pay.settlement import Settlement, SettlementError

    async def job(daemon) -> int:
        svc = daemon.core.service
        for m in svc.settings.merchants:       # payout accounts from config, verified by the bank once
            if m.get("payout_pan"):
                from telecom_pay import accounts as acct
                merchant = await svc.ledger.read(lambda c, code=m["code"]: acct.find_merchant(c, code.upper()))
                card = await svc.ledger.read(lambda c: acct.active_card(c, merchant.id))
                pan, expiry = str(m["payout_pan"]), str(m.get("payout_expiry", ""))
                if card is None or card.last4 != pan[-4:]:
                    r = await svc.bind_merchant_account(m["code"], pan, expiry)
                    if not r.ok:
                        print(f"{m['code']}: payout account not verified ({r.outcome.value})", file=sys.stderr)
                elif svc.bank is not None:       # verified again: the issuer learns the token if it forgot
                    await svc.bank.verify_card(pan=pan, expiry=expiry, holder_msisdn="")
        settlement = Settlement(svc, delay_days=int(svc.settings.section("settlement").get("delay_days", 1)),
                                file_dir=svc.settings.section("settlement").get("file_dir", "var/settlement"))
        try:
            reports = await settlement.run(args.date, merchant_code=args.merchant)
        except SettlementError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        failed = 0
        for r in reports:
            print(f"{r.business_date} {r.merchant_code}: payments {r.payments} gross {format_amount(r.gross)} "
                  f"refunds {format_amount(r.refunds)} fees {format_amount(r.fees)} "
                  f"fee refunds {format_amount(r.fee_refunds)} carried in {format_amount(r.carried_in)} "
                  f"net {format_amount(r.net)} "
                  f"-> {r.state}{' ' + r.payout_ref if r.payout_ref else ''} ({r.note})")
            failed += r.state == "failed"
        return 1 if failed else 0
    return run_job(args, job)


# ------------------------------------------------------------------ stats

async def _stats(args) -> int:
    """Read-only: the database is opened without the service (nothing
    seeded, no schema upgrade), and read in one snapshot."""
    import json
    from zoneinfo import ZoneInfo

    from telecom_pay import stats
    from telecom_pay.business_time import business_day
    from telecom_pay.ledger.database import open_database
    from telecom_pay.ledger.ledger import Ledger, utcnow
    settings = _settings(args)
    tz = ZoneInfo(settings.timezone)
    today = business_day(utcnow(), tz)
    first, last = args.from_ or today, args.to or args.from_ or today
    try:
        stats.check_range(first, last)
    except stats.StatsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ledger = Ledger(open_database(settings.database_url))
    try:
        report = await stats.statistics(ledger, first, last, tz)
    finally:
        await ledger.close()
        await ledger.db.dispose()
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    from telecom_pay.money import format_amount
    print(f"statistics {report['from']} to {report['to']} ({report['timezone']}); amounts in major units")
    for r in stats.flat_rows(report):
        money = "" if r["amount"] == "" else f"\tamount {format_amount(r['amount'])}"
        fee = "" if r["fee"] == "" else f"\tfee {format_amount(r['fee'])}"
        print(f"{r['date']}\t{r['figure']}\t{r['item']}\t{r['count']}{money}{fee}")
    return 0


# ------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="telecom-pay", description="SMS/USSD/IVR micro-payment platform")
    p.add_argument("--config", help="TOML config (default: the embedded config/telecom-pay.toml)")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("console", help="type SMS commands as a subscriber, in process")
    c.add_argument("--msisdn", required=True)
    c.set_defaults(run=_console)

    a = sub.add_parser("agent", help="counter and call-center operations")
    a.add_argument("--agent", default="AG001", help="agent code (default AG001)")
    a.add_argument("--lang", default="en", choices=["en", "zh"])
    ops = a.add_subparsers(dest="op", required=True)
    o = ops.add_parser("open", help="open an account for a caller with ID data")
    o.add_argument("msisdn")
    o.add_argument("--name", required=True)
    o.add_argument("--id-type", default="ID")
    o.add_argument("--id-number", required=True)
    ci = ops.add_parser("cash-in", help="cash at the counter, paid from the agent's float")
    ci.add_argument("msisdn")
    ci.add_argument("amount", type=_amount)
    ci.add_argument("--key", help="idempotency key (a receipt number): the same key never books twice")
    for name, helptext in (("freeze", "freeze an account"), ("unfreeze", "unfreeze an account"),
                           ("pin-reset", "issue a new PIN by SMS and lift the lock"),
                           ("balance", "show a balance"), ("cancel-number", "the number was cancelled"),
                           ("security-log", "wrong PINs, lockouts, freezes and alerts, newest first")):
        x = ops.add_parser(name, help=helptext)
        x.add_argument("msisdn")
    st = ops.add_parser("statement", help="last transactions")
    st.add_argument("msisdn")
    st.add_argument("--page", type=int, default=1)
    k = ops.add_parser("kyc", help="set the KYC tier")
    k.add_argument("msisdn")
    k.add_argument("tier", type=int)
    nc = ops.add_parser("number-change", help="move the account to a new number")
    nc.add_argument("msisdn")
    nc.add_argument("new_msisdn")
    t = ops.add_parser("transfer", help="ownership transfer: close and reopen for a new holder")
    t.add_argument("msisdn")
    t.add_argument("--name", required=True)
    t.add_argument("--id-type", default="ID")
    t.add_argument("--id-number", required=True)
    bc = ops.add_parser("bind-card", help="bind (or change) the account's bank card after the bank verifies it")
    bc.add_argument("msisdn")
    bc.add_argument("pan")
    bc.add_argument("expiry", help="YYMM")
    ub = ops.add_parser("unbind-card", help="unbind the account's bank card")
    ub.add_argument("msisdn")
    ho = ops.add_parser("handoffs", help="callers the IVR handed to an agent, newest first: who, where in the "
                                         "menu, whether the PIN was checked")
    ho.add_argument("--limit", type=int, default=20)
    a.set_defaults(run=_agent_entry)

    op = sub.add_parser("operator", help="operations staff: agent float")
    op_ops = op.add_subparsers(dest="op", required=True)
    f = op_ops.add_parser("fund-agent", help="put cash float on an agent's account (bounded by config, audited)")
    f.add_argument("agent")
    f.add_argument("amount", type=_amount)
    f.add_argument("--operator", required=True, help="who does it (recorded in the audit log)")
    f.add_argument("--key", help="idempotency key (a voucher number): the same key never books twice")
    f.add_argument("--lang", default="en", choices=["en", "zh"])
    op.set_defaults(run=_operator)

    from telecom_pay.webusers import STAFF_ROLES
    u = sub.add_parser("users", help="web interface users: agents, supervisors, operations admins")
    u_ops = u.add_subparsers(dest="op", required=True)
    ua = u_ops.add_parser("add", help="create a user; prints its one-time initial password")
    ua.add_argument("username")
    ua.add_argument("--role", required=True, choices=STAFF_ROLES)
    ua.add_argument("--agent-code", help="the agent's float account code (required for --role agent)")
    u_ops.add_parser("list", help="the web users and their roles")
    u.set_defaults(run=_users)

    d = sub.add_parser("db", help="database schema and checks")
    d.add_argument("op", choices=["upgrade", "check"])
    d.set_defaults(run=_db)

    pr = sub.add_parser("prompts", help="the menu prompts as sound files for Asterisk")
    pr_ops = pr.add_subparsers(dest="op", required=True)
    pb = pr_ops.add_parser("build", help="speak every prompt with espeak-ng into DIR/<lang>/<name>.wav "
                                         "(8 kHz 16-bit mono); prompts older than their file are kept")
    pb.add_argument("dir", help="e.g. /var/lib/asterisk/sounds/telecom-pay")
    pb.add_argument("--prompts", help="prompts file (default: the embedded config/prompts.toml)")
    pd = pr_ops.add_parser("digits", help="speak the words Asterisk's SAY NUMBER / SAY DIGITS play into "
                                          "SOUNDS/<lang>/digits/ (a file already there in any format is kept)")
    pd.add_argument("dir", metavar="SOUNDS", help="Asterisk's sounds directory, e.g. /var/lib/asterisk/sounds")
    for x in (pb, pd):
        x.add_argument("--lang", type=_langs, default=["zh", "en"], help="comma-separated (default zh,en)")
        x.add_argument("--resampler", choices=["auto", "sox", "python"], default="auto",
                       help="22,050 to 8,000 Hz by sox if installed (auto), or by the built-in filter")
    pr.set_defaults(run=_prompts)

    se = sub.add_parser("settle", help="merchant settlement for a business day (T+1), paid through the bank")
    se.add_argument("--date", type=_date, required=True)
    se.add_argument("--merchant", help="only this merchant code")
    se.set_defaults(run=_settle)

    sx = sub.add_parser("stats", help="operations statistics per local business day and for the range")
    sx.add_argument("--from", dest="from_", type=_date, metavar="YYYY-MM-DD", help="first day (default today)")
    sx.add_argument("--to", type=_date, metavar="YYYY-MM-DD", help="last day, included (default: the first)")
    sx.add_argument("--json", action="store_true", help="the figures as JSON (as GET /api/v1/stats)")
    sx.set_defaults(run=_stats)

    for name, (helptext, configure, runner) in EXTRA_COMMANDS.items():
        x = sub.add_parser(name, help=helptext)
        configure(x)
        x.set_defaults(run=runner)
    return p


def _load_extra_commands() -> None:
    """The daemon and simulators add their subcommands when installed."""
    import importlib
    for module in ("telecom_pay.daemon", "simulators.smsc.cli", "simulators.bank.cli", "bank_bridge.cli",
                   "telecom_pay.risk.cli", "telecom_pay.merchants.cli"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def _config_first(argv: list[str]) -> list[str]:
    """`--config FILE` is accepted anywhere (`telecom-pay run --config x.toml`)."""
    front, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--config" and i + 1 < len(argv):
            front += argv[i:i + 2]
            i += 2
        elif argv[i].startswith("--config="):
            front.append(argv[i])
            i += 1
        else:
            rest.append(argv[i])
            i += 1
    return front + rest


def main(argv: list[str] | None = None) -> int:
    # Before anything can import twisted.internet.reactor: the daemon, the
    # simulators and the handset all run Twisted on the asyncio loop.
    from telecom_pay.daemon import install_asyncio_reactor
    install_asyncio_reactor()
    _load_extra_commands()
    args = build_parser().parse_args(_config_first(sys.argv[1:] if argv is None else list(argv)))
    try:
        result = args.run(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except config_mod.ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Plug-ins register into the imported module `telecom_pay.cli`, not into
    # this `__main__` copy: run that one.
    from telecom_pay.cli import main as _main
    sys.exit(_main())
