"""Two daemon instances over one PostgreSQL and one Redis, raced where a
single process never races itself: each side has its own engine and
writer (or its own Redis client), as two processes have. What is checked
is who wins, never how fast."""
from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from telecom_pay import accounts as acct
from telecom_pay.ledger.schema import async_url
from telecom_pay.ledger.tables import credentials
from telecom_pay.messaging import MessageStore, inbound_messages, outbox, queue_outgoing
from telecom_pay.outcomes import Outcome
from tests.aio import aio_test
from tests.clockkit import TestClock
from tests.ledgerkit import make_ledger
from tests.servicekit import MSISDN, funded, make_service, shutdown

LEASE = 5.0


class Clock:
    """A settable "now" for one instance's message store."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def _lock_waiters(url: str) -> int:
    """Sessions of the test database waiting for a lock (a row or an advisory one)."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as c:
            return (await c.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"))).scalar_one()
    finally:
        await engine.dispose()


async def _until_blocked_or_done(url: str, task: asyncio.Task, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done() and not await _lock_waiters(url):
        assert loop.time() < deadline, "the second instance neither finished nor waited for a lock"
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------- PIN failures


@aio_test
async def test_wrong_pins_counted_at_once_by_two_connections_are_both_counted(pg_url):
    svc = await make_service(pg_url)
    await funded(svc)
    wallet = await svc.ledger.read(lambda c: acct.find_wallet(c, MSISDN))
    await shutdown(svc)
    engines = [create_async_engine(async_url(pg_url)) for _ in range(2)]
    now = datetime.now(timezone.utc)
    try:
        async with engines[0].connect() as one, engines[1].connect() as two:
            await one.begin()
            await two.begin()
            first = await acct.record_pin_attempt(one, wallet.id, ok=False, max_failures=3,
                                                  lock_until=now + timedelta(minutes=30), now=now)
            second = asyncio.ensure_future(acct.record_pin_attempt(
                two, wallet.id, ok=False, max_failures=3, lock_until=now + timedelta(minutes=30), now=now))
            await _until_blocked_or_done(pg_url, second)       # it waits for the first one's row lock
            await one.commit()
            assert (first, await second) == (1, 2)
            await two.commit()
        async with engines[0].connect() as c:
            row = (await c.execute(sa.select(credentials).where(credentials.c.account_id == wallet.id))).one()
        assert row.pin_failures == 2 and row.pin_locked_until is None
    finally:
        for e in engines:
            await e.dispose()


@aio_test
async def test_a_pin_check_waits_for_the_other_instances_count_and_sees_the_lockout(pg_url):
    """The third wrong PIN locks the account in one transaction; a check of
    the same account in another (another instance) reads the credentials
    locked, so it waits for that commit and sees the lockout."""
    svc = await make_service(pg_url)
    await funded(svc)
    wallet = await svc.ledger.read(lambda c: acct.find_wallet(c, MSISDN))
    await shutdown(svc)
    engines = [create_async_engine(async_url(pg_url)) for _ in range(2)]
    now = datetime.now(timezone.utc)
    try:
        async with engines[0].connect() as one, engines[1].connect() as two:
            await one.begin()
            await one.execute(credentials.update().where(credentials.c.account_id == wallet.id)
                              .values(pin_failures=2))
            await one.commit()
            await one.begin()
            await acct.get_credentials(one, wallet.id, lock=True)
            assert await acct.record_pin_attempt(one, wallet.id, ok=False, max_failures=3,
                                                 lock_until=now + timedelta(minutes=30), now=now) == 3
            await two.begin()
            check = asyncio.ensure_future(acct.get_credentials(two, wallet.id, lock=True))
            await _until_blocked_or_done(pg_url, check)
            assert not check.done()
            await one.commit()
            cred = await check
            assert cred.pin_failures == 3 and cred.pin_locked_until is not None and cred.pin_locked_until > now
            await two.rollback()
    finally:
        for e in engines:
            await e.dispose()


@aio_test
async def test_an_expired_lockout_counts_from_one_again(database_url):
    svc = await make_service(database_url)
    await funded(svc)
    wallet = await svc.ledger.read(lambda c: acct.find_wallet(c, MSISDN))
    now = datetime.now(timezone.utc)

    async def attempt(conn, **kw):
        return await acct.record_pin_attempt(conn, wallet.id, max_failures=3,
                                             lock_until=now + timedelta(minutes=30), now=now, **kw)

    async def expired(conn):
        await conn.execute(credentials.update().where(credentials.c.account_id == wallet.id)
                           .values(pin_failures=3, pin_locked_until=now - timedelta(seconds=1)))
        return await attempt(conn, ok=False)
    assert await svc.ledger.write(expired) == 1
    for n in (2, 3):
        assert await svc.ledger.write(lambda c: attempt(c, ok=False)) == n
    cred = await svc.ledger.read(lambda c: acct.get_credentials(c, wallet.id))
    assert cred.pin_failures == 3 and cred.pin_locked_until == now + timedelta(minutes=30)
    assert await svc.ledger.write(lambda c: attempt(c, ok=True)) == 0
    cred = await svc.ledger.read(lambda c: acct.get_credentials(c, wallet.id))
    assert cred.pin_failures == 0 and cred.pin_locked_until is None
    await shutdown(svc)


# ---------------------------------------------------------------- velocity


@aio_test
async def test_payments_racing_on_two_instances_stop_at_the_velocity_limit(pg_url, redis_url, redis_prefix):
    limit = {"security.velocity_payments_per_minute": 2}
    clock = TestClock(datetime.now(timezone.utc).replace(second=20))      # one minute's window throughout
    one = await make_service(pg_url, sessions_url=redis_url, prefix=redis_prefix, overrides=limit, clock=clock)
    two = await make_service(pg_url, sessions_url=redis_url, prefix=redis_prefix, overrides=limit, clock=clock)
    pin = await funded(one, amount=10_000)
    results = await asyncio.gather(*(svc.pay(MSISDN, "M001", 100, pin, channel="sms", key=f"v-{i}-{n}")
                                      for i in range(4) for n, svc in enumerate((one, two))))
    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes.count("ok") == 2 and outcomes.count(Outcome.VELOCITY_HOLD.value) == 6, outcomes
    # the held ones gave their slots back: nothing beyond the two payments is counted
    assert int(await one.sessions.incr(one._velocity_key(MSISDN), ttl=61, amount=0)) == 2
    await shutdown(two)
    await shutdown(one)


@aio_test
async def test_a_refused_payment_gives_its_velocity_slot_back(pg_url, redis_url, redis_prefix):
    limit = {"security.velocity_payments_per_minute": 1}
    clock = TestClock(datetime.now(timezone.utc).replace(second=20))
    svc = await make_service(pg_url, sessions_url=redis_url, prefix=redis_prefix, overrides=limit, clock=clock)
    pin = await funded(svc, amount=10_000)
    assert (await svc.pay(MSISDN, "M001", 100, "999999", channel="sms")).outcome is Outcome.PIN_WRONG
    assert (await svc.pay(MSISDN, "M001", 50_000, pin, channel="sms")).outcome is not Outcome.OK
    assert (await svc.pay(MSISDN, "M001", 100, pin, channel="sms")).outcome is Outcome.OK
    assert (await svc.pay(MSISDN, "M001", 100, pin, channel="sms")).outcome is Outcome.VELOCITY_HOLD
    await shutdown(svc)


# ---------------------------------------------------------------- dedup window


@aio_test
async def test_a_redelivery_across_the_window_edge_on_two_instances_is_recorded_once(pg_url):
    """Instance A records a message just before a window's edge while its
    group commit is still running; instance B gets the SMSC's re-delivery
    just after the edge. Whichever takes the key's lock first records it; the
    other waits for that commit and takes its own for the re-delivery it is
    (looking at both neighbouring windows, since the clocks differ)."""
    edge = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
    window = 10.0
    edge = datetime.fromtimestamp((edge.timestamp() // window + 1) * window, timezone.utc)
    ledger_a, ledger_b = await make_ledger(pg_url), await make_ledger(pg_url)
    a = MessageStore(ledger_a, clock=Clock(edge - timedelta(seconds=0.5)), instance_id="a")
    b = MessageStore(ledger_b, clock=Clock(edge + timedelta(seconds=0.5)), instance_id="b")
    release = threading.Event()

    async def held_open(conn):                   # the rest of A's batch, still running
        release.wait(20)
    try:
        first = asyncio.ensure_future(asyncio.gather(
            a.record_inbound("sms", MSISDN, "same-text", "YE", window=window), ledger_a.write(held_open)))
        await asyncio.sleep(0.2)
        second = asyncio.ensure_future(b.record_inbound("sms", MSISDN, "same-text", "YE", window=window))
        await _until_blocked_or_done(pg_url, second)
        release.set()
        (rec_a, _), rec_b = await first, await second
        # whichever took the key's lock first recorded it; the other found that record
        assert rec_a.is_new != rec_b.is_new and rec_b.id == rec_a.id
        rows = await ledger_b.read(lambda c: _all(c, sa.select(inbound_messages.c.id)))
        assert len(rows) == 1
    finally:
        release.set()
        for ledger in (ledger_a, ledger_b):
            await ledger.close()
            await ledger.db.dispose()


# ---------------------------------------------------------------- outbox and inbound claims


@aio_test
async def test_two_instances_claiming_the_outbox_at_once_never_take_the_same_row(pg_url):
    ledger_a, ledger_b = await make_ledger(pg_url), await make_ledger(pg_url)
    a, b = MessageStore(ledger_a, instance_id="a"), MessageStore(ledger_b, instance_id="b")
    try:
        await ledger_a.write(lambda conn: queue_outgoing(conn, "sms", MSISDN, [f"m{i}" for i in range(60)]))
        rounds = await asyncio.gather(*(store.claim_due("sms", limit=7) for _ in range(6) for store in (a, b)))
        taken = [o.id for r in rounds for o in r]
        assert len(taken) == len(set(taken)) == 60
        holders = dict((await ledger_a.read(lambda c: _all(c, sa.select(outbox.c.id, outbox.c.claimed_by)))))
        by_a = {o.id for i, r in enumerate(rounds) if i % 2 == 0 for o in r}
        assert {i for i, who in holders.items() if who == "a"} == by_a
        assert await a.claim_due("sms") == [] and await b.claim_due("sms") == []
    finally:
        for ledger in (ledger_a, ledger_b):
            await ledger.close()
            await ledger.db.dispose()


@aio_test
async def test_claims_of_a_dead_instance_are_taken_over_after_the_lease(database_url):
    start = datetime.now(timezone.utc)
    clock_a, clock_b = Clock(start), Clock(start)
    ledger_a, ledger_b = await make_ledger(database_url), await make_ledger(database_url)
    a = MessageStore(ledger_a, clock=clock_a, instance_id="a", lease=LEASE)
    b = MessageStore(ledger_b, clock=clock_b, instance_id="b", lease=LEASE)
    try:
        mo = await a.record_inbound("sms", MSISDN, "k1", "YE")
        answered = await a.record_inbound("sms", MSISDN, "k2", "BAL")
        (reply,) = await a.complete(answered.id, "sms", MSISDN, ["Balance 1.00"])   # queued claimed by A
        (other,) = await a.complete(None, "sms", MSISDN, ["Notice"])
        assert await b.claim_unanswered("sms") == [] and await b.claim_due("sms") == []
        clock_a.now = clock_b.now = start + timedelta(seconds=LEASE * 0.8)
        await a.renew("sms", {reply.id})          # A is alive and still sending `reply`, not `other`
        clock_b.now = start + timedelta(seconds=LEASE * 1.2)
        assert await b.claim_unanswered("sms") == [] and [o.id for o in await b.claim_due("sms")] == [other.id]
        await b.accepted(other.id, ["m-other"])
        clock_b.now = start + timedelta(seconds=LEASE * 2)       # A died after renewing
        assert [m.id for m in await b.claim_unanswered("sms")] == [mo.id]
        assert [o.id for o in await b.claim_due("sms")] == [reply.id]
        clock_a.now = clock_b.now
        assert await a.claim_unanswered("sms", mine=True) == [] and await a.claim_due("sms", mine=True) == []
        # a retry after a refusal frees the row for whoever is up when it is due
        await b.retry_later(reply.id, "throttled", 0)
        row = await b.get(reply.id)
        assert row.claimed_by is None and row.claimed_until is None and row.state == "queued"
        clock_a.now = clock_b.now + timedelta(seconds=5)
        assert [o.id for o in await a.claim_due("sms")] == [reply.id]
        await b.retry_later(reply.id, "late", 1)                # B no longer holds it: changes nothing
        assert (await b.get(reply.id)).claimed_by == "a"
    finally:
        for ledger in (ledger_a, ledger_b):
            await ledger.close()
            await ledger.db.dispose()


@aio_test
async def test_a_restart_under_the_same_id_takes_its_claims_at_once(database_url):
    ledger = await make_ledger(database_url)
    before = MessageStore(ledger, instance_id="sms-a")
    mo = await before.record_inbound("sms", MSISDN, "k1", "YE")
    (reply,) = await before.complete(None, "sms", MSISDN, ["Notice"])
    after = MessageStore(ledger, instance_id="sms-a")
    assert await after.claim_unanswered("sms") == [] and await after.claim_due("sms") == []
    assert [m.id for m in await after.claim_unanswered("sms", mine=True)] == [mo.id]
    assert [o.id for o in await after.claim_due("sms", mine=True)] == [reply.id]
    stranger = MessageStore(ledger, instance_id="sms-b")
    assert await stranger.claim_unanswered("sms", mine=True) == [] and await stranger.claim_due("sms", mine=True) == []
    await ledger.close()
    await ledger.db.dispose()


@aio_test
async def test_unclaimed_rows_from_before_the_claims_are_answered_after_a_lease(database_url):
    """Rows recorded without a claim (by a version before claims) belong to
    nobody: answered once they are older than a lease, not at once (their
    recorder may still be answering them)."""
    start = datetime.now(timezone.utc)
    clock = Clock(start)
    ledger = await make_ledger(database_url)
    store = MessageStore(ledger, clock=clock, instance_id="b", lease=LEASE)
    mo = await store.record_inbound("sms", MSISDN, "k1", "YE")

    async def unclaim(conn):
        await conn.execute(inbound_messages.update().values(claimed_by=None, claimed_until=None))
    await ledger.write(unclaim)
    assert await store.claim_unanswered("sms") == []
    clock.now = start + timedelta(seconds=LEASE + 1)
    assert [m.id for m in await store.claim_unanswered("sms")] == [mo.id]
    await ledger.close()
    await ledger.db.dispose()


async def _all(conn, query):
    return (await conn.execute(query)).all()
