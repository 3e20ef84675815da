"""Simulated phones: what a subscriber sends and what lands on their screen.

A `Handset` composes SMS the way a real phone does (GSM 03.38 when it can,
UCS2 for Chinese, concatenated parts with a UDH for long texts), keeps an
inbox of reassembled MT messages and a USSD screen, and lets tests and
testers wait for the platform's replies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet import defer

from channels.smpp import pdu as P
from channels.smpp.text import encode_text, split_message

__all__ = ["InboxPart", "InboxMessage", "SentMessage", "UssdScreen", "UssdSession", "Handset", "UssdError"]


class UssdError(RuntimeError):
    """A USSD action that does not fit the handset's session state."""


@dataclass(frozen=True)
class InboxPart:
    message_id: str
    data_coding: int
    esm_class: int
    short_message: bytes
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "data_coding": self.data_coding, "esm_class": self.esm_class,
                "short_message": self.short_message.hex(), "text": self.text}


@dataclass(frozen=True)
class InboxMessage:
    """One MT message as the subscriber reads it (parts already joined)."""

    received_at: float
    source_addr: str
    text: str
    data_coding: int
    parts: tuple[InboxPart, ...]

    def to_json(self) -> dict[str, Any]:
        return {"received_at": self.received_at, "source_addr": self.source_addr, "text": self.text,
                "data_coding": self.data_coding, "parts": [p.to_json() for p in self.parts]}


@dataclass
class SentMessage:
    """One MO message the handset sent, and when the platform acknowledged it."""

    text: str
    destination_addr: str
    sent_at: float
    parts: int
    data_coding: int
    acked_at: float | None = None
    failed: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class UssdScreen:
    """One USSD text shown to the subscriber; ``ended`` when the session is
    over after it; ``reason`` when the network, not the platform, closed it
    ("released", "timeout")."""

    received_at: float
    text: str
    ussd_service_op: int
    ended: bool
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"received_at": self.received_at, "text": self.text,
                "ussd_service_op": self.ussd_service_op, "ended": self.ended}
        if self.reason is not None:
            data["reason"] = self.reason
        return data


@dataclass
class UssdSession:
    """The open USSD dialogue.

    its_session_info is session number << 8 | dialogue sequence << 1 | end
    bit (SMPP 3.4, 5.3.2.43). Once the platform has sent a value, the handset
    echoes it back unchanged (minus the end bit), as the convention asks.
    """

    number: int
    code: str
    dialogue: int = 0
    open: bool = True
    peer_session_info: int | None = None

    def its_session_info(self) -> int:
        if self.peer_session_info is not None:
            return self.peer_session_info & ~1
        return (self.number & 0xFF) << 8 | (self.dialogue & 0x7F) << 1


@dataclass
class _Waiter:
    deferred: defer.Deferred
    predicate: Callable[[Any], bool] | None
    timer: Any = None


