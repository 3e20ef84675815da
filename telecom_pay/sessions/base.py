"""The session store interface, its errors, and the checks both backends share.

Session state is what the platform must remember for seconds or minutes
between two messages of one subscriber: a `KT` awaiting its `A`, a payment
awaiting its PIN, the dedup key of an SMSC delivery, a velocity counter, the
position in a USSD menu. It is small, short-lived and safe to lose on a crash
(a lost confirmation is asked for again; money never depends on it alone,
the ledger's idempotency keys do), so it lives in Redis, or in the process.

Both backends store values as JSON text, so a value comes back the way JSON
decodes it on either one (tuples as lists, integer dict keys as strings), and
a value that is not JSON is refused at `put` on both, not only in production.
"""
from __future__ import annotations

import abc
import json
import math
from typing import Any


class SessionStoreError(Exception):
    """The session store could not do what was asked.

    Callers treat it as a temporary failure: the message being handled is not
    acknowledged (or the subscriber is asked to retry), never silently lost.
    """


class SessionStoreUnavailable(SessionStoreError):
    """The backing server cannot be reached, timed out, or the store is closed."""


class SessionValueError(SessionStoreError, ValueError):
    """A value is not a JSON object (at `put`), or what is stored under a key
    is not what the operation expects (a counter read with `get`, a
    confirmation incremented with `incr`, bytes that are not JSON).

    The key is kept in `.key` and left out of the message: keys often carry
    an MSISDN, which does not belong in logs unmasked.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class SessionStore(abc.ABC):
    """Short-lived JSON-object values and integer counters, each with a TTL.

    Every method is a coroutine that runs on the reactor's asyncio loop.
    `take`, `put_if_absent` and `incr` are atomic against concurrent callers,
    in this process and (for Redis) in every process sharing the server and
    prefix. TTLs are seconds, fractions allowed; they must be positive.
    """

    @abc.abstractmethod
    async def get(self, key: str) -> dict | None:
        """The value under `key`, or None if absent or expired."""

    @abc.abstractmethod
    async def put(self, key: str, value: dict, ttl: float) -> None:
        """Store `value` under `key` for `ttl` seconds, replacing any value and TTL."""

    @abc.abstractmethod
    async def put_if_absent(self, key: str, value: dict, ttl: float) -> bool:
        """Store `value` only if `key` holds nothing; True if it was stored.

        This is the dedup primitive: of several deliveries of one message,
        exactly one gets True. An existing value and its TTL are left alone.
        """

    @abc.abstractmethod
    async def take(self, key: str) -> dict | None:
        """Remove and return the value under `key` (None if absent), atomically.

        A pending confirmation is consumed exactly once: of concurrent takers,
        one gets the value and the others get None.
        """

    async def take_into(self, key: str, keep_as: str, ttl: float) -> dict | None:
        """`take(key)`, and keep what was taken under `keep_as` for `ttl`
        seconds, as one atomic step (one round trip): a PIN answer consumes
        its pending action and keeps a note of it for recovery at once."""
        value = await self.take(key)
        if value is not None:
            await self.put(keep_as, value, ttl)
        return value

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove `key` if present; absent keys are not an error."""

    async def delete_many(self, keys: list[str]) -> None:
        """Remove every key in `keys` (one round trip where the store allows)."""
        for key in keys:
            await self.delete(key)

    @abc.abstractmethod
    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        """Add `amount` to the counter under `key` and return its new value.

        A fixed-window counter: the key is created at 0 with `ttl` when absent,
        and later increments keep that expiry, so "N per minute" means N
        within the minute that started with the first increment.
        """

    @abc.abstractmethod
    async def ttl(self, key: str) -> float | None:
        """Seconds left before `key` expires, or None if it is absent."""

    async def ping(self) -> None:
        """Raise SessionStoreUnavailable unless the store can serve requests.

        For the daemon's start-up check and health endpoint.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; later calls raise SessionStoreUnavailable.
        Closing twice is harmless."""

    async def __aenter__(self) -> "SessionStore":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


def check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"session key must be str, not {type(key).__name__}")
    if not key:
        raise ValueError("session key must not be empty")
    return key


def check_ttl(ttl: Any) -> float:
    """A positive, finite number of seconds."""
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl must be a positive, finite number of seconds, not {ttl!r}")
    return float(ttl)


def ttl_milliseconds(ttl: Any) -> int:
    """The TTL in whole milliseconds for Redis PX/PEXPIRE, at least 1 so a
    sub-millisecond TTL still creates (and promptly expires) the key."""
    return max(1, round(check_ttl(ttl) * 1000))


def check_amount(amount: Any) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"incr amount must be int, not {type(amount).__name__}")
    return amount


def encode_value(key: str, value: Any) -> str:
    """Compact JSON text of a dict; SessionValueError for anything else."""
    if not isinstance(value, dict):
        raise SessionValueError(
            f"session value must be a dict, not {type(value).__name__}", key)
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SessionValueError(f"session value is not JSON-serialisable: {exc}", key) from exc


def decode_value(key: str, raw: str | bytes) -> dict:
    """The dict stored as JSON text; SessionValueError when it is not one."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SessionValueError(f"stored session value is not JSON: {exc}", key) from exc
    if not isinstance(value, dict):
        raise SessionValueError(
            "stored session value is not a JSON object"
            + (" (it is a counter written by incr)" if isinstance(value, int) else ""), key)
    return value
