"""Twisted transport for the SMPP ESME: protocol, factory, service.

The protocol logic lives in `channels.smpp.session.EsmeSession`; this module
only moves bytes and timers (DESIGN 10) and talks to the application:

* `EsmeProtocol` -- one TCP connection; hands bytes to its `EsmeBind`.
* `EsmeBind` -- one configured bind across its connections: owns the session,
  the single timer (scheduled at ``session.next_deadline()``), the Deferreds of
  submissions, and calls the `SmsApplication`.
* `EsmeClientFactory` -- builds protocols for a bind and holds the reconnect
  policy (exponential back-off with jitter that also grows while the SMSC
  keeps refusing the bind).
* `EsmeService` -- a `twisted.application.service.Service` for one bind,
  built from an endpoint string; reconnection is a `ClientService` driven by
  the factory's policy; stopping it unbinds gracefully.

MO messages are acknowledged to the SMSC only when the Deferred returned by
``application.message_received`` fires (errback: temporary nack, the SMSC
retries): DESIGN 4, acknowledge only what is durably recorded.

Logs: one line per message in or out, msisdn masked, never the content (a
message may be a PIN): its length and, at most, a leading command keyword.
"""
from __future__ import annotations

import random
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol as TypingProtocol

from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from channels.smpp import pdu as P
from channels.smpp.session import (
    BindFailed, Bound, EsmeConfig, EsmeSession, Event, IncompleteMessage, LinkDead, MessageAccepted,
    MessageReceived, ProtocolWarning, ReceiptReceived, SubmitFailed, SubmitResult, Throttled, Unbound,
    UssdInfo,
)
from telecom_pay.msisdn import mask

__all__ = [
    "SmsApplication", "SubmitError", "EsmeBind", "EsmeProtocol", "EsmeClientFactory", "EsmeService",
    "log_keyword", "SERVICE_SETTINGS",
]

log = Logger(namespace="telecom_pay.smpp")

#: Keys of a bind's config mapping that belong to the service, not the session.
SERVICE_SETTINGS = ("name", "endpoint", "reconnect_initial_delay", "reconnect_max_delay")


class SmsApplication(TypingProtocol):
    """What the channel calls; implemented by the platform (and by tests)."""

    def message_received(self, bind: "EsmeBind", event: MessageReceived) -> defer.Deferred | None:
        """Record the message durably; fire the Deferred to ack, errback to nack
        (temporary: the SMSC redelivers). None means recorded already."""

    def receipt_received(self, bind: "EsmeBind", event: ReceiptReceived) -> defer.Deferred | None:
        """Match the receipt to the submitted part; like `message_received`, a
        Deferred delays the ack until it fires (errback: nack, SMSC retries)."""

    def submit_result(self, bind: "EsmeBind", event: SubmitResult) -> None: ...

    def link_up(self, bind: "EsmeBind") -> None: ...

    def link_down(self, bind: "EsmeBind") -> None: ...


class SubmitError(Exception):
    """A submission was not accepted: refused by the SMSC (``status``) or not
    accepted within the give-up time / before shutdown (``status`` None)."""

    def __init__(self, handle: Any, status: int | None, reason: str):
        super().__init__(reason)
        self.handle = handle
        self.status = status
        self.reason = reason


_KEYWORD = re.compile(r"^[A-Za-z\u4e00-\u9fff?]{1,8}$")


def log_keyword(text: str) -> str:
    """The leading command word of a message, for logs; '-' when the first
    word is not a plain keyword (it could be a PIN or an amount)."""
    words = text.split(None, 1)
    if words and _KEYWORD.match(words[0]):
        return words[0].upper()
    return "-"


@dataclass(eq=False)
class _Submission:
    handle: Any
    destination: str
    text: str
    ussd: UssdInfo | None
    registered_delivery: bool
    deferred: defer.Deferred


