"""An Asterisk Manager Interface (AMI) server that the asterisk-ami client
logs into, for tests and for testers without an Asterisk.

It speaks what the platform uses of a real Asterisk (22): the
`Asterisk Call Manager/…` banner, Login (a wrong secret is answered with
an error and the connection closed, as Asterisk does), Ping, Logoff, and
Originate with `Async: true`: "successfully queued" at once, then, after
the ring time, Newchannel, OriginateResponse (Success, Reason 4 when
answered; Failure with Reason 5 busy / 3 no answer) and, when the call
ends, Hangup with Cause and Cause-txt.

What an answered call does is injected (`dial`): the real one places a
call into the platform's FastAGI server with the caller simulator
(simulators/asterisk/caller.py), as the call-back context would run
`AGI(agi://HOST:4573/ivr,callback)`; without one, a call just lasts
`call_seconds`.

Faults a tester switches: drop every client (`disconnect_all`), refuse the
next Originates (`refuse_originates`), slow answers (`answer_delay`, before
every response), a ring time (`ring_seconds`), the callee's answer
(`outcome`: answer | busy | no_answer), and a switch still starting
(`fully_booted` False: no FullyBooted event until `boot()`).

The framing (bytes in, messages out; messages to bytes) is pure functions;
the Protocol only moves bytes.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from twisted.internet import defer, protocol
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

log = Logger(namespace="simulators.asterisk.ami")

BANNER = b"Asterisk Call Manager/5.0.2\r\n"
# Originate outcomes: OriginateResponse Reason, Hangup Cause, Cause-txt
OUTCOMES = {
    "answer": ("4", "16", "Normal Clearing"),
    "busy": ("5", "17", "User busy"),
    "no_answer": ("3", "19", "No answer"),
}


# ---------------------------------------------------------------- framing

class Message:
    """One AMI message: ordered `Key: Value` lines (a key may repeat, as
    `Variable` does); keys are looked up without regard to case."""

    def __init__(self, pairs: list[tuple[str, str]]):
        self.pairs = pairs

    def get(self, key: str, default: str | None = None) -> str | None:
        k = key.lower()
        for name, value in self.pairs:
            if name.lower() == k:
                return value
        return default

    def all(self, key: str) -> list[str]:
        k = key.lower()
        return [value for name, value in self.pairs if name.lower() == k]


def split_messages(buffer: bytes) -> tuple[list[Message], bytes]:
    """The complete messages at the head of `buffer` and what is left. A
    message ends with an empty line; a line without a colon is kept as a
    key with an empty value (Asterisk ignores it too)."""
    out = []
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return out, buffer
        block, buffer = buffer[:end], buffer[end + 4:]
        pairs = []
        for line in block.decode("utf-8", "replace").split("\r\n"):
            if not line.strip():
                continue
            name, _, value = line.partition(":")
            pairs.append((name.strip(), value.strip()))
        if pairs:
            out.append(Message(pairs))


def format_message(pairs: list[tuple[str, Any]]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in pairs if v is not None).encode() + b"\r\n"


# ---------------------------------------------------------------- the switch

@dataclass
class OriginatedCall:
    """A call the switch placed for an Originate: what `dial` is given."""
    uniqueid: str
    channel: str            # the switch's channel name ("PJSIP/8613800138000@trunk-00000001")
    dialled: str            # the Channel of the Originate
    context: str
    exten: str
    priority: str
    caller_id: str          # the CallerID the Originate asked for (the service number)
    action_id: str | None
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def msisdn(self) -> str | None:
        return self.variables.get("TP_MSISDN")


Dial = Callable[[OriginatedCall], "defer.Deferred | Awaitable | None"]


def agi_dialer(reactor, agi_endpoint: str, keys: list[str] | tuple[str, ...] = (), *,
               timeout: float = 60.0, on_call=None) -> Dial:
    """The real `dial`: an answered call-back runs the call-back context's
    `AGI(agi://HOST:4573/ivr,callback,MSISDN)` on the platform's FastAGI
    server, the caller simulator pressing `keys`, the channel's Uniqueid as
    `agi_uniqueid`. `on_call(simulated_call)` gets each finished call (what
    the subscriber heard)."""
    from simulators.asterisk.caller import CallScript, place_call

    async def dial(call: OriginatedCall):
        done = await place_call(reactor, agi_endpoint, call.msisdn, CallScript(keys=list(keys)),
                                args=("callback", call.msisdn or ""), uniqueid=call.uniqueid, timeout=timeout)
        if on_call is not None:
            on_call(done)
        return done
    return dial


class AmiSimulator:
    def __init__(self, reactor, *, accounts: dict[str, str] | None = None, dial: Dial | None = None,
                 call_seconds: float = 0.2):
        self.reactor = reactor
        self.accounts = dict(accounts if accounts is not None else {"telecom-pay": "secret"})
        self.dial = dial
        self.call_seconds = call_seconds
        # faults
        self.answer_delay = 0.0
        self.ring_seconds = 0.05
        self.outcome = "answer"
        self.refuse_originates = 0           # the next N Originates are refused
        self.fully_booted = True             # False: still starting (no FullyBooted at login) until boot()
        # what happened
        self.logins: list[tuple[str, bool]] = []
        self.originates: list[dict[str, Any]] = []
        self.calls: list[OriginatedCall] = []
        self.events_sent: list[tuple[str, dict[str, str]]] = []
        self.clients: set[AmiServerProtocol] = set()
        self._ports: list = []
        self._timers: set = set()
        self._ids = itertools.count(1)
        self._started = int(time.time())

    # -- endpoints

    def listen(self, endpoint: str) -> defer.Deferred:
        """Listen on a server endpoint string ('tcp:5038', 'tcp:0:interface=127.0.0.1')."""
        factory = protocol.Factory.forProtocol(AmiServerProtocol)
        factory.sim = self
        d = serverFromString(self.reactor, endpoint).listen(factory)

        def keep(port):
            self._ports.append(port)
            return port
        return d.addCallback(keep)

    def disconnect_all(self) -> int:
        """The AMI disconnect fault: every client's connection is cut."""
        dropped = list(self.clients)
        for client in dropped:
            client.transport.abortConnection()
        return len(dropped)

    @defer.inlineCallbacks
    def stop(self):
        """Stop listening, drop every client, cancel what was scheduled."""
        for t in list(self._timers):
            if t.active():
                t.cancel()
        self._timers.clear()
        ports, self._ports = self._ports, []
        for port in ports:
            yield port.stopListening()
        self.disconnect_all()

    def boot(self) -> None:
        """The switch finishes starting: FullyBooted to every logged-in client."""
        self.fully_booted = True
        for client in list(self.clients):
            if client.username is not None:
                self._event_to(client, "FullyBooted", [("Status", "Fully Booted")])

    def call_in(self, caller_id: str, *, seconds: float = 0.2, cause: str = "16",
                cause_txt: str = "Normal Clearing", context: str = "telecom-pay-ivr") -> OriginatedCall:
        """A call from `caller_id` arrives (Newchannel) and ends `seconds`
        later (Hangup): the events a caller's visit to the IVR produces."""
        n = next(self._ids)
        call = OriginatedCall(uniqueid=f"{self._started}.{n}", channel=f"PJSIP/{caller_id or 'anonymous'}-{n:08x}",
                              dialled="", context=context, exten="s", priority="1", caller_id=caller_id,
                              action_id=None, variables={"TP_MSISDN": caller_id})
        self._event("Newchannel", [("Channel", call.channel), ("ChannelState", "4"), ("ChannelStateDesc", "Ring"),
                                   ("CallerIDNum", caller_id), ("CallerIDName", ""), ("Context", context),
                                   ("Exten", "s"), ("Priority", "1"), ("Uniqueid", call.uniqueid),
                                   ("Linkedid", call.uniqueid)])
        self._later(seconds, self._hangup, call, cause, cause_txt)
        return call

    def _later(self, delay: float, fn, *args) -> None:
        call = None

        def run():
            self._timers.discard(call)
            fn(*args)
        call = self.reactor.callLater(delay, run)
        self._timers.add(call)

    # -- the actions

    def handle(self, client: "AmiServerProtocol", msg: Message) -> None:
        action = (msg.get("Action") or "").lower()
        aid = msg.get("ActionID")
        if action == "login":
            user, secret = msg.get("Username") or "", msg.get("Secret") or ""
            ok = user in self.accounts and self.accounts[user] == secret
            self.logins.append((user, ok))
            if not ok:
                self._answer(client, [("Response", "Error"), ("ActionID", aid),
                                      ("Message", "Authentication failed")], then_close=True)
                return
            client.username = user
            self._answer(client, [("Response", "Success"), ("ActionID", aid),
                                  ("Message", "Authentication accepted")])
            if self.fully_booted:
                self._later(self.answer_delay, self._event_to, client, "FullyBooted", [("Status", "Fully Booted")])
            return
        if client.username is None:
            self._answer(client, [("Response", "Error"), ("ActionID", aid), ("Message", "Permission denied")])
            return
        if action == "ping":
            self._answer(client, [("Response", "Success"), ("ActionID", aid), ("Ping", "Pong"),
                                  ("Timestamp", f"{time.time():.6f}")])
        elif action == "logoff":
            self._answer(client, [("Response", "Goodbye"), ("ActionID", aid),
                                  ("Message", "Thanks for all the fish.")], then_close=True)
        elif action == "originate":
            self._originate(client, msg, aid)
        else:
            self._answer(client, [("Response", "Error"), ("ActionID", aid), ("Message", "Invalid/unknown command")])

    def _originate(self, client, msg: Message, aid: str | None) -> None:
        variables = {}
        for v in msg.all("Variable"):
            for item in v.split(","):
                k, _, val = item.partition("=")
                if k:
                    variables[k.strip()] = val
        record = {"action_id": aid, "channel": msg.get("Channel"), "context": msg.get("Context"),
                  "exten": msg.get("Exten"), "priority": msg.get("Priority"), "caller_id": msg.get("CallerID"),
                  "async": msg.get("Async"), "variables": variables, "refused": False}
        self.originates.append(record)
        if not record["channel"] or self.refuse_originates:
            if self.refuse_originates:
                self.refuse_originates -= 1
            record["refused"] = True
            self._answer(client, [("Response", "Error"), ("ActionID", aid), ("Message", "Originate failed")])
            return
        self._answer(client, [("Response", "Success"), ("ActionID", aid),
                              ("Message", "Originate successfully queued")])
        n = next(self._ids)
        call = OriginatedCall(uniqueid=f"{self._started}.{n}", channel=f"{record['channel']}-{n:08x}",
                              dialled=record["channel"], context=record["context"] or "default",
                              exten=record["exten"] or "s", priority=record["priority"] or "1",
                              caller_id=record["caller_id"] or "", action_id=aid, variables=variables)
        self._later(self.answer_delay + self.ring_seconds, self._ring, call)

    def _ring(self, call: OriginatedCall) -> None:
        outcome = self.outcome if self.outcome in OUTCOMES else "answer"
        reason, cause, cause_txt = OUTCOMES[outcome]
        callee = call.msisdn or ""
        self._event("Newchannel", [("Channel", call.channel), ("ChannelState", "0"), ("ChannelStateDesc", "Down"),
                                   ("CallerIDNum", callee), ("CallerIDName", ""), ("Context", call.context),
                                   ("Exten", call.exten), ("Priority", call.priority),
                                   ("Uniqueid", call.uniqueid), ("Linkedid", call.uniqueid)])
        answered = outcome == "answer"
        self._event("OriginateResponse", [("ActionID", call.action_id),
                                          ("Response", "Success" if answered else "Failure"),
                                          ("Channel", call.channel if answered else call.dialled),
                                          ("Context", call.context), ("Exten", call.exten), ("Reason", reason),
                                          ("Uniqueid", call.uniqueid if answered else "<null>"),
                                          ("CallerIDNum", call.caller_id), ("CallerIDName", "")])
        if not answered:
            self._hangup(call, cause, cause_txt)
            return
        self.calls.append(call)
        d = self._run_dial(call)
        d.addErrback(lambda f: log.failure("the simulated call {uid} failed", f, uid=call.uniqueid))
        d.addBoth(lambda _: self._hangup(call, cause, cause_txt))

    def _run_dial(self, call: OriginatedCall) -> defer.Deferred:
        if self.dial is None:
            d = defer.Deferred()
            self._later(self.call_seconds, d.callback, None)
            return d
        try:
            result = self.dial(call)
        except Exception:
            return defer.fail()
        if isinstance(result, defer.Deferred):
            return result
        if asyncio.iscoroutine(result) or asyncio.isfuture(result):
            return defer.Deferred.fromFuture(asyncio.ensure_future(result))
        return defer.succeed(result)

    def _hangup(self, call: OriginatedCall, cause: str, cause_txt: str) -> None:
        self._event("Hangup", [("Channel", call.channel), ("Uniqueid", call.uniqueid), ("Linkedid", call.uniqueid),
                               ("CallerIDNum", call.msisdn or ""), ("Context", call.context), ("Exten", call.exten),
                               ("Cause", cause), ("Cause-txt", cause_txt)])

    # -- output

    def _answer(self, client, pairs, *, then_close: bool = False) -> None:
        def send():
            if client.connected:
                client.transport.write(format_message(pairs))
                if then_close:
                    client.transport.loseConnection()
        if self.answer_delay > 0:
            self._later(self.answer_delay, send)
        else:
            send()

    def _event(self, name: str, pairs) -> None:
        self.events_sent.append((name, {k: v for k, v in pairs if v is not None}))
        data = format_message([("Event", name), ("Privilege", "call,all"), *pairs])
        for client in list(self.clients):
            if client.username is not None and client.connected:
                client.transport.write(data)

    def _event_to(self, client, name: str, pairs) -> None:
        if client.connected:
            client.transport.write(format_message([("Event", name), ("Privilege", "system,all"), *pairs]))


