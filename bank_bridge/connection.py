"""Twisted transport for the ISO 8583 link: a Protocol that only moves bytes
and timers around a `bank_bridge.link.Link`, and `BankConnection`, the one
persistent, reconnecting connection to one bank.

Reconnection uses `twisted.application.internet.ClientService` with an
exponential back-off with jitter (`backoffPolicy`): it is the maintained
successor of ReconnectingClientFactory and takes endpoint strings.
"""
from __future__ import annotations

import logging
from typing import Callable

import iso8583
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from bank_bridge import link as L

log = logging.getLogger(__name__)


class RequestTimeout(Exception):
    """No response within the request's time-out."""


class ConnectionLostInFlight(Exception):
    """The connection ended while the request waited for its response."""


class BankLinkProtocol(Protocol):
    def __init__(self, link: L.Link, clock: IReactorTime, owner: "BankConnection"):
        self.link = link
        self.clock = clock
        self.owner = owner
        self._timer = None

    # Twisted callbacks -------------------------------------------------------

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self._process(self.link.connection_made(self.clock.seconds()))

    def dataReceived(self, data: bytes) -> None:
        self._process(self.link.receive_data(data, self.clock.seconds()))

    def connectionLost(self, reason: Failure = None) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        events = self.link.connection_lost()
        self.owner._protocol_gone(self)
        self._dispatch(events)

    # API -----------------------------------------------------------------------

    def request(self, message: dict[str, str], timeout: float | None = None) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.link.send(message, self.clock.seconds(), timeout=timeout, tag=d)
        self._flush()
        self._schedule()
        return d

    # internals ---------------------------------------------------------------

    def _process(self, events: list) -> None:
        self._flush()
        self._dispatch(events)
        self._schedule()

    def _flush(self) -> None:
        data = self.link.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def _dispatch(self, events: list) -> None:
        for event in events:
            if isinstance(event, L.ResponseReceived):
                _fire(event.request.tag, event.response)
            elif isinstance(event, L.RequestTimedOut):
                _fire(event.request.tag, RequestTimeout(event.request.message["t"]))
            elif isinstance(event, L.RequestLost):
                _fire(event.request.tag, ConnectionLostInFlight(event.request.message["t"]))
            elif isinstance(event, L.SignedOn):
                self.owner._signed_on(self)
            elif isinstance(event, L.LinkDead):
                log.warning("bank %s: link dead (%s), closing the connection", self.owner.code, event.reason)
                self.owner._event(event)
                if self.transport is not None:
                    self.transport.abortConnection()
            else:
                self.owner._event(event)

    def _tick(self) -> None:
        self._timer = None
        self._process(self.link.tick(self.clock.seconds()))

    def _schedule(self) -> None:
        deadline = self.link.next_deadline()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if deadline is not None and self.link.state != L.Link.CLOSED:
            self._timer = self.clock.callLater(max(0.0, deadline - self.clock.seconds()), self._tick)


def _fire(d: defer.Deferred, result) -> None:
    """Fire a request's Deferred unless its waiter gave up (cancelled it)."""
    if d.called:
        return
    if isinstance(result, Exception):
        d.errback(result)
    else:
        d.callback(result)


class _LinkFactory(Factory):
    def __init__(self, owner: "BankConnection"):
        self.owner = owner

    def buildProtocol(self, addr):
        return BankLinkProtocol(self.owner._new_link(), self.owner.clock, self.owner)


class BankConnection:
    """The persistent connection to one bank: reconnects with back-off and
    signs on each time; `request` works only while signed on."""

    def __init__(self, *, code: str, endpoint: str, terminal_id: str, reactor,
                 stan_source: Callable[[], str | None], response_timeout: float = 10.0,
                 echo_interval: float = 30.0, on_event: Callable[[str, object], None] | None = None,
                 initial_delay: float = 1.0, max_delay: float = 30.0):
        self.code = code
        self.endpoint = endpoint
        self.terminal_id = terminal_id
        self.clock = reactor
        self.response_timeout = response_timeout
        self.echo_interval = echo_interval
        self._stan_source = stan_source
        self._on_event = on_event
        self._protocol: BankLinkProtocol | None = None
        self._ready_waiters: list[defer.Deferred] = []
        self.service = ClientService(
            clientFromString(reactor, endpoint), _LinkFactory(self),
            retryPolicy=backoffPolicy(initialDelay=initial_delay, maxDelay=max_delay, factor=2.0),
            clock=reactor)

    @property
    def ready(self) -> bool:
        return self._protocol is not None and self._protocol.link.ready

    def request(self, message: dict[str, str], timeout: float | None = None) -> defer.Deferred:
        """Send a request (fields 11 and 41 filled in by the caller) and fire
        with the response, or fail with RequestTimeout, ConnectionLostInFlight,
        or link.LinkNotReady / iso8583.EncodeError (then nothing was sent)."""
        if not self.ready:
            return defer.fail(L.LinkNotReady(f"bank {self.code} is not signed on"))
        try:
            return self._protocol.request(message, timeout)
        except (L.LinkNotReady, iso8583.EncodeError) as exc:     # nothing was sent
            return defer.fail(exc)

    def when_ready(self) -> defer.Deferred:
        if self.ready:
            return defer.succeed(self)
        d: defer.Deferred = defer.Deferred()
        self._ready_waiters.append(d)
        return d

    def drop(self) -> None:
        """Abort the current connection (it will be re-established)."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abortConnection()

    def start(self) -> None:
        self.service.startService()

    def stop(self) -> defer.Deferred:
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.cancel()
        return self.service.stopService()

    # called by the protocol ------------------------------------------------

    def _new_link(self) -> L.Link:
        return L.Link(terminal_id=self.terminal_id, stan_source=self._stan_source,
                      response_timeout=self.response_timeout, echo_interval=self.echo_interval,
                      name=self.code)

    def _signed_on(self, protocol: BankLinkProtocol) -> None:
        self._protocol = protocol
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(self)
        self._event(L.SignedOn())

    def _protocol_gone(self, protocol: BankLinkProtocol) -> None:
        if self._protocol is protocol:
            self._protocol = None
            log.warning("bank %s: connection lost, reconnecting", self.code)

    def _event(self, event: object) -> None:
        if self._on_event is not None:
            self._on_event(self.code, event)
