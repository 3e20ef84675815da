"""Redis session store: the production backend, shared by every daemon.

One `redis.asyncio` client over a blocking connection pool (a burst of
concurrent requests waits for a free connection instead of failing), every
key under one prefix so several deployments or test runs can share a server.
Needs Redis 6.2 or later (GETDEL).

Atomicity comes from single commands: `take` is GETDEL, `put_if_absent` is
SET NX PX, and `incr` is a small Lua script (INCRBY, then PEXPIRE only when
the key has no expiry yet, i.e. was just created), so a counter's window is
never extended by later increments.

Commands are not retried after a connection error: a reply lost after the
server acted would turn a retried SET NX into a false "duplicate" (a message
dropped) or a retried GETDEL into a lost confirmation. The caller gets
SessionStoreUnavailable instead and treats the message as not handled, so
the SMSC's own re-delivery retries it. Socket, connect and pool timeouts keep
a dead or stalled server from hanging a request.
"""
from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Iterator
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from telecom_pay import perfstats

from .base import (
    SessionStore, SessionStoreError, SessionStoreUnavailable, SessionValueError,
    check_amount, check_key, decode_value, encode_value, ttl_milliseconds,
)

REDIS_SCHEMES = ("redis", "rediss", "unix")

# KEYS[1] counter; ARGV[1] amount, ARGV[2] window in ms.
_INCR_FIXED_WINDOW = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return n
"""

# KEYS[1] taken, KEYS[2] where it is kept; ARGV[1] the keeping TTL in ms.
_TAKE_INTO = """
local v = redis.call('GETDEL', KEYS[1])
if v then
  redis.call('SET', KEYS[2], v, 'PX', ARGV[1])
end
return v
"""


def describe_url(url: str) -> str:
    """The URL without credentials, query or fragment, for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


class RedisSessionStore(SessionStore):
    """Session store on a Redis server.

    `url` is a redis-py URL (`redis://[user:password@]host:port/db`,
    `rediss://...` for TLS, `unix:///path/redis.sock?db=0`); query options in
    it (e.g. `?socket_timeout=0.5`) override the keyword arguments. Timeouts
    are seconds. Creating the store does not connect; use `ping()` to check.
    """

    def __init__(self, url: str, *, prefix: str = "tp:", socket_timeout: float = 2.0,
                 connect_timeout: float = 2.0, pool_timeout: float = 2.0,
                 max_connections: int = 50, health_check_interval: float = 30.0):
        scheme = urlsplit(url).scheme.lower()
        if scheme not in REDIS_SCHEMES:
            raise ValueError(
                f"not a Redis URL: {describe_url(url)!r} (use redis://, rediss:// or unix://)")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        self.prefix = prefix
        self._where = describe_url(url)
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            health_check_interval=health_check_interval,
            retry=Retry(NoBackoff(), 0),
        )
        self._redis = redis.asyncio.Redis.from_pool(pool)
        self._incr_script = self._redis.register_script(_INCR_FIXED_WINDOW)
        self._take_into_script = self._redis.register_script(_TAKE_INTO)
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisSessionStore {self._where} prefix={self.prefix!r}>"

    async def get(self, key: str) -> dict | None:
        with self._errors(key):
            raw = await self._redis.get(self._k(key))
        return None if raw is None else decode_value(key, raw)

    async def put(self, key: str, value: dict, ttl: float) -> None:
        full = self._k(key)
        data = encode_value(key, value)
        ms = ttl_milliseconds(ttl)
        with self._errors(key):
            await self._redis.set(full, data.encode(), px=ms)

    async def put_if_absent(self, key: str, value: dict, ttl: float) -> bool:
        full = self._k(key)
        data = encode_value(key, value)
        ms = ttl_milliseconds(ttl)
        with self._errors(key):
            stored = await self._redis.set(full, data.encode(), px=ms, nx=True)
        return bool(stored)

    async def take(self, key: str) -> dict | None:
        with self._errors(key):
            raw = await self._redis.getdel(self._k(key))
        return None if raw is None else decode_value(key, raw)

    async def take_into(self, key: str, keep_as: str, ttl: float) -> dict | None:
        keys = [self._k(key), self._k(keep_as)]
        ms = ttl_milliseconds(ttl)
        with self._errors(key):
            raw = await self._take_into_script(keys=keys, args=[ms])
        return None if raw is None else decode_value(key, raw)

    async def delete(self, key: str) -> None:
        with self._errors(key):
            await self._redis.delete(self._k(key))

    async def delete_many(self, keys: list[str]) -> None:
        if not keys:
            return
        full = [self._k(k) for k in keys]
        with self._errors(keys[0]):
            await self._redis.delete(*full)

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        full = self._k(key)
        ms = ttl_milliseconds(ttl)
        amount = check_amount(amount)
        with self._errors(key):
            return int(await self._incr_script(keys=[full], args=[amount, ms]))

    async def ttl(self, key: str) -> float | None:
        """Seconds left; None if absent; math.inf for a key someone else
        stored under our prefix without an expiry."""
        with self._errors(key):
            ms = await self._redis.pttl(self._k(key))
        if ms == -2:
            return None
        if ms == -1:
            return math.inf
        return ms / 1000

    async def ping(self) -> None:
        with self._errors(None):
            await self._redis.ping()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._redis.aclose()

    def _k(self, key: str) -> str:
        return self.prefix + check_key(key)

    @contextlib.contextmanager
    def _errors(self, key: str | None) -> Iterator[None]:
        """Turn redis-py's errors into SessionStoreError with a clear message."""
        if self._closed:
            raise SessionStoreUnavailable(f"the Redis session store for {self._where} is closed")
        perfstats.counters["session_round_trips"] += 1
        try:
            yield
        except redis.exceptions.AuthenticationError as exc:
            raise SessionStoreUnavailable(
                f"Redis session store at {self._where} refused the credentials: {exc}") from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                asyncio.TimeoutError, OSError) as exc:
            raise SessionStoreUnavailable(
                f"Redis session store at {self._where} is unreachable or not answering "
                f"({type(exc).__name__}: {exc})") from exc
        except redis.exceptions.ResponseError as exc:
            text = str(exc)
            if text.startswith("WRONGTYPE") or "not an integer" in text or "overflow" in text:
                raise SessionValueError(
                    f"the key holds a value of another kind than this operation expects "
                    f"({text.split(' script:')[0]})", key) from exc
            raise SessionStoreError(
                f"Redis session store at {self._where} refused the command: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise SessionStoreError(
                f"Redis session store at {self._where} failed: {exc}") from exc
