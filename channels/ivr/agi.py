"""One FastAGI connection, server side, as a sans-I/O state machine.

Asterisk (18 to 22) opens the TCP connection when the dialplan runs
`AGI(agi://host:4573/script,arg1,...)`, then speaks first: `agi_network: yes`,
`agi_network_script: script`, then the environment block (`agi_request`,
`agi_channel`, `agi_uniqueid`, `agi_callerid`, `agi_arg_1` ...), one
`key: value` per line, ended by an empty line. From then on the server sends
one command line at a time and Asterisk answers each with one response:

    200 result=<r> [(<data>)] [endpos=<n>]    the command ran
    510 Invalid or unknown command
    511 Command Not Permitted on a dead channel or intercept routine
    520-Invalid command syntax.  Proper usage follows:
    <usage text, any number of lines>
    520 End of proper usage.

and, when the caller hangs up (AGISIGHUP, on by default), a lone `HANGUP`
line between or after responses; a command running at that moment answers
`200 result=-1`, later ones mostly 511. Asterisk then waits for the server
to close. A connection may also just drop at any point.

`AgiSession` is fed bytes (`receive_data`) and returns events; `command()`
queues the bytes of one command (`data_to_send`). It allows one command in
flight, as the protocol does. It owns no socket and no timer:
`channels.ivr.app` moves the bytes and enforces a per-command timeout.

A peer that is not Asterisk gets a bounded tolerance: a line that is not a
response is reported (`Garbage`) and skipped; too many of them in a row
(without an AGI line between), an over-long line or a header that never
ends make the session `Fatal`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "AgiEnvironment", "AgiSession", "AgiError", "Event", "Started", "Response", "HungUp",
    "Garbage", "Fatal", "quote",
]

_RESPONSE_200 = re.compile(r"^200 result=(?P<result>\S*)(?:\s+\((?P<data>.*)\))?(?:\s+endpos=(?P<endpos>-?\d+))?\s*$")
_HEADER = re.compile(r"^(agi_[a-z0-9_]+):\s?(.*)$")
_ARG = re.compile(r"^agi_arg_(\d+)$")


class AgiError(Exception):
    """A command sent out of turn (another in flight, or the session over)."""


@dataclass(frozen=True)
class AgiEnvironment:
    """The header block Asterisk sends, with the fields the IVR reads named;
    everything else stays in `variables`."""
    variables: dict[str, str]

    def get(self, name: str, default: str = "") -> str:
        return self.variables.get(name if name.startswith("agi_") else f"agi_{name}", default)

    @property
    def network_script(self) -> str:
        return self.get("network_script")

    @property
    def request(self) -> str:
        return self.get("request")

    @property
    def channel(self) -> str:
        return self.get("channel")

    @property
    def uniqueid(self) -> str:
        return self.get("uniqueid")

    @property
    def callerid(self) -> str:
        return self.get("callerid")

    @property
    def calleridname(self) -> str:
        return self.get("calleridname")

    @property
    def context(self) -> str:
        return self.get("context")

    @property
    def extension(self) -> str:
        return self.get("extension")

    @property
    def language(self) -> str:
        return self.get("language")

    @property
    def args(self) -> tuple[str, ...]:
        numbered = sorted((int(m.group(1)), v) for k, v in self.variables.items() if (m := _ARG.match(k)))
        return tuple(v for _, v in numbered)


class Event:
    pass


@dataclass(frozen=True)
class Started(Event):
    """The header block is complete: the call can be served."""
    env: AgiEnvironment


@dataclass(frozen=True)
class Response(Event):
    """The answer to the command in flight. `code` 200, 510, 511 or 520;
    `result` the text after `result=` ("" for GET DATA with no digit);
    `data` what the parentheses held ("timeout", "dtmf", a variable's
    value); `usage` the lines of a 520 usage block."""
    command: str
    code: int
    result: str = ""
    data: str | None = None
    endpos: int | None = None
    usage: tuple[str, ...] = ()
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def number(self) -> int | None:
        """`result` as an integer when it is one (-1 failure or hang-up, a
        DTMF digit's character code, 0 nothing)."""
        try:
            return int(self.result)
        except ValueError:
            return None

    @property
    def failed(self) -> bool:
        """The command did not run on a live channel: -1 (hang-up, error,
        a sound that does not exist), 511 (the channel is dead) or an
        error code."""
        return self.code != 200 or self.number == -1


@dataclass(frozen=True)
class HungUp(Event):
    """Asterisk's `HANGUP` line: the caller is gone."""


@dataclass(frozen=True)
class Garbage(Event):
    """A line that fits nowhere in the protocol; skipped."""
    line: str


@dataclass(frozen=True)
class Fatal(Event):
    """The peer cannot be talked to; the connection must close."""
    reason: str


def quote(arg: str | int) -> str:
    """One argument as Asterisk's parser splits them: bare when it has no
    space, quote or backslash; otherwise in double quotes with `"` and `\\`
    escaped. An empty argument is `""` (STREAM FILE's "no escape digits")."""
    s = str(arg)
    if s and not re.search(r'[\s"\\]', s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class _State:
    phase: str = "header"          # header | ready | closed
    header: dict[str, str] = field(default_factory=dict)
    header_lines: int = 0
    in_flight: str | None = None
    usage: list[str] | None = None


class AgiSession:
    """See the module docstring. `max_line` bounds one line (Asterisk's own
    lines are well under 2 KB), `max_garbage` the skipped lines in a row,
    `max_header_lines` the header block."""

    def __init__(self, *, max_line: int = 8192, max_garbage: int = 20, max_header_lines: int = 200,
                 max_usage_lines: int = 200):
        self.max_line = max_line
        self.max_garbage = max_garbage
        self.max_header_lines = max_header_lines
        self.max_usage_lines = max_usage_lines
        self._buffer = b""
        self._out: list[bytes] = []
        self._s = _State()
        self.garbage = 0               # lines skipped on this connection
        self._garbage_run = 0          # ... since the last AGI line
        self.hung_up = False
        self.env: AgiEnvironment | None = None

    # ------------------------------------------------------------ state

    @property
    def started(self) -> bool:
        return self.env is not None

    @property
    def in_flight(self) -> str | None:
        return self._s.in_flight

    @property
    def closed(self) -> bool:
        return self._s.phase == "closed"

    # ------------------------------------------------------------ output

    def command(self, *words: str | int) -> str:
        """Queue one command: the first word(s) as given (`"STREAM FILE"`),
        the arguments quoted. Returns the line sent (without newline)."""
        if self._s.phase != "ready":
            raise AgiError(f"no command can be sent: the session is {self._s.phase}")
        if self._s.in_flight is not None:
            raise AgiError(f"{self._s.in_flight!r} has not been answered yet")
        name, *args = words
        line = " ".join([str(name), *(quote(a) for a in args)])
        if "\n" in line or "\r" in line:
            raise AgiError("a command is one line")
        self._s.in_flight = line
        self._out.append(line.encode("utf-8") + b"\n")
        return line

    def data_to_send(self) -> bytes:
        out, self._out = b"".join(self._out), []
        return out

    def close(self) -> None:
        self._s.phase = "closed"
        self._s.in_flight = None

    # ------------------------------------------------------------ input

    def receive_data(self, data: bytes) -> list[Event]:
        if self._s.phase == "closed":
            return []
        self._buffer += data
        events: list[Event] = []
        while self._s.phase != "closed":
            nl = self._buffer.find(b"\n")
            if nl < 0:
                if len(self._buffer) > self.max_line:
                    events.append(self._fatal("a line longer than %d bytes" % self.max_line))
                break
            raw, self._buffer = self._buffer[:nl], self._buffer[nl + 1:]
            if len(raw) > self.max_line:
                events.append(self._fatal("a line longer than %d bytes" % self.max_line))
                break
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            events.extend(self._line(line))
        return events

    def _fatal(self, reason: str) -> Fatal:
        self.close()
        return Fatal(reason)

    def _skip(self, line: str) -> list[Event]:
        self.garbage += 1
        self._garbage_run += 1
        if self._garbage_run > self.max_garbage:
            return [Garbage(line[:200]), self._fatal(f"more than {self.max_garbage} lines in a row that are not AGI")]
        return [Garbage(line[:200])]

    def _line(self, line: str) -> list[Event]:
        s = self._s
        if s.phase == "header":
            return self._header_line(line)
        if s.usage is not None:
            if line.startswith("520 "):
                usage, s.usage = tuple(s.usage), None
                return [self._answered(Response(self._take(), 520, usage=usage, text=line))]
            if len(s.usage) >= self.max_usage_lines:
                return [self._fatal("a 520 usage block that does not end")]
            s.usage.append(line)
            return []
        if line == "HANGUP":
            self.hung_up = True
            return [HungUp()]
        if s.in_flight is None:
            return self._skip(line) if line.strip() else []
        if line.startswith("200 "):
            m = _RESPONSE_200.match(line)
            if m is None:
                return self._skip(line)
            endpos = m.group("endpos")
            return [self._answered(Response(self._take(), 200, result=m.group("result"), data=m.group("data"),
                                            endpos=int(endpos) if endpos is not None else None, text=line))]
        if line.startswith("520-"):
            s.usage = []
            return []
        for code in (510, 511, 520):
            if line.startswith(f"{code} "):
                return [self._answered(Response(self._take(), code, text=line))]
        return self._skip(line) if line.strip() else []

    def _take(self) -> str:
        command, self._s.in_flight = self._s.in_flight or "", None
        return command

    def _answered(self, response: Response) -> Response:
        self._garbage_run = 0
        if response.code == 511:
            # the channel is dead even if the HANGUP line was not sent (AGISIGHUP=no)
            self.hung_up = True
        return response

    def _header_line(self, line: str) -> list[Event]:
        s = self._s
        if line == "HANGUP":
            self.hung_up = True
            return [HungUp()]
        if line == "":
            if not s.header:
                return []                    # blank lines before the block: nothing to start yet
            s.phase = "ready"
            self.env = AgiEnvironment(dict(s.header))
            return [Started(self.env)]
        s.header_lines += 1
        if s.header_lines > self.max_header_lines:
            return [self._fatal(f"a header block longer than {self.max_header_lines} lines")]
        m = _HEADER.match(line)
        if m is None:
            return self._skip(line)
        s.header[m.group(1)] = m.group(2)
        self._garbage_run = 0
        return []
