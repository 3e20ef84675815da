"""`telecom-pay handset call 13800138000 --keys 1,2#,123456#`: a simulated
phone calls the IVR through the FastAGI server (as Asterisk would), prints
every prompt heard and exits 0 when the call ends (1 when it did not end in
time, 2 when no server answered). Joined to the `handset` command of
simulators/smsc/cli.py."""
from __future__ import annotations

import argparse
import sys

DEFAULT_AGI = "tcp:127.0.0.1:4573"


def add_call_parser(ops) -> None:
    c = ops.add_parser("call", help="call the IVR (FastAGI) and press keys from a script")
    c.add_argument("msisdn", help="the caller id ('unknown' for a withheld number)")
    c.add_argument("--agi", default=DEFAULT_AGI, help=f"FastAGI server (default {DEFAULT_AGI})")
    c.add_argument("--keys", default="", help="one entry per input step, comma separated: 1,2#,123456# "
                                                "(empty or - = silence, h = hang up)")
    c.add_argument("--hangup-at", type=int, help="hang up while the Nth AGI command runs")
    c.add_argument("--hangup-after-keys", type=int, help="hang up right after the Kth key entry")
    c.add_argument("--drop-at", type=int, help="drop the TCP connection at the Nth command")
    c.add_argument("--drop-after-keys", type=int, help="drop the TCP connection right after the Kth key entry")
    c.add_argument("--garbage-every", type=int, default=0, help="a garbage line before every Nth answer")
    c.add_argument("--slow", type=float, default=0.0, help="seconds before each answer")
    c.add_argument("--arg", action="append", default=[], help="agi_arg_N (repeatable), e.g. callback")
    c.add_argument("--timeout", type=float, default=60.0, help="seconds the whole call may take")
    c.add_argument("--verbose", action="store_true", help="also print the AGI commands")


def parse_keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",")] if text else []


def run_call(args: argparse.Namespace) -> int:
    from twisted.internet import error, task

    from simulators.asterisk.caller import CallScript, place_call
    from telecom_pay.aio import as_deferred
    from telecom_pay.daemon import install_asyncio_reactor
    install_asyncio_reactor()
    script = CallScript(keys=parse_keys(args.keys), hangup_at=args.hangup_at,
                        hangup_after_keys=args.hangup_after_keys, close_at=args.drop_at,
                        drop_after_keys=args.drop_after_keys,
                        garbage_every=args.garbage_every, slow=args.slow)
    msisdn = None if args.msisdn.lower() in ("unknown", "anonymous", "") else args.msisdn
    status = {"code": 0}

    line: list[str] = []
    last = {"kind": None}

    def flush():
        if line:
            print(" ".join(line), flush=True)
            line.clear()

    def event(kind, text):
        """What is heard goes on one line per screen; keys on their own line."""
        if kind == "heard":
            if last["kind"] == "pressed":
                print(flush=True)
            line.append(text)
        else:
            if last["kind"] != "pressed":
                flush()
                print("> ", end="", flush=True)
            print(text or "(silence)", end="", flush=True)
        last["kind"] = kind

    async def main(reactor):
        try:
            call = await place_call(reactor, args.agi, msisdn, script, args=tuple(args.arg),
                                    timeout=args.timeout, on_event=event)
        except (ConnectionRefusedError, error.ConnectionRefusedError, error.ConnectError):
            print(f"no FastAGI server at {args.agi} (start one with `make run`)", file=sys.stderr)
            status["code"] = 2
            return
        except TimeoutError as exc:
            print(str(exc), file=sys.stderr)
            status["code"] = 1
            return
        except Exception as exc:
            print(f"error: {exc!r}", file=sys.stderr)
            status["code"] = 2
            return
        if last["kind"] == "pressed":
            print(flush=True)
        flush()
        if args.verbose:
            for c in call.commands:
                print(f"  > {c}", file=sys.stderr)
        if call.variables.get("TP_TRANSFER"):
            print(f"(transferred to {call.variables['TP_TRANSFER']})", flush=True)
        who = {"caller": "the caller hung up", "platform": "the IVR hung up"}.get(call.hung_up_by or "",
                                                                                   "the IVR ended the AGI")
        print(f"(call ended: {who}; TP_RESULT={call.variables.get('TP_RESULT', '')})", flush=True)

    try:
        task.react(lambda reactor: as_deferred(main(reactor)))
    except SystemExit as exc:
        if exc.code not in (0, None) and not status["code"]:
            return int(exc.code) if isinstance(exc.code, int) else 1
    return status["code"]
