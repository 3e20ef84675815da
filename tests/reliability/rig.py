"""The crash tests' world: the daemon as its own process (`telecom-pay run
--config FILE`), the SMSC and bank simulators in the test process over real
TCP on 127.0.0.1, and one deployment's database and session store
(benchmarks/deployment.py: a SQLite file with in-process sessions, or a
throwaway PostgreSQL database with a Redis key prefix).

A daemon the test kills, or that kills itself at a crash point, leaves
nothing behind: it runs in its own process group, and `close()` kills every
group it started, whatever happened to the test.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet import reactor

from benchmarks import deployment as deployments
from benchmarks.daemon_process import DaemonProcess, die_with_parent
from benchmarks.tomlwriter import dumps
from simulators.bank.simulator import BankSimulator
from simulators.smsc.config import SmscConfig
from simulators.smsc.simulator import SmscSimulator
from telecom_pay import config as config_mod
from telecom_pay.aio import wait_deferred
from telecom_pay.config import DEFAULT_CONFIG
from telecom_pay.crashpoints import ENV as CRASH_ENV
from telecom_pay.daemon import Daemon
from tests.e2ekit import eventually as _eventually

REPO = Path(__file__).resolve().parents[2]
#: M001's settlement account in the shipped config (`payout_pan`)
MERCHANT_PAN = "6222020000000001"
EXPIRY = "3012"


class RigError(AssertionError):
    pass


@dataclass
class Rig:
    deployment: deployments.Deployment
    smsc: SmscSimulator
    bank: BankSimulator
    smpp_port: int
    iso_port: int
    config_path: Path = None
    processes: list[DaemonProcess] = field(default_factory=list)
    _listening: list = field(default_factory=list)
    _starts: int = 0

    # ------------------------------------------------------------ building

    @classmethod
    async def up(cls, kind: str, *, smsc: dict | None = None, bank_timeout: float = 3.0,
                 extra: dict | None = None) -> "Rig":
        """Simulators listening, a fresh deployment, the daemon's config
        written; no daemon yet. `kind` is "sqlite" or "postgres"."""
        dep = deployments.prepare(kind)
        try:
            sim = SmscSimulator(SmscConfig.from_mapping({
                "accounts": {"telecom-pay": "secret"}, "delivery_receipt_delay": 0.05,
                # an MO the platform never acknowledged (it died) comes again, however long it is down
                "redelivery_delay": 0.3, "max_delivery_attempts": 1000, "response_timeout": 5.0,
                **(smsc or {})}), reactor)
            smpp = await wait_deferred(sim.listen("tcp:0:interface=127.0.0.1"))
            bank = BankSimulator({"bank_code": "simbank"}, reactor)
            iso = await wait_deferred(bank.listen("tcp:0:interface=127.0.0.1"))
        except BaseException:
            dep.close()
            raise
        rig = cls(dep, sim, bank, smpp.getHost().port, iso.getHost().port, _listening=[iso])   # sim.stop closes its own
        bank.add_card(MERCHANT_PAN, EXPIRY, "debit", balance=0)
        rig.config_path = rig.write_config(bank_timeout=bank_timeout, extra=extra or {})
        return rig

    def write_config(self, *, bank_timeout: float, extra: dict, name: str = "telecom-pay.toml") -> Path:
        """The daemon's config file (`name` in the deployment's directory):
        the deployment, the simulators' ports, fast retries; `extra` sets
        dotted keys (e.g. a second instance's `daemon.instance_id`)."""
        raw = tomllib.loads(DEFAULT_CONFIG.read_text(encoding="utf-8"))
        dep = self.deployment
        raw["database"] = {"url": dep.database_url, "auto_upgrade": True}
        raw["sessions"] = {"url": dep.sessions_url, "prefix": dep.sessions_prefix}
        # a restart takes its former self's claims over at once (messaging.py)
        raw["daemon"] = {"instance_id": "rig-daemon"}
        raw["security"]["velocity_payments_per_minute"] = 0
        raw["security"]["allow_development_keys"] = True      # a test deployment, by declaration
        raw["sms"]["retry_poll"] = 0.2
        raw["sms"]["binds"] = [dict(raw["sms"]["binds"][0], endpoint=f"tcp:host=127.0.0.1:port={self.smpp_port}",
                                    enquire_link_interval=2.0, response_timeout=2.0)]
        raw["bank"]["reversal_retry_initial"] = 0.2
        raw["bank"]["reversal_retry_max"] = 1.0
        raw["bank"]["recovery_interval"] = 0.5              # finish what a kill left within a second or two
        raw["bank"]["unsent_after_seconds"] = 1.0
        raw["bank"]["banks"] = [dict(raw["bank"]["banks"][0], endpoint=f"tcp:host=127.0.0.1:port={self.iso_port}",
                                     timeout=bank_timeout, echo_interval=5)]
        raw["settlement"]["file_dir"] = str(dep.workdir / "settlement")
        for section in ("demo", "bank_sim", "smsc_sim"):
            raw.pop(section, None)
        raw.setdefault("ivr", {})["endpoint"] = "tcp:0:interface=127.0.0.1"   # several daemons: never a fixed port
        raw.setdefault("web", {})["endpoint"] = "tcp:0:interface=127.0.0.1"
        raw.setdefault("ami", {})["enabled"] = False                          # nor the demo's switch
        for dotted, value in extra.items():
            node = raw
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        path = dep.workdir / name
        path.write_text(dumps(raw), encoding="utf-8")
        return path

    @property
    def settings(self) -> config_mod.Settings:
        return config_mod.load(self.config_path)

    @property
    def sync_database_url(self) -> str:
        """The same database for a blocking SQLAlchemy engine (the checks)."""
        return self.deployment.database_url.replace("sqlite+aiosqlite:", "sqlite:")

    # ------------------------------------------------------------ the daemon process

    async def start(self, *, crash_at: str | None = None, timeout: float = 60.0,
                    config: Path | None = None) -> DaemonProcess:
        """`telecom-pay run` as its own process, armed at `crash_at`, with
        `config` (default: the rig's); returns once it is bound to the SMSC
        (one more bind than before) and signed on at the bank."""
        self._starts += 1
        env = {"PYTHONPATH": _pythonpath(), CRASH_ENV: crash_at or ""}
        proc = DaemonProcess(config or self.config_path, self.deployment.workdir, env=env,
                             name=f"daemon-{self._starts}")
        self.processes.append(proc)
        signed_on = len(self.bank.messages)
        bound_before = {b.bind_id for b in self.smsc.binds if b.bound_at is not None}
        await proc.start(timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (any(b.bound_at is not None and b.bind_id not in bound_before for b in self.smsc.binds)
                   and any(m["mti"] == "0810" for m in list(self.bank.messages)[signed_on:])):
            if proc.proc.poll() is not None:
                raise RigError(f"the daemon exited ({proc.proc.returncode}) before it was bound; "
                               f"log:\n{proc.log_tail()}")
            if loop.time() > deadline:
                raise RigError(f"the daemon did not bind and sign on within {timeout:.0f} s; log:\n{proc.log_tail()}")
            await asyncio.sleep(0.02)
        return proc

    async def crashed(self, proc: DaemonProcess, timeout: float = 20.0) -> None:
        """The daemon died at its crash point (SIGKILL by its own hand), not
        otherwise and not never: a crash test that did not crash proves nothing."""
        code = await proc.wait_exit(timeout)
        if code is None:
            proc.kill()
            raise RigError(f"the daemon did not reach its crash point within {timeout:.0f} s; log:\n"
                           f"{proc.log_tail()}")
        if code != -9:
            raise RigError(f"the daemon exited with {code}, not by its crash point (SIGKILL); log:\n"
                           f"{proc.log_tail()}")
        await self.unbound()

    async def unbound(self, timeout: float = 10.0) -> None:
        """Until the SMSC has noticed the dead connection."""
        await eventually(lambda: not self.smsc.binds, timeout)

    async def stop(self, proc: DaemonProcess) -> None:
        code = await proc.stop()
        if code not in (0, -15):
            raise RigError(f"the daemon stopped with {code}; log:\n{proc.log_tail()}")
        await self.unbound()

    async def cli(self, *args: str, crash_at: str | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """A one-shot `telecom-pay` command (e.g. `settle`) against the same
        config; polled, so the simulators in this process keep answering it."""
        out = self.deployment.workdir / f"cli-{self._starts}-{args[0]}.out"
        self._starts += 1
        env = {**os.environ, "PYTHONPATH": _pythonpath(), "PYTHONUNBUFFERED": "1", CRASH_ENV: crash_at or ""}
        with open(out, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "telecom_pay.cli", "--config", str(self.config_path),
                                     *args], stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True, preexec_fn=die_with_parent)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while proc.poll() is None:
                if loop.time() > deadline:
                    raise RigError(f"telecom-pay {' '.join(args)} did not finish within {timeout:.0f} s")
                await asyncio.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(errors="replace"), "")

    # ------------------------------------------------------------ setting the scene

    async def in_process(self) -> Daemon:
        """The same daemon inside the test process (never armed: crash
        points are armed only by `telecom-pay run`), for preparing a scene
        faster than a process start."""
        daemon = Daemon(self.settings, reactor)
        daemon.startService()
        await wait_deferred(daemon.ready)
        await eventually(lambda: daemon.components["sms"].pool.bound, 15)
        await asyncio.wait_for(daemon.components["bank"].port.wait_ready(), 15)
        return daemon

    async def stop_in_process(self, daemon: Daemon) -> None:
        await wait_deferred(daemon.stopService())
        await self.unbound()

    # ------------------------------------------------------------ cleanup

    def kill(self) -> None:
        """Every process this rig started, now (the fixtures' safety net)."""
        for proc in self.processes:
            proc.kill()

    async def close(self) -> None:
        self.kill()
        try:
            await wait_deferred(self.smsc.stop())
            self.bank.drop_connections()
            for port in self._listening:
                await wait_deferred(port.stopListening())
        finally:
            self.deployment.close()

    def logs(self) -> str:
        """Every daemon log, for a failure's report."""
        return "\n".join(f"--- {p.log_path.name}\n{p.log_tail(40)}" for p in self.processes)


def _pythonpath() -> str:
    return os.pathsep.join([str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


async def eventually(predicate, timeout: float = 15.0, interval: float = 0.05):
    """Until `predicate()` (or its awaitable) is true; then its value. The
    last value after `timeout` (callers report what was still missing)."""
    return await _eventually(predicate, timeout, interval, required=False)
