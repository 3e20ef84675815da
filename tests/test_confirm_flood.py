"""A flood of `A` must not stall the daemon. `A` from a number with nothing
pending is answered from one read, without argon2; a real opening hashes its
password (production argon2 cost) on the hasher's own threads, never on the
reactor thread. Over real SMPP against the SMSC simulator: during the flood
another subscriber's YE and the SMSC's enquire_link are answered promptly."""
import asyncio
import random

import argon2
from twisted.internet import defer

from telecom_pay.aio import wait_deferred
from tests.aio import aio_test
from tests.e2ekit import reply, say, settings_for, start_daemon, start_smsc, stop_daemon
from tests.servicekit import open_active

FLOOD = 300
RATE = 50             # `A`s a second
OPENINGS = 4
PROMPT = 3.0          # seconds: generous on a loaded 2-core machine (main answered after 2.5 to 26 s)


def enquire_link_delays(sim, since: float) -> list[float]:
    sent = {r.sequence: r.time for r in sim.traffic
            if r.direction == "out" and r.command == "enquire_link" and r.time >= since}
    return [r.time - sent[r.sequence] for r in sim.traffic
            if r.direction == "in" and r.command == "enquire_link_resp" and r.sequence in sent]


@aio_test
async def test_a_flood_from_random_numbers_does_not_stall_the_daemon(sqlite_url):
    sim, port = await start_smsc(enquire_link_interval=0.2, response_timeout=3.0)
    daemon = await start_daemon(settings_for(sqlite_url, port))
    svc = daemon.core.service
    hasher = svc.passwords
    assert hasher._ph.memory_cost == argon2.DEFAULT_MEMORY_COST        # production cost, not the tests' cheap one
    assert hasher._ph.time_cost == argon2.DEFAULT_TIME_COST
    try:
        await open_active(svc, "8613800138000")
        steady = sim.handset("13800138000")
        assert "0.00" in await say(steady, "YE")
        openers = [sim.handset(f"1370000{i:04d}") for i in range(OPENINGS)]
        for phone in openers:
            assert "A" in await say(phone, "KT")
        rng = random.Random(7)
        strangers = [sim.handset(f"139{rng.randrange(10**8):08d}") for _ in range(FLOOD)]
        runs_before = hasher.runs
        loop = asyncio.get_running_loop()
        flood_started = sim.clock.seconds()
        sends = [p.send("A") for p in openers]

        async def flood():                      # RATE messages a second, a load the daemon carries
            for i in range(0, FLOOD, RATE // 10):
                sends.extend(p.send("A") for p in strangers[i:i + RATE // 10])
                await asyncio.sleep(0.1)
        flooding = asyncio.ensure_future(flood())
        latencies = []
        while not flooding.done():
            t0 = loop.time()
            assert "0.00" in await say(steady, "YE", timeout=30), len(latencies)
            latencies.append(loop.time() - t0)
            await asyncio.sleep(0.25)            # a subscriber checking now and then, not a second flood
        await flooding
        assert len(latencies) >= 3
        await wait_deferred(defer.gatherResults(sends, consumeErrors=True))
        for phone in strangers[::30]:
            assert await reply(phone, timeout=30)                      # answered: nothing pending
        for phone in openers:
            await reply(phone, expect="MM", timeout=30)                # the initial PIN and password
        print("YE latencies during the flood", latencies)
        assert max(latencies) < PROMPT, latencies
        delays = enquire_link_delays(sim, flood_started)
        assert len(delays) >= 2 and max(delays) < PROMPT, delays
        assert hasher.runs - runs_before == OPENINGS                   # the random numbers hashed nothing
        assert daemon.components["sms"].pool.bound
    finally:
        await stop_daemon(daemon)
        await wait_deferred(sim.stop())
