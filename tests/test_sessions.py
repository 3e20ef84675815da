"""Session stores: one suite, run on the in-process store (with a fake clock)
and on the real Redis test server (with real, short TTLs).

Assertions never depend on how fast the machine is: what must still be
present is stored with a long TTL, what must have expired is given a short
one and then waited out (fake clock on memory, a real sleep on Redis).
"""
from __future__ import annotations

import asyncio
import math
import socket

import pytest
import redis.asyncio
from twisted.internet import protocol, reactor

from telecom_pay.aio import wait_deferred
from telecom_pay.sessions import (
    MemorySessionStore, RedisSessionStore, SessionStore, SessionStoreError,
    SessionStoreUnavailable, SessionValueError, open_session_store,
)
from tests.aio import aio_test

SHORT_TTL = 0.2        # what a test lets expire
WAIT_OUT = 0.3         # time that passes so a SHORT_TTL entry has expired
LONG_TTL = 600.0       # what must still be there when the test looks


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self.clock = FakeClock()

    def store(self, namespace: str = "main") -> SessionStore:
        return open_session_store("memory://", clock=self.clock)

    async def elapse(self, seconds: float) -> None:
        self.clock.now += seconds


class RedisBackend:
    name = "redis"

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix

    def store(self, namespace: str = "main") -> SessionStore:
        # Sub-namespaces of the fixture's prefix, so its cleanup covers them.
        return open_session_store(self.url, prefix=f"{self.prefix}{namespace}:")

    async def elapse(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    if request.param == "memory":
        return MemoryBackend()
    return RedisBackend(request.getfixturevalue("redis_url"),
                        request.getfixturevalue("redis_prefix"))


# --- values -------------------------------------------------------------------

@aio_test
async def test_put_then_get_returns_the_value(backend):
    async with backend.store() as s:
        assert await s.get("confirm:8613800138000") is None
        value = {"action": "KT", "amount": 1250, "lang": "zh", "名": "张三",
                 "legs": [{"to": "sp:lottery", "amount": 50}], "ok": True, "none": None}
        await s.put("confirm:8613800138000", value, LONG_TTL)
        assert await s.get("confirm:8613800138000") == value
        await s.put("confirm:8613800138000", {"action": "PAY"}, LONG_TTL)
        assert await s.get("confirm:8613800138000") == {"action": "PAY"}


@aio_test
async def test_the_store_keeps_a_copy_as_json_decodes_it(backend):
    async with backend.store() as s:
        value = {"path": ("1", "2"), "n": 1}
        await s.put("menu", value, LONG_TTL)
        value["n"] = 2
        assert await s.get("menu") == {"path": ["1", "2"], "n": 1}
        got = await s.get("menu")
        got["n"] = 3
        assert (await s.get("menu"))["n"] == 1


@aio_test
async def test_values_that_are_not_json_objects_are_refused(backend):
    async with backend.store() as s:
        for bad in ({"when": object()}, {"x": math.nan}, {"x": math.inf}, [1, 2], "text", 5):
            with pytest.raises(SessionValueError):
                await s.put("k", bad, LONG_TTL)
            with pytest.raises(SessionValueError):
                await s.put_if_absent("k", bad, LONG_TTL)
        assert await s.get("k") is None


@aio_test
async def test_bad_keys_ttls_and_amounts_are_refused(backend):
    async with backend.store() as s:
        for ttl in (0, -1, math.nan, math.inf):
            with pytest.raises(ValueError, match="ttl"):
                await s.put("k", {}, ttl)
            with pytest.raises(ValueError, match="ttl"):
                await s.incr("k", ttl)
        for ttl in ("60", None, True):
            with pytest.raises(TypeError, match="ttl"):
                await s.put_if_absent("k", {}, ttl)
        with pytest.raises(TypeError, match="key"):
            await s.get(42)
        with pytest.raises(ValueError, match="key"):
            await s.take("")
        with pytest.raises(TypeError, match="amount"):
            await s.incr("c", LONG_TTL, 1.5)
        assert await s.ttl("k") is None and await s.ttl("c") is None


# --- take ---------------------------------------------------------------------

@aio_test
async def test_take_returns_the_value_once(backend):
    async with backend.store() as s:
        assert await s.take("pin:1") is None
        await s.put("pin:1", {"order": "A1"}, LONG_TTL)
        assert await s.take("pin:1") == {"order": "A1"}
        assert await s.take("pin:1") is None
        assert await s.get("pin:1") is None


@aio_test
async def test_only_one_of_many_concurrent_takers_gets_the_value(backend):
    async with backend.store() as s:
        for round_ in range(5):
            await s.put("confirm", {"round": round_}, LONG_TTL)
            results = await asyncio.gather(*(s.take("confirm") for _ in range(20)))
            winners = [r for r in results if r is not None]
            assert winners == [{"round": round_}]


@aio_test
async def test_take_into_moves_the_value_and_sets_the_keeping_ttl(backend):
    async with backend.store() as s:
        assert await s.take_into("pending:1", "answering:7", SHORT_TTL) is None
        assert await s.get("answering:7") is None          # nothing taken, nothing kept
        await s.put("pending:1", {"action": "ZF", "amount": 1250}, LONG_TTL)
        assert await s.take_into("pending:1", "answering:7", SHORT_TTL) == {"action": "ZF", "amount": 1250}
        assert await s.get("pending:1") is None
        assert await s.get("answering:7") == {"action": "ZF", "amount": 1250}
        assert 0 < await s.ttl("answering:7") <= SHORT_TTL


@aio_test
async def test_only_one_of_many_concurrent_take_into_gets_the_value(backend):
    async with backend.store() as s:
        await s.put("pending:2", {"n": 1}, LONG_TTL)
        results = await asyncio.gather(*(s.take_into("pending:2", f"answering:{i}", LONG_TTL) for i in range(20)))
        winners = [i for i, r in enumerate(results) if r is not None]
        assert len(winners) == 1
        kept = [i for i in range(20) if await s.get(f"answering:{i}") is not None]
        assert kept == winners


@aio_test
async def test_delete_many_removes_every_key_given(backend):
    async with backend.store() as s:
        for k in ("a:1", "a:2", "a:3"):
            await s.put(k, {"k": k}, LONG_TTL)
        await s.delete_many(["a:1", "a:3", "a:absent"])
        await s.delete_many([])
        assert await s.get("a:1") is None and await s.get("a:3") is None
        assert await s.get("a:2") == {"k": "a:2"}


# --- put_if_absent ------------------------------------------------------------

@aio_test
async def test_put_if_absent_stores_only_the_first(backend):
    async with backend.store() as s:
        assert await s.put_if_absent("dedup:smsc:77", {"seen": 1}, LONG_TTL) is True
        assert await s.put_if_absent("dedup:smsc:77", {"seen": 2}, SHORT_TTL) is False
        assert await s.get("dedup:smsc:77") == {"seen": 1}
        assert await s.ttl("dedup:smsc:77") > SHORT_TTL   # the loser did not shorten it


@aio_test
async def test_only_one_of_many_concurrent_put_if_absent_wins(backend):
    async with backend.store() as s:
        results = await asyncio.gather(
            *(s.put_if_absent("dedup:msg", {"by": i}, LONG_TTL) for i in range(20)))
        assert results.count(True) == 1
        assert await s.get("dedup:msg") == {"by": results.index(True)}


# --- delete -------------------------------------------------------------------

@aio_test
async def test_delete_removes_values_and_counters(backend):
    async with backend.store() as s:
        await s.put("v", {"a": 1}, LONG_TTL)
        await s.incr("c", LONG_TTL)
        await s.delete("v")
        await s.delete("c")
        await s.delete("never-there")
        assert await s.get("v") is None
        assert await s.ttl("c") is None
        assert await s.incr("c", LONG_TTL) == 1


# --- incr ---------------------------------------------------------------------

@aio_test
async def test_incr_counts_by_the_amount(backend):
    async with backend.store() as s:
        assert await s.incr("velocity:1", LONG_TTL) == 1
        assert await s.incr("velocity:1", LONG_TTL) == 2
        assert await s.incr("velocity:1", LONG_TTL, amount=5) == 7
        assert await s.incr("velocity:1", LONG_TTL, amount=-3) == 4
        assert await s.incr("velocity:2", LONG_TTL, amount=10) == 10


@aio_test
async def test_concurrent_increments_are_all_counted(backend):
    async with backend.store() as s:
        results = await asyncio.gather(*(s.incr("velocity", LONG_TTL) for _ in range(25)))
        assert sorted(results) == list(range(1, 26))


@aio_test
async def test_incr_keeps_the_window_set_at_creation(backend):
    async with backend.store() as s:
        await s.incr("velocity", 60)
        first = await s.ttl("velocity")
        assert 0 < first <= 60
        await backend.elapse(0.05)
        await s.incr("velocity", 60)
        await s.incr("velocity", 3600)          # a later, longer ttl is ignored too
        assert await s.ttl("velocity") < first


@aio_test
async def test_a_new_window_starts_after_the_old_one_expires(backend):
    async with backend.store() as s:
        for _ in range(3):
            await s.incr("velocity", SHORT_TTL)
        await backend.elapse(WAIT_OUT)
        assert await s.incr("velocity", LONG_TTL) == 1
        assert await s.ttl("velocity") > SHORT_TTL


# --- ttl and expiry -----------------------------------------------------------

@aio_test
async def test_ttl_reports_the_seconds_left(backend):
    async with backend.store() as s:
        assert await s.ttl("menu") is None
        await s.put("menu", {"node": "root"}, 30)
        assert 29 < await s.ttl("menu") <= 30
        await s.put("menu", {"node": "root"}, 2.5)         # put replaces the ttl
        assert 2 < await s.ttl("menu") <= 2.5
        await s.put("menu", {"node": "root"}, LONG_TTL)
        assert await s.ttl("menu") > 30


@aio_test
async def test_expired_entries_are_gone_for_every_operation(backend):
    async with backend.store() as s:
        await s.put("a", {"v": 1}, SHORT_TTL)
        await s.put("b", {"v": 2}, SHORT_TTL)
        await s.put_if_absent("c", {"v": 3}, SHORT_TTL)
        await s.put("sub-ms", {"v": 4}, 0.0001)
        await s.put("kept", {"v": 5}, LONG_TTL)
        await backend.elapse(WAIT_OUT)
        assert await s.get("a") is None
        assert await s.take("b") is None
        assert await s.ttl("c") is None
        assert await s.get("sub-ms") is None
        assert await s.put_if_absent("c", {"v": 33}, LONG_TTL) is True
        assert await s.get("c") == {"v": 33}
        assert await s.get("kept") == {"v": 5}


# --- kinds of values under one key -------------------------------------------

@aio_test
async def test_counters_and_values_are_not_confused(backend):
    async with backend.store() as s:
        await s.incr("counter", LONG_TTL)
        with pytest.raises(SessionValueError, match="counter"):
            await s.get("counter")
        await s.put("value", {"a": 1}, LONG_TTL)
        with pytest.raises(SessionValueError):
            await s.incr("value", LONG_TTL)
        assert await s.get("value") == {"a": 1}
        with pytest.raises(SessionValueError):
            await s.take("counter")


@aio_test
async def test_value_errors_keep_the_key_out_of_the_message(backend):
    async with backend.store() as s:
        await s.incr("velocity:8613800138000", LONG_TTL)
        with pytest.raises(SessionValueError) as info:
            await s.get("velocity:8613800138000")
        assert info.value.key == "velocity:8613800138000"
        assert "8613800138000" not in str(info.value)


# --- namespaces, lifecycle ----------------------------------------------------

@aio_test
async def test_stores_with_different_prefixes_do_not_see_each_other(backend):
    async with backend.store("a") as a, backend.store("b") as b:
        await a.put("confirm", {"store": "a"}, LONG_TTL)
        assert await b.get("confirm") is None
        assert await b.put_if_absent("confirm", {"store": "b"}, LONG_TTL) is True
        assert await a.take("confirm") == {"store": "a"}
        assert await b.get("confirm") == {"store": "b"}
        assert await a.incr("n", LONG_TTL) == 1
        assert await b.incr("n", LONG_TTL) == 1


@aio_test
async def test_a_closed_store_refuses_work(backend):
    s = backend.store()
    await s.ping()
    await s.put("k", {"a": 1}, LONG_TTL)
    await s.close()
    await s.close()
    for call in (s.get("k"), s.take("k"), s.put("k", {}, 1), s.incr("c", 1), s.ping()):
        with pytest.raises(SessionStoreUnavailable, match="closed"):
            await call


# --- open_session_store -------------------------------------------------------

def test_open_session_store_picks_the_backend(redis_url):
    assert isinstance(open_session_store("memory://"), MemorySessionStore)
    for url in (redis_url, "rediss://cache.example:6380/1", "unix:///run/redis/redis.sock?db=2"):
        store = open_session_store(url, prefix="x:")
        assert isinstance(store, RedisSessionStore)
        assert store.prefix == "x:"


@pytest.mark.parametrize("url", [
    "http://user:s3cret@cache.example/", "memcached://127.0.0.1:11211", "127.0.0.1:6379",
    "", "memory://somewhere",
])
def test_open_session_store_refuses_other_urls_clearly(url):
    with pytest.raises(ValueError, match="memory://") as info:
        open_session_store(url)
    assert "s3cret" not in str(info.value)


def test_a_clock_is_for_the_memory_store_only(redis_url):
    with pytest.raises(ValueError, match="clock"):
        open_session_store(redis_url, clock=FakeClock())


def test_redis_options_are_refused_for_memory():
    with pytest.raises(TypeError, match="socket_timeout"):
        open_session_store("memory://", socket_timeout=1)


# --- Redis only: the server is shared, and it fails ---------------------------

@aio_test
async def test_redis_stores_sharing_a_prefix_share_state(redis_url, redis_prefix):
    async with open_session_store(redis_url, prefix=redis_prefix) as a, \
            open_session_store(redis_url, prefix=redis_prefix) as b:
        await a.put("confirm", {"from": "a"}, LONG_TTL)
        assert await b.get("confirm") == {"from": "a"}
        # Takers on two connection pools, as two daemons would be.
        results = await asyncio.gather(*(store.take("confirm") for store in (a, b) * 10))
        assert [r for r in results if r is not None] == [{"from": "a"}]


@aio_test
async def test_redis_keys_live_under_the_prefix(redis_url, redis_prefix):
    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with open_session_store(redis_url, prefix=redis_prefix) as s:
            await s.put("confirm", {"a": 1}, LONG_TTL)
            await s.incr("n", 60)
            assert await raw.get(redis_prefix + "confirm") == b'{"a":1}'
            assert 59_000 < await raw.pttl(redis_prefix + "n") <= 60_000
            assert sorted(await raw.keys(redis_prefix + "*")) == sorted(
                [(redis_prefix + "confirm").encode(), (redis_prefix + "n").encode()])
    finally:
        await raw.aclose()


@aio_test
async def test_redis_data_that_is_not_ours_gives_clear_errors(redis_url, redis_prefix):
    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        await raw.set(redis_prefix + "garbage", b"\xff\x00not json")
        await raw.hset(redis_prefix + "hash", "f", "v")
        await raw.set(redis_prefix + "forever", b"{}")
        async with open_session_store(redis_url, prefix=redis_prefix) as s:
            with pytest.raises(SessionValueError, match="not JSON"):
                await s.get("garbage")
            with pytest.raises(SessionValueError):
                await s.get("hash")
            with pytest.raises(SessionValueError):
                await s.incr("hash", 60)
            assert await s.ttl("forever") == math.inf
    finally:
        await raw.aclose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@aio_test
async def test_unreachable_redis_raises_session_store_error():
    port = _closed_port()
    async with open_session_store(f"redis://:pw0rd@127.0.0.1:{port}/0",
                                  connect_timeout=1) as s:
        for call in (s.ping(), s.get("k"), s.put_if_absent("k", {}, 1), s.take("k"),
                     s.incr("k", 1)):
            with pytest.raises(SessionStoreError, match="unreachable") as info:
                await call
            assert isinstance(info.value, SessionStoreUnavailable)
            assert f"127.0.0.1:{port}" in str(info.value)
            assert "pw0rd" not in str(info.value)


class _Silent(protocol.Protocol):
    """A server that accepts connections and never answers."""

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.factory.connections.append(self)

    def dataReceived(self, data):
        pass


@aio_test
async def test_a_redis_that_stops_answering_times_out(redis_prefix):
    factory = protocol.Factory.forProtocol(_Silent)
    factory.connections = []
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        url = f"redis://127.0.0.1:{port.getHost().port}/0"
        async with open_session_store(url, prefix=redis_prefix, socket_timeout=0.2) as s:
            with pytest.raises(SessionStoreUnavailable, match="not answering"):
                await s.get("k")
        assert factory.connections, "the client never connected to the silent server"
    finally:
        for conn in factory.connections:
            conn.transport.abortConnection()
        await wait_deferred(port.stopListening())


# --- memory only: exact expiry and bounded memory -----------------------------

@aio_test
async def test_memory_expiry_is_exact_on_its_clock():
    clock = FakeClock()
    s = MemorySessionStore(clock=clock)
    await s.put("k", {"a": 1}, 10)
    await s.incr("c", 10)
    clock.now += 9.5
    assert await s.get("k") == {"a": 1}
    assert await s.ttl("k") == pytest.approx(0.5)
    assert await s.incr("c", 10) == 2
    clock.now += 0.5
    assert await s.get("k") is None
    assert await s.incr("c", 10) == 1


@aio_test
async def test_memory_purges_expired_entries_nobody_reads():
    clock = FakeClock()
    s = MemorySessionStore(clock=clock)
    for i in range(2000):
        await s.put_if_absent(f"dedup:{i}", {}, 1)
    await s.put("kept", {}, LONG_TTL)
    assert len(s) == 2001
    clock.now += 2
    await s.put("menu", {}, 1)
    assert len(s) == 2
    assert await s.get("kept") == {}


@aio_test
async def test_memory_overwriting_one_key_stays_small():
    clock = FakeClock()
    s = MemorySessionStore(clock=clock)
    for i in range(5000):
        await s.put("menu:1", {"step": i}, 30)
        clock.now += 0.001
    assert len(s) == 1
    assert await s.get("menu:1") == {"step": 4999}
    clock.now += 31
    await s.put("other", {}, 30)
    assert len(s) == 1


def _resp_commands(buffer: bytes) -> tuple[list[list[bytes]], bytes]:
    """Complete RESP commands (arrays of bulk strings) in buffer, and the rest."""
    commands = []
    while True:
        lines, pos = [], 0
        end = buffer.find(b"\r\n")
        if not buffer.startswith(b"*") or end < 0:
            return commands, buffer
        count, pos = int(buffer[1:end]), end + 2
        for _ in range(count):
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                return commands, buffer
            size = int(buffer[pos + 1:end])
            if len(buffer) < end + 2 + size + 2:
                return commands, buffer
            lines.append(buffer[end + 2:end + 2 + size])
            pos = end + 2 + size + 2
        commands.append(lines)
        buffer = buffer[pos:]


class _HangupOnWrite(protocol.Protocol):
    """A Redis look-alike that answers the connection handshake, then drops
    the connection when a data command arrives, as a crashing server would."""

    buffer = b""

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        commands, self.buffer = _resp_commands(self.buffer + data)
        for command in commands:
            name = command[0].upper()
            if name == b"PING":
                self.transport.write(b"+PONG\r\n")
            elif name == b"HELLO":
                self.transport.write(b"%1\r\n+proto\r\n:3\r\n")   # RESP3 accepted
            elif name in (b"CLIENT", b"SELECT", b"AUTH"):
                self.transport.write(b"+OK\r\n")
            else:
                self.factory.commands.append(command)
                self.transport.loseConnection()
                return


@aio_test
async def test_redis_commands_are_not_retried_after_a_dropped_connection(redis_prefix):
    # A lost reply to a retried SET NX would look like a duplicate, so the
    # store reports the failure instead of sending the command again.
    factory = protocol.Factory.forProtocol(_HangupOnWrite)
    factory.commands = []
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        url = f"redis://127.0.0.1:{port.getHost().port}/0"
        async with open_session_store(url, prefix=redis_prefix) as s:
            with pytest.raises(SessionStoreUnavailable):
                await s.put_if_absent("dedup:1", {}, 60)
        assert [c[0].upper() for c in factory.commands] == [b"SET"]
    finally:
        await wait_deferred(port.stopListening())
