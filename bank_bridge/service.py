"""`BankBridgeService`: the long-lived bank component of the daemon. Owns
the bank connections and the reversal worker (through `IsoBankPort`).

Config (the `[bank]` table):

    card_token_key = "..."                # HMAC key for card tokens; keep it out of the database
    currency = "156"                      # ISO 4217 numeric, field 49
    reversal_retry_initial = 1.0          # seconds before the first 0421
    reversal_retry_max = 300.0
    reversal_final_codes = ["00", "25"]   # 0430 codes that end a reversal: "00" reversed,
                                          # "25" original not found (no money moved). Any
                                          # other answer ("96", "30") keeps the 0421 repeats
    reversal_max_attempts = 20            # then manual review: telecom-pay bank in-doubt / resolve
    reconnect_initial = 1.0               # reconnect back-off (exponential, with jitter)
    reconnect_max = 30.0
    [[bank.banks]]
    code = "icbc"
    endpoint = "tcp:host=10.1.2.3:port=8583"
    bins = ["622202", "622208"]
    terminal_id = "TP000001"              # field 41, 8 characters
    acquirer_id = "48020000"              # field 32
    timeout = 10                          # response time-out, seconds
    echo_interval = 30
    card_types = { "622208" = "credit" }  # used when the issuer does not say

The schema comes from the Alembic revision 0002_bank (`telecom_pay.ledger.schema.upgrade`).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from twisted.application.service import Service
from twisted.internet import defer

from bank_bridge.port import BankRoute, IsoBankPort, ReversalPolicy
from bank_bridge.store import BankStore
from telecom_pay.aio import as_deferred

log = logging.getLogger(__name__)


def port_from_config(config: dict[str, Any], engine: AsyncEngine, reactor) -> IsoBankPort:
    key = config.get("card_token_key")
    if not key:
        raise ValueError("bank.card_token_key is required")
    routes = [BankRoute.from_config(entry) for entry in config.get("banks", [])]
    final_codes = config.get("reversal_final_codes", ["00", "25"])
    if (not isinstance(final_codes, (list, tuple)) or "00" not in final_codes
            or not all(isinstance(c, str) and len(c) == 2 for c in final_codes)):
        raise ValueError('bank.reversal_final_codes must be a list of 2-character response codes including "00"')
    policy = ReversalPolicy(initial_delay=float(config.get("reversal_retry_initial", 1.0)),
                            max_delay=float(config.get("reversal_retry_max", 300.0)),
                            final_codes=frozenset(final_codes),
                            max_attempts=int(config.get("reversal_max_attempts", 20)))
    return IsoBankPort(store=BankStore(engine), routes=routes, reactor=reactor,
                       card_key=key.encode("utf-8") if isinstance(key, str) else bytes(key),
                       currency=str(config.get("currency", "156")), reversal_policy=policy,
                       connect_initial_delay=float(config.get("reconnect_initial", 1.0)),
                       connect_max_delay=float(config.get("reconnect_max", 30.0)))


class BankBridgeService(Service):
    """`port` is the BankPort to hand to the PaymentService (then call
    `port.set_resolver(payment_service)`). Give it an AsyncEngine shared with
    the ledger, or a database URL (it then owns and disposes the engine)."""

    name = "bank-bridge"

    def __init__(self, config: dict[str, Any], *, engine: AsyncEngine | None = None,
                 database_url: str | None = None, reactor=None):
        if (engine is None) == (database_url is None):
            raise ValueError("give exactly one of engine and database_url")
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self._database = None
        if engine is None:
            # The ledger's engine settings: WAL, busy timeout and BEGIN IMMEDIATE on SQLite.
            from telecom_pay.ledger.database import open_database
            self._database = open_database(database_url, pool_size=5)
            engine = self._database.write
        self.engine = engine
        self.port = port_from_config(config, engine, reactor)
        self._start_task: asyncio.Task | None = None

    def startService(self) -> defer.Deferred:
        super().startService()
        self._start_task = asyncio.ensure_future(self.port.start())
        self._start_task.add_done_callback(self._start_done)
        return self.when_started()

    def when_started(self) -> defer.Deferred:
        """Fires once the port has started (numbers reserved, orphaned
        operations queued for reversal, connections under way)."""
        if self._start_task is None:
            return defer.fail(RuntimeError("the service has not been started"))
        return defer.Deferred.fromFuture(asyncio.shield(self._start_task))

    @staticmethod
    def _start_done(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("bank bridge failed to start: %r", task.exception())

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return as_deferred(self._stop())

    async def _stop(self) -> None:
        if self._start_task is not None and not self._start_task.done():
            await asyncio.wait([self._start_task])
        await self.port.stop()
        if self._database is not None:
            await self._database.dispose()
