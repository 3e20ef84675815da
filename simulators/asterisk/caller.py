"""A caller on a simulated Asterisk: it dials the FastAGI server the way
`AGI(agi://host:4573/ivr)` does and plays the phone's part.

It sends the `agi_*` header block (caller id, unique id, network script,
arguments), answers each command as Asterisk 22 does (the formats of
res/res_agi.c: `200 result=... endpos=...`, 510, 511 on a dead channel,
520 usage blocks) and records what the caller hears: a STREAM FILE or GET
DATA prompt by its text, read from config/prompts.toml by the last two parts
of the sound path (`telecom-pay/en/main_menu` -> lang en, prompt main_menu);
SAY NUMBER and SAY DIGITS by their value.

Keys come from a script, one entry per input step: `1`, `2#`, `123456#`.
GET DATA takes a whole entry (up to its `#` or its max digits; an entry
without `#` shorter than the max answers with `(timeout)`, as Asterisk
does when the caller stops typing); WAIT FOR DIGIT takes one key at a time.
An empty entry (or `-`) is silence; an exhausted script is silence too
(`200 result= (timeout)` for GET DATA, `200 result=0` for WAIT FOR DIGIT);
`h` hangs up instead of answering.

Faults: hang up at command N (it answers `200 result=-1`, then `HANGUP` is
sent and every later command but the dead-channel ones gets 511, as on a
real hung-up channel; the caller closes the connection if the platform has
not within `linger` seconds) or right after the Kth script entry was keyed (its
answer, then `HANGUP` at once, while the platform works on the input); drop
the TCP connection at command N or right after the Kth entry; garbage lines before the answers; slow answers;
a peer that sends only noise after the header.
The simulator never imports the service: prompts.toml is read as a file.
"""
from __future__ import annotations

import random
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet import defer
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol

DEFAULT_PROMPTS = Path(__file__).resolve().parents[2] / "config" / "prompts.toml"
#: commands res_agi allows on a dead channel (their table's `dead` flag)
DEAD_OK = {"EXEC", "GET VARIABLE", "GET FULL VARIABLE", "SET VARIABLE", "NOOP", "VERBOSE", "ASYNCAGI BREAK",
           "DATABASE GET", "DATABASE PUT", "DATABASE DEL", "DATABASE DELTREE", "SPEECH DESTROY",
           "SPEECH UNLOAD GRAMMAR"}
KNOWN = DEAD_OK | {"ANSWER", "STREAM FILE", "CONTROL STREAM FILE", "GET DATA", "WAIT FOR DIGIT", "SAY NUMBER",
                   "SAY DIGITS", "SAY ALPHA", "HANGUP", "CHANNEL STATUS", "SET MUSIC", "RECEIVE CHAR"}
USAGE = {
    "STREAM FILE": " Usage: STREAM FILE <filename> <escape digits> [sample offset]",
    "GET DATA": " Usage: GET DATA <file to be streamed> [timeout] [max digits]",
    "WAIT FOR DIGIT": " Usage: WAIT FOR DIGIT <timeout>",
    "SAY NUMBER": " Usage: SAY NUMBER <number> <escape digits> [gender]",
    "SAY DIGITS": " Usage: SAY DIGITS <number> <escape digits>",
    "SET VARIABLE": " Usage: SET VARIABLE <variablename> <value>",
}


def load_prompts(path: str | Path | None = None) -> dict[str, dict[str, str]]:
    p = Path(path) if path else DEFAULT_PROMPTS
    if not p.exists():
        return {}
    with open(p, "rb") as f:
        data = tomllib.load(f)
    return {name: {k: str(v) for k, v in texts.items()} for name, texts in data.items() if isinstance(texts, dict)}


def split_args(line: str) -> list[str]:
    """Asterisk's argument splitting: spaces separate, double quotes group,
    a backslash makes the next character literal."""
    args: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    started = False
    for ch in line:
        if escaped:
            cur.append(ch)
            escaped = False
            started = True
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            started = True
        elif ch in " \t" and not quoted:
            if started:
                args.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if started:
        args.append("".join(cur))
    return args


@dataclass(frozen=True)
class Heard:
    kind: str          # prompt | number | digits
    value: str         # the prompt's name or the value said
    text: str          # what the caller hears

    def __str__(self) -> str:
        return self.text


