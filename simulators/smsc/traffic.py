"""A bounded record of every PDU the simulated SMSC received or sent.

Testers read it over HTTP (GET /traffic) and tests read it directly; old
records fall off the end so a long soak test cannot exhaust memory.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from channels.smpp.text import decode_message

__all__ = ["TrafficRecord", "TrafficLog"]

_TEXT_COMMANDS = frozenset({"submit_sm", "deliver_sm", "data_sm"})
_ADDRESS_FIELDS = ("source_addr", "destination_addr")


@dataclass(frozen=True)
class TrafficRecord:
    time: float
    direction: str  # "in" (from the ESME) or "out" (to the ESME)
    bind_id: str
    command: str
    sequence: int
    status: int
    text: str | None = None
    source_addr: str | None = None
    destination_addr: str | None = None
    message_id: str | None = None
    ussd_service_op: int | None = None
    note: str | None = None  # "dropped", "malformed: ...", "delayed 2.0s"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class _Fields:
    """Uniform read access to a decoded smpplib PDU or an `Outgoing`'s fields."""

    def __init__(self, source: Any):
        self._source = source

    def __getattr__(self, name: str) -> Any:
        if isinstance(self._source, dict):
            return self._source.get(name)
        return getattr(self._source, name, None)


class TrafficLog:
    """Ring buffer of `TrafficRecord` (newest last)."""

    def __init__(self, capacity: int = 10_000):
        self._records: deque[TrafficRecord] = deque(maxlen=capacity)
        self.total = 0  # records ever added, including those that fell off

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self):
        return iter(list(self._records))

    def record(
        self,
        time: float,
        direction: str,
        bind_id: str,
        command: str,
        sequence: int,
        status: int,
        fields: Any = None,
        note: str | None = None,
    ) -> TrafficRecord:
        """Add one record; ``fields`` is the decoded PDU or an Outgoing's field dict."""
        f = _Fields(fields if fields is not None else {})
        text = None
        if command in _TEXT_COMMANDS:
            text = decode_message(f).text
        message_id = f.message_id or f.receipted_message_id
        rec = TrafficRecord(
            time=time,
            direction=direction,
            bind_id=bind_id,
            command=command,
            sequence=sequence,
            status=status,
            text=text,
            source_addr=f.source_addr or None,
            destination_addr=f.destination_addr or None,
            message_id=message_id or None,
            ussd_service_op=f.ussd_service_op,
            note=note,
        )
        self._records.append(rec)
        self.total += 1
        return rec

    def records(
        self,
        limit: int | None = None,
        bind_id: str | None = None,
        command: str | None = None,
        direction: str | None = None,
    ) -> list[TrafficRecord]:
        """The newest ``limit`` records matching the filters, oldest first."""
        selected: Iterable[TrafficRecord] = self._records
        if bind_id is not None:
            selected = [r for r in selected if r.bind_id == bind_id]
        if command is not None:
            selected = [r for r in selected if r.command == command]
        if direction is not None:
            selected = [r for r in selected if r.direction == direction]
        selected = list(selected)
        if limit is not None:
            selected = selected[-limit:] if limit > 0 else []
        return selected

    def clear(self) -> None:
        self._records.clear()
