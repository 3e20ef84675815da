"""The SP payment API's background work, run beside the web server: the
callback sender (notifications.py) and the sweep that expires requests
nobody confirmed (payments.expire_due).

Each tick claims what is due up to the free slots and sends each claimed
callback as its own task, so an endpoint that hangs holds one slot (at
most `per_merchant` of them) until its timeout, never the loop: one bad
merchant does not delay another's callbacks. Both steps are safe with
several instances (guarded UPDATEs), so every instance may run this.
"""
from __future__ import annotations

import asyncio

from twisted.internet import task
from twisted.logger import Logger

from telecom_pay.aio import as_deferred

from . import notifications, payments
from .api_settings import MerchantApiSettings

log = Logger(namespace="telecom_pay.merchants.worker")


class MerchantWorker:
    def __init__(self, service, cfg: MerchantApiSettings, reactor):
        self.service = service
        self.cfg = cfg
        self.reactor = reactor
        self.busy: dict[int, int] = {}          # merchant id -> callbacks in flight here
        self.in_flight: set[asyncio.Future] = set()
        self._loop: task.LoopingCall | None = None
        self._ticking = False
        self.stats = {"sent": 0, "expired": 0}

    def start(self) -> None:
        self._loop = task.LoopingCall(lambda: as_deferred(self.tick()))
        self._loop.clock = self.reactor
        self._loop.start(self.cfg.poll_interval, now=True)

    async def tick(self) -> None:
        if self._ticking:
            return
        self._ticking = True
        try:
            try:
                self.stats["expired"] += await payments.expire_due(self.service)
            except Exception:
                log.failure("the SP payment expiry sweep failed; trying again next tick")
            free = self.cfg.concurrency - len(self.in_flight)
            if free > 0:
                try:
                    rows = await notifications.claim_due(self.service, self.cfg, limit=free, busy=self.busy)
                except Exception:
                    log.failure("claiming merchant callbacks failed; trying again next tick")
                    rows = []
                for row in rows:
                    self._send(row)
        finally:
            self._ticking = False

    def _send(self, row) -> None:
        self.busy[row.merchant_id] = self.busy.get(row.merchant_id, 0) + 1

        async def one():
            try:
                await notifications.deliver(self.service, self.cfg, row, reactor=self.reactor)
                self.stats["sent"] += 1
            except Exception:       # its claim runs out and it is tried again
                log.failure("sending callback {event} failed", event=row.event_id)
            finally:
                left = self.busy.get(row.merchant_id, 1) - 1
                if left > 0:
                    self.busy[row.merchant_id] = left
                else:
                    self.busy.pop(row.merchant_id, None)
        fut = asyncio.ensure_future(one())
        self.in_flight.add(fut)
        fut.add_done_callback(self.in_flight.discard)

    async def stop_async(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for _ in range(500):            # a tick under way finishes before the core closes
            if not self._ticking:
                break
            await asyncio.sleep(0.01)
        for fut in list(self.in_flight):
            fut.cancel()
        if self.in_flight:
            await asyncio.gather(*self.in_flight, return_exceptions=True)

    def stop(self):
        return as_deferred(self.stop_async())