@dataclass
class CallScript:
    keys: list[str] = field(default_factory=list)
    hangup_at: int | None = None            # hang up while the Nth command runs (1 = ANSWER)
    hangup_after_keys: int | None = None    # hang up right after the Kth entry was keyed (HANGUP, then dead)
    drop_after_keys: int | None = None      # drop the TCP connection right after the Kth entry was keyed
    close_at: int | None = None             # drop the TCP connection when the Nth command arrives
    garbage_every: int = 0                  # a garbage line before every Nth answer
    slow: float = 0.0                       # seconds before each answer
    noise: int = 0                          # after the header: this many garbage lines, then no answer at all
    linger: float = 5.0                     # after the caller hung up, close if the server has not within this


@dataclass
class SimulatedCall:
    """The phone and the switch's channel, fed command lines, returning the
    lines to send (sans-I/O: `CallerProtocol` moves the bytes)."""
    msisdn: str | None
    script: CallScript
    prompts: dict[str, dict[str, str]]
    uniqueid: str
    script_name: str = "ivr"
    args: tuple[str, ...] = ()
    agi_port: int = 4573
    language: str = "en"
    heard: list[Heard] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)    # ("heard", text) and ("pressed", keys), in order
    variables: dict[str, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    dead: bool = False
    hung_up_by: str | None = None           # caller | platform
    close_now: bool = False
    drop_after_answer: bool = False
    _used: int = 0
    _buffer: str = ""
    _count: int = 0

    def header(self) -> bytes:
        callerid = self.msisdn or "unknown"
        lines = [
            "agi_network: yes",
            f"agi_network_script: {self.script_name}",
            f"agi_request: agi://127.0.0.1:{self.agi_port}/{self.script_name}",
            f"agi_channel: PJSIP/{callerid}-{self.uniqueid.split('.')[-1].zfill(8)}",
            f"agi_language: {self.language}",
            "agi_type: PJSIP",
            f"agi_uniqueid: {self.uniqueid}",
            "agi_version: 22.11.0",
            f"agi_callerid: {callerid}",
            "agi_calleridname: unknown",
            "agi_callingpres: 0" if self.msisdn else "agi_callingpres: 32",
            "agi_callingani2: 0",
            "agi_callington: 0",
            "agi_callingtns: 0",
            "agi_dnid: 95588",
            "agi_rdnis: unknown",
            "agi_context: telecom-pay-ivr",
            "agi_extension: 95588",
            "agi_priority: 1",
            "agi_enhanced: 0.0",
            "agi_accountcode: ",
            "agi_threadid: 140000000000001",
        ]
        lines += [f"agi_arg_{i}: {a}" for i, a in enumerate(self.args, 1)]
        return ("\n".join(lines) + "\n\n").encode()

    # ------------------------------------------------------------ what the caller hears

    def _prompt_text(self, path: str) -> Heard:
        parts = path.strip("/").split("/")
        name = parts[-1]
        lang = parts[-2] if len(parts) >= 2 else self.language
        texts = self.prompts.get(name, {})
        text = texts.get(lang) or next(iter(texts.values()), None) or f"[{name}]"
        return Heard("prompt", name, text)

    def _hear(self, h: Heard) -> None:
        self.heard.append(h)
        self.log.append(("heard", h.text))

    # ------------------------------------------------------------ keys

    def _next_entry(self) -> str | None:
        """The next script entry, or None when the script is exhausted."""
        if self._used >= len(self.script.keys):
            return None
        entry = self.script.keys[self._used]
        self._used += 1
        return entry

    def _must_hang_up(self) -> bool:
        s = self.script
        return s.hangup_at is not None and self._count >= s.hangup_at

    def _hang_up(self, by: str) -> list[str]:
        self.dead = True
        self.hung_up_by = self.hung_up_by or by
        return ["HANGUP"]

    # ------------------------------------------------------------ commands

    def answer(self, line: str) -> list[str]:
        """The lines Asterisk sends back for one command line."""
        self._count += 1
        self.commands.append(line)
        if self.script.close_at is not None and self._count >= self.script.close_at:
            self.close_now = True
            return []
        args = split_args(line)
        if not args:
            return ["510 Invalid or unknown command"]
        name = self._name(args)
        if name is None:
            return ["510 Invalid or unknown command"]
        rest = args[len(name.split()):]
        if self.dead:
            if name not in DEAD_OK:
                return ["511 Command Not Permitted on a dead channel or intercept routine"]
            return self._run(name, rest)
        if self._must_hang_up():
            # the caller hangs up while this command runs
            if name in DEAD_OK:
                return self._run(name, rest) + self._hang_up("caller")
            return ["200 result=-1" + (" endpos=0" if name == "STREAM FILE" else "")] + self._hang_up("caller")
        used = self._used
        out = self._run(name, rest)
        if self._used > used and not self.dead:
            s = self.script
            if s.drop_after_keys is not None and self._used >= s.drop_after_keys:
                self.drop_after_answer = True
            elif s.hangup_after_keys is not None and self._used >= s.hangup_after_keys:
                # the caller put the phone down after the keys: Asterisk says so at once
                out = out + self._hang_up("caller")
        return out

    @staticmethod
    def _name(args: list[str]) -> str | None:
        for n in (3, 2, 1):
            candidate = " ".join(a.upper() for a in args[:n])
            if len(args) >= n and candidate in KNOWN:
                return candidate
        return None

    def _usage(self, name: str) -> list[str]:
        usage = USAGE.get(name)
        if usage is None:
            return ["520 Invalid command syntax.  Proper usage not available."]
        return ["520-Invalid command syntax.  Proper usage follows:", usage, "520 End of proper usage."]

    def _run(self, name: str, rest: list[str]) -> list[str]:
        if name == "ANSWER":
            return ["200 result=0"]
        if name == "STREAM FILE":
            if len(rest) not in (2, 3):
                return self._usage(name)
            h = self._prompt_text(rest[0])
            self._hear(h)
            return [f"200 result=0 endpos={len(h.text) * 800}"]
        if name in ("SAY NUMBER", "SAY DIGITS"):
            if len(rest) < 2 or not rest[0].lstrip("-").isdigit():
                return self._usage(name)
            self._hear(Heard("number" if name == "SAY NUMBER" else "digits", rest[0], rest[0]))
            return ["200 result=0"]
        if name == "GET DATA":
            if not rest:
                return self._usage(name)
            self._hear(self._prompt_text(rest[0]))
            maximum = int(rest[2]) if len(rest) > 2 and rest[2].isdigit() else 1024
            return self._get_data(maximum)
        if name == "WAIT FOR DIGIT":
            if len(rest) != 1:
                return self._usage(name)
            return self._wait_for_digit()
        if name == "SET VARIABLE":
            if len(rest) != 2:
                return self._usage(name)
            self.variables[rest[0]] = rest[1]
            return ["200 result=1"]
        if name in ("GET VARIABLE", "GET FULL VARIABLE"):
            value = self.variables.get(rest[0]) if rest else None
            return ["200 result=0"] if value is None else [f"200 result=1 ({value})"]
        if name == "HANGUP":
            return ["200 result=1"] + self._hang_up("platform")
        if name == "CHANNEL STATUS":
            return ["200 result=6"]
        return ["200 result=0"]

    def _get_data(self, maximum: int) -> list[str]:
        entry = self._next_entry() if not self._buffer else None
        if self._buffer:
            entry, self._buffer = self._buffer, ""
        if entry is None or entry in ("", "-"):
            self.log.append(("pressed", ""))
            return ["200 result= (timeout)"]
        if entry.lower() == "h":
            return ["200 result=-1"] + self._hang_up("caller")
        terminated = "#" in entry
        digits = entry.split("#", 1)[0][:maximum]
        self.log.append(("pressed", digits + ("#" if terminated and len(digits) < maximum else "")))
        if terminated or len(digits) >= maximum:
            return [f"200 result={digits}"]
        return [f"200 result={digits} (timeout)"]

    def _wait_for_digit(self) -> list[str]:
        if not self._buffer:
            entry = self._next_entry()
            if entry is None or entry in ("", "-"):
                self.log.append(("pressed", ""))
                return ["200 result=0"]
            if entry.lower() == "h":
                return ["200 result=-1"] + self._hang_up("caller")
            self._buffer = entry
        key, self._buffer = self._buffer[0], self._buffer[1:]
        self.log.append(("pressed", key))
        return [f"200 result={ord(key)}"]


class CallerProtocol(Protocol):
    """Moves the lines of one `SimulatedCall`; `ended` fires with it when
    the server closes the connection (or the caller drops it)."""

    def __init__(self, call: SimulatedCall, clock, *, rng: random.Random | None = None, on_event=None):
        self.call = call
        self.clock = clock
        self.ended: defer.Deferred = defer.Deferred()
        self.on_event = on_event
        self._buffer = b""
        self._rng = rng or random.Random(7)
        self._answers = 0
        self._queue: list[str] = []
        self._busy = False
        self._linger = None

    def _close(self) -> None:
        if self.transport is not None and self.transport.connected:
            self.transport.loseConnection()

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.transport.write(self.call.header())
        if self.call.script.noise:
            self.transport.write("".join(self._garbage() + "\n" for _ in range(self.call.script.noise)).encode())

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n", 1)
            self._queue.append(raw.rstrip(b"\r").decode("utf-8", errors="replace"))
        self._drain()

    def _drain(self) -> None:
        if self._busy or not self._queue or self.transport is None:
            return
        if self.call.script.noise:
            self._queue.clear()               # a peer that only makes noise never answers
            return
        line = self._queue.pop(0)
        before = len(self.call.log)
        out = self.call.answer(line)
        if self.on_event is not None:
            for kind, text in self.call.log[before:]:
                self.on_event(kind, text)
        if self.call.close_now:
            self.transport.abortConnection()
            return
        self._answers += 1
        s = self.call.script
        if s.garbage_every and self._answers % s.garbage_every == 0:
            out = [self._garbage()] + out
        payload = "".join(f"{o}\n" for o in out).encode()
        if self.call.dead and self.call.hung_up_by == "caller" and self._linger is None:
            self._linger = self.clock.callLater(s.linger, self._close)
        if self.call.drop_after_answer:
            self.transport.write(payload)
            self.transport.loseConnection()
            return
        if s.slow > 0:
            self._busy = True
            self.clock.callLater(s.slow, self._send_later, payload)
        else:
            self.transport.write(payload)
            self._drain()

    def _send_later(self, payload: bytes) -> None:
        self._busy = False
        if self.transport is not None and self.transport.connected:
            self.transport.write(payload)
            self._drain()

    def _garbage(self) -> str:
        return self._rng.choice(["-- Executing [95588@telecom-pay-ivr:1] AGI(...)", "\x00\x07garbage",
                                 "200result=0", "OK", "result=1"])

    def connectionLost(self, reason=None) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        if not self.ended.called:
            self.ended.callback(self.call)


class CallerFactory(Factory):
    def __init__(self, call: SimulatedCall, clock, on_event=None):
        self.call = call
        self.clock = clock
        self.on_event = on_event
        self.protocol_instance: CallerProtocol | None = None

    def buildProtocol(self, addr) -> CallerProtocol:
        p = CallerProtocol(self.call, self.clock, on_event=self.on_event)
        p.factory = self
        self.protocol_instance = p
        return p


_serial = [0]


def new_uniqueid(clock) -> str:
    _serial[0] += 1
    return f"{int(clock.seconds())}.{_serial[0]}"


async def place_call(reactor, endpoint: str, msisdn: str | None, script: CallScript, *,
                     prompts: dict | None = None, args: tuple[str, ...] = (), uniqueid: str | None = None,
                     timeout: float = 60.0, on_event=None) -> SimulatedCall:
    """Dial the FastAGI server at `endpoint` (`tcp:127.0.0.1:4573`) and run
    the call until the server ends it; returns the call (what was heard,
    the variables set, who hung up). Raises TimeoutError after `timeout`."""
    import asyncio

    from twisted.internet.endpoints import clientFromString
    from telecom_pay.aio import wait_deferred
    client = _client_endpoint(endpoint)
    m = re.search(r"port=(\d+)", client)
    call = SimulatedCall(msisdn, script, load_prompts() if prompts is None else prompts,
                         uniqueid or new_uniqueid(reactor), args=args,
                         agi_port=int(m.group(1)) if m else 4573)
    factory = CallerFactory(call, reactor, on_event=on_event)
    proto = await wait_deferred(clientFromString(reactor, client).connect(factory))
    try:
        return await asyncio.wait_for(wait_deferred(proto.ended), timeout)
    except asyncio.TimeoutError:
        if proto.transport is not None:
            proto.transport.abortConnection()
        raise TimeoutError(f"the call did not end within {timeout} s") from None


def _client_endpoint(endpoint: str) -> str:
    """`tcp:127.0.0.1:4573` (host:port, as the CLI takes it) or a Twisted
    client endpoint string (`tcp:host=...:port=...`)."""
    if "=" in endpoint:
        return endpoint
    kind, _, rest = endpoint.partition(":")
    host, _, port = rest.rpartition(":")
    return f"{kind}:host={host or '127.0.0.1'}:port={port}"
