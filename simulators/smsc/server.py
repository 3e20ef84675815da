"""Twisted transport of the simulated SMSC: one `SmscProtocol` per ESME connection.

The protocol only moves bytes and timers: it frames the stream, applies the
wire-level faults (drop, delay), hands each PDU to the sans-I/O
`SmscSession`, lets the `SmscSimulator` decide, and writes what the session
queued. Timers (response timeouts, the SMSC's enquire_link, the bind timeout)
run on the simulator's injected clock.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from channels.smpp.pdu import FramingError, PduReader
from .session import Outgoing, ResponseReceived, SessionState, SmscSession

if TYPE_CHECKING:  # pragma: no cover
    from .simulator import SmscSimulator

__all__ = ["SmscProtocol", "SmscFactory"]

log = Logger()


class SmscProtocol(Protocol):
    """One ESME connection (a "bind" once bound)."""

    def __init__(self, simulator: "SmscSimulator", bind_id: str):
        self.sim = simulator
        self.bind_id = bind_id
        self.session = SmscSession(accounts=simulator.config.accounts, system_id=simulator.config.system_id)
        self.reader = PduReader()
        self.peer = ""
        self.connected_at = simulator.clock.seconds()
        self.bound_at: float | None = None
        self.connected = False
        self._response_timers: dict[int, Any] = {}
        self._delayed_writes: set[Any] = set()
        self._enquire_link: LoopingCall | None = None
        self._bind_timer = None

    # --- Twisted ---------------------------------------------------------------

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.connected = True
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"
        timeout = self.sim.config.bind_timeout
        if timeout:
            self._bind_timer = self.sim.clock.callLater(timeout, self._bind_timed_out)
        self.sim._connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except FramingError as exc:
            self.sim.traffic.record(self.sim.clock.seconds(), "in", self.bind_id, "?", 0, 0,
                                    note=f"framing error, connection dropped: {exc}")
            log.warn("SMSC sim {bind}: {err}; dropping connection", bind=self.bind_id, err=exc)
            self.transport.abortConnection()
            return
        for raw in frames:
            if not self.connected:
                return
            if self.sim.faults.take("drop", self.bind_id, self.session.esme_system_id, direction="in"):
                self.sim._record_raw_in(self, raw, note="dropped (fault)")
                continue
            event = self.session.receive_pdu(raw)
            if isinstance(event, ResponseReceived) and event.request is not None:
                timer = self._response_timers.pop(event.request.sequence, None)
                if timer is not None and timer.active():
                    timer.cancel()
            self.sim._handle_event(self, event)
            self.flush()

    def connectionLost(self, reason=None) -> None:
        self.connected = False
        for timer in list(self._response_timers.values()) + list(self._delayed_writes):
            if timer.active():
                timer.cancel()
        self._response_timers.clear()
        self._delayed_writes.clear()
        if self._bind_timer is not None and self._bind_timer.active():
            self._bind_timer.cancel()
        if self._enquire_link is not None and self._enquire_link.running:
            self._enquire_link.stop()
        pending = self.session.close()
        self.sim._connection_lost(self, pending)

    # --- used by the simulator --------------------------------------------------

    @property
    def system_id(self) -> str | None:
        return self.session.esme_system_id

    def _bound(self) -> None:
        """The bind_resp is written: start the SMSC's own keep-alive, then deliveries."""
        self.bound_at = self.sim.clock.seconds()
        if self._bind_timer is not None and self._bind_timer.active():
            self._bind_timer.cancel()
        interval = self.sim.config.enquire_link_interval
        if interval:
            self._enquire_link = LoopingCall(self.send_request, "enquire_link")
            self._enquire_link.clock = self.sim.clock
            self._enquire_link.start(interval, now=False)
        self.sim._bound(self)

    def send_request(self, command: str, context: Any = None, **fields) -> Outgoing | None:
        """Send a request and time its response out after config.response_timeout."""
        if not self.connected or self.session.state in (SessionState.CLOSED, SessionState.UNBINDING):
            return None
        out = self.session.send_request(command, self.sim.clock.seconds(), context, **fields)
        self._response_timers[out.sequence] = self.sim.clock.callLater(
            self.sim.config.response_timeout, self._response_timed_out, out.sequence)
        self.flush()
        return out

    def flush(self) -> None:
        for out in self.session.take_output():
            self._write(out)

    def abort(self) -> None:
        """Cut the connection without unbinding (the "close" fault)."""
        if self.connected:
            self.transport.abortConnection()

    # --- internals ---------------------------------------------------------------

    def _write(self, out: Outgoing) -> None:
        faults = self.sim.faults
        if faults.take("drop", self.bind_id, self.system_id, direction="out"):
            self.sim._record_out(self, out, note="dropped (fault)")
            return
        if out.is_response:
            delay = faults.take("delay", self.bind_id, self.system_id)
            if delay is not None and delay.seconds > 0:
                call = self.sim.clock.callLater(delay.seconds, self._write_delayed, out, delay.seconds)
                self._delayed_writes.add(call)
                return
        self._write_now(out)

    def _write_delayed(self, out: Outgoing, seconds: float) -> None:
        self._delayed_writes = {c for c in self._delayed_writes if c.active()}
        self._write_now(out, note=f"delayed {seconds:g}s (fault)")

    def _write_now(self, out: Outgoing, note: str | None = None) -> None:
        if not self.connected:
            return
        self.sim._record_out(self, out, note=note)
        self.transport.write(out.raw)
        if out.command == "unbind_resp":
            self.transport.loseConnection()
        elif out.command.startswith("bind_") and out.status == 0 and self.bound_at is None:
            self._bound()

    def _response_timed_out(self, sequence: int) -> None:
        self._response_timers.pop(sequence, None)
        request = self.session.outstanding.pop(sequence, None)
        if request is None:
            return
        if request.command == "unbind":
            self.abort()  # no unbind_resp: close anyway
            return
        if request.command == "enquire_link":
            log.warn("SMSC sim {bind}: enquire_link unanswered; dropping the link", bind=self.bind_id)
            self.sim.traffic.record(self.sim.clock.seconds(), "out", self.bind_id, "enquire_link", sequence, 0,
                                    note="no enquire_link_resp: connection dropped")
            self.abort()
            return
        self.sim._request_failed(self, request, "no response")

    def _bind_timed_out(self) -> None:
        self._bind_timer = None
        if self.session.state is not SessionState.BOUND:
            self.sim.traffic.record(self.sim.clock.seconds(), "in", self.bind_id, "?", 0, 0,
                                    note="not bound in time: connection dropped")
            self.abort()


class SmscFactory(Factory):
    """Makes an `SmscProtocol` for each ESME connection of one simulator."""

    def __init__(self, simulator: "SmscSimulator"):
        self.sim = simulator

    def buildProtocol(self, addr) -> SmscProtocol:
        return SmscProtocol(self.sim, self.sim._new_bind_id())
