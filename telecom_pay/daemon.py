"""The daemon: services composed with twisted.application from one config.

The core (database, sessions, PaymentService) opens first; then the
components named in config are wired in by name (`factory = "module:fn"`),
so `telecom_pay` imports no channel, bank bridge or simulator:

    [sms]    factory = "channels.smpp.app:make_channel"      SMPP binds
    [bank]   factory = "bank_bridge.wiring:make_bank"         ISO 8583 banks
    [ivr]    factory = "channels.ivr.app:make_channel"        FastAGI server (IVR)
    [ami]    factory = "channels.ivr.ami:make_ami"            AMI: call-backs, call events
    [web]    factory = "channels.web.app:make_web"            HTTP: API and pages for people

`telecom-pay run` runs it; `telecom-pay demo` runs it beside the simulators.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import signal
import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.logger import Logger

from telecom_pay import config as config_mod
from telecom_pay import crashpoints, perfstats
from telecom_pay.aio import as_deferred, wait_deferred

log = Logger(namespace="telecom_pay.daemon")


def load_factory(spec: str):
    module, _, name = spec.partition(":")
    if not module or not name:
        raise config_mod.ConfigError(f"factory must be 'module:function', not {spec!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise config_mod.ConfigError(f"cannot load factory {spec!r}: {exc}") from exc


def install_asyncio_reactor():
    """Twisted on the asyncio loop, so the core's asyncio clients share it."""
    from twisted.internet import asyncioreactor
    if "twisted.internet.reactor" not in sys.modules:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    from twisted.internet import reactor
    return reactor


class Daemon(MultiService):
    """Opens the core, then starts the configured components. `ready` fires
    once everything accepts traffic."""

    def __init__(self, settings: config_mod.Settings, reactor, *,
                 sections: tuple[str, ...] = ("bank", "sms", "ivr", "ami", "web"),
                 bank=None, clock=None):
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        self.sections = sections
        self.core = None
        self.bank = bank            # a BankPort given by the caller wins over [bank]
        self.clock = clock          # "now" of the core (tests pin it to chosen instants)
        self.components: dict[str, Any] = {}
        self.ready: defer.Deferred = defer.Deferred()
        self._recovery: task.LoopingCall | None = None
        self._stats_loop: task.LoopingCall | None = None

    def startService(self):
        super().startService()
        d = as_deferred(self._start())
        d.addCallbacks(lambda _: self.ready.callback(self), self.ready.errback)

    async def _start(self) -> None:
        from telecom_pay.core import open_core
        from telecom_pay.ledger import schema
        if self.settings.auto_upgrade:
            await asyncio.get_running_loop().run_in_executor(None, schema.upgrade, self.settings.database_url)
        bank_cfg = self.settings.section("bank")
        if self.bank is None and "bank" in self.sections and bank_cfg.get("factory") and bank_cfg.get("enabled", True):
            self.bank = await _maybe_await(load_factory(bank_cfg["factory"])(self.settings, bank_cfg, self.reactor))
            self.components["bank"] = self.bank
        self.core = await open_core(self.settings, bank=getattr(self.bank, "port", self.bank), upgrade=False,
                                    clock=self.clock)
        for name in self.sections:
            if name == "bank":
                continue
            cfg = dict(self.settings.section(name))
            if not cfg.get("factory") or not cfg.get("enabled", True):
                continue
            if name == "sms":
                for b in cfg.get("binds", []):
                    b.setdefault("source_addr", self.settings.service_number)
            component = await _maybe_await(load_factory(cfg["factory"])(self.core, cfg, self.reactor))
            self.components[name] = component
            component.setServiceParent(self)
        self._start_bank_recovery(float(bank_cfg.get("recovery_interval", 60)))
        self._start_stats_file(self.settings.section("daemon").get("stats_file"))
        # what start-up built (SQLAlchemy's metadata and caches, Twisted's
        # machinery) lives as long as the process: keep it out of the cyclic
        # collector's scans, which cost the writer thread about 15 % of its CPU
        gc.freeze()
        log.info("telecom-pay ready ({components})", components=", ".join(self.components) or "core only")

    def _start_bank_recovery(self, interval: float) -> None:
        """Start-up recovery finishes what the last process left; this sweep
        finishes what this one leaves while it runs (a post that failed after
        the bank's answer, an operation that was never sent), and runs after
        the channels are up, so subscribers are told how it ended."""
        if self.core.service.bank is None or interval <= 0:
            return

        async def sweep():
            try:
                await self.core.service.recover_bank_operations()
            except Exception:
                log.failure("bank recovery sweep failed; trying again in {interval} s", interval=interval)
        self._recovery = task.LoopingCall(lambda: as_deferred(sweep()))
        self._recovery.clock = self.reactor
        self._recovery.start(interval, now=True)

    def _start_stats_file(self, path: str | None) -> None:
        """`[daemon] stats_file`: the work counters (telecom_pay.perfstats)
        as JSON, rewritten every second, for benchmarks to read."""
        if not path:
            return
        self._stats_path = path

        def write():
            try:
                perfstats.counters["ledger_batches"] = self.core.ledger.batches
                perfstats.counters["ledger_jobs"] = self.core.ledger.jobs
                perfstats.counters["db_writer_raw_statements"] = getattr(self.core.ledger, "raw_statements", 0)
                for name, component in self.components.items():
                    for key, value in (getattr(component, "stats", None) or {}).items():
                        if isinstance(value, int):
                            perfstats.counters[f"{name}_{key}"] = value
                perfstats.write(path)
            except Exception:
                log.failure("writing the stats file {path} failed", path=path)
        self._write_stats = write
        self._stats_loop = task.LoopingCall(write)
        self._stats_loop.clock = self.reactor
        self._stats_loop.start(1.0, now=True)

    def stopService(self):
        if self._recovery is not None and self._recovery.running:
            self._recovery.stop()
        if self._stats_loop is not None and self._stats_loop.running:
            self._stats_loop.stop()
            self._write_stats()
        d = defer.maybeDeferred(super().stopService)

        async def close():
            bank = self.components.get("bank")
            if bank is not None and hasattr(bank, "stop"):
                await _maybe_await(bank.stop())
            if self.core is not None:
                await self.core.close()
        d.addCallback(lambda _: as_deferred(close()))
        return d


