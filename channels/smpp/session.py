"""The SMPP 3.4 ESME session as a sans-I/O state machine.

`EsmeSession` is fed the bytes the SMSC sent (`receive_data`) and the
passing of time (`tick`); it returns events and accumulates the bytes to send
(`data_to_send`). It never touches a socket or a reactor, so every rule below
is unit-tested without either; `channels.smpp.client` moves the bytes and
schedules `tick` at `next_deadline()`.

One session lives as long as one configured bind and spans its TCP
connections (`connection_made` / `connection_lost`): messages queued while
the link is down, or in flight when it dropped, are sent after the next bind.

Rules it implements (DESIGN 4 and 8, and the complaints in NOTES-packages):

* bind_transceiver on connect; enquire_link after ``enquire_link_interval``
  without traffic from the SMSC; a request without response within
  ``response_timeout`` fails it; an unanswered enquire_link, bind or unbind
  ends the link (`LinkDead`, `Unbound`, `BindFailed`: the transport closes and
  the client reconnects).
* A window of ``window`` outstanding submit_sm; at most ONE outstanding
  submit_sm per destination, so a part that is throttled or times out is
  retried before anything later to the same number: order per destination
  survives throttling and reconnects.
* ESME_RTHROTTLED / ESME_RMSGQFUL (and the temporary RSYSERR / RX_T_APPN)
  pause all submissions for an exponential, capped back-off and retry the same
  part; a token bucket caps submissions per second, counting parts.
* deliver_sm is answered only when the application says so (`ack_deliver`
  once the message is durably recorded, `nack_deliver` to make the SMSC
  retry) -- except parts of a concatenated message that do not complete it:
  they are acknowledged at once (an SMSC with a window of one would never
  send the next part otherwise) and the completing part carries the ack.
  If the completing part is nacked or the link drops first, the whole text
  is remembered (``multipart_retry_memory``) so the SMSC's retry of that one
  part yields the whole message again.
* ``MessageReceived.smsc_message_key`` identifies the content (source,
  destination, text, concatenation reference, USSD session), not the PDU:
  an SMSC retry carries a new sequence number but the same key. A subscriber
  who really sends the same text twice also gets the same key unless the
  SMSC passes the phone's TP-MR (``user_message_reference``, part of the key
  and of the event), so the application dedups within a window: the TP-MR's
  horizon when there is one, the SMSC's short resend horizon otherwise.
* A submit_sm unanswered within ``response_timeout`` is sent again (the
  SMSC may have accepted it: at-least-once, like every SMPP gateway) and an
  enquire_link checks the link.
* Malformed or unknown requests get generic_nack and the link stays up; a
  framing error (impossible command_length) drops it.
"""
from __future__ import annotations

import hashlib
import random
import re
from collections import OrderedDict, deque
from dataclasses import dataclass, fields as dc_fields
from typing import Any, Protocol

from channels.smpp import pdu as P
from channels.smpp.receipts import Receipt, ReceiptFormatError, message_id_candidates, receipt_from_tlvs
from channels.smpp.text import Reassembler, decode_message, encode_text, split_message

__all__ = [
    "EsmeConfig", "EsmeSession", "SessionState", "UssdInfo", "PartHandle",
    "Event", "Bound", "BindFailed", "MessageReceived", "ReceiptReceived", "IncompleteMessage",
    "SubmitResult", "MessageAccepted", "SubmitFailed", "Throttled", "LinkDead", "Unbound",
    "ProtocolWarning", "RETRYABLE_STATUSES",
]

#: submit_sm statuses that mean "later, not never": back off and retry.
THROTTLE_STATUSES = frozenset({P.ESME_RTHROTTLED, P.ESME_RMSGQFUL})
RETRYABLE_STATUSES = THROTTLE_STATUSES | {P.ESME_RSYSERR, P.ESME_RX_T_APPN}

_MAX_SEQUENCE = 0x7FFFFFFF
_E164 = re.compile(r"^[1-9][0-9]{2,14}$")


class Clock(Protocol):
    def seconds(self) -> float: ...


# --------------------------------------------------------------------------- config

