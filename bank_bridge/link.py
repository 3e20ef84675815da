"""Sans-I/O state machine of one ISO 8583 link to a bank host.

Fed bytes and the current time, it returns events and keeps the bytes to
send in a buffer (`data_to_send`); it never touches a socket or a timer.
The Twisted protocol in `bank_bridge.connection` moves the bytes and calls
`tick` at `next_deadline()`.

Life of a link: `connection_made` sends the sign-on (0800, field 70 = 001);
nothing else may be sent until an approved 0810 arrives (`SignedOn`). Requests
are matched to responses by message class + STAN + terminal, each with its
own deadline. When nothing has been received for `echo_interval`, an echo
(0800/301) is sent; no 0810 within `response_timeout` means the link is dead.
Echoes and sign-ons from the host are answered here.

Malformed messages are refused, never fatal: a request whose MTI and STAN
can be recovered is answered with response code 30, anything else is
dropped; pending requests are untouched. Only a broken frame stream
(`FramingError`) kills the link, because no later frame can be trusted.
"""
from __future__ import annotations

import itertools
import logging
import time as _time
from dataclasses import dataclass, field
from typing import Any, Callable

from bank_bridge import spec
from bank_bridge.framing import DEFAULT_MAX_LENGTH, FrameDecoder, encode_frame

log = logging.getLogger(__name__)

_request_ids = itertools.count(1)


class LinkNotReady(RuntimeError):
    """The link is not signed on: nothing but sign-on may be sent."""


@dataclass
class Request:
    """A request in flight. `tag` belongs to the caller (a Deferred, say)."""
    message: dict[str, str]
    deadline: float
    tag: Any = None
    kind: str = "user"                  # "user", "sign_on" or "echo"
    id: int = field(default_factory=lambda: next(_request_ids))

    @property
    def key(self) -> tuple[str, str, str]:
        return spec.match_key(self.message)


# Events --------------------------------------------------------------------

@dataclass(frozen=True)
class SignedOn:
    pass


@dataclass(frozen=True)
class NetworkExchange:
    """A network management exchange (sign-on, echo), for the journal.
    `by_host` when the host asked and the link answered."""
    request: dict[str, str]
    response: dict[str, str]
    by_host: bool = False


@dataclass(frozen=True)
class ResponseReceived:
    request: Request
    response: dict[str, str]


@dataclass(frozen=True)
class RequestTimedOut:
    request: Request


@dataclass(frozen=True)
class RequestLost:
    """The connection ended while the request waited for its answer."""
    request: Request


@dataclass(frozen=True)
class UnmatchedResponse:
    """A response to nothing pending: late (after its time-out) or unknown."""
    response: dict[str, str]


@dataclass(frozen=True)
class MessageRefused:
    """A malformed or unexpected message; `answered` if a response went back."""
    reason: str
    answered: bool
    mti: str | None = None
    stan: str | None = None


@dataclass(frozen=True)
class LinkDead:
    """The caller must close the connection (then call `connection_lost`)."""
    reason: str


Event = SignedOn | NetworkExchange | ResponseReceived | RequestTimedOut | RequestLost | UnmatchedResponse | MessageRefused | LinkDead


def transmission_fields(now: float) -> dict[str, str]:
    """Fields 7 (UTC MMDDhhmmss), 12 and 13 (local time hhmmss, date MMDD)."""
    utc = _time.gmtime(now)
    local = _time.localtime(now)
    return {"7": _time.strftime("%m%d%H%M%S", utc), "12": _time.strftime("%H%M%S", local),
            "13": _time.strftime("%m%d", local)}