async def _maybe_await(value):
    if isinstance(value, defer.Deferred):
        return await wait_deferred(value)
    if asyncio.iscoroutine(value):
        return await value
    return value


def run_until_stopped(reactor, start, stop) -> int:
    """Run the reactor: `start()` (Deferred) then wait for SIGINT/SIGTERM,
    then `stop()`; exit status 1 if starting failed."""
    status = {"code": 0}

    def started_failed(failure):
        log.failure("start failed", failure)
        print(f"error: {failure.getErrorMessage()}", file=sys.stderr, flush=True)
        status["code"] = 1
        reactor.stop()

    reactor.callWhenRunning(lambda: start().addErrback(started_failed))
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run(installSignalHandlers=True)
    return status["code"]


def _start_logging(level: str = "info") -> None:
    from twisted.logger import FilteringLogObserver, LogLevel, LogLevelFilterPredicate, globalLogBeginner

    from telecom_pay.logfile import BufferedLogObserver
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(BufferedLogObserver(sys.stderr), [predicate])],
                                     redirectStandardIO=False)


def _run(args) -> int:
    reactor = install_asyncio_reactor()
    _start_logging(args.log_level)
    settings = config_mod.load(args.config)
    crashpoints.arm_from(settings)
    daemon = Daemon(settings, reactor)

    def start():
        daemon.startService()
        return daemon.ready.addCallback(lambda _: print("ready", flush=True))
    return run_until_stopped(reactor, start, daemon.stopService)


def _configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"])


def _configure_demo(p: argparse.ArgumentParser) -> None:
    _configure_run(p)
    p.add_argument("--fresh", action="store_true", help="start from an empty demo database")


def _demo(args) -> int:
    from telecom_pay.demo import run_demo
    return run_demo(args)


from telecom_pay.cli import EXTRA_COMMANDS  # noqa: E402  (registration)

EXTRA_COMMANDS["run"] = ("run the daemon (channels, bank bridge) from the config", _configure_run, _run)
EXTRA_COMMANDS["demo"] = ("daemon plus SMSC and bank simulators on the embedded default", _configure_demo, _demo)
_ = signal  # signals are installed by reactor.run


def run_job(args, job, *, sections: tuple[str, ...] = ("bank",)) -> int:
    """For one-shot commands that need the running components (the bank
    bridge for `settle` and `reconcile`): start them, run `await job(daemon)`
    (its int is the exit status), stop them."""
    from twisted.internet import task
    install_asyncio_reactor()
    _start_logging(getattr(args, "log_level", "warn"))
    settings = config_mod.load(args.config)
    crashpoints.arm_from(settings)
    outcome = {"code": 0}

    async def main(reactor):
        daemon = Daemon(settings, reactor, sections=sections)
        daemon.startService()
        try:
            await wait_deferred(daemon.ready)
            bank = daemon.components.get("bank")
            if bank is not None and hasattr(bank.port, "wait_ready"):
                try:
                    await asyncio.wait_for(bank.port.wait_ready(), timeout=15)
                except asyncio.TimeoutError:
                    print("warning: the bank is not signed on yet", file=sys.stderr)
            outcome["code"] = int(await job(daemon) or 0)
        finally:
            await wait_deferred(daemon.stopService())

    try:
        task.react(lambda reactor: as_deferred(main(reactor)))
    except SystemExit as exc:
        if exc.code not in (0, None) and not outcome["code"]:
            outcome["code"] = int(exc.code) if isinstance(exc.code, int) else 1
    return outcome["code"]
