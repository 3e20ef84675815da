"""The simulated SMSC: binds, handsets, MO delivery with retries, MT, receipts, USSD, faults.

`SmscSimulator` is the Python API that tests, the CLI and the HTTP control
API share. It behaves like a carrier's SMSC towards the platform's ESME:
it checks credentials, answers submit_sm with unique message ids, sends
delivery receipts when asked, keeps the link alive with enquire_link,
stores MOs while no receiver is bound, and re-delivers an MO whose
deliver_sm was not acknowledged (timeout, error status, lost connection).
"""
from __future__ import annotations

import functools
import itertools
import random
import time as _time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from channels.smpp import pdu as P
from channels.smpp.text import Reassembler, decode_message, gsm_encode, is_gsm
from telecom_pay.msisdn import MsisdnError, normalize

from .config import SmscConfig
from .faults import FaultSet
from .handsets import Handset, InboxMessage, InboxPart
from .server import SmscFactory, SmscProtocol
from .session import (BindRefused, BindRequested, Event, MalformedPdu, Outgoing, Outstanding, RequestRejected,
                      ResponseReceived, SubmitReceived, UnbindReceived)
from .traffic import TrafficLog

__all__ = ["SmscSimulator", "DeliveryFailed", "SubmittedMessage", "BindInfo"]

log = Logger()


class DeliveryFailed(Exception):
    """The platform never acknowledged a deliver_sm (after all attempts) or rejected it for good."""


@dataclass
class SubmittedMessage:
    """One submit_sm the SMSC accepted (one part of a long MT)."""

    message_id: str
    bind_id: str
    system_id: str
    source_addr: str
    destination_addr: str
    text: str
    submitted_at: float
    registered_delivery: int
    receipt_sent_at: float | None = None
    receipt_acked_at: float | None = None


@dataclass
class BindInfo:
    bind_id: str
    system_id: str | None
    mode: str | None
    state: str
    peer: str
    connected_at: float
    bound_at: float | None
    outstanding: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Delivery:
    """A deliver_sm the SMSC owes the platform (an MO part or a receipt)."""

    fields: dict[str, Any]
    kind: str  # "mo", "ussd" or "receipt"
    system_id: str | None = None  # receipts go back to the submitting account
    attempts: int = 0
    deferred: defer.Deferred = field(default_factory=defer.Deferred)
    duplicate: bool = False
    submitted: SubmittedMessage | None = None


_PERMANENT_ERRORS = frozenset({P.ESME_RX_P_APPN, P.ESME_RX_R_APPN, P.ESME_RINVCMDID, P.ESME_RINVBNDSTS})


