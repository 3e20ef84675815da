"""Faults a tester switches on at runtime (HTTP control API or Python)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_FAULT_MTIS = frozenset({"0100", "0200"})
_ALL_MTIS = {"0100", "0200", "0420", "0421", "0800"}


class FaultError(ValueError):
    pass


@dataclass
class Faults:
    """Applied to requests whose MTI is in `mtis` (default 0100 and 0200).

    latency: seconds before the request is handled at all.
    no_answer: the request is swallowed: not processed, never answered.
    answer_after: processed at once, but answered this many seconds later
                  (set it beyond the platform's time-out to provoke reversals).
    drop_connection: the connection is closed when such a request arrives.
    decline_all: answer every such request with this response code, no movement.
    reversal_answer: answer every 0420/0421 with this response code (whatever
                  `mtis` says) and do not apply the reversal: "96" or "30"
                  keep the platform repeating it, "00" would lie.
    """
    latency: float = 0.0
    no_answer: bool = False
    answer_after: float | None = None
    drop_connection: bool = False
    decline_all: str | None = None
    reversal_answer: str | None = None
    mtis: frozenset[str] = field(default_factory=lambda: DEFAULT_FAULT_MTIS)

    def applies(self, mti: str) -> bool:
        return mti in self.mtis

    def clear(self) -> None:
        self.__init__()

    def update(self, data: dict[str, Any]) -> None:
        """Set the named faults (others unchanged); validates before changing anything."""
        if not isinstance(data, dict):
            raise FaultError("faults are a JSON object")
        unknown = set(data) - {"latency", "no_answer", "answer_after", "drop_connection", "decline_all",
                             "reversal_answer", "mtis"}
        if unknown:
            raise FaultError(f"unknown fault(s): {sorted(unknown)}")
        new = dict(self.to_json(), **data)
        for name in ("latency",):
            if not isinstance(new[name], (int, float)) or isinstance(new[name], bool) or new[name] < 0:
                raise FaultError(f"{name} must be a number of seconds >= 0")
        if new["answer_after"] is not None and (not isinstance(new["answer_after"], (int, float))
                                                 or isinstance(new["answer_after"], bool)
                                                 or new["answer_after"] < 0):
            raise FaultError("answer_after must be a number of seconds >= 0 or null")
        for name in ("no_answer", "drop_connection"):
            if not isinstance(new[name], bool):
                raise FaultError(f"{name} must be true or false")
        code = new["decline_all"]
        for name in ("decline_all", "reversal_answer"):
            value = new[name]
            if value is not None and not (isinstance(value, str) and len(value) == 2 and value.isalnum()):
                raise FaultError(f"{name} must be a 2-character response code or null")
        mtis = new["mtis"]
        if not isinstance(mtis, (list, tuple, set, frozenset)) or not set(mtis) <= _ALL_MTIS:
            raise FaultError(f"mtis must be a list drawn from {sorted(_ALL_MTIS)}")
        self.latency = float(new["latency"])
        self.no_answer = new["no_answer"]
        self.answer_after = None if new["answer_after"] is None else float(new["answer_after"])
        self.drop_connection = new["drop_connection"]
        self.decline_all = code
        self.reversal_answer = new["reversal_answer"]
        self.mtis = frozenset(mtis)

    def to_json(self) -> dict[str, Any]:
        return {"latency": self.latency, "no_answer": self.no_answer, "answer_after": self.answer_after,
                "drop_connection": self.drop_connection, "decline_all": self.decline_all,
                "reversal_answer": self.reversal_answer, "mtis": sorted(self.mtis)}
