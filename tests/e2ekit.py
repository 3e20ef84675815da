"""The daemon and the SMSC simulator in the test process, over real
sockets on 127.0.0.1 (the test reactor is Twisted's asyncio reactor)."""
from __future__ import annotations

import asyncio
import re

from twisted.internet import reactor

from simulators.smsc.config import SmscConfig
from simulators.smsc.simulator import SmscSimulator
from telecom_pay import config
from telecom_pay.aio import wait_deferred
from telecom_pay.daemon import Daemon

PIN_RE = re.compile(r"(?<!\d)(\d{6})(?!\d)")
REF_RE = re.compile(r"\bT[2-9A-HJ-NP-Z]{7}\b")


async def start_smsc(**cfg) -> tuple[SmscSimulator, int]:
    sim = SmscSimulator(SmscConfig.from_mapping({"accounts": {"telecom-pay": "secret"},
                                                 "delivery_receipt_delay": 0.05, **cfg}), reactor)
    port = await wait_deferred(sim.listen("tcp:0:interface=127.0.0.1"))
    return sim, port.getHost().port


def settings_for(database_url: str, smsc_port: int, *, sessions_url: str = "memory://",
                 prefix: str = "tp:", **extra) -> config.Settings:
    overrides = {
        "database.url": database_url, "sessions.url": sessions_url, "sessions.prefix": prefix,
        "security.velocity_payments_per_minute": 0, "security.allow_development_keys": True,
        "sms.binds": [{"endpoint": f"tcp:host=127.0.0.1:port={smsc_port}", "system_id": "telecom-pay",
                       "password": "secret", "enquire_link_interval": 2.0, "response_timeout": 2.0}],
        "sms.retry_poll": 0.2,
        "ivr.endpoint": "tcp:0:interface=127.0.0.1",     # never the demo's fixed port
        "web.endpoint": "tcp:0:interface=127.0.0.1",     # nor its web port
        "ami.enabled": False,                            # never the demo's switch (tests.amikit turns it on)
        **extra,
    }
    return config.load(None, overrides)


async def start_daemon(settings, *, bank=None, clock=None, bound_timeout: float = 15.0) -> Daemon:
    daemon = Daemon(settings, reactor, bank=bank, clock=clock)
    daemon.startService()
    await wait_deferred(daemon.ready)
    await wait_bound(daemon, bound_timeout)
    return daemon


async def wait_bound(daemon: Daemon, timeout: float = 15.0) -> None:
    sms = daemon.components["sms"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not sms.pool.bound:
        assert loop.time() < deadline, "the daemon's SMPP bind did not come up"
        await asyncio.sleep(0.02)


async def stop_daemon(daemon: Daemon) -> None:
    await wait_deferred(daemon.stopService())


async def say(handset, text: str, *, expect: str | None = None, timeout: float = 10.0) -> str:
    """Send an MO and return the next reply (containing `expect`, if given)."""
    await wait_deferred(handset.send(text))
    return await reply(handset, expect=expect, timeout=timeout)


async def reply(handset, *, expect: str | None = None, timeout: float = 10.0) -> str:
    pred = (lambda t: expect in t) if expect else None
    return await wait_deferred(handset.wait_for_reply(pred, timeout=timeout))


async def eventually(predicate, timeout: float = 15.0, interval: float = 0.05, *, required: bool = True):
    """Wait until `await predicate()` (or predicate()) is true and return its
    value; after `timeout` fail, or (`required=False`) return the last value
    so the caller can report what was still missing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            assert not required, "condition not met in time"
            return value
        await asyncio.sleep(interval)
