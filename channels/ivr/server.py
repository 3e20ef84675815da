"""The Twisted side of FastAGI: a Protocol per connection and its Factory.

The protocol only moves bytes between the transport and the sans-I/O
`AgiSession` and keeps the timers (an `IReactorTime` is injected, so unit
tests drive it with `task.Clock`): the header block must arrive within
`header_timeout`, each command must be answered within its timeout, or the
connection is closed. What a call does is the business of the handler the
factory is given (`channels.ivr.call`): it is started once per connection,
when the header block is complete, and talks through `send()`.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from twisted.internet.interfaces import IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from channels.ivr.agi import AgiEnvironment, AgiSession, Fatal, Garbage, HungUp, Response, Started

log = Logger(namespace="telecom_pay.ivr")


class CallGone(Exception):
    """The connection closed (the caller hung up, Asterisk went away, or a
    command was not answered in time); no command can be sent any more."""


Handler = Callable[["AgiConnection", AgiEnvironment], Awaitable[None]]


class AgiConnection(Protocol):
    def __init__(self, handler: Handler, clock: IReactorTime, *, header_timeout: float = 10.0,
                 command_timeout: float = 30.0):
        self.handler = handler
        self.clock = clock
        self.header_timeout = header_timeout
        self.command_timeout = command_timeout
        self.session = AgiSession()
        self.closed = False
        self.task: asyncio.Future | None = None
        self._pending: asyncio.Future | None = None
        self._timer = None

    # ------------------------------------------------------------ Twisted

    def connectionMade(self) -> None:
        factory = getattr(self, "factory", None)
        if factory is not None:
            factory.connections.add(self)
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        self._arm(self.header_timeout, "no complete agi_* header block")

    def dataReceived(self, data: bytes) -> None:
        for event in self.session.receive_data(data):
            if isinstance(event, Started):
                self._disarm()
                self.task = asyncio.ensure_future(self._serve(event.env))
            elif isinstance(event, Response):
                self._disarm()
                pending, self._pending = self._pending, None
                if pending is not None and not pending.done():
                    pending.set_result(event)
            elif isinstance(event, HungUp):
                log.debug("HANGUP from the switch")
            elif isinstance(event, Garbage):
                log.warn("skipped a line that is not AGI ({n} so far)", n=self.session.garbage)
            elif isinstance(event, Fatal):
                log.warn("closing the AGI connection: {reason}", reason=event.reason)
                self.close()

    def connectionLost(self, reason: Failure = None) -> None:
        self.closed = True
        factory = getattr(self, "factory", None)
        if factory is not None:
            factory.connections.discard(self)
        self._disarm()
        self.session.close()
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.set_exception(CallGone("connection closed"))

    async def _serve(self, env: AgiEnvironment) -> None:
        try:
            await self.handler(self, env)
        except Exception:
            log.failure("the IVR call handler failed")
        finally:
            self.close()

    # ------------------------------------------------------------ for the handler

    @property
    def hung_up(self) -> bool:
        return self.closed or self.session.hung_up

    async def send(self, *words: str | int, wait: float = 0.0) -> Response:
        """Send one command and return its answer. `wait`: seconds the
        command itself may legitimately take (a DTMF timeout) on top of
        `command_timeout`."""
        if self.closed or self.session.closed:
            raise CallGone("connection closed")
        self.session.command(*words)
        self._pending = asyncio.get_running_loop().create_future()
        pending = self._pending
        self.transport.write(self.session.data_to_send())
        self._arm(self.command_timeout + wait, f"{words[0]} was not answered in time")
        return await pending

    def close(self) -> None:
        """End the AGI: Asterisk carries on with the dialplan (or, for a
        dead channel, finishes)."""
        if not self.closed and self.transport is not None:
            self.transport.loseConnection()
        self.session.close()

    # ------------------------------------------------------------ timers

    def _arm(self, seconds: float, why: str) -> None:
        self._disarm()
        self._timer = self.clock.callLater(seconds, self._expired, why)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _expired(self, why: str) -> None:
        self._timer = None
        log.warn("closing the AGI connection: {why}", why=why)
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            pending.set_exception(CallGone(why))
        if self.transport is not None:
            self.transport.abortConnection()
        self.session.close()


class AgiFactory(Factory):
    """Builds an `AgiConnection` per call; keeps the live ones so a stopping
    server can close them and wait for their handlers."""

    def __init__(self, handler: Handler, clock: IReactorTime, *, header_timeout: float = 10.0,
                 command_timeout: float = 30.0):
        self.handler = handler
        self.clock = clock
        self.header_timeout = header_timeout
        self.command_timeout = command_timeout
        self.connections: set[AgiConnection] = set()

    def buildProtocol(self, addr) -> AgiConnection:
        p = AgiConnection(self.handler, self.clock, header_timeout=self.header_timeout,
                     command_timeout=self.command_timeout)
        p.factory = self
        return p
