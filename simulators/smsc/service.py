"""The SMSC simulator as a twisted.application Service (for the CLI and composed daemons)."""
from __future__ import annotations

from twisted.application.service import Service
from twisted.internet import defer

from .config import SmscConfig
from .simulator import SmscSimulator

__all__ = ["SmscSimulatorService"]


class SmscSimulatorService(Service):
    """Listens for ESMEs on ``smpp_endpoint`` and serves the control API on ``http_endpoint``.

    Endpoints are server endpoint strings ('tcp:2775', 'tcp:8025:interface=127.0.0.1');
    ``http_endpoint`` None leaves the control API off.
    """

    name = "smsc-sim"

    def __init__(self, config: SmscConfig, reactor, smpp_endpoint: str = "tcp:2775",
                 http_endpoint: str | None = "tcp:8025:interface=127.0.0.1"):
        self.simulator = SmscSimulator(config, reactor)
        self.smpp_endpoint = smpp_endpoint
        self.http_endpoint = http_endpoint
        self.smpp_port = None
        self.http_port = None

    @defer.inlineCallbacks
    def startService(self):
        Service.startService(self)
        self.smpp_port = yield self.simulator.listen(self.smpp_endpoint)
        if self.http_endpoint:
            self.http_port = yield self.simulator.listen_http(self.http_endpoint)

    def stopService(self):
        Service.stopService(self)
        return self.simulator.stop()
