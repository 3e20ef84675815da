"""The SMSC side of one SMPP 3.4 connection, as a sans-I/O state machine.

`SmscSession` is fed whole PDUs (framed by `channels.smpp.pdu.PduReader`) and
returns one event per PDU; everything it wants to send is queued as
`Outgoing` items and taken with `take_output`. It owns what the protocol
dictates: bind state, the credentials check, answers to enquire_link and
unbind, generic_nack for PDUs it cannot decode, ESME_RINVBNDSTS for requests
in the wrong state, sequence numbers of its own requests and the matching of
their responses. Policy (accept a good bind or not, how to answer a
submit_sm, what to deliver, when to time out) belongs to the caller.
Time comes in as arguments (``now``); there is no I/O and no clock here.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

from channels.smpp import pdu as P

__all__ = [
    "BindMode",
    "SessionState",
    "Outgoing",
    "Outstanding",
    "Event",
    "BindRequested",
    "BindRefused",
    "SubmitReceived",
    "ResponseReceived",
    "EnquireLinkReceived",
    "UnbindReceived",
    "RequestRejected",
    "MalformedPdu",
    "SmscSession",
]


class BindMode(enum.Enum):
    TRANSMITTER = "transmitter"
    RECEIVER = "receiver"
    TRANSCEIVER = "transceiver"

    @property
    def can_submit(self) -> bool:
        return self is not BindMode.RECEIVER

    @property
    def can_receive(self) -> bool:
        return self is not BindMode.TRANSMITTER


_BIND_COMMANDS = {
    "bind_transmitter": BindMode.TRANSMITTER,
    "bind_receiver": BindMode.RECEIVER,
    "bind_transceiver": BindMode.TRANSCEIVER,
}


class SessionState(enum.Enum):
    OPEN = "open"  # connected, not bound
    BINDING = "binding"  # a good bind is waiting for the caller's decision
    BOUND = "bound"
    UNBINDING = "unbinding"  # unbind sent or answered; close after flushing
    CLOSED = "closed"


@dataclass
class Outgoing:
    """One PDU to write: its bytes and what went into them (for the traffic record)."""

    raw: bytes
    command: str
    sequence: int
    status: int
    fields: dict[str, Any]

    @property
    def is_response(self) -> bool:
        return self.command.endswith("_resp") or self.command == "generic_nack"

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


@dataclass
class Outstanding:
    """A request the SMSC sent and whose response it awaits."""

    command: str
    sequence: int
    sent_at: float
    context: Any = None


@dataclass
class Event:
    """Something that arrived; ``pdu`` is the decoded smpplib object (None if undecodable)."""

    pdu: Any
    raw: bytes


@dataclass
class BindRequested(Event):
    """Credentials are right; the caller answers with `accept_bind` or `refuse_bind`."""

    mode: BindMode = BindMode.TRANSCEIVER
    system_id: str = ""


@dataclass
class BindRefused(Event):
    """Wrong credentials or already bound; the session has answered with ``status``."""

    status: int = P.ESME_RBINDFAIL
    system_id: str = ""


@dataclass
class SubmitReceived(Event):
    """submit_sm or data_sm from a bound transmitter; the caller answers with `respond`."""


@dataclass
class ResponseReceived(Event):
    """A response (or generic_nack) to one of the SMSC's requests; ``request`` None if unmatched."""

    request: Outstanding | None = None


@dataclass
class EnquireLinkReceived(Event):
    """Answered by the session."""


@dataclass
class UnbindReceived(Event):
    """Answered by the session; close the connection once the answer is written."""


@dataclass
class RequestRejected(Event):
    """A request the session answered with an error ``status`` (wrong state, unsupported)."""

    status: int = P.ESME_RINVBNDSTS


@dataclass
class MalformedPdu(Event):
    """Undecodable; answered with generic_nack unless it claimed to be a response."""

    error: P.PduError | None = None


