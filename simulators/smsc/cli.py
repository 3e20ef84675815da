"""CLI for the SMSC simulator and its handsets:

    telecom-pay smsc-sim                          the simulator alone
    telecom-pay handset send 13800138000 KT [--expect A] [--timeout 10]
    telecom-pay handset chat 13800138000          type SMS, see replies
    telecom-pay handset dial 13800138000 '*188#'  dial, then answer each page
    telecom-pay handset dial 13800138000 '*188#' --keys 1,2,100,123456
                                                  answer from a script; exit 0 when the
                                                  session ends, 1 on a timeout
    (`handset ussd` is the same as `handset dial`)
    telecom-pay handset inbox 13800138000
    telecom-pay handset call 13800138000 --keys 1,2#,123456#   (simulators/asterisk/cli.py)

`handset` talks to a running simulator's control API (default
http://127.0.0.1:8025, as `telecom-pay demo` starts it).
"""
from __future__ import annotations

import argparse
import asyncio
import sys

from telecom_pay import config as config_mod
from telecom_pay.aio import as_deferred, wait_deferred
from telecom_pay.cli import EXTRA_COMMANDS

DEFAULT_CONTROL = "http://127.0.0.1:8025"


def _configure_sim(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smpp", default=None, help="SMPP endpoint (default from [demo] smsc_smpp)")
    p.add_argument("--http", default=None, help="control API endpoint (default from [demo] smsc_http)")
    p.add_argument("--no-message-reference", action="store_true",
                   help="handsets send no TP-MR (user_message_reference), as most real SMSCs pass none on")


def _sim(args) -> int:
    from telecom_pay.daemon import _start_logging, install_asyncio_reactor, run_until_stopped
    from simulators.smsc.config import SmscConfig
    from simulators.smsc.simulator import SmscSimulator
    reactor = install_asyncio_reactor()
    _start_logging("info")
    settings = config_mod.load(args.config)
    demo = settings.section("demo")
    sim_config = dict(settings.section("smsc_sim"))
    if args.no_message_reference:
        sim_config["message_reference"] = False
    smsc = SmscSimulator(SmscConfig.from_mapping(sim_config), reactor)

    async def start():
        smpp = args.smpp or demo.get("smsc_smpp", "tcp:2775:interface=127.0.0.1")
        http = args.http or demo.get("smsc_http", "tcp:8025:interface=127.0.0.1")
        await wait_deferred(smsc.listen(smpp))
        await wait_deferred(smsc.listen_http(http))
        for msisdn in demo.get("handsets", []):
            smsc.handset(str(msisdn))
        print(f"SMSC simulator: SMPP {smpp}, control API {http}", flush=True)
        print("ready", flush=True)
    return run_until_stopped(reactor, lambda: as_deferred(start()), smsc.stop)


def _configure_handset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", default=DEFAULT_CONTROL, help=f"simulator control API (default {DEFAULT_CONTROL})")
    ops = p.add_subparsers(dest="op", required=True)
    s = ops.add_parser("send", help="send one SMS and print the replies")
    s.add_argument("msisdn")
    s.add_argument("text")
    s.add_argument("--expect", help="exit 1 unless a reply contains this text")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for replies")
    s.add_argument("--quiet-after", type=float, default=1.0,
                   help="stop this long after the last reply (default 1 s)")
    c = ops.add_parser("chat", help="interactive: type SMS, see replies")
    c.add_argument("msisdn")
    for name in ("dial", "ussd"):
        u = ops.add_parser(name, help="dial a USSD code, then answer each page (interactively or --keys)")
        u.add_argument("msisdn")
        u.add_argument("code", nargs="?", default="*188#")
        u.add_argument("--keys", help="comma-separated answers, one per page (e.g. 1,2,100,123456)")
        u.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each page")
    i = ops.add_parser("inbox", help="print a handset's inbox")
    i.add_argument("msisdn")
    from simulators.asterisk.cli import add_call_parser
    add_call_parser(ops)


def _handset(args) -> int:
    if args.op == "call":
        from simulators.asterisk.cli import run_call
        return run_call(args)
    from twisted.internet import task
    from telecom_pay.daemon import install_asyncio_reactor
    install_asyncio_reactor()
    from simulators.smsc.control import ControlError, SmscControl
    control = SmscControl(args.control)
    status = {"code": 0}

    async def send_and_collect(msisdn: str, text: str, timeout: float, quiet_after: float) -> list[str]:
        sent = await wait_deferred(control.send_mo(msisdn, text, wait=timeout))
        index = sent.get("inbox_index", 0)
        replies: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                break
            wait = min(left, quiet_after) if replies else left
            data = await wait_deferred(control.inbox(msisdn, since=index, wait=wait))
            if not data["inbox"]:
                if replies:
                    break
                continue
            for m in data["inbox"]:
                replies.append(m["text"])
                print(m["text"], flush=True)
            index = data["next"]
        return replies

    from telecom_pay.commands.redaction import redact_menu_input

    async def dial(msisdn: str, code: str, keys: str | None, timeout: float) -> int:
        """Prints every page; 0 once the session ends (or the script is
        done: the phone hangs up), 1 when a page does not come in time or
        the network timed the session out."""
        script = None if keys is None else [k.strip() for k in keys.split(",")]
        loop = asyncio.get_running_loop()
        answer = code
        first = True
        while True:
            try:
                screen = await wait_deferred(control.ussd(msisdn, answer, wait=timeout, dial=first,
                                                                answer=not first))
            except ControlError as exc:
                if exc.code == 409 and not first:
                    # the session ended while we were reading its page (the network released it)
                    screens = (await wait_deferred(control.ussd_screens(msisdn)))["screens"]
                    screen = screens[-1] if screens else {"ended": True}
                elif exc.code == 504:
                    print(f"(no page within {timeout:g} s)", file=sys.stderr, flush=True)
                    await wait_deferred(control.ussd_hangup(msisdn))
                    return 1
                else:
                    raise
            first = False
            print(screen.get("text", ""), flush=True)
            if screen.get("ended"):
                if screen.get("reason") == "timeout":
                    print("(the network timed the session out)", file=sys.stderr, flush=True)
                    return 1
                return 0
            if script is not None:
                if not script:
                    await wait_deferred(control.ussd_hangup(msisdn))
                    return 0
                answer = script.pop(0)
                print(f"> {redact_menu_input(answer)}", flush=True)        # a PIN is not echoed
            else:
                print("> ", end="", flush=True)
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    await wait_deferred(control.ussd_hangup(msisdn))
                    return 0
                answer = line.strip()
            print("-" * 20, flush=True)

    async def main():
        try:
            if args.op == "send":
                replies = await send_and_collect(args.msisdn, args.text, args.timeout, args.quiet_after)
                if not replies:
                    print("(no reply)", file=sys.stderr)
                if args.expect is not None and not any(args.expect in r for r in replies):
                    print(f"no reply contains {args.expect!r}", file=sys.stderr)
                    status["code"] = 1
            elif args.op == "inbox":
                data = await wait_deferred(control.inbox(args.msisdn))
                for m in data["inbox"]:
                    print(m.get("received_at", ""), m["text"])
            elif args.op == "chat":
                loop = asyncio.get_running_loop()
                while True:
                    print("> ", end="", flush=True)
                    line = await loop.run_in_executor(None, sys.stdin.readline)
                    if not line:
                        break
                    if line.strip():
                        await send_and_collect(args.msisdn, line.rstrip("\n"), 10.0, 1.0)
            elif args.op in ("dial", "ussd"):
                status["code"] = await dial(args.msisdn, args.code, args.keys, args.timeout)
        except ControlError as exc:
            print(f"simulator refused: {exc}", file=sys.stderr)
            status["code"] = 2
        except ConnectionRefusedError:
            print(f"no simulator at {args.control} (start one with `make run`)", file=sys.stderr)
            status["code"] = 2
        except Exception as exc:  # connection problems and the like: say so, no traceback
            print(f"error: {exc!r}", file=sys.stderr)
            status["code"] = 2

    try:
        task.react(lambda reactor: as_deferred(main()))
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code)
    return status["code"]


EXTRA_COMMANDS["smsc-sim"] = ("the SMSC simulator alone", _configure_sim, _sim)
EXTRA_COMMANDS["handset"] = ("a simulated phone: send SMS, dial USSD, read the inbox", _configure_handset, _handset)