@dataclass(frozen=True)
class EsmeConfig:
    """One bind's settings (the ``[[smpp.binds]]`` table of the TOML config).

    Times are seconds. ``submit_rate`` is parts per second (0: unlimited);
    ``submit_burst`` the bucket size (default: one second's worth, at least 1).
    ``give_up`` is how long a submission may wait for the SMSC to accept it
    before it is reported failed (the application keeps it in its outbox).
    ``multipart_retry_memory`` is how long the text of a concatenated MO whose
    completing part was not acknowledged is kept, so that the SMSC's retry of
    that one part yields the whole message again.
    """
    system_id: str
    password: str = ""
    system_type: str = ""
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    source_addr: str = "10658888"
    source_addr_ton: int = 0
    source_addr_npi: int = 1
    dest_addr_ton: int = 1
    dest_addr_npi: int = 1
    service_type: str = ""
    window: int = 10
    response_timeout: float = 10.0
    enquire_link_interval: float = 15.0
    unbind_timeout: float = 2.0
    throttle_backoff_initial: float = 1.0
    throttle_backoff_max: float = 30.0
    submit_rate: float = 0.0
    submit_burst: int | None = None
    reassembly_timeout: float = 60.0
    multipart_retry_memory: float = 900.0
    give_up: float = 3600.0

    def __post_init__(self):
        if not self.system_id or len(self.system_id) > 15:
            raise ValueError("system_id must be 1..15 characters")
        if len(self.password) > 8:
            raise ValueError("password must be at most 8 characters (SMPP 3.4)")
        if self.window < 1:
            raise ValueError("window must be at least 1")
        for name in ("response_timeout", "enquire_link_interval", "unbind_timeout",
                     "throttle_backoff_initial", "throttle_backoff_max", "reassembly_timeout",
                     "multipart_retry_memory", "give_up"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.submit_rate < 0:
            raise ValueError("submit_rate must not be negative")
        # Every field that goes into each PDU is checked once, here (lengths, ranges).
        P.encode_pdu("bind_transceiver", 1, system_id=self.system_id, password=self.password,
                     system_type=self.system_type, interface_version=0x34, addr_ton=self.addr_ton,
                     addr_npi=self.addr_npi, address_range=self.address_range)
        P.encode_pdu("submit_sm", 1, service_type=self.service_type, source_addr=self.source_addr,
                     source_addr_ton=self.source_addr_ton, source_addr_npi=self.source_addr_npi,
                     dest_addr_ton=self.dest_addr_ton, dest_addr_npi=self.dest_addr_npi)
        for name in ("addr_ton", "addr_npi", "source_addr_ton", "source_addr_npi",
                     "dest_addr_ton", "dest_addr_npi"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"{name} must fit one octet")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EsmeConfig":
        """Build from a config mapping; unknown keys are an error (typos must not pass)."""
        known = {f.name for f in dc_fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SMPP bind settings: {', '.join(sorted(unknown))}")
        return cls(**data)


# --------------------------------------------------------------------------- values and events

@dataclass(frozen=True)
class UssdInfo:
    """The USSD TLVs of one PDU.

    ``service_op`` is ``ussd_service_op`` (1: PSSR indication = session start,
    0x12: USSR confirm = the user's answer, 2: USSR request = we ask and the
    session continues, 0x11: PSSR response = our final text). ``session_info``
    is ``its_session_info``, echoed back unchanged except its end bit.
    """
    service_op: int | None = None
    session_info: int | None = None
    user_message_reference: int | None = None

    @property
    def session_ended(self) -> bool:
        return self.session_info is not None and bool(self.session_info & 0x01)

    def reply(self, *, end: bool) -> "UssdInfo":
        """The TLVs of our answer: USSR request (continue) or PSSR response (end)."""
        info = self.session_info
        if info is not None:
            info = (info | 0x01) if end else (info & ~0x01)
        return UssdInfo(service_op=P.USSD_PSSR_RESP if end else P.USSD_USSR_REQ,
                        session_info=info, user_message_reference=self.user_message_reference)


@dataclass(frozen=True)
class PartHandle:
    """One submit_sm of a message: ``index`` 0-based among ``count`` parts."""
    handle: Any
    index: int
    count: int


class Event:
    """Base class of everything the session reports."""
    __slots__ = ()


@dataclass(frozen=True)
class Bound(Event):
    system_id: str          # the SMSC's system_id from bind_transceiver_resp


@dataclass(frozen=True)
class BindFailed(Event):
    status: int | None      # None: no response in time
    reason: str


@dataclass(frozen=True)
class MessageReceived(Event):
    """A complete mobile-originated message (or USSD input); answer it with
    `EsmeSession.ack_deliver` / `nack_deliver` using ``sequence`` and ``connection``."""
    sequence: int
    connection: int
    msisdn: str             # source_addr
    destination: str        # destination_addr (our service number)
    text: str
    data_coding: int
    smsc_message_key: str
    ussd: UssdInfo | None
    parts: int = 1
    #: the SMSC's identity of the message (TP-MR), when it passes one on
    user_message_reference: int | None = None


@dataclass(frozen=True)
class ReceiptReceived(Event):
    """A delivery receipt; ``message_id_candidates`` are the normalised ids it may
    match (see `channels.smpp.receipts`). Acknowledge it like a message."""
    sequence: int
    connection: int
    message_id: str
    state: str
    error: str | None
    receipt: Receipt
    message_id_candidates: frozenset[str]
    msisdn: str             # the handset the original message went to


@dataclass(frozen=True)
class IncompleteMessage(Event):
    """Parts of a concatenated message that never completed within the timeout."""
    msisdn: str
    destination: str
    received_parts: int
    total_parts: int


@dataclass(frozen=True)
class SubmitResult(Event):
    """The SMSC's final answer for one part: ``status`` 0 with ``message_id``, or an error."""
    part: PartHandle
    message_id: str | None
    status: int


@dataclass(frozen=True)
class MessageAccepted(Event):
    """Every part of a submission was accepted; ids in part order."""
    handle: Any
    message_ids: tuple[str, ...]


@dataclass(frozen=True)
class SubmitFailed(Event):
    handle: Any
    status: int | None
    reason: str


@dataclass(frozen=True)
class Throttled(Event):
    status: int
    delay: float


@dataclass(frozen=True)
class LinkDead(Event):
    reason: str


@dataclass(frozen=True)
class Unbound(Event):
    by_smsc: bool
    reason: str
    timed_out: bool = False     # our unbind went unanswered


@dataclass(frozen=True)
class ProtocolWarning(Event):
    """Something odd the SMSC did that was handled; worth a log line."""
    reason: str


# --------------------------------------------------------------------------- internals

class SessionState:
    CLOSED = "closed"
    BINDING = "binding"
    BOUND = "bound"
    UNBINDING = "unbinding"


@dataclass(eq=False)
class _Part:
    handle: PartHandle
    destination: str
    fields: dict
    message_id: str | None = None
    sent: bool = False


@dataclass(eq=False)
class _Message:
    handle: Any
    destination: str
    parts: list[_Part]
    created: float
    in_flight: int = 0
    expired: bool = False       # past give-up while a part was in flight


@dataclass(eq=False)
class _Request:
    command: str
    deadline: float
    part: _Part | None = None


def _message_key(*items) -> str:
    h = hashlib.sha256()
    for item in items:
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.hexdigest()[:32]


class EsmeSession:
    """One ESME bind (transceiver), sans-I/O. See the module docstring."""

    def __init__(self, config: EsmeConfig, clock: Clock, *, rng: random.Random | None = None):
        self.config = config
        self._clock = clock
        self.state = SessionState.CLOSED
        self.connection = 0             # increments per TCP connection
        self.should_close = False       # the transport should be closed now
        self._out: list[bytes] = []
        self._reader = P.PduReader()
        self._sequence = 0
        self._ref = (rng or random.Random()).randrange(256)
        self._requests: dict[int, _Request] = {}
        self._enquire_outstanding = False
        self._last_rx = clock.seconds()
        # outbound
        self._messages: OrderedDict[Any, _Message] = OrderedDict()
        self._by_dest: dict[str, deque[_Part]] = {}
        self._ready: deque[str] = deque()
        self._busy: set[str] = set()
        self._submits_in_flight = 0
        self._paused_until = 0.0
        self._backoff = config.throttle_backoff_initial
        burst = config.submit_burst or max(1, int(config.submit_rate))
        self._bucket_size = float(burst)
        self._tokens = float(burst)
        self._tokens_at = clock.seconds()
        # inbound
        self._pending_delivers: dict[int, str] = {}        # seq -> response command
        self._multipart_of: dict[int, tuple] = {}          # seq -> (concat key, whole text)
        self._redeliver: dict[tuple, tuple[str, float]] = {}
        self._reassembler = Reassembler(clock, config.reassembly_timeout)
        self._partial_started: dict[tuple, float] = {}     # concat key -> first part time

    # ------------------------------------------------------------------ plumbing

    def _now(self) -> float:
        return self._clock.seconds()

    def _next_sequence(self) -> int:
        self._sequence = self._sequence % _MAX_SEQUENCE + 1
        return self._sequence

    def _send(self, command: str, sequence: int, status: int = 0, **fields) -> None:
        self._out.append(P.encode_pdu(command, sequence, status, **fields))

    def _request(self, command: str, timeout: float, part: _Part | None = None, **fields) -> int:
        seq = self._next_sequence()
        self._send(command, seq, **fields)
        self._requests[seq] = _Request(command, self._now() + timeout, part)
        return seq

    def data_to_send(self) -> bytes:
        """Bytes to write to the SMSC (and forget)."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def is_bound(self) -> bool:
        return self.state == SessionState.BOUND

    @property
    def queued(self) -> int:
        """Parts waiting to be sent (not counting those in flight)."""
        return sum(len(q) for q in self._by_dest.values())

    @property
    def pending_messages(self) -> int:
        """Submissions not yet completely accepted."""
        return len(self._messages)

    # ------------------------------------------------------------------ connection lifecycle

    def connection_made(self) -> None:
        """A TCP connection is up: send bind_transceiver."""
        self.connection += 1
        self.state = SessionState.BINDING
        self.should_close = False
        self._reader = P.PduReader()
        self._out.clear()
        self._last_rx = self._now()
        c = self.config
        self._request("bind_transceiver", c.response_timeout,
                      system_id=c.system_id, password=c.password, system_type=c.system_type,
                      interface_version=0x34, addr_ton=c.addr_ton, addr_npi=c.addr_npi,
                      address_range=c.address_range)

    def connection_lost(self) -> None:
        """The TCP connection is gone: in-flight parts go back to the head of
        their destination's queue; unanswered deliver_sm will be redelivered by
        the SMSC, so their pending acks are forgotten."""
        self.state = SessionState.CLOSED
        self.should_close = False
        self._out.clear()
        for req in sorted(self._requests.values(), key=lambda r: r.deadline, reverse=True):
            if req.part is not None:
                self._requeue_front(req.part)
        self._requests.clear()
        self._busy.clear()
        self._enquire_outstanding = False
        self._submits_in_flight = 0
        self._pending_delivers.clear()
        for concat_key, text in self._multipart_of.values():
            self._remember_multipart(concat_key, text)
        self._multipart_of.clear()

    def unbind(self) -> None:
        """Start a graceful unbind; `Unbound` follows (response or timeout)."""
        if self.state == SessionState.BOUND:
            self.state = SessionState.UNBINDING
            self._request("unbind", self.config.unbind_timeout)
        elif self.state != SessionState.UNBINDING:
            self.should_close = True

    def _close(self) -> None:
        self.should_close = True

    # ------------------------------------------------------------------ bytes in

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the SMSC; returns the resulting events."""
        if self.should_close or self.state == SessionState.CLOSED:
            return []
        events: list[Event] = []
        try:
            raws = self._reader.feed(data)
        except P.FramingError as exc:
            self._close()
            return [LinkDead(f"framing error: {exc}")]
        if raws:
            self._last_rx = self._now()
        for raw in raws:
            try:
                pdu = P.decode_pdu(raw)
            except P.PduError as exc:
                if not exc.is_response:
                    self._send("generic_nack", exc.sequence, exc.status)
                    events.append(ProtocolWarning(f"generic_nack 0x{exc.status:02x}: {exc}"))
                else:
                    events.append(ProtocolWarning(f"undecodable response ignored: {exc}"))
                continue
            handler = getattr(self, "_on_" + pdu.command, None)
            if handler is None:
                if pdu.is_request():
                    self._send("generic_nack", pdu.sequence, P.ESME_RINVCMDID)
                    events.append(ProtocolWarning(f"generic_nack for unsupported {pdu.command}"))
                else:
                    self._requests.pop(pdu.sequence, None)
                continue
            try:
                handler(pdu, events)
            except Exception as exc:   # a PDU we cannot handle must not take the link down
                if pdu.is_request() and pdu.sequence not in self._pending_delivers:
                    self._send(P.response_name(pdu.command), pdu.sequence, P.ESME_RSYSERR)
                events.append(ProtocolWarning(f"{pdu.command} seq {pdu.sequence} not handled: {exc!r}"))
            if self.should_close:
                break
        self._dispatch(events)
        return events

    # --- responses

    def _pop_request(self, pdu, command: str, events: list[Event]) -> _Request | None:
        req = self._requests.get(pdu.sequence)
        if req is None or req.command != command:
            events.append(ProtocolWarning(f"{pdu.command} seq {pdu.sequence} matches no request"))
            return None
        del self._requests[pdu.sequence]
        return req

    def _on_bind_transceiver_resp(self, pdu, events):
        if self._pop_request(pdu, "bind_transceiver", events) is None:
            return
        if pdu.status == P.ESME_ROK:
            self.state = SessionState.BOUND
            events.append(Bound(pdu.system_id or ""))
        else:
            events.append(BindFailed(pdu.status, f"bind refused, status 0x{pdu.status:02x}"))
            self._close()

    def _on_enquire_link_resp(self, pdu, events):
        if self._pop_request(pdu, "enquire_link", events) is not None:
            self._enquire_outstanding = False

    def _on_unbind_resp(self, pdu, events):
        if self._pop_request(pdu, "unbind", events) is not None:
            events.append(Unbound(False, "unbind acknowledged"))
            self._close()

    def _on_generic_nack(self, pdu, events):
        req = self._requests.pop(pdu.sequence, None)
        if req is None:
            events.append(ProtocolWarning(f"generic_nack 0x{pdu.status:02x} for unknown seq {pdu.sequence}"))
            return
        if req.command == "submit_sm":
            self._submit_answered(req.part, pdu.status or P.ESME_RUNKNOWNERR, None, events)
        elif req.command == "bind_transceiver":
            events.append(BindFailed(pdu.status, f"bind nacked, status 0x{pdu.status:02x}"))
            self._close()
        elif req.command == "enquire_link":
            # The SMSC answered: it is alive even if it dislikes enquire_link.
            self._enquire_outstanding = False
            events.append(ProtocolWarning("SMSC nacked enquire_link"))
        elif req.command == "unbind":
            events.append(Unbound(False, "unbind nacked"))
            self._close()

    def _on_submit_sm_resp(self, pdu, events):
        req = self._pop_request(pdu, "submit_sm", events)
        if req is not None:
            self._submit_answered(req.part, pdu.status, pdu.message_id, events)

    # --- requests from the SMSC

    def _on_enquire_link(self, pdu, events):
        self._send("enquire_link_resp", pdu.sequence)

    def _on_unbind(self, pdu, events):
        self._send("unbind_resp", pdu.sequence)
        self.state = SessionState.CLOSED
        events.append(Unbound(True, "SMSC unbound"))
        self._close()

    def _on_alert_notification(self, pdu, events):
        pass  # no response is defined for alert_notification

    def _on_data_sm(self, pdu, events):
        # Some SMSCs deliver MO and USSD as data_sm: same handling, data_sm_resp.
        self._on_deliver_sm(pdu, events, "data_sm_resp")

    def _on_deliver_sm(self, pdu, events, response: str = "deliver_sm_resp"):
        if self.state != SessionState.BOUND:
            self._send(response, pdu.sequence, P.ESME_RINVBNDSTS)
            return
        esm_class = pdu.esm_class or 0
        source = pdu.source_addr or ""
        destination = pdu.destination_addr or ""
        body = getattr(pdu, "short_message", None) or pdu.message_payload or b""
        if esm_class & P.ESM_CLASS_DELIVERY_RECEIPT or pdu.receipted_message_id:
            self._receipt(pdu, source, body, events, response)
            return
        decoded = decode_message(pdu)   # never raises: bad octets become U+FFFD
        ussd = None
        if pdu.ussd_service_op is not None or pdu.its_session_info is not None:
            ussd = UssdInfo(pdu.ussd_service_op, pdu.its_session_info, pdu.user_message_reference)
        text = decoded.text
        parts = 1
        concat_key = None
        if decoded.concat is not None and decoded.concat[1] > 1:
            ref, total, _seq = decoded.concat
            parts = total
            concat_key = (source, destination, ref, total)
            cached = self._redeliver.pop(concat_key, None)
            if cached is not None and cached[1] > self._now():
                text = cached[0]
            else:
                full = self._reassembler.add((source, destination, total), decoded.concat, text)
                if full is None:
                    # Not the completing part: acknowledge now (see module docstring).
                    self._partial_started.setdefault(concat_key, self._now())
                    self._send(response, pdu.sequence)
                    return
                self._partial_started.pop(concat_key, None)
                text = full
        key = _message_key(source, destination, pdu.data_coding or 0, text,
                           concat_key[2] if concat_key else "",
                           ussd.session_info if ussd else "",
                           pdu.user_message_reference if pdu.user_message_reference is not None else "")
        self._pending_delivers[pdu.sequence] = response
        if concat_key is not None:
            self._multipart_of[pdu.sequence] = (concat_key, text)
        events.append(MessageReceived(
            sequence=pdu.sequence, connection=self.connection, msisdn=source,
            destination=destination, text=text, data_coding=pdu.data_coding or 0,
            smsc_message_key=key, ussd=ussd, parts=parts, user_message_reference=pdu.user_message_reference))

    def _receipt(self, pdu, source: str, payload: bytes, events: list[Event], response: str) -> None:
        try:
            receipt = receipt_from_tlvs(pdu.receipted_message_id, pdu.message_state,
                                        pdu.network_error_code, payload)
        except ReceiptFormatError as exc:
            # A receipt we cannot read stays unreadable on retry: take it off the SMSC.
            self._send(response, pdu.sequence)
            events.append(ProtocolWarning(f"unreadable delivery receipt acknowledged: {exc}"))
            return
        self._pending_delivers[pdu.sequence] = response
        events.append(ReceiptReceived(
            sequence=pdu.sequence, connection=self.connection, message_id=receipt.message_id,
            state=receipt.state, error=receipt.error, receipt=receipt,
            message_id_candidates=message_id_candidates(receipt.message_id), msisdn=source))

    # ------------------------------------------------------------------ MO answers

    def ack_deliver(self, sequence: int, connection: int | None = None) -> bool:
        """Send deliver_sm_resp OK. False when the deliver_sm is not pending on
        this connection (the link dropped meanwhile: the SMSC will redeliver)."""
        return self._answer_deliver(sequence, P.ESME_ROK, connection)

    def nack_deliver(self, sequence: int, status: int = P.ESME_RX_T_APPN,
                     connection: int | None = None) -> bool:
        """Answer deliver_sm with an error so that the SMSC retries (or drops it,
        for permanent statuses)."""
        if status == P.ESME_ROK:
            raise ValueError("nack_deliver needs an error status")
        return self._answer_deliver(sequence, status, connection)

    def _answer_deliver(self, sequence: int, status: int, connection: int | None) -> bool:
        if connection is not None and connection != self.connection:
            return False
        command = self._pending_delivers.pop(sequence, None)
        if command is None:
            return False
        multipart = self._multipart_of.pop(sequence, None)
        if multipart is not None and status != P.ESME_ROK:
            self._remember_multipart(*multipart)
        if self.state in (SessionState.BOUND, SessionState.UNBINDING):
            self._send(command, sequence, status)
        return True

    def _remember_multipart(self, concat_key: tuple, text: str) -> None:
        """The SMSC will redeliver only the completing part (the earlier ones
        were acknowledged): keep the whole text for that retry."""
        self._redeliver[concat_key] = (text, self._now() + self.config.multipart_retry_memory)

    # ------------------------------------------------------------------ MT

    def submit(self, destination: str, text: str, *, handle: Any, ussd: UssdInfo | None = None,
               registered_delivery: bool = True) -> list[PartHandle]:
        """Queue a message to ``destination`` (E.164 digits); returns its part handles.

        GSM 03.38 when the text fits, else UCS2; long texts become UDH parts.
        A USSD message must fit one PDU.
        """
        if handle in self._messages:
            raise ValueError(f"handle {handle!r} is already pending")
        if not isinstance(destination, str) or not _E164.match(destination):
            raise ValueError("destination must be E.164 digits without '+'")
        if not isinstance(text, str):
            raise TypeError("text must be str")
        if ussd is not None:
            parts = [encode_text(text)]     # USSD is never concatenated
            if len(parts[0].short_message) > 254:
                raise ValueError("USSD text too long for one message")
        else:
            self._ref = (self._ref + 1) % 256
            parts = split_message(text, self._ref)
        c = self.config
        common = dict(
            service_type=c.service_type,
            source_addr_ton=c.source_addr_ton, source_addr_npi=c.source_addr_npi,
            source_addr=c.source_addr,
            dest_addr_ton=c.dest_addr_ton, dest_addr_npi=c.dest_addr_npi,
            destination_addr=destination,
            registered_delivery=P.REGISTERED_DELIVERY_RECEIPT if registered_delivery else 0,
        )
        if ussd is not None:
            if ussd.service_op is not None:
                common["ussd_service_op"] = ussd.service_op
            if ussd.session_info is not None:
                common["its_session_info"] = ussd.session_info
            if ussd.user_message_reference is not None:
                common["user_message_reference"] = ussd.user_message_reference
        msg = _Message(handle, destination, [], self._now())
        for i, part in enumerate(parts):
            f = dict(common, esm_class=part.esm_class, data_coding=part.data_coding,
                     short_message=part.short_message)
            msg.parts.append(_Part(PartHandle(handle, i, len(parts)), destination, f))
        self._messages[handle] = msg
        queue = self._by_dest.get(destination)
        if queue is None:
            queue = self._by_dest[destination] = deque()
            if destination not in self._busy:
                self._ready.append(destination)
        queue.extend(msg.parts)
        self._dispatch([])
        return [p.handle for p in msg.parts]

    def take_movable(self) -> list[tuple[Any, str]]:
        """Remove and return, oldest first, the pending submissions that may be
        re-sent over another bind: ``[(handle, destination)]``.

        Movable: nothing in flight and no part accepted yet. A destination with
        a message that must stay (partly accepted, or in flight) keeps all its
        messages here, so that moving never reorders one handset's messages.
        """
        staying = {m.destination for m in self._messages.values()
                   if m.in_flight or any(p.message_id is not None for p in m.parts)}
        out = []
        for handle, msg in list(self._messages.items()):
            if msg.destination in staying:
                continue
            del self._messages[handle]
            self._by_dest.pop(msg.destination, None)
            out.append((handle, msg.destination))
        if out:
            moved = {dest for _, dest in out}
            self._ready = deque(d for d in self._ready if d not in moved)
        return out

    def cancel_all(self, reason: str) -> list[Event]:
        """Forget every pending submission (shutdown); one `SubmitFailed` each."""
        events: list[Event] = [SubmitFailed(h, None, reason) for h in self._messages]
        self._messages.clear()
        self._by_dest.clear()
        self._ready.clear()
        return events

    def _set_dest_queue(self, destination: str, queue: deque) -> None:
        if queue:
            self._by_dest[destination] = queue
        else:
            self._by_dest.pop(destination, None)
            try:
                self._ready.remove(destination)
            except ValueError:
                pass

    def _requeue_front(self, part: _Part) -> None:
        dest = part.destination
        self._busy.discard(dest)
        msg = self._messages.get(part.handle.handle)
        if msg is None:         # given up or cancelled meanwhile: drop the part
            self._release_dest(dest)
            return
        msg.in_flight = max(0, msg.in_flight - 1)
        queue = self._by_dest.get(dest)
        if queue is None:
            queue = self._by_dest[dest] = deque()
        queue.appendleft(part)
        if dest in self._ready:
            self._ready.remove(dest)
        self._ready.appendleft(dest)

    def _release_dest(self, dest: str) -> None:
        self._busy.discard(dest)
        if self._by_dest.get(dest):
            self._ready.append(dest)

    def _refill(self, now: float) -> None:
        rate = self.config.submit_rate
        if rate > 0:
            self._tokens = min(self._bucket_size, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now

    def _dispatch(self, events: list[Event]) -> None:
        if self.state != SessionState.BOUND or self.should_close:
            return
        now = self._now()
        if now < self._paused_until:
            return
        rate = self.config.submit_rate
        self._refill(now)
        while self._ready and self._submits_in_flight < self.config.window:
            if rate > 0:
                if self._tokens < 1.0:
                    break
                self._tokens -= 1.0
            dest = self._ready.popleft()
            queue = self._by_dest[dest]
            part = queue.popleft()
            if not queue:
                del self._by_dest[dest]
            self._busy.add(dest)
            part.sent = True
            msg = self._messages[part.handle.handle]
            msg.in_flight += 1
            self._submits_in_flight += 1
            self._request("submit_sm", self.config.response_timeout, part, **part.fields)

    def _submit_answered(self, part: _Part, status: int, message_id: str | None, events: list[Event]) -> None:
        self._submits_in_flight -= 1
        msg = self._messages.get(part.handle.handle)
        if status in RETRYABLE_STATUSES and msg is not None and not msg.expired:
            delay = self._backoff
            self._backoff = min(self._backoff * 2, self.config.throttle_backoff_max)
            self._paused_until = max(self._paused_until, self._now() + delay)
            self._requeue_front(part)
            events.append(Throttled(status, delay))
            return
        self._busy.discard(part.destination)
        if msg is None:       # given up or cancelled meanwhile
            self._release_dest(part.destination)
            return
        msg.in_flight -= 1
        if status == P.ESME_ROK:
            self._backoff = self.config.throttle_backoff_initial
            part.message_id = message_id or ""
            events.append(SubmitResult(part.handle, part.message_id, status))
            if all(p.message_id is not None for p in msg.parts):
                del self._messages[msg.handle]
                events.append(MessageAccepted(msg.handle, tuple(p.message_id for p in msg.parts)))
        else:
            events.append(SubmitResult(part.handle, None, status))
            self._fail_message(msg, status, f"SMSC refused part {part.handle.index + 1}/"
                                            f"{part.handle.count}, status 0x{status:02x}", events)
        self._release_dest(part.destination)

    def _fail_message(self, msg: _Message, status: int | None, reason: str, events: list[Event]) -> None:
        self._messages.pop(msg.handle, None)
        queue = self._by_dest.get(msg.destination)
        if queue is not None:
            self._set_dest_queue(msg.destination,
                                 deque(p for p in queue if p.handle.handle != msg.handle))
        events.append(SubmitFailed(msg.handle, status, reason))

    # ------------------------------------------------------------------ time

    def tick(self, now: float | None = None) -> list[Event]:
        """Run the timers that are due; call it at `next_deadline()`.
        ``now`` defaults to the session's clock."""
        if now is None:
            now = self._now()
        events: list[Event] = []
        if self.state == SessionState.CLOSED or self.should_close:
            self._expire_offline(now, events)
            return events
        probe = False
        for seq, req in list(self._requests.items()):
            if req.deadline > now:
                continue
            del self._requests[seq]
            if req.command == "bind_transceiver":
                events.append(BindFailed(None, "no bind_transceiver_resp in time"))
                self._close()
            elif req.command == "enquire_link":
                events.append(LinkDead(f"no enquire_link_resp within {self.config.response_timeout:g}s"))
                self._close()
            elif req.command == "unbind":
                events.append(Unbound(False, "no unbind_resp in time", timed_out=True))
                self._close()
            elif req.command == "submit_sm":
                # Retry the part (order kept) and check the link is alive.
                self._submits_in_flight -= 1
                self._requeue_front(req.part)
                events.append(ProtocolWarning(f"submit_sm seq {seq} timed out; will retry"))
                probe = True
        self._expire_offline(now, events)
        if self.should_close:
            return events
        if self.state == SessionState.BOUND and not self._enquire_outstanding and (
                probe or now - self._last_rx >= self.config.enquire_link_interval):
            self._enquire_outstanding = True
            self._request("enquire_link", self.config.response_timeout)
        self._dispatch(events)
        return events

    def _expire_offline(self, now: float, events: list[Event]) -> None:
        """Timers that also run while disconnected: reassembly and give-up."""
        for (source, destination, total), ref, received in self._reassembler.expire():
            self._partial_started.pop((source, destination, ref, total), None)
            events.append(IncompleteMessage(source, destination, received, total))
        # Entries for parts the reassembler ignored (late re-deliveries of a
        # completed message) never expire there: prune them here.
        timeout = self.config.reassembly_timeout
        if not len(self._reassembler):
            self._partial_started.clear()
        for key in [k for k, t in self._partial_started.items() if now - t >= timeout]:
            del self._partial_started[key]
        for key in [k for k, (_, exp) in self._redeliver.items() if exp <= now]:
            del self._redeliver[key]
        give_up = self.config.give_up
        for msg in list(self._messages.values()):
            if msg.created + give_up > now:
                break
            if msg.in_flight:
                msg.expired = True      # decided when that part is answered or times out
                continue
            self._fail_message(msg, None, f"not accepted within {give_up:g}s", events)

    def next_deadline(self) -> float | None:
        """When `tick` must run next (absolute clock time), or None."""
        candidates: list[float] = []
        for msg in self._messages.values():
            if not (msg.expired and msg.in_flight):
                candidates.append(msg.created + self.config.give_up)
                break
        if self._partial_started:
            candidates.append(min(self._partial_started.values()) + self.config.reassembly_timeout)
        if self._redeliver:
            candidates.append(min(exp for _, exp in self._redeliver.values()))
        if self.state != SessionState.CLOSED and not self.should_close:
            candidates.extend(r.deadline for r in self._requests.values())
            if self.state == SessionState.BOUND:
                if not self._enquire_outstanding:
                    candidates.append(self._last_rx + self.config.enquire_link_interval)
                if self._ready and self._submits_in_flight < self.config.window:
                    if self._paused_until > self._now():
                        candidates.append(self._paused_until)
                    elif self.config.submit_rate > 0 and self._tokens < 1.0:
                        candidates.append(self._tokens_at + (1.0 - self._tokens) / self.config.submit_rate)
        return min(candidates) if candidates else None
