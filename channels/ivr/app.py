"""The IVR channel: a FastAGI server on the endpoint from config, running the
one menu (telecom_pay/menus) for callers. The hang-up rule and what the
dialplan gets back are in `channels.ivr.call`.

    [ivr]
    factory = "channels.ivr.app:make_channel"
    endpoint = "tcp:4573:interface=127.0.0.1"

A stop closes the live connections (their handlers finish what a PIN
started, then end their sessions) and waits for the handlers.
"""
from __future__ import annotations

import asyncio
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from channels.ivr.call import IvrCalls, IvrSettings
from channels.ivr.server import AgiFactory
from telecom_pay.aio import as_deferred, wait_deferred
from telecom_pay.calls import CallLog
from telecom_pay.core import Core

log = Logger(namespace="telecom_pay.ivr")


class IvrChannel(Service):
    name = "ivr"

    def __init__(self, calls: IvrCalls, endpoint: str, reactor, *, header_timeout: float = 10.0,
                 command_timeout: float = 30.0, stop_timeout: float = 30.0):
        self.calls = calls
        self.endpoint = endpoint
        self.reactor = reactor
        self.stop_timeout = stop_timeout
        self.factory = AgiFactory(calls, reactor, header_timeout=header_timeout, command_timeout=command_timeout)
        self.port = None
        self.listen_error: str | None = None
        self._listening: defer.Deferred | None = None

    @property
    def stats(self) -> dict[str, int]:
        return {**self.calls.stats, "live": len(self.factory.connections)}

    def startService(self):
        super().startService()
        self._listening = serverFromString(self.reactor, self.endpoint).listen(self.factory)

        def listening(port):
            self.port = port
            log.info("FastAGI server on {endpoint} (port {port})", endpoint=self.endpoint,
                     port=port.getHost().port)
            return port

        def failed(failure):
            self.listen_error = failure.getErrorMessage()
            log.failure("the FastAGI server could not listen on {endpoint}", failure, endpoint=self.endpoint)
        self._listening.addCallbacks(listening, failed)

    async def wait_listening(self) -> int:
        """The TCP port bound (tests bind port 0). A port that cannot be bound
        (another process holds it) does not stop the daemon's other channels:
        it is logged, and raised here."""
        while self.port is None:
            if self.listen_error is not None:
                raise OSError(f"the FastAGI server could not listen on {self.endpoint}: {self.listen_error}")
            await asyncio.sleep(0.01)
        return self.port.getHost().port

    def stopService(self):
        super().stopService()

        async def stop():
            if self.port is not None:
                await wait_deferred(self.port.stopListening())
            tasks = [c.task for c in list(self.factory.connections) if c.task is not None]
            for conn in list(self.factory.connections):
                conn.close()
            if tasks:
                await asyncio.wait(tasks, timeout=self.stop_timeout)
        return as_deferred(stop())


def make_channel(core: Core, config: dict[str, Any], reactor) -> IvrChannel:
    """Factory named in config: `[ivr] factory = "channels.ivr.app:make_channel"`."""
    from telecom_pay.menus.engine import MenuEngine
    from telecom_pay.menus.ivr import render_ivr
    from telecom_pay.menus.prompts import Prompts
    engine = core.menus or MenuEngine(core.conversation, core.sessions)
    calls = IvrCalls(engine, core.service, CallLog(core.ledger), Prompts.load(config.get("prompts")), render_ivr,
                     IvrSettings.from_config(config, core.settings.region))
    return IvrChannel(calls, str(config.get("endpoint", "tcp:4573:interface=127.0.0.1")), reactor,
                      header_timeout=float(config.get("header_timeout", 10)),
                      command_timeout=float(config.get("command_timeout", 30)))