class AmiServerProtocol(protocol.Protocol):
    """One manager connection: bytes in, messages to the simulator."""

    username: str | None = None

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self._buffer = b""
        self.sim: AmiSimulator = self.factory.sim
        self.sim.clients.add(self)
        self.transport.write(BANNER)

    def dataReceived(self, data: bytes):
        messages, self._buffer = split_messages(self._buffer + data)
        if len(self._buffer) > 65536:               # no end of message in sight: not a manager client
            self.transport.abortConnection()
            return
        for msg in messages:
            self.sim.handle(self, msg)

    def connectionLost(self, reason=protocol.connectionDone):
        self.sim.clients.discard(self)


def main(argv: list[str] | None = None) -> int:
    """python -m simulators.asterisk.ami_server [--listen tcp:5038] [--account telecom-pay=secret]
    [--agi tcp:127.0.0.1:4573 --keys 1,0]"""
    import argparse
    import sys
    parser = argparse.ArgumentParser(prog="ami-simulator", description="Asterisk Manager Interface simulator")
    parser.add_argument("--listen", default="tcp:5038:interface=127.0.0.1", help="server endpoint")
    parser.add_argument("--account", action="append", default=[], metavar="USER=SECRET",
                        help="a manager account (default telecom-pay=secret, the development default)")
    parser.add_argument("--outcome", choices=sorted(OUTCOMES), default="answer", help="how called phones answer")
    parser.add_argument("--refuse", type=int, default=0, metavar="N", help="refuse the first N Originates")
    parser.add_argument("--answer-delay", type=float, default=0.0, help="seconds before every response")
    parser.add_argument("--agi", help="answered call-backs go into this FastAGI server (tcp:127.0.0.1:4573)")
    parser.add_argument("--keys", default="1,0", help="what a called-back subscriber presses (with --agi)")
    args = parser.parse_args(argv)
    accounts = dict(a.split("=", 1) for a in args.account if "=" in a) or None

    from twisted.internet import asyncioreactor
    try:
        asyncioreactor.install()
    except Exception:               # a reactor is already installed
        pass
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)

    sim = AmiSimulator(reactor, accounts=accounts)
    sim.outcome, sim.refuse_originates, sim.answer_delay = args.outcome, args.refuse, args.answer_delay
    if args.agi:
        def heard(call):
            print(f"call-back to {call.msisdn}: " + " | ".join(h.text for h in call.heard), flush=True)
        sim.dial = agi_dialer(reactor, args.agi, [k for k in args.keys.split(",") if k], on_call=heard)

    def started(port):
        print(f"AMI simulator on port {port.getHost().port}", flush=True)

    def failed(f):
        print(f"error: {f.getErrorMessage()}", file=sys.stderr, flush=True)
        reactor.stop()
    sim.listen(args.listen).addCallbacks(started, failed)
    reactor.addSystemEventTrigger("before", "shutdown", sim.stop)
    reactor.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