class Handset:
    """A simulated phone. Create through `SmscSimulator.handset`."""

    def __init__(self, msisdn: str, language: str, simulator):
        self.msisdn = msisdn
        self.language = language
        self.inbox: list[InboxMessage] = []
        self.sent: list[SentMessage] = []
        self.ussd_screens: list[UssdScreen] = []
        self.ussd_session: UssdSession | None = None
        self._sim = simulator
        self._next_ref = 0
        self._next_ussd_session = 0
        self._read = 0  # inbox messages already handed out by wait_for_reply
        self._ussd_read = 0
        self._inbox_waiters: list[_Waiter] = []
        self._ussd_waiters: list[_Waiter] = []
        self._size_waiters: list[list] = []

    def to_json(self) -> dict[str, Any]:
        return {"msisdn": self.msisdn, "language": self.language, "inbox": len(self.inbox),
                "sent": len(self.sent), "ussd_session_open": bool(self.ussd_session and self.ussd_session.open)}

    # --- SMS -------------------------------------------------------------------

    def send(self, text: str, destination_addr: str | None = None) -> defer.Deferred:
        """Send an MO SMS; fires with the `SentMessage` once the platform acked every part."""
        destination = destination_addr or self._sim.config.service_number
        ref = self._next_ref
        self._next_ref = (self._next_ref + 1) & 0xFF
        parts = split_message(text, ref)
        record = SentMessage(text, destination, self._sim.clock.seconds(), len(parts), parts[0].data_coding)
        self.sent.append(record)
        fields = [
            dict(source_addr_ton=1, source_addr_npi=1, source_addr=self.msisdn,
                 dest_addr_ton=0, dest_addr_npi=1, destination_addr=destination,
                 esm_class=part.esm_class, data_coding=part.data_coding, short_message=part.short_message)
            for part in parts
        ]
        if self._sim.config.message_reference:
            # TP-MR: the phone numbers each message it sends; the SMSC passes it on, and with the
            # sender and text it identifies the message across the SMSC's re-deliveries
            for f in fields:
                f["user_message_reference"] = ref
        d = self._sim.deliver_mo(self, fields)

        def acked(_):
            record.acked_at = self._sim.clock.seconds()
            return record

        def failed(failure):
            record.failed = str(failure.value)
            return failure

        return d.addCallbacks(acked, failed)

    def wait_for_reply(self, predicate: Callable[[str], bool] | None = None, timeout: float = 10.0) -> defer.Deferred:
        """Fires with the text of the next unread inbox message (matching ``predicate``).

        Messages read by an earlier call are skipped, so a reply that arrived
        before the call is not missed. Errbacks with defer.TimeoutError.
        """
        for index in range(self._read, len(self.inbox)):
            message = self.inbox[index]
            if predicate is None or predicate(message.text):
                self._read = index + 1
                return defer.succeed(message.text)
        return self._wait(self._inbox_waiters, predicate, timeout)

    def wait_for_inbox(self, size: int, timeout: float) -> defer.Deferred:
        """Fires with True once the inbox holds more than ``size`` messages, False on timeout.

        Unlike `wait_for_reply` it marks nothing as read (for observers such as the HTTP API).
        """
        if len(self.inbox) > size:
            return defer.succeed(True)
        d = defer.Deferred()
        entry = [size, d, None]

        def time_out():
            if entry in self._size_waiters:
                self._size_waiters.remove(entry)
                d.callback(False)

        entry[2] = self._sim.clock.callLater(timeout, time_out)
        self._size_waiters.append(entry)
        return d

    def _mt_arrived(self, message: InboxMessage) -> None:
        self.inbox.append(message)
        index = len(self.inbox) - 1
        for entry in [e for e in self._size_waiters if len(self.inbox) > e[0]]:
            self._size_waiters.remove(entry)
            if entry[2].active():
                entry[2].cancel()
            entry[1].callback(True)
        for waiter in list(self._inbox_waiters):
            if waiter.predicate is None or waiter.predicate(message.text):
                self._inbox_waiters.remove(waiter)
                self._read = max(self._read, index + 1)
                self._fire(waiter, message.text)
                return

    # --- USSD ------------------------------------------------------------------

    def dial_ussd(self, code: str, timeout: float = 10.0) -> defer.Deferred:
        """Dial a USSD code (``*188#``); fires with the platform's first screen text."""
        if not code:
            raise UssdError("dial a code such as *188#")
        number = self._next_ussd_session
        self._next_ussd_session = (self._next_ussd_session + 1) & 0xFF
        self.ussd_session = UssdSession(number, code)
        self._ussd_read = len(self.ussd_screens)
        waiting = self.wait_for_ussd(timeout)
        self._send_ussd(code, P.USSD_PSSR_IND)
        return waiting

    def ussd_reply(self, text: str, timeout: float = 10.0) -> defer.Deferred:
        """Answer the open USSD menu; fires with the platform's next screen text."""
        session = self.ussd_session
        if session is None or not session.open:
            raise UssdError("no USSD session is open; dial a code first")
        session.dialogue += 1
        self._ussd_read = len(self.ussd_screens)
        waiting = self.wait_for_ussd(timeout)
        self._send_ussd(text, P.USSD_USSR_CONF)
        return waiting

    def hang_up(self) -> bool:
        """End the open USSD session from the phone (the red key): the
        platform gets a user abort (ussd_service_op 0x81, end bit set).
        False when no session was open."""
        session = self.ussd_session
        if session is None or not session.open:
            return False
        session.open = False
        self._send_ussd("", P.USSD_USER_ABORT, end=True)
        return True

    def busy_with_other_session(self, its_session_info: int | None) -> bool:
        """A network-initiated page while another dialogue is open: a phone
        holds one USSD dialogue at a time."""
        session = self.ussd_session
        return (session is not None and session.open
                and ((its_session_info or 0) >> 8) != (session.its_session_info() >> 8))

    def shows_page(self, op: int, its_session_info: int | None) -> bool:
        """Whether a USSD PDU reaches the screen: a page of the open
        dialogue, a page opening one (push) or a notification. A page for a
        dialogue already over (the phone hung up, the network released it)
        goes nowhere."""
        session = self.ussd_session
        if session is not None and session.open:
            return its_session_info is None or (its_session_info >> 8) == (session.its_session_info() >> 8)
        return op in (P.USSD_USSR_REQ, P.USSD_USSN_REQ)

    def _network_closed(self, reason: str, text: str) -> None:
        """The network ended the open session (a release, its timer): the
        phone shows why."""
        session = self.ussd_session
        if session is None or not session.open:
            return
        session.open = False
        self.ussd_screens.append(UssdScreen(self._sim.clock.seconds(), text, 0, True, reason))
        if self._ussd_waiters:
            waiter = self._ussd_waiters.pop(0)
            self._ussd_read = len(self.ussd_screens)
            self._fire(waiter, text)

    def wait_for_ussd(self, timeout: float = 10.0) -> defer.Deferred:
        """Fires with the text of the next USSD screen not yet read."""
        if self._ussd_read < len(self.ussd_screens):
            screen = self.ussd_screens[self._ussd_read]
            self._ussd_read += 1
            return defer.succeed(screen.text)
        return self._wait(self._ussd_waiters, None, timeout)

    def _send_ussd(self, text: str, op: int, *, end: bool = False) -> defer.Deferred:
        session = self.ussd_session
        part = encode_text(text)
        fields = dict(service_type="USSD", source_addr_ton=1, source_addr_npi=1, source_addr=self.msisdn,
                      dest_addr_ton=0, dest_addr_npi=1, destination_addr=self._sim.config.service_number,
                      esm_class=0, data_coding=part.data_coding, short_message=part.short_message[:254],
                      ussd_service_op=op, its_session_info=session.its_session_info() | (1 if end else 0))
        d = self._sim.deliver_mo(self, [fields])
        d.addErrback(lambda f: None)  # retries are the SMSC's business; the screen shows any reply
        return d

    def _ussd_arrived(self, text: str, op: int, its_session_info: int | None) -> None:
        # PSSR/PSSD responses end the dialogue, as does the end bit of
        # its_session_info; a notification (USSN) leaves an open session open.
        ended = op in (P.USSD_PSSR_RESP, P.USSD_PSSD_RESP) or (
            op != P.USSD_USSN_REQ and bool((its_session_info or 0) & 1))
        screen = UssdScreen(self._sim.clock.seconds(), text, op, ended)
        self.ussd_screens.append(screen)
        session = self.ussd_session
        if (session is None or not session.open) and op == P.USSD_USSR_REQ and not ended:
            # Network-initiated menu: the platform opened a session the phone can answer.
            number = ((its_session_info or 0) >> 8) & 0xFF
            session = self.ussd_session = UssdSession(number, code="")
        if session is not None and session.open:
            if its_session_info is not None:
                session.peer_session_info = its_session_info
            if ended:
                session.open = False
        if self._ussd_waiters:
            waiter = self._ussd_waiters.pop(0)
            self._ussd_read = len(self.ussd_screens)
            self._fire(waiter, text)

    def cancel_waits(self) -> None:
        """Cancel every pending wait (the simulator is stopping)."""
        for entry in self._size_waiters:
            if entry[2].active():
                entry[2].cancel()
            entry[1].callback(False)
        self._size_waiters.clear()
        for waiter in self._inbox_waiters + self._ussd_waiters:
            waiter.deferred.cancel()

    # --- waiting ---------------------------------------------------------------

    def _wait(self, waiters: list[_Waiter], predicate, timeout: float) -> defer.Deferred:
        waiter = _Waiter(None, predicate)

        def cancel(_d):
            if waiter in waiters:
                waiters.remove(waiter)
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()

        waiter.deferred = defer.Deferred(cancel)
        waiters.append(waiter)

        def time_out():
            waiter.timer = None
            if waiter in waiters:
                waiters.remove(waiter)
                waiter.deferred.errback(defer.TimeoutError(f"{self.msisdn}: no reply within {timeout}s"))

        waiter.timer = self._sim.clock.callLater(timeout, time_out)
        return waiter.deferred

    @staticmethod
    def _fire(waiter: _Waiter, value: Any) -> None:
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        waiter.timer = None
        waiter.deferred.callback(value)