@dataclass
class SmscSession:
    """State of one ESME connection seen from the SMSC."""

    accounts: Mapping[str, str]
    system_id: str = "SMSC-SIM"
    state: SessionState = SessionState.OPEN
    mode: BindMode | None = None
    esme_system_id: str | None = None
    outstanding: dict[int, Outstanding] = field(default_factory=dict)
    _output: list[Outgoing] = field(default_factory=list)
    _next_sequence: int = 1
    _pending_bind: tuple[int, str] | None = None
    interface_version: int = 0x34

    # --- inbound -----------------------------------------------------------

    def receive_pdu(self, raw: bytes) -> Event:
        """Handle one whole PDU and return what it was."""
        try:
            pdu = P.decode_pdu(raw)
        except P.PduError as err:
            if not err.is_response:
                self._queue("generic_nack", err.sequence, err.status)
            return MalformedPdu(None, raw, err)
        command = pdu.command
        if command in _BIND_COMMANDS:
            return self._on_bind(pdu, raw, _BIND_COMMANDS[command])
        if command == "enquire_link":
            self._queue("enquire_link_resp", pdu.sequence)
            return EnquireLinkReceived(pdu, raw)
        if command == "unbind":
            self._queue("unbind_resp", pdu.sequence)
            self.state = SessionState.UNBINDING
            return UnbindReceived(pdu, raw)
        if command in ("submit_sm", "data_sm"):
            if self.state is not SessionState.BOUND or not self.mode.can_submit:
                self._queue(P.response_name(command), pdu.sequence, P.ESME_RINVBNDSTS)
                return RequestRejected(pdu, raw, P.ESME_RINVBNDSTS)
            return SubmitReceived(pdu, raw)
        if command.endswith("_resp") or command == "generic_nack":
            request = self.outstanding.pop(pdu.sequence, None)
            if command == "unbind_resp":
                self.state = SessionState.UNBINDING
            return ResponseReceived(pdu, raw, request)
        # Requests an SMSC does not take from an ESME (deliver_sm, alert_notification,
        # bind_*_resp sent as requests...) or that are not implemented (query_sm).
        status = P.ESME_RINVCMDID
        try:
            self._queue(P.response_name(command), pdu.sequence, status)
        except ValueError:
            self._queue("generic_nack", pdu.sequence, status)
        return RequestRejected(pdu, raw, status)

    def _on_bind(self, pdu, raw: bytes, mode: BindMode) -> Event:
        resp = pdu.command + "_resp"
        system_id = pdu.system_id or ""
        if self.state is not SessionState.OPEN:
            self._queue(resp, pdu.sequence, P.ESME_RALYBND)
            return BindRefused(pdu, raw, P.ESME_RALYBND, system_id)
        if system_id not in self.accounts:
            self._queue(resp, pdu.sequence, P.ESME_RINVSYSID)
            return BindRefused(pdu, raw, P.ESME_RINVSYSID, system_id)
        if (pdu.password or "") != self.accounts[system_id]:
            self._queue(resp, pdu.sequence, P.ESME_RINVPASWD)
            return BindRefused(pdu, raw, P.ESME_RINVPASWD, system_id)
        self.state = SessionState.BINDING
        self._pending_bind = (pdu.sequence, pdu.command)
        self.interface_version = pdu.interface_version or 0
        self.mode = mode
        self.esme_system_id = system_id
        return BindRequested(pdu, raw, mode, system_id)

    # --- answers -----------------------------------------------------------

    def accept_bind(self) -> Outgoing:
        sequence, command = self._take_pending_bind()
        self.state = SessionState.BOUND
        fields: dict[str, Any] = {"system_id": self.system_id}
        if self.interface_version >= 0x34:  # an SMPP 3.3 ESME gets no TLVs
            fields["sc_interface_version"] = 0x34
        return self._queue(command + "_resp", sequence, P.ESME_ROK, **fields)

    def refuse_bind(self, status: int = P.ESME_RBINDFAIL) -> Outgoing:
        sequence, command = self._take_pending_bind()
        self.state = SessionState.OPEN
        self.mode = None
        self.esme_system_id = None
        return self._queue(command + "_resp", sequence, status)

    def _take_pending_bind(self) -> tuple[int, str]:
        if self._pending_bind is None:
            raise RuntimeError("no bind is waiting for an answer")
        pending, self._pending_bind = self._pending_bind, None
        return pending

    def respond(self, request, status: int = P.ESME_ROK, **fields) -> Outgoing:
        """Answer a request PDU (echoing its sequence)."""
        if status != P.ESME_ROK:
            fields = {}
        return self._queue(P.response_name(request.command), request.sequence, status, **fields)

    # --- the SMSC's own requests -------------------------------------------

    @property
    def can_deliver(self) -> bool:
        """Bound in a mode that receives deliver_sm."""
        return self.state is SessionState.BOUND and self.mode is not None and self.mode.can_receive

    def send_request(self, command: str, now: float, context: Any = None, **fields) -> Outgoing:
        """Queue a request (deliver_sm, enquire_link, unbind) and track its response."""
        sequence = self._take_sequence()
        out = self._queue(command, sequence, P.ESME_ROK, **fields)
        self.outstanding[sequence] = Outstanding(command, sequence, now, context)
        if command == "unbind":
            self.state = SessionState.UNBINDING
        return out

    def expire(self, now: float, timeout: float) -> list[Outstanding]:
        """Forget and return requests unanswered for ``timeout`` seconds."""
        late = [o for o in self.outstanding.values() if now - o.sent_at >= timeout]
        for o in late:
            del self.outstanding[o.sequence]
        return late

    def close(self) -> list[Outstanding]:
        """The connection is gone: return what was still awaiting an answer."""
        self.state = SessionState.CLOSED
        pending = list(self.outstanding.values())
        self.outstanding.clear()
        return pending

    def take_output(self) -> list[Outgoing]:
        out, self._output = self._output, []
        return out

    # --- internals -----------------------------------------------------------

    def _take_sequence(self) -> int:
        sequence = self._next_sequence
        self._next_sequence = 1 if sequence >= 0x7FFFFFFF else sequence + 1
        return sequence

    def _queue(self, command: str, sequence: int, status: int = P.ESME_ROK, **fields) -> Outgoing:
        raw = P.encode_pdu(command, sequence, status, **fields)
        out = Outgoing(raw, command, sequence, status, fields)
        self._output.append(out)
        return out
