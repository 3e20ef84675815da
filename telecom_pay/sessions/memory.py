"""In-process session store: the embedded default, and the one tests drive
with a fake clock.

It holds state for one process only, so a deployment with several daemons
sharing the load uses Redis. Every method runs to completion without
awaiting, which makes each one atomic on the asyncio loop (the store must
only be used from the reactor thread).

Expiry is checked on every read, and memory stays bounded by the live
entries: each write also pops the already-expired entries off a heap of
expiry times (amortised O(log n) per write), so keys that are never read
again (most dedup keys) still go away.
"""
from __future__ import annotations

import heapq
import time
from typing import Callable

from .base import (
    SessionStore, SessionStoreUnavailable, SessionValueError, check_amount, check_key,
    check_ttl, decode_value, encode_value,
)

Clock = Callable[[], float]


class _Entry:
    __slots__ = ("data", "expires_at")

    def __init__(self, data: str | int, expires_at: float):
        self.data = data              # JSON text of a dict, or a counter
        self.expires_at = expires_at


class MemorySessionStore(SessionStore):
    """Session store in a dict; `clock` returns seconds (monotonic by default)."""

    # The heap also holds stale expiry times of overwritten keys; it is
    # rebuilt from the live entries when it outgrows them by this much.
    _HEAP_SLACK = 1024

    def __init__(self, clock: Clock | None = None):
        self._clock: Clock = clock or time.monotonic
        self._entries: dict[str, _Entry] = {}
        self._expiries: list[tuple[float, str]] = []
        self._closed = False

    def __len__(self) -> int:
        """Entries held, counting expired ones not purged yet (for metrics)."""
        return len(self._entries)

    async def get(self, key: str) -> dict | None:
        entry = self._live(check_key(key))
        return None if entry is None else self._decode(key, entry)

    async def put(self, key: str, value: dict, ttl: float) -> None:
        check_key(key)
        data = encode_value(key, value)
        ttl = check_ttl(ttl)
        self._check_open()
        self._store(key, data, ttl)

    async def put_if_absent(self, key: str, value: dict, ttl: float) -> bool:
        check_key(key)
        data = encode_value(key, value)
        ttl = check_ttl(ttl)
        if self._live(key) is not None:
            return False
        self._store(key, data, ttl)
        return True

    async def take(self, key: str) -> dict | None:
        entry = self._live(check_key(key))
        if entry is None:
            return None
        del self._entries[key]         # consumed even if undecodable, as GETDEL does
        return self._decode(key, entry)

    async def take_into(self, key: str, keep_as: str, ttl: float) -> dict | None:
        check_key(keep_as)
        ttl = check_ttl(ttl)
        entry = self._live(check_key(key))
        if entry is None:
            return None
        del self._entries[key]
        self._store(keep_as, entry.data, ttl)
        return self._decode(key, entry)

    async def delete(self, key: str) -> None:
        check_key(key)
        self._check_open()
        self._entries.pop(key, None)

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        check_key(key)
        ttl = check_ttl(ttl)
        amount = check_amount(amount)
        entry = self._live(key)
        if entry is None:
            self._store(key, amount, ttl)
            return amount
        if not isinstance(entry.data, int):
            raise SessionValueError("cannot incr: the key holds a value, not a counter", key)
        entry.data += amount
        return entry.data

    async def ttl(self, key: str) -> float | None:
        entry = self._live(check_key(key))
        return None if entry is None else entry.expires_at - self._clock()

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        self._closed = True
        self._entries.clear()
        self._expiries.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise SessionStoreUnavailable("the in-memory session store is closed")

    def _live(self, key: str) -> _Entry | None:
        """The unexpired entry under key; an expired one is dropped."""
        self._check_open()
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at <= self._clock():
            del self._entries[key]
            return None
        return entry

    @staticmethod
    def _decode(key: str, entry: _Entry) -> dict:
        if isinstance(entry.data, int):
            raise SessionValueError(
                "stored session value is not a JSON object (it is a counter written by incr)",
                key)
        return decode_value(key, entry.data)

    def _store(self, key: str, data: str | int, ttl: float) -> None:
        now = self._clock()
        self._purge(now)
        expires_at = now + ttl
        self._entries[key] = _Entry(data, expires_at)
        heapq.heappush(self._expiries, (expires_at, key))

    def _purge(self, now: float) -> None:
        heap, entries = self._expiries, self._entries
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            entry = entries.get(key)
            # A key overwritten since keeps its own, later heap item.
            if entry is not None and entry.expires_at <= now:
                del entries[key]
        if len(heap) > 2 * len(entries) + self._HEAP_SLACK:
            self._expiries = [(e.expires_at, k) for k, e in entries.items()]
            heapq.heapify(self._expiries)
