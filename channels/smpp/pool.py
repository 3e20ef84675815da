"""Several SMPP binds working as one channel.

An operator usually grants several binds (accounts or SMSC nodes). `EsmePool`
runs one `EsmeService` per configured bind and:

* shares submissions round robin over the binds that are bound, skipping
  those that are down -- except that a destination with a message still
  pending on a bound bind stays on that bind, so messages to one handset keep
  their order;
* holds submissions while no bind is up and hands them out at the next
  ``link_up``;
* when a bind goes down, moves its pending submissions to the binds still up
  (or, when none is, to the first that comes up) -- except messages already
  partly accepted, which finish on their bind after its reconnect, and
  anything else to the same destination, which stays behind them;
* sends MO, receipts and results from every bind to the one application.

USSD replies should go back over the bind the session arrived on: pass it as
``prefer=`` (the application receives it with every MO event).
"""
from __future__ import annotations

from collections import deque
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger

from channels.smpp.client import EsmeBind, EsmeService, SmsApplication, SubmitError, _Submission
from channels.smpp.session import UssdInfo

__all__ = ["EsmePool"]

log = Logger(namespace="telecom_pay.smpp")


class _Relay:
    """The application as each bind sees it: forwards, and tells the pool
    about links going up and down."""

    def __init__(self, pool: "EsmePool"):
        self._pool = pool

    def message_received(self, bind, event):
        return self._pool.application.message_received(bind, event)

    def receipt_received(self, bind, event):
        return self._pool.application.receipt_received(bind, event)

    def submit_result(self, bind, event):
        return self._pool.application.submit_result(bind, event)

    def link_up(self, bind):
        try:
            self._pool.application.link_up(bind)
        finally:
            self._pool._link_up(bind)

    def link_down(self, bind):
        try:
            self._pool.application.link_down(bind)
        finally:
            self._pool._link_down(bind)


class EsmePool(MultiService):
    """One `EsmeService` per entry of ``binds``: each a mapping with an
    ``endpoint`` string and the bind's settings (see `EsmeService`)."""

    def __init__(self, binds: list[dict], application: SmsApplication, *, reactor=None):
        super().__init__()
        if not binds:
            raise ValueError("at least one SMPP bind is needed")
        self.application = application
        self._relay = _Relay(self)
        self.esme_services: list[EsmeService] = []
        names = set()
        for i, cfg in enumerate(binds):
            cfg = dict(cfg)
            try:
                endpoint = cfg.pop("endpoint")
            except KeyError:
                raise ValueError(f"SMPP bind #{i + 1} has no endpoint") from None
            name = cfg.pop("name", None) or f"{cfg.get('system_id', 'bind')}-{i + 1}"
            if name in names:
                raise ValueError(f"duplicate SMPP bind name {name!r}")
            names.add(name)
            service = EsmeService(endpoint, cfg, self._relay, reactor=reactor, name=name)
            service.setServiceParent(self)
            self.esme_services.append(service)
        self._next = 0
        self._backlog: deque[tuple[tuple, dict, defer.Deferred]] = deque()
        self._dest_bind: dict[str, tuple[EsmeBind, int]] = {}

    @property
    def binds(self) -> list[EsmeBind]:
        return [s.bind for s in self.esme_services]

    @property
    def bound(self) -> list[EsmeBind]:
        return [b for b in self.binds if b.is_bound]

    def status(self) -> list[dict[str, Any]]:
        """Per-bind snapshots for operations pages."""
        return [b.status() for b in self.binds]

    @property
    def held(self) -> int:
        """Submissions waiting for any bind to come up."""
        return len(self._backlog)

    def submit(self, destination: str, text: str, *, handle: Any = None, ussd: UssdInfo | None = None,
               registered_delivery: bool | None = None, prefer: EsmeBind | None = None) -> defer.Deferred:
        """Like `EsmeBind.submit`, on a bind chosen by the pool (``prefer`` when it is up)."""
        kwargs = dict(handle=handle, ussd=ussd, registered_delivery=registered_delivery)
        bind = self._choose(destination, prefer)
        if bind is None:
            d: defer.Deferred = defer.Deferred()
            self._backlog.append(((destination, text), kwargs, d))
            return d
        return self._submit_on(bind, destination, text, kwargs)

    def stopService(self):
        backlog, self._backlog = self._backlog, deque()
        for _args, kwargs, d in backlog:
            d.errback(SubmitError(kwargs.get("handle"), None, "ESME pool stopped"))
        return super().stopService()

    # ------------------------------------------------------------------ internals

    def _choose(self, destination: str, prefer: EsmeBind | None) -> EsmeBind | None:
        if prefer is not None and prefer.is_bound:
            return prefer
        sticky = self._dest_bind.get(destination)
        if sticky is not None and sticky[0].is_bound:
            return sticky[0]
        binds = self.binds
        for _ in range(len(binds)):
            bind = binds[self._next % len(binds)]
            self._next += 1
            if bind.is_bound:
                return bind
        return None

    def _submit_on(self, bind: EsmeBind, destination: str, text: str, kwargs: dict) -> defer.Deferred:
        d = bind.submit(destination, text, **kwargs)
        if d.called:     # refused up front (bad destination, ...)
            return d
        owner, count = self._dest_bind.get(destination, (bind, 0))
        self._dest_bind[destination] = (bind, count + 1 if owner is bind else 1)

        def done(result):
            owner, count = self._dest_bind.get(destination, (None, 0))
            if owner is bind:
                if count <= 1:
                    del self._dest_bind[destination]
                else:
                    self._dest_bind[destination] = (bind, count - 1)
            return result

        return d.addBoth(done)

    def _link_up(self, bind: EsmeBind) -> None:
        backlog, self._backlog = self._backlog, deque()
        if backlog:
            log.info("smpp pool: {count} held submissions released on bind={bind}",
                     count=len(backlog), bind=bind.name)
        for (destination, text), kwargs, d in backlog:
            self.submit(destination, text, **kwargs).chainDeferred(d)
        for other in self.binds:
            if other is not bind and not other.is_bound:
                self._move_off(other)

    def _link_down(self, bind: EsmeBind) -> None:
        if self.bound:  # else nowhere better to go: they wait for a reconnect
            self._move_off(bind)

    def _move_off(self, bind: EsmeBind) -> None:
        moved = bind.take_movable()
        if moved:
            log.info("smpp pool: {count} submissions moved off bind={bind}", count=len(moved), bind=bind.name)
        for sub in moved:
            self._resubmit(sub)

    def _resubmit(self, sub: _Submission) -> None:
        kwargs = dict(handle=sub.handle, ussd=sub.ussd, registered_delivery=sub.registered_delivery)
        self.submit(sub.destination, sub.text, **kwargs).chainDeferred(sub.deferred)