class SmscSimulator:
    """A simulated SMSC with handsets. ``reactor`` provides TCP and time (a task.Clock works for time)."""

    def __init__(self, config: SmscConfig | None = None, reactor=None, rng: random.Random | None = None,
                 clock=None):
        """``reactor`` listens (IReactorTCP) and, unless ``clock`` is given, keeps time (IReactorTime)."""
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.config = config or SmscConfig()
        self.config.validate()
        self.reactor = reactor
        #: the IVR the web handset's call keypad dials (the Asterisk caller
        #: simulator, as a switch would): `make run` points it at the daemon's
        self.ivr_endpoint = "tcp:127.0.0.1:4573"
        self.clock = clock if clock is not None else reactor
        self.rng = rng or random.Random()
        self.faults = FaultSet(self.clock, self.rng)
        self.traffic = TrafficLog(self.config.traffic_capacity)
        self.handsets: dict[str, Handset] = {}
        self.messages: OrderedDict[str, SubmittedMessage] = OrderedDict()
        self._protocols: dict[str, SmscProtocol] = {}
        self._bind_numbers = itertools.count(1)
        self._message_numbers = itertools.count(self.rng.randrange(1 << 32))
        self._round_robin = itertools.count()
        self._waiting: deque[_Delivery] = deque()  # no receiver bound, or windows full
        self._timers: set[Any] = set()
        self._stopped = False
        self._ports: list[Any] = []
        self._reassembler = Reassembler(self.clock, timeout=60.0)
        for entry in self.config.handsets:
            self.handset(entry["msisdn"], entry.get("language"))

    # --- public API ---------------------------------------------------------------

    def listen(self, endpoint: str) -> defer.Deferred:
        """Listen for ESMEs on a server endpoint string ('tcp:2775', 'tcp:0:interface=127.0.0.1')."""
        d = serverFromString(self.reactor, endpoint).listen(SmscFactory(self))
        return d.addCallback(self._keep_port)

    def listen_http(self, endpoint: str, *, hosts: tuple[str, ...] = ()) -> defer.Deferred:
        """Serve the JSON control API (see simulators.smsc.http) on a server endpoint string;
        `hosts`: names it is reached by besides loopback (see simulators.control_guard)."""
        from simulators.control_guard import endpoint_hosts
        from .http import control_site

        d = serverFromString(self.reactor, endpoint).listen(control_site(self, endpoint_hosts(endpoint, hosts)))
        return d.addCallback(self._keep_port)

    def stop(self) -> defer.Deferred:
        """Stop listening, cut every connection, cancel timers and fail undelivered MOs."""
        self._stopped = True
        for call in list(self._timers):
            if call.active():
                call.cancel()
        self._timers.clear()
        for proto in list(self._protocols.values()):
            proto.abort()
        while self._waiting:
            self._fail(self._waiting.popleft(), "simulator stopped")
        for handset in self.handsets.values():
            handset.cancel_waits()
        ports, self._ports = self._ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports], consumeErrors=True)

    def handset(self, msisdn: str, language: str | None = None) -> Handset:
        """The handset with this number, registered on first use."""
        key = self.canonical_msisdn(msisdn)
        handset = self.handsets.get(key)
        if handset is None:
            handset = Handset(key, language or self.config.default_language, self)
            self.handsets[key] = handset
        elif language:
            handset.language = language
        return handset

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def canonical_msisdn(msisdn: str) -> str:
        """E.164 digits of a mobile number; other all-digit addresses are kept as they are."""
        try:
            return normalize(msisdn)
        except MsisdnError:
            text = (msisdn or "").strip().lstrip("+")
            if text.isdigit() and len(text) <= 20:
                return text
            raise ValueError(f"not a phone number: {msisdn!r}") from None

    @property
    def binds(self) -> list[BindInfo]:
        """Every open ESME connection, bound or not."""
        return [
            BindInfo(p.bind_id, p.system_id, p.session.mode.value if p.session.mode else None,
                     p.session.state.value, p.peer, p.connected_at, p.bound_at, len(p.session.outstanding))
            for p in self._protocols.values()
        ]

    def close_binds(self, system_id: str | None = None, bind_id: str | None = None) -> int:
        """The "close" fault: cut matching connections now, without unbind. Returns how many."""
        doomed = [p for p in self._protocols.values()
                  if (bind_id is None or p.bind_id == bind_id) and (system_id is None or p.system_id == system_id)]
        for proto in doomed:
            proto.abort()
        return len(doomed)

    def unbind_binds(self, system_id: str | None = None, bind_id: str | None = None) -> int:
        """Ask matching bound ESMEs to unbind (an SMSC going down for maintenance).

        The connection closes when the unbind_resp arrives, or after the response
        timeout. Returns how many unbinds were sent.
        """
        count = 0
        for proto in list(self._protocols.values()):
            if (bind_id is None or proto.bind_id == bind_id) and (system_id is None or proto.system_id == system_id):
                if proto.bound_at is not None and proto.send_request("unbind") is not None:
                    count += 1
        return count

    def deliver_mo(self, handset: Handset, parts: list[dict[str, Any]]) -> defer.Deferred:
        """Deliver the deliver_sm of one MO (all its parts); fires when every part was acked."""
        kind = "ussd" if parts and parts[0].get("ussd_service_op") is not None else "mo"
        items = [_Delivery(dict(fields), kind) for fields in parts]
        for item in items:
            self._dispatch(item)
        d = defer.gatherResults([item.deferred for item in items], consumeErrors=True)
        d.addCallback(lambda _: None)
        d.addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
        return d

    @property
    def waiting_deliveries(self) -> int:
        """deliver_sm stored because no receiver is bound."""
        return len(self._waiting)

    # --- events from connections -----------------------------------------------------

    def _new_bind_id(self) -> str:
        return f"bind-{next(self._bind_numbers)}"

    def _keep_port(self, port):
        self._ports.append(port)
        return port

    def _connection_made(self, proto: SmscProtocol) -> None:
        self._protocols[proto.bind_id] = proto

    def _bound(self, proto: SmscProtocol) -> None:
        """A bind_resp went out: MOs and receipts stored meanwhile can flow."""
        self._flush_waiting()

    def _connection_lost(self, proto: SmscProtocol, pending: list[Outstanding]) -> None:
        self._protocols.pop(proto.bind_id, None)
        for request in pending:
            self._request_failed(proto, request, "connection lost")

    def _handle_event(self, proto: SmscProtocol, event: Event) -> None:
        self._record_in(proto, event)
        if isinstance(event, BindRequested):
            fault = self.faults.take("refuse_bind", proto.bind_id, event.system_id)
            if fault is not None:
                proto.session.refuse_bind(fault.status)
            else:
                # Deliveries start once the bind_resp is on the wire (SmscProtocol._bound).
                proto.session.accept_bind()
        elif isinstance(event, SubmitReceived):
            self._on_submit(proto, event.pdu)
        elif isinstance(event, ResponseReceived):
            if event.pdu.command == "unbind_resp":
                proto.transport.loseConnection()
            self._on_response(proto, event)
            self._pump()  # the window has room again
        elif isinstance(event, (BindRefused, MalformedPdu, RequestRejected, UnbindReceived)):
            pass  # the session has answered; the record says what happened

    def _request_failed(self, proto: SmscProtocol, request: Outstanding, reason: str) -> None:
        item = request.context
        if isinstance(item, _Delivery):
            self._retry_or_fail(item, f"{reason} on {proto.bind_id}")
        self._pump()

    # --- MT (submit_sm from the platform) -----------------------------------------------

    def _on_submit(self, proto: SmscProtocol, pdu) -> None:
        fault = self.faults.take("throttle", proto.bind_id, proto.system_id)
        if fault is not None:
            proto.session.respond(pdu, fault.status)
            return
        destination = pdu.destination_addr or ""
        try:
            msisdn = self.canonical_msisdn(destination)
        except ValueError:
            proto.session.respond(pdu, P.ESME_RINVDSTADR)
            return
        handset = self.handset(msisdn)
        if pdu.ussd_service_op == P.USSD_USSR_REQ and not (handset.ussd_session and handset.ussd_session.open):
            # a network-initiated page (push)
            fault = self.faults.take("refuse_push", proto.bind_id, proto.system_id)
            if fault is not None:
                proto.session.respond(pdu, fault.status)
                return
        if pdu.ussd_service_op == P.USSD_USSR_REQ and handset.busy_with_other_session(pdu.its_session_info):
            proto.session.respond(pdu, P.ESME_RSUBMITFAIL)     # the phone is in another dialogue
            return
        message_id = f"{next(self._message_numbers) & 0xFFFFFFFFFF:010x}"
        proto.session.respond(pdu, message_id=message_id)
        decoded = decode_message(pdu)
        now = self.clock.seconds()
        record = SubmittedMessage(message_id, proto.bind_id, proto.system_id or "", pdu.source_addr or "",
                                  destination, decoded.text, now, pdu.registered_delivery or 0)
        self.messages[message_id] = record
        while len(self.messages) > self.config.traffic_capacity:
            self.messages.popitem(last=False)
        if pdu.ussd_service_op is not None:
            if not handset.shows_page(pdu.ussd_service_op, pdu.its_session_info):
                log.info("SMSC sim: USSD page for {msisdn}'s ended dialogue not shown", msisdn=msisdn)
                return
            handset._ussd_arrived(decoded.text, pdu.ussd_service_op, pdu.its_session_info)
            session = handset.ussd_session
            if session is not None and session.open:
                fault = self.faults.take("ussd_timeout", proto.bind_id, proto.system_id)
                if fault is not None:
                    self._call_later(fault.seconds, self._ussd_timer_fired, handset, session, session.dialogue)
        else:
            self._mt_part(handset, pdu, decoded, message_id, now)
        if (pdu.registered_delivery or 0) & P.REGISTERED_DELIVERY_MASK == P.REGISTERED_DELIVERY_RECEIPT:
            self._call_later(self.config.delivery_receipt_delay, self._send_receipt, record)

    # --- USSD sessions ended by the network -----------------------------------------------

    def release_ussd(self, msisdn: str, *, op: int = 0x20, reason: str = "released") -> bool:
        """The network ends `msisdn`'s open USSD session: the phone shows it,
        the platform gets `op` (a vendor release code) with the end bit.
        False when no session was open."""
        handset = self.handset(msisdn)
        session = handset.ussd_session
        if session is None or not session.open:
            return False
        handset._send_ussd("", op, end=True)
        handset._network_closed(reason, "(session timed out)" if reason == "timeout" else "(session released)")
        return True

    def _ussd_timer_fired(self, handset: Handset, session, dialogue: int) -> None:
        """The ussd_timeout fault: the page is still unanswered, the network gives up."""
        if handset.ussd_session is session and session.open and session.dialogue == dialogue:
            self.release_ussd(handset.msisdn, op=0x21, reason="timeout")

    def _mt_part(self, handset: Handset, pdu, decoded, message_id: str, now: float) -> None:
        body = pdu.short_message or pdu.message_payload or b""
        part = InboxPart(message_id, pdu.data_coding or 0, pdu.esm_class or 0, body, decoded.text)
        key = (handset.msisdn, pdu.source_addr or "")
        for (msisdn, source), ref, received in self._reassembler.expire():
            self.traffic.record(now, "in", "-", "submit_sm", 0, 0,
                                {"source_addr": source, "destination_addr": msisdn},
                                note=f"incomplete long MT dropped: ref {ref}, {received} part(s) arrived")
        parts = self._reassembler.add_part(key, decoded.concat, part)
        if parts is None:
            return
        text = "".join(p.text for p in parts)
        handset._mt_arrived(InboxMessage(now, pdu.source_addr or "", text, parts[0].data_coding, tuple(parts)))

    # --- receipts ------------------------------------------------------------------------

    def _send_receipt(self, record: SubmittedMessage) -> None:
        now = self.clock.seconds()
        sample = "".join(c if is_gsm(c) and c != "\x1b" else "?" for c in record.text[:20])
        body = (f"id:{record.message_id} sub:001 dlvrd:001 submit date:{_smpp_date(record.submitted_at)} "
                f"done date:{_smpp_date(now)} stat:DELIVRD err:000 text:{sample}")
        short_message = gsm_encode(body)[:254]
        fields = dict(source_addr_ton=1, source_addr_npi=1, source_addr=record.destination_addr,
                      dest_addr_ton=0, dest_addr_npi=1, destination_addr=record.source_addr,
                      esm_class=P.ESM_CLASS_DELIVERY_RECEIPT, data_coding=P.DATA_CODING_GSM,
                      short_message=short_message, receipted_message_id=record.message_id,
                      message_state=P.MESSAGE_STATE_DELIVERED)
        item = _Delivery(fields, "receipt", system_id=record.system_id, submitted=record)
        record.receipt_sent_at = now
        item.deferred.addErrback(lambda f: None)  # a lost receipt is logged in traffic, nothing waits on it
        self._dispatch(item)

    # --- deliver_sm towards the platform ------------------------------------------------------

    def _receivers(self, system_id: str | None) -> list[SmscProtocol]:
        """Bound receivers (of ``system_id`` if given) with room in their window."""
        window = self.config.window
        return [p for p in self._protocols.values()
                if p.bound_at is not None and p.session.can_deliver and len(p.session.outstanding) < window
                and (system_id is None or p.system_id == system_id)]

    def _dispatch(self, item: _Delivery, first: bool = False) -> None:
        """Queue a deliver_sm (a retry at the front) and send what the windows allow."""
        if self._stopped:
            self._fail(item, "simulator stopped")
            return
        if first:
            self._waiting.appendleft(item)
        else:
            self._waiting.append(item)
        self._pump()

    def _pump(self) -> None:
        """Send waiting deliver_sm, oldest first, while some bind has room in its window."""
        if not self._waiting:
            return
        kept: deque[_Delivery] = deque()
        while self._waiting:
            item = self._waiting.popleft()
            receivers = self._receivers(item.system_id)
            if not receivers:
                kept.append(item)
                if item.system_id is None or not self._receivers(None):
                    break  # every window is full (or nobody is bound): wait for a response
                continue  # this account is busy; others may take the next item
            proto = receivers[next(self._round_robin) % len(receivers)]
            item.attempts += 1
            command, fields = self._mo_pdu(item)
            if proto.send_request(command, item, **fields) is None:
                item.attempts -= 1
                kept.append(item)
        self._waiting.extendleft(reversed(kept))  # kept items are few: they stay first in line

    def _mo_pdu(self, item: _Delivery) -> tuple[str, dict[str, Any]]:
        """deliver_sm, or data_sm (body in message_payload) when config.mo_command says so."""
        if item.kind == "receipt" or self.config.mo_command == "deliver_sm":
            return "deliver_sm", item.fields
        fields = dict(item.fields)
        fields["message_payload"] = fields.pop("short_message", b"")
        return "data_sm", fields

    def _flush_waiting(self) -> None:
        self._pump()

    def _on_response(self, proto: SmscProtocol, event: ResponseReceived) -> None:
        request = event.request
        if request is None or not isinstance(request.context, _Delivery):
            return
        item = request.context
        status = event.pdu.status
        if status == P.ESME_ROK:
            if item.submitted is not None:
                item.submitted.receipt_acked_at = self.clock.seconds()
            if not item.deferred.called:
                item.deferred.callback(None)
            if item.kind in ("mo", "ussd") and not item.duplicate:
                if self.faults.take("duplicate", proto.bind_id, proto.system_id) is not None:
                    copy = _Delivery(dict(item.fields), item.kind, item.system_id, duplicate=True)
                    copy.deferred.addErrback(lambda f: None)
                    self._dispatch(copy)
        elif status in _PERMANENT_ERRORS:
            self._fail(item, f"rejected with status 0x{status:02x} by {proto.bind_id}")
        else:
            self._retry_or_fail(item, f"status 0x{status:02x} from {proto.bind_id}")

    def _retry_or_fail(self, item: _Delivery, reason: str) -> None:
        if self._stopped:
            self._fail(item, f"{reason}; simulator stopped")
            return
        if item.attempts >= self.config.max_delivery_attempts:
            self._fail(item, f"{reason}; gave up after {item.attempts} attempts")
            return
        self._call_later(self.config.redelivery_delay, self._dispatch, item, True)

    def _fail(self, item: _Delivery, reason: str) -> None:
        log.warn("SMSC sim: deliver_sm to {dest} failed: {reason}", dest=item.fields.get("destination_addr"),
                 reason=reason)
        if not item.deferred.called:
            item.deferred.errback(DeliveryFailed(reason))

    def _call_later(self, delay: float, fn, *args) -> None:
        call = None

        def run():
            self._timers.discard(call)
            fn(*args)

        call = self.clock.callLater(delay, run)
        self._timers.add(call)

    # --- traffic record ------------------------------------------------------------------

    def _record_in(self, proto: SmscProtocol, event: Event) -> None:
        now = self.clock.seconds()
        if isinstance(event, MalformedPdu):
            err = event.error
            command = f"0x{err.command_id:08x}"
            self.traffic.record(now, "in", proto.bind_id, command, err.sequence, 0, note=f"malformed: {err}")
            return
        pdu = event.pdu
        note = None
        if isinstance(event, BindRefused):
            note = f"bind refused 0x{event.status:02x}"
        elif isinstance(event, RequestRejected):
            note = f"rejected 0x{event.status:02x}"
        elif isinstance(event, ResponseReceived) and event.request is None:
            note = "unmatched response"
        self.traffic.record(now, "in", proto.bind_id, pdu.command, pdu.sequence, pdu.status, pdu, note)

    def _record_raw_in(self, proto: SmscProtocol, raw: bytes, note: str) -> None:
        try:
            pdu = P.decode_pdu(raw)
        except P.PduError as err:
            self.traffic.record(self.clock.seconds(), "in", proto.bind_id, f"0x{err.command_id:08x}",
                                err.sequence, 0, note=note)
            return
        self.traffic.record(self.clock.seconds(), "in", proto.bind_id, pdu.command, pdu.sequence, pdu.status,
                            pdu, note)

    def _record_out(self, proto: SmscProtocol, out: Outgoing, note: str | None = None) -> None:
        self.traffic.record(self.clock.seconds(), "out", proto.bind_id, out.command, out.sequence, out.status,
                            out.fields, note)


def _smpp_date(seconds: float) -> str:
    """YYMMDDhhmm (UTC), the date format of delivery receipts."""
    return _time.strftime("%y%m%d%H%M", _time.gmtime(seconds))
