"""Fault switches of the simulated SMSC, changeable at runtime.

A fault applies to every bind, or only to binds of one ``system_id`` or to
one ``bind_id``. It lasts for the next ``count`` occurrences, for
``duration`` seconds, with a ``probability`` per occurrence, or until
cleared (none of those given).

Kinds:
  ``drop``         a PDU is lost: ``direction`` "in" (from the ESME, never
                   answered) or "out" (to the ESME, never written)
  ``delay``        responses are written ``seconds`` late
  ``throttle``     submit_sm answered with ``status`` (ESME_RTHROTTLED default)
  ``duplicate``    an MO is delivered twice (as an SMSC does when it missed the ack)
  ``refuse_bind``  binds refused with ``status`` (ESME_RBINDFAIL default)
  ``refuse_push``  a network-initiated USSD page (a USSR request opening a
                   session) answered with ``status`` (ESME_RSUBMITFAIL
                   default), as an SMSC without USSD push does
  ``ussd_timeout`` the network times a USSD session out ``seconds`` after a
                   page reached the handset: both sides are released (the
                   platform gets ussd_service_op 0x21 with the end bit)
Closing connections is an action, not a standing fault: SmscSimulator.close_binds.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any, Mapping

from channels.smpp import pdu as P

__all__ = ["Fault", "FaultSet", "FAULT_KINDS"]

FAULT_KINDS = ("drop", "delay", "throttle", "duplicate", "refuse_bind", "refuse_push", "ussd_timeout")
_DEFAULT_STATUS = {"throttle": P.ESME_RTHROTTLED, "refuse_bind": P.ESME_RBINDFAIL,
                   "refuse_push": P.ESME_RSUBMITFAIL}
_TAKES_SECONDS = ("delay", "ussd_timeout")


@dataclass
class Fault:
    id: int
    kind: str
    count: int | None = None  # occurrences left
    probability: float | None = None
    until: float | None = None  # clock time it ends
    seconds: float = 0.0  # for delay and ussd_timeout
    status: int | None = None  # for throttle / refuse_bind
    direction: str = "in"  # for drop
    system_id: str | None = None
    bind_id: str | None = None
    hits: int = 0

    def to_json(self) -> dict[str, Any]:
        data = {
            "id": self.id, "kind": self.kind, "count": self.count, "probability": self.probability,
            "until": self.until, "system_id": self.system_id, "bind_id": self.bind_id, "hits": self.hits,
        }
        if self.kind in _TAKES_SECONDS:
            data["seconds"] = self.seconds
        if self.kind in _DEFAULT_STATUS:
            data["status"] = self.status
        if self.kind == "drop":
            data["direction"] = self.direction
        return {k: v for k, v in data.items() if v is not None}

    def applies_to(self, bind_id: str | None, system_id: str | None) -> bool:
        if self.bind_id is not None and self.bind_id != bind_id:
            return False
        if self.system_id is not None and self.system_id != system_id:
            return False
        return True


@dataclass
class FaultSet:
    """The standing faults; ``clock`` is an IReactorTime, ``rng`` a random.Random."""

    clock: Any
    rng: random.Random = field(default_factory=random.Random)
    _faults: dict[int, Fault] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def add(
        self,
        kind: str,
        *,
        count: int | None = None,
        probability: float | None = None,
        duration: float | None = None,
        seconds: float | None = None,
        status: int | None = None,
        direction: str = "in",
        system_id: str | None = None,
        bind_id: str | None = None,
    ) -> Fault:
        """Switch a fault on; returns it (its ``id`` removes it again)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
            raise ValueError("count must be a positive integer")
        if probability is not None and not (isinstance(probability, (int, float)) and 0 < probability <= 1):
            raise ValueError("probability must be in (0, 1]")
        if duration is not None and not (isinstance(duration, (int, float)) and duration > 0):
            raise ValueError("duration must be a positive number of seconds")
        if kind == "delay":
            if seconds is None or not isinstance(seconds, (int, float)) or seconds < 0:
                raise ValueError("a delay fault needs seconds >= 0")
        elif kind == "ussd_timeout":
            if seconds is not None and (not isinstance(seconds, (int, float)) or seconds < 0):
                raise ValueError("seconds must be >= 0")
        elif seconds is not None:
            raise ValueError("seconds only applies to delay and ussd_timeout faults "
                             "(use duration for how long a fault lasts)")
        if direction not in ("in", "out"):
            raise ValueError("direction must be 'in' or 'out'")
        if status is not None and (not isinstance(status, int) or not 0 <= status <= 0xFFFFFFFF):
            raise ValueError("status must be an SMPP command status")
        fault = Fault(
            id=next(self._ids),
            kind=kind,
            count=count,
            probability=probability,
            until=None if duration is None else self.clock.seconds() + duration,
            seconds=float(seconds or 0.0),
            status=status if status is not None else _DEFAULT_STATUS.get(kind),
            direction=direction,
            system_id=system_id,
            bind_id=bind_id,
        )
        self._faults[fault.id] = fault
        return fault

    def add_from_json(self, data: Mapping[str, Any]) -> Fault:
        """`add` from a JSON object such as {"kind": "throttle", "count": 3}."""
        if not isinstance(data, Mapping):
            raise ValueError("a fault is a JSON object")
        args = dict(data)
        kind = args.pop("kind", None)
        if not isinstance(kind, str):
            raise ValueError("a fault needs a 'kind'")
        allowed = {"count", "probability", "duration", "seconds", "status", "direction", "system_id", "bind_id"}
        unknown = set(args) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        return self.add(kind, **args)

    def remove(self, fault_id: int) -> bool:
        return self._faults.pop(fault_id, None) is not None

    def clear(self, kind: str | None = None) -> int:
        """Switch off all faults (of one kind); returns how many."""
        doomed = [f.id for f in self._faults.values() if kind is None or f.kind == kind]
        for fault_id in doomed:
            del self._faults[fault_id]
        return len(doomed)

    def active(self) -> list[Fault]:
        self._drop_expired()
        return list(self._faults.values())

    def take(self, kind: str, bind_id: str | None = None, system_id: str | None = None,
             direction: str | None = None) -> Fault | None:
        """If a fault of ``kind`` fires for this occurrence, count it and return it."""
        self._drop_expired()
        for fault in list(self._faults.values()):
            if fault.kind != kind or not fault.applies_to(bind_id, system_id):
                continue
            if direction is not None and fault.direction != direction:
                continue
            if fault.probability is not None and self.rng.random() >= fault.probability:
                continue
            fault.hits += 1
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    del self._faults[fault.id]
            return fault
        return None

    def _drop_expired(self) -> None:
        now = self.clock.seconds()
        for fault in list(self._faults.values()):
            if fault.until is not None and now >= fault.until:
                del self._faults[fault.id]
