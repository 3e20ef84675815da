"""The simulator's ISO 8583 TCP server: framing, decoding, faults and the
traffic record around the `Issuer`. Malformed messages are answered with
response code 30 when their MTI and STAN can be recovered and dropped
otherwise; a broken frame stream closes that one connection. Nothing a
client sends can stop the server."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from twisted.internet.protocol import Factory, Protocol

from bank_bridge import spec
from bank_bridge.framing import FrameDecoder, encode_frame

if TYPE_CHECKING:
    from simulators.bank.simulator import BankSimulator

log = logging.getLogger(__name__)


class IssuerProtocol(Protocol):
    def __init__(self, sim: "BankSimulator"):
        self.sim = sim
        self.decoder = FrameDecoder()
        self.peer = "?"

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        peer = self.transport.getPeer()
        self.peer = f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"
        self.sim.connections.add(self)

    def connectionLost(self, reason=None) -> None:
        self.sim.connections.discard(self)

    def dataReceived(self, data: bytes) -> None:
        if self.decoder.error is not None:         # closing already; ignore the rest
            return
        for frame in self.decoder.feed(data):
            try:
                self._frame(frame)
            except Exception:                       # the server outlives any bug a message finds
                log.exception("bank simulator: error handling a message from %s", self.peer)
        if self.decoder.error is not None:
            self.sim.record("in", self.peer, None, note=f"framing error: {self.decoder.error}; connection closed")
            self.transport.abortConnection()

    def _frame(self, frame: bytes) -> None:
        try:
            message = spec.decode_message(frame)
        except spec.MessageFormatError as exc:
            answer = spec.format_error_response(exc)
            self.sim.record("in", self.peer, None, note=f"malformed: {exc.reason}",
                            mti=exc.mti, stan=exc.stan)
            if answer is not None:
                self.send(answer)
            return
        self.sim.record("in", self.peer, message)
        if not spec.is_request(message["t"]):
            return                                  # responses to nothing we asked: ignore
        faults = self.sim.faults
        if faults.applies(message["t"]):
            if faults.drop_connection:
                self.sim.record("in", self.peer, None, note="fault: connection dropped")
                self.transport.abortConnection()
                return
            if faults.no_answer:
                self.sim.record("in", self.peer, None, note="fault: no answer", mti=message["t"],
                                stan=message["11"])
                return
            if faults.latency > 0:
                self.sim.reactor.callLater(faults.latency, self._process, message, True)
                return
        self._process(message, faults.applies(message["t"]))

    def _process(self, message: dict[str, str], faulted: bool) -> None:
        if not self.connected:
            return
        faults = self.sim.faults
        answer = self.sim.issuer.handle(message, self.sim.reactor.seconds(),
                                        decline_all=faults.decline_all if faulted else None,
                                        reversal_answer=faults.reversal_answer)
        if faulted and faults.answer_after:
            self.sim.reactor.callLater(faults.answer_after, self.send, answer)
        else:
            self.send(answer)

    def send(self, message: dict[str, str]) -> None:
        if not self.connected:
            return
        self.sim.record("out", self.peer, message)
        self.transport.write(encode_frame(spec.encode_message(message)))


class IssuerFactory(Factory):
    def __init__(self, sim: "BankSimulator"):
        self.sim = sim

    def buildProtocol(self, addr):
        return IssuerProtocol(self.sim)
