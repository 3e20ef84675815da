"""The AMI simulator and a daemon running only its AMI component, over real
sockets on 127.0.0.1."""
from __future__ import annotations

from twisted.internet import reactor

from simulators.asterisk.ami_server import AmiSimulator
from telecom_pay import config
from telecom_pay.aio import wait_deferred
from telecom_pay.daemon import Daemon
from tests.e2ekit import eventually

FAST_AMI = {"ami.timeout": 2.0, "ami.ping_interval": 0.2, "ami.login_retry": 0.1, "ami.callback_poll": 0.2}


async def start_ami(port: int = 0, **kw) -> tuple[AmiSimulator, int]:
    sim = AmiSimulator(reactor, **kw)
    listening = await wait_deferred(sim.listen(f"tcp:{port}:interface=127.0.0.1"))
    return sim, listening.getHost().port


def ami_overrides(port: int, **extra) -> dict:
    return {"ami.enabled": True, "ami.port": port, **FAST_AMI, **extra}


def ami_settings(database_url: str, port: int, **extra) -> config.Settings:
    return config.load(None, {"database.url": database_url, "security.allow_development_keys": True,
                              **ami_overrides(port, **extra)})


async def start_ami_daemon(settings, *, clock=None) -> Daemon:
    daemon = Daemon(settings, reactor, sections=("ami",), clock=clock)
    daemon.startService()
    await wait_deferred(daemon.ready)
    return daemon


async def logged_in(daemon, timeout: float = 10.0):
    return await eventually(lambda: daemon.components["ami"].connected, timeout=timeout)