class EsmeBind:
    """One configured bind (one SMPP account on one SMSC) across reconnects."""

    def __init__(self, config: EsmeConfig, application: SmsApplication, clock: IReactorTime,
                 name: str | None = None):
        self.config = config
        self.name = name or config.system_id
        self.application = application
        self.clock = clock
        self.session = EsmeSession(config, clock)
        self.consecutive_failures = 0       # connections that ended without a bind
        self._protocol: EsmeProtocol | None = None
        self._abort = False
        self._closing = False
        self._receiving = False     # inside data_received: one flush at its end does for all
        self._close_guard = None
        self._timer = None
        self._waiting: dict[Any, _Submission] = {}
        self._closed_waiters: list[defer.Deferred] = []
        self._was_bound = False
        #: Running totals for operations pages: mo, dlr, mt_accepted, mt_parts,
        #: mt_failed, throttled, binds, bind_failures, link_dead, disconnects.
        self.counters: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"<EsmeBind {self.name} {self.session.state}>"

    # ------------------------------------------------------------------ public

    @property
    def is_bound(self) -> bool:
        return self.session.is_bound and self._protocol is not None

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    def status(self) -> dict[str, Any]:
        """A JSON-ready snapshot for operations (no message content)."""
        return {"name": self.name, "state": self.session.state, "bound": self.is_bound,
                "pending_messages": self.session.pending_messages, "queued_parts": self.session.queued,
                "counters": dict(self.counters)}

    def submit(self, destination: str, text: str, *, handle: Any = None, ussd: UssdInfo | None = None,
               registered_delivery: bool | None = None) -> defer.Deferred:
        """Queue a message; the Deferred fires with the SMSC message ids of all
        parts once every part is accepted, or fails with `SubmitError`.

        ``registered_delivery`` defaults to True for SMS, False for USSD.
        """
        if handle is None:
            handle = uuid.uuid4().hex
        if registered_delivery is None:
            registered_delivery = ussd is None
        d: defer.Deferred = defer.Deferred()
        try:
            self.session.submit(destination, text, handle=handle, ussd=ussd,
                                registered_delivery=registered_delivery)
        except (ValueError, TypeError) as exc:
            return defer.fail(exc)
        self._waiting[handle] = _Submission(handle, destination, text, ussd, registered_delivery, d)
        self._flush()
        return d

    def take_movable(self) -> list[_Submission]:
        """Remove the pending submissions that can go over another bind (see
        `EsmeSession.take_movable`), with their Deferreds, oldest first."""
        out = []
        for handle, _destination in self.session.take_movable():
            sub = self._waiting.pop(handle, None)
            if sub is not None:
                out.append(sub)
        self._schedule()
        return out

    def unbind(self) -> defer.Deferred:
        """Unbind gracefully (unbind, wait briefly for unbind_resp, close); the
        Deferred fires once the connection is closed."""
        if self._protocol is None:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._closed_waiters.append(d)
        self.session.unbind()
        self._flush()
        return d

    def cancel_pending(self, reason: str) -> None:
        """Fail every submission still waiting (service shutdown)."""
        self._process(self.session.cancel_all(reason))
        self._schedule()

    # ------------------------------------------------------------------ protocol hooks

    def connection_made(self, protocol: "EsmeProtocol") -> None:
        self._protocol = protocol
        self._abort = False
        self._closing = False
        self._was_bound = False
        self.session.connection_made()
        log.info("smpp connected bind={bind} peer={peer}", bind=self.name,
                 peer=str(protocol.transport.getPeer()))
        self._flush()

    def data_received(self, data: bytes) -> None:
        # Acks and submissions made while these events are handled (a
        # synchronous application answers inside them) queue their bytes in
        # the session; writing them and re-arming the timer once, here, is the
        # same bytes in the same order for a third of the timer arithmetic.
        self._receiving = True
        try:
            self._process(self.session.receive_data(data))
        finally:
            self._receiving = False
        self._flush()

    def connection_lost(self, reason: Failure) -> None:
        was_bound = self._was_bound
        self._protocol = None
        if self._close_guard is not None and self._close_guard.active():
            self._close_guard.cancel()
        self._close_guard = None
        self.session.connection_lost()
        if not was_bound:
            self.consecutive_failures += 1
        self.counters["disconnects"] += 1
        log.info("smpp disconnected bind={bind} reason={reason}", bind=self.name,
                 reason=reason.getErrorMessage() if reason is not None else "closed")
        self._schedule()
        waiters, self._closed_waiters = self._closed_waiters, []
        for d in waiters:
            d.callback(None)
        if was_bound:
            self._call_app("link_down", self)

    # ------------------------------------------------------------------ internals

    def _flush(self) -> None:
        """Write what the session produced, close if it asks, re-arm the timer."""
        if self._receiving:
            return
        protocol = self._protocol
        if protocol is not None:
            data = self.session.data_to_send()
            if data:
                protocol.transport.write(data)
            if self.session.should_close and not self._closing:
                self._closing = True
                if self._abort:
                    protocol.transport.abortConnection()
                else:
                    protocol.transport.loseConnection()
                    # A peer that stopped reading would keep the socket open.
                    self._close_guard = self.clock.callLater(
                        self.config.unbind_timeout, protocol.transport.abortConnection)
        self._schedule()

    def _schedule(self) -> None:
        deadline = self.session.next_deadline()
        if deadline is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            return
        # A deadline already due runs after 1 ms, never in a tight loop.
        delay = max(0.001, deadline - self.clock.seconds())
        if self._timer is not None and self._timer.active():
            if abs(self._timer.getTime() - deadline) < 1e-6:
                return
            self._timer.cancel()
        self._timer = self.clock.callLater(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._process(self.session.tick())
        self._flush()

    def _call_app(self, method: str, *args) -> bool:
        """Call the application; its exceptions are logged, never propagated
        into the protocol. Returns False when it raised."""
        try:
            getattr(self.application, method)(*args)
        except Exception:
            log.failure("smpp application {method} failed bind={bind}", method=method, bind=self.name)
            return False
        return True

    def _process(self, events: list[Event]) -> None:
        for event in events:
            handler = getattr(self, "_event_" + type(event).__name__)
            handler(event)

    def _event_Bound(self, event: Bound) -> None:
        self._was_bound = True
        self.consecutive_failures = 0
        self.counters["binds"] += 1
        log.info("smpp bound bind={bind} smsc={smsc}", bind=self.name, smsc=event.system_id)
        self._call_app("link_up", self)

    def _event_BindFailed(self, event: BindFailed) -> None:
        self.counters["bind_failures"] += 1
        log.warn("smpp bind failed bind={bind} status={status} reason={reason}",
                 bind=self.name, status=event.status, reason=event.reason)

    def _event_LinkDead(self, event: LinkDead) -> None:
        self._abort = True
        self.counters["link_dead"] += 1
        log.warn("smpp link dead bind={bind} reason={reason}", bind=self.name, reason=event.reason)

    def _event_Unbound(self, event: Unbound) -> None:
        if event.timed_out:
            self._abort = True
        log.info("smpp unbound bind={bind} by_smsc={by_smsc} reason={reason}",
                 bind=self.name, by_smsc=event.by_smsc, reason=event.reason)

    def _event_Throttled(self, event: Throttled) -> None:
        self.counters["throttled"] += 1
        log.warn("smpp throttled bind={bind} status=0x{status:02x} delay={delay}",
                 bind=self.name, status=event.status, delay=event.delay)

    def _event_ProtocolWarning(self, event: ProtocolWarning) -> None:
        log.warn("smpp protocol bind={bind} {reason}", bind=self.name, reason=event.reason)

    def _event_IncompleteMessage(self, event: IncompleteMessage) -> None:
        log.warn("smpp mo incomplete bind={bind} msisdn={msisdn} parts={received}/{total}",
                 bind=self.name, msisdn=mask(event.msisdn), received=event.received_parts,
                 total=event.total_parts)

    def _event_MessageReceived(self, event: MessageReceived) -> None:
        self.counters["mo"] += 1
        log.info("smpp mo bind={bind} msisdn={msisdn} length={length} keyword={keyword} "
                 "parts={parts} ussd_op={ussd_op}", bind=self.name, msisdn=mask(event.msisdn),
                 length=len(event.text), keyword=log_keyword(event.text), parts=event.parts,
                 ussd_op=event.ussd.service_op if event.ussd else None)
        d = defer.maybeDeferred(self.application.message_received, self, event)
        d.addBoth(self._answer_deliver, event, "mo")

    def _answer_deliver(self, result, event, kind: str) -> None:
        """Ack the deliver_sm once the application recorded it; nack (temporary,
        the SMSC retries) when it failed."""
        if isinstance(result, Failure):
            log.failure("smpp {kind} not recorded, nack bind={bind} msisdn={msisdn}", result,
                        kind=kind, bind=self.name, msisdn=mask(event.msisdn))
            done = self.session.nack_deliver(event.sequence, P.ESME_RX_T_APPN, event.connection)
        else:
            done = self.session.ack_deliver(event.sequence, event.connection)
        if not done:
            log.info("smpp {kind} answered after link loss bind={bind} msisdn={msisdn}: the SMSC redelivers",
                     kind=kind, bind=self.name, msisdn=mask(event.msisdn))
        self._flush()

    def _event_ReceiptReceived(self, event: ReceiptReceived) -> None:
        self.counters["dlr"] += 1
        log.debug("smpp dlr bind={bind} msisdn={msisdn} message_id={message_id} state={state} err={err}",
                 bind=self.name, msisdn=mask(event.msisdn), message_id=event.message_id,
                 state=event.state, err=event.error)
        d = defer.maybeDeferred(self.application.receipt_received, self, event)
        d.addBoth(self._answer_deliver, event, "dlr")

    def _event_SubmitResult(self, event: SubmitResult) -> None:
        self._call_app("submit_result", self, event)

    def _event_MessageAccepted(self, event: MessageAccepted) -> None:
        self.counters["mt_accepted"] += 1
        self.counters["mt_parts"] += len(event.message_ids)
        sub = self._waiting.pop(event.handle, None)
        if sub is None:
            return
        log.info("smpp mt bind={bind} msisdn={msisdn} length={length} keyword={keyword} parts={parts} "
                 "ussd_op={ussd_op} accepted", bind=self.name, msisdn=mask(sub.destination),
                 length=len(sub.text), keyword=log_keyword(sub.text), parts=len(event.message_ids),
                 ussd_op=sub.ussd.service_op if sub.ussd else None)
        sub.deferred.callback(list(event.message_ids))

    def _event_SubmitFailed(self, event: SubmitFailed) -> None:
        self.counters["mt_failed"] += 1
        sub = self._waiting.pop(event.handle, None)
        if sub is None:
            return
        log.warn("smpp mt bind={bind} msisdn={msisdn} length={length} failed status={status} reason={reason}",
                 bind=self.name, msisdn=mask(sub.destination), length=len(sub.text),
                 status=event.status, reason=event.reason)
        sub.deferred.errback(SubmitError(event.handle, event.status, event.reason))


class EsmeProtocol(Protocol):
    """One TCP connection to the SMSC; moves bytes between it and the bind."""

    def __init__(self, bind: EsmeBind):
        self.bind = bind

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self.bind.connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        self.bind.data_received(data)

    def connectionLost(self, reason: Failure = None) -> None:
        self.bind.connection_lost(reason)


class EsmeClientFactory(Factory):
    """Builds `EsmeProtocol`s for one bind; ``retry_delay`` is the reconnect
    policy handed to `ClientService`: ``initial_delay * 2**(n-1)`` capped at
    ``max_delay``, +-20% jitter, where n counts failed connection attempts and
    connections that ended without a successful bind."""

    protocol = EsmeProtocol

    def __init__(self, bind: EsmeBind, *, initial_delay: float = 1.0, max_delay: float = 60.0,
                 rng: random.Random | None = None):
        if initial_delay <= 0 or max_delay < initial_delay:
            raise ValueError("need 0 < initial_delay <= max_delay")
        self.bind = bind
        self.clock = bind.clock
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self._rng = rng or random.Random()

    def buildProtocol(self, addr) -> EsmeProtocol:
        p = EsmeProtocol(self.bind)
        p.factory = self
        return p

    def retry_delay(self, failed_attempts: int) -> float:
        n = max(failed_attempts, self.bind.consecutive_failures, 1)
        delay = min(self.initial_delay * 2 ** min(n - 1, 32), self.max_delay)
        return delay * self._rng.uniform(0.8, 1.2)


class EsmeService(Service):
    """One SMPP bind as a long-lived service.

    ``endpoint`` is a client endpoint string (``tcp:host=127.0.0.1:port=2775``)
    or an endpoint object; ``config`` a mapping of `EsmeConfig` settings plus
    the optional ``name``, ``reconnect_initial_delay`` (1 s) and
    ``reconnect_max_delay`` (60 s).
    """

    def __init__(self, endpoint: str | IStreamClientEndpoint, config: dict | EsmeConfig,
                 application: SmsApplication, *, reactor=None, name: str | None = None):
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        settings = dict(config) if isinstance(config, dict) else None
        extra = {}
        if settings is not None:
            extra = {k: settings.pop(k) for k in SERVICE_SETTINGS if k in settings}
            config = EsmeConfig.from_dict(settings)
        self.name = name or extra.get("name") or config.system_id
        if isinstance(endpoint, str):
            endpoint = clientFromString(reactor, endpoint)
        self.endpoint = endpoint
        self.bind = EsmeBind(config, application, reactor, name=self.name)
        self.factory = EsmeClientFactory(
            self.bind, initial_delay=float(extra.get("reconnect_initial_delay", 1.0)),
            max_delay=float(extra.get("reconnect_max_delay", 60.0)))
        self._client = ClientService(endpoint, self.factory, retryPolicy=self.factory.retry_delay,
                                     clock=reactor)

    def startService(self) -> None:
        super().startService()
        self._client.startService()

    def stopService(self) -> defer.Deferred:
        """Unbind (waiting at most the unbind timeout), stop reconnecting, and
        fail the submissions still queued."""
        super().stopService()
        d = self.bind.unbind()
        d.addBoth(lambda _: self._client.stopService())
        d.addBoth(lambda _: self.bind.cancel_pending("ESME service stopped"))
        return d

    @property
    def is_bound(self) -> bool:
        return self.bind.is_bound

    def submit(self, destination: str, text: str, *, handle: Any = None, ussd: UssdInfo | None = None,
               registered_delivery: bool | None = None) -> defer.Deferred:
        """See `EsmeBind.submit`."""
        return self.bind.submit(destination, text, handle=handle, ussd=ussd,
                                registered_delivery=registered_delivery)