class Link:
    CONNECTING, SIGNING_ON, READY, CLOSED = "connecting", "signing_on", "ready", "closed"

    def __init__(self, *, terminal_id: str, stan_source: Callable[[], str | None],
                 response_timeout: float = 10.0, echo_interval: float = 30.0,
                 max_frame: int = DEFAULT_MAX_LENGTH, name: str = "bank"):
        if len(terminal_id) != 8:
            raise ValueError("terminal_id (field 41) must be 8 characters")
        self.terminal_id = terminal_id
        self.name = name
        self.response_timeout = response_timeout
        self.echo_interval = echo_interval
        self._stan_source = stan_source
        self._decoder = FrameDecoder(max_frame)
        self._max_frame = max_frame
        self._out = bytearray()
        self._pending: dict[tuple[str, str, str], Request] = {}
        self._last_received = 0.0
        self._echo_retry_at: float | None = None
        self._sign_on_retry_at: float | None = None
        self.state = self.CONNECTING

    # -- inputs -------------------------------------------------------------

    def connection_made(self, now: float) -> list[Event]:
        self.state = self.SIGNING_ON
        self._last_received = now
        return self._send_network(spec.NET_SIGN_ON, "sign_on", now)

    def send(self, message: dict[str, str], now: float, *, timeout: float | None = None,
             tag: Any = None) -> Request:
        """Queue a request; the caller supplies fields 11 and 41 (`new_message`)."""
        if self.state != self.READY:
            raise LinkNotReady(f"link to {self.name} is {self.state}")
        request = Request(dict(message), now + (self.response_timeout if timeout is None else timeout), tag)
        if request.key in self._pending:
            raise ValueError(f"a request with key {request.key} is already in flight")
        self._queue(request.message)
        self._pending[request.key] = request
        return request

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self.state == self.CLOSED:
            return []
        events: list[Event] = []
        for frame in self._decoder.feed(data):
            self._last_received = now
            events.extend(self._receive_frame(frame, now))
        if self._decoder.error is not None:
            log.warning("bank link %s: %s; dropping the connection", self.name, self._decoder.error)
            events.append(MessageRefused(str(self._decoder.error), answered=False))
            events.append(LinkDead(f"framing error: {self._decoder.error}"))
            self.state = self.CLOSED
        return events

    def tick(self, now: float) -> list[Event]:
        if self.state in (self.CONNECTING, self.CLOSED):
            return []
        events: list[Event] = []
        for key, request in list(self._pending.items()):
            if request.deadline > now:
                continue
            del self._pending[key]
            if request.kind == "user":
                events.append(RequestTimedOut(request))
            else:
                self.state = self.CLOSED
                return events + [LinkDead(f"no answer to {request.kind.replace('_', '-')}")]
        if self.state == self.SIGNING_ON and self._sign_on_retry_at is not None \
                and now >= self._sign_on_retry_at:
            events.extend(self._send_network(spec.NET_SIGN_ON, "sign_on", now))
        if self.state == self.READY and not self._echo_outstanding() \
                and now >= self._next_echo_at():
            events.extend(self._send_network(spec.NET_ECHO, "echo", now))
        return events

    def connection_lost(self) -> list[Event]:
        lost = [RequestLost(r) for r in self._pending.values() if r.kind == "user"]
        self._pending.clear()
        self.state = self.CLOSED
        return lost

    # -- outputs ------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_deadline(self) -> float | None:
        candidates = [r.deadline for r in self._pending.values()]
        if self.state == self.READY and not self._echo_outstanding():
            candidates.append(self._next_echo_at())
        if self.state == self.SIGNING_ON and self._sign_on_retry_at is not None:
            candidates.append(self._sign_on_retry_at)
        return min(candidates) if candidates else None

    @property
    def ready(self) -> bool:
        return self.state == self.READY

    @property
    def pending(self) -> list[Request]:
        return [r for r in self._pending.values() if r.kind == "user"]

    def new_message(self, mti: str, now: float, stan: str, **fields: str) -> dict[str, str]:
        """A request skeleton with this link's terminal and the time fields."""
        message = {"t": mti, "11": stan, "41": self.terminal_id}
        message.update(transmission_fields(now))
        message.update(fields)
        return message

    # -- internals ----------------------------------------------------------

    def _queue(self, message: dict[str, str]) -> None:
        self._out += encode_frame(spec.encode_message(message), self._max_frame)

    def _echo_outstanding(self) -> bool:
        return any(r.kind == "echo" for r in self._pending.values())

    def _next_echo_at(self) -> float:
        due = self._last_received + self.echo_interval
        return max(due, self._echo_retry_at) if self._echo_retry_at is not None else due

    def _send_network(self, code: str, kind: str, now: float) -> list[Event]:
        stan = self._stan_source()
        if stan is None:        # no STAN available right now: try again in a second
            if kind == "sign_on":
                self._sign_on_retry_at = now + 1.0
            else:
                self._echo_retry_at = now + 1.0
            return []
        self._sign_on_retry_at = self._echo_retry_at = None
        message = {"t": spec.NETWORK_REQUEST, "11": stan, "41": self.terminal_id, "70": code,
                   "7": transmission_fields(now)["7"]}
        request = Request(message, now + self.response_timeout, kind=kind)
        self._queue(message)
        self._pending[request.key] = request
        return []

    def _receive_frame(self, frame: bytes, now: float) -> list[Event]:
        try:
            message = spec.decode_message(frame)
        except spec.MessageFormatError as exc:
            answer = spec.format_error_response(exc)
            log.warning("bank link %s: malformed message refused (mti=%s stan=%s): %s",
                        self.name, exc.mti, exc.stan, exc.reason)
            if answer is not None:
                self._queue(answer)
            return [MessageRefused(exc.reason, answered=answer is not None, mti=exc.mti, stan=exc.stan)]
        mti = message["t"]
        if spec.is_request(mti):
            return self._receive_request(message)
        return self._receive_response(message)

    def _receive_request(self, message: dict[str, str]) -> list[Event]:
        answer = {"t": spec.response_mti(message["t"]), "11": message["11"]}
        for echoed in ("7", "41", "70"):
            if echoed in message:
                answer[echoed] = message[echoed]
        if message["t"] == spec.NETWORK_REQUEST:
            answer["39"] = spec.RC_APPROVED
            self._queue(answer)
            return [NetworkExchange(message, answer, by_host=True)]
        # An issuer host has no business sending financial requests to us.
        answer["39"] = spec.RC_INVALID_TRANSACTION
        self._queue(answer)
        log.warning("bank link %s: unexpected %s from the host refused", self.name, message["t"])
        return [MessageRefused(f"unexpected request {message['t']}", answered=True,
                               mti=message["t"], stan=message["11"])]

    def _receive_response(self, message: dict[str, str]) -> list[Event]:
        key = spec.match_key(message)
        request = self._pending.pop(key, None)
        if request is None and not message.get("41"):
            request = self._pending.pop((key[0], key[1], self.terminal_id), None)
        if request is None:
            log.warning("bank link %s: response %s stan=%s matches no pending request",
                        self.name, message["t"], message.get("11"))
            return [UnmatchedResponse(message)]
        exchange = NetworkExchange(request.message, message)
        if request.kind == "sign_on":
            if message.get("39") == spec.RC_APPROVED:
                self.state = self.READY
                log.info("bank link %s: signed on", self.name)
                return [exchange, SignedOn()]
            self.state = self.CLOSED
            return [exchange, LinkDead(f"sign-on refused with response code {message.get('39')!r}")]
        if request.kind == "echo":
            return [exchange]
        return [ResponseReceived(request, message)]
