"""Short-lived session state with a TTL: pending confirmations, dedup keys,
velocity counters, USSD menu positions.

    store = open_session_store(config["sessions"]["url"], prefix="tp:")
    if await store.put_if_absent(f"dedup:{smsc_id}:{message_id}", {}, ttl=3600):
        ...handle the delivery (first time seen)...
    await store.put(f"confirm:{msisdn}", {"action": "KT"}, ttl=300)
    pending = await store.take(f"confirm:{msisdn}")     # consumed exactly once
    if await store.incr(f"velocity:{msisdn}", ttl=60) > limit: ...

`memory://` keeps the state in the process (the embedded default, one
daemon); `redis://`, `rediss://` and `unix://` URLs put it in Redis, shared by
every daemon. Both behave the same, and the same tests run on both.
"""
from __future__ import annotations

from typing import Callable
from urllib.parse import urlsplit

from .base import SessionStore, SessionStoreError, SessionStoreUnavailable, SessionValueError
from .memory import MemorySessionStore
from .redis_store import REDIS_SCHEMES, RedisSessionStore, describe_url

__all__ = [
    "SessionStore", "SessionStoreError", "SessionStoreUnavailable", "SessionValueError",
    "MemorySessionStore", "RedisSessionStore", "open_session_store",
]


def open_session_store(url: str, *, prefix: str = "tp:", clock: Callable[[], float] | None = None,
                       **redis_options) -> SessionStore:
    """The store a URL names. Does not connect yet; `await store.ping()` does.

    `prefix` namespaces Redis keys (a memory store is private to its process
    and needs none). `clock` (seconds, monotonic) is for the memory store
    only: Redis keeps time on the server, so a clock given with a Redis URL
    is refused rather than silently ignored. `redis_options` are the timeout
    and pool keywords of RedisSessionStore.
    """
    if not isinstance(url, str):
        raise TypeError(f"session store URL must be str, not {type(url).__name__}")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise ValueError(f"a memory session store URL is just 'memory://', not {url!r}")
        if redis_options:
            raise TypeError(f"options {sorted(redis_options)} apply to Redis, not memory://")
        return MemorySessionStore(clock=clock)
    if scheme in REDIS_SCHEMES:
        if clock is not None:
            raise ValueError("clock applies to memory:// only; Redis expires keys by its own clock")
        return RedisSessionStore(url.strip(), prefix=prefix, **redis_options)
    raise ValueError(
        f"unsupported session store URL {describe_url(url)!r}: the scheme must be memory://, "
        f"redis://, rediss:// or unix://")
