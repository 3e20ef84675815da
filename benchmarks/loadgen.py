"""The load generator as the benchmark sees it: N worker processes
(`benchmarks.smsc_load`), each an SMSC on its own port, driven together.

The parent splits a run over the workers (count, rate and concurrency
shared out; every worker owns every N-th handset), starts them at one
instant of CLOCK_MONOTONIC, and merges what they recorded into one
`LoadRun`. The daemon gets one bind per worker port (or several:
``binds_per_port``), as an operator's platform has one bind per SMSC node.

Two workloads:

- ``payment``: `ZF <merchant> <amount>` -> PIN prompt -> PIN -> the
  confirmation with its reference (two steps, each timed from the MO sent
  to the reply received);
- ``keyword``: one MO (`YE`, the balance) -> one reply.

Each runs closed loop (``rate`` None: every handset starts its next
conversation as soon as the last one ended) or open loop (conversations
arrive at ``rate`` per second whatever the platform does; an arrival that
finds no idle handset waits for one, and the wait counts in its end-to-end
time; arrivals still waiting at the run's time limit are dropped).
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

clock = time.monotonic


class Record(NamedTuple):
    """One conversation as a worker recorded it (monotonic seconds, 0.0 for a step that did not happen)."""

    kind: str
    index: int
    msisdn: str
    amount: int
    scheduled: float
    t1: float          # first MO sent (`ZF`, or the keyword)
    r1: float          # its reply arrived (the PIN prompt, or the keyword's answer)
    t2: float          # PIN sent (payments)
    r2: float          # confirmation arrived (payments)
    ref: str | None
    error: str | None
    detail: str | None

    @property
    def confirmed(self) -> bool:
        return self.error is None

    @property
    def done(self) -> float:
        return self.r2 if self.kind == "payment" else self.r1


@dataclass
class LoadRun:
    workload: str
    mode: str
    rate: float | None
    concurrency: int = 0
    t0: float = 0.0
    t_end: float = 0.0
    offered: int = 0
    waited: int = 0
    dropped: int = 0
    max_backlog: int = 0
    loadgen_cpu_s: float = 0.0
    records: list[Record] = field(default_factory=list)

    @property
    def confirmed(self) -> list[Record]:
        return [r for r in self.records if r.confirmed]

    @property
    def failed(self) -> list[Record]:
        return [r for r in self.records if not r.confirmed]

    def errors(self) -> dict[str, int]:
        return dict(Counter(r.error for r in self.failed))

    def error_samples(self, limit: int = 5) -> list[str]:
        return [f"{r.error}: {r.detail or ''}".strip() for r in self.failed[:limit]]


class LoadGeneratorError(RuntimeError):
    pass


class _WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, index: int):
        self.proc = proc
        self.index = index
        self.port: int | None = None

    async def send(self, cmd: dict) -> None:
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def event(self, name: str, timeout: float | None = None) -> dict:
        async def read():
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise LoadGeneratorError(f"load worker {self.index} exited (status {self.proc.returncode})")
                msg = json.loads(line)
                if msg.get("event") == name:
                    return msg
        return await asyncio.wait_for(read(), timeout)


class LoadGenerator:
    def __init__(self, subscribers, workdir: Path, *, procs: int = 1, window: int = 64,
                 receipts: bool = True, receipt_delay: float = 0.2, merchant: str = "M888",
                 uvloop: bool = True, system_id: str = "telecom-pay", password: str = "secret"):
        self.subscribers = list(subscribers)
        self.workdir = Path(workdir)
        self.procs = max(1, procs)
        self.window = window
        self.receipts = receipts
        self.receipt_delay = receipt_delay
        self.merchant = merchant
        self.uvloop = uvloop
        self.system_id = system_id
        self.password = password
        self.workers: list[_WorkerProcess] = []
        self._runs = 0

    @property
    def ports(self) -> list[int]:
        return [w.port for w in self.workers]

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    async def start(self, timeout: float = 30.0) -> list[int]:
        """Start the workers; returns their ports once each listens."""
        from benchmarks.daemon_process import die_with_parent
        self.workdir.mkdir(parents=True, exist_ok=True)
        listing = self.workdir / "handsets.json"
        listing.write_text(json.dumps([{"msisdn": s.msisdn, "pin": s.pin} for s in self.subscribers]))
        for i in range(self.procs):
            cmd = [sys.executable, "-m", "benchmarks.smsc_load", "--index", str(i), "--procs", str(self.procs),
                   "--handsets", str(listing), "--workdir", str(self.workdir), "--window", str(self.window),
                   "--receipt-delay", str(self.receipt_delay), "--merchant", self.merchant,
                   "--system-id", self.system_id, "--password", self.password]
            if not self.receipts:
                cmd.append("--no-receipts")
            if self.uvloop:
                cmd.append("--uvloop")
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=open(self.workdir / f"loadgen-{i}.log", "ab"), limit=1 << 26,
                cwd=str(Path(__file__).resolve().parent.parent), preexec_fn=die_with_parent)
            self.workers.append(_WorkerProcess(proc, i))
        for w in self.workers:
            msg = await w.event("listening", timeout)
            w.port = msg["port"]
        return self.ports

    async def status(self, kind: str = "payment") -> list[dict]:
        out = []
        for w in self.workers:
            await w.send({"cmd": "status", "kind": kind})
            out.append(await w.event("status", 10))
        return out

    async def wait_bound(self, binds_per_port: int, timeout: float = 30.0) -> None:
        deadline = clock() + timeout
        while True:
            if all(s["bound"] >= binds_per_port for s in await self.status()):
                return
            if clock() > deadline:
                raise LoadGeneratorError(f"the platform did not bind to every load worker within {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued MO and receipt went out and was acknowledged
        (a run's receipts must not count in the next run)."""
        deadline = clock() + timeout
        while clock() < deadline:
            st = await self.status()
            if all(s["queued"] == 0 and s["receipts_due"] == 0 and s["outstanding"] == 0 for s in st):
                return
            await asyncio.sleep(0.05)

    async def run(self, workload: str, count: int, *, rate: float | None = None, concurrency: int | None = None,
                  limit: float = 0.0, timeout: float = 30.0, mode: str | None = None) -> LoadRun:
        """One run on every worker at once; fires with the merged `LoadRun`."""
        self._runs += 1
        run_id = self._runs
        n = len(self.workers)
        start_at = clock() + 0.3
        for i, w in enumerate(self.workers):
            share = count // n + (1 if i < count % n else 0)
            cmd = {"cmd": "run", "id": run_id, "workload": workload, "count": share,
                   "rate": (rate / n) if rate else None, "limit": limit, "timeout": timeout,
                   "start_at": start_at, "first_index": run_id * 1_000_003 + i}
            if concurrency:
                cmd["concurrency"] = concurrency // n + (1 if i < concurrency % n else 0)
            await w.send(cmd)
        merged = LoadRun(workload, mode or ("full_speed" if rate is None else "fixed_rate"), rate)
        summaries = []
        for w in self.workers:
            msg = await w.event("done", None)
            summaries.append(json.loads(Path(msg["path"]).read_text(encoding="utf-8")))
            os.unlink(msg["path"])
        merged.t0 = min(s["t0"] for s in summaries)
        merged.t_end = max(s["t_end"] for s in summaries)
        for s in summaries:
            merged.offered += s["offered"]
            merged.waited += s["waited"]
            merged.dropped += s["dropped"]
            merged.max_backlog += s["max_backlog"]
            merged.concurrency += s["concurrency"]
            merged.loadgen_cpu_s += s["cpu_s"]
            merged.records.extend(Record(*r) for r in s["records"])
        return merged

    async def late(self) -> list[Record]:
        """Confirmations that arrived after their wait timed out: the money moved."""
        out = []
        for w in self.workers:
            await w.send({"cmd": "late"})
            out.extend(Record(*r) for r in (await w.event("late", 10))["records"])
        return out

    async def rested(self, kind: str = "payment") -> int:
        return sum(s["rested"] for s in await self.status(kind))

    async def counters(self) -> dict:
        total: Counter = Counter()
        for s in await self.status():
            total.update(s["counters"])
        return dict(total)

    async def stop(self, timeout: float = 10.0) -> None:
        workers, self.workers = self.workers, []
        for w in workers:
            if w.proc.returncode is None:
                try:
                    await w.send({"cmd": "stop"})
                    w.proc.stdin.close()
                except (BrokenPipeError, ConnectionResetError):
                    pass
        for w in workers:
            try:
                await asyncio.wait_for(w.proc.wait(), timeout)
            except asyncio.TimeoutError:
                w.proc.kill()
                await w.proc.wait()

    def kill(self) -> None:
        """On the way out (interrupted): no waiting."""
        for w in self.workers:
            if w.proc.returncode is None:
                try:
                    w.proc.kill()
                except ProcessLookupError:
                    pass


class EchoEsme:
    """The trivial ESME (`benchmarks.echo_esme`) in its own process(es), bound to the workers."""

    def __init__(self, ports: list[int], workdir: Path, *, window: int = 100, procs: int = 1,
                 uvloop: bool = True):
        self.ports = ports
        self.workdir = Path(workdir)
        self.window = window
        self.procs = procs
        self.uvloop = uvloop
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, timeout: float = 30.0) -> None:
        from benchmarks.daemon_process import die_with_parent
        procs = max(1, min(self.procs, len(self.ports)))
        groups = [self.ports[i::procs] for i in range(procs)]
        for i, ports in enumerate(g for g in groups if g):
            cmd = [sys.executable, "-m", "benchmarks.echo_esme", "--window", str(self.window)]
            for p in ports:
                cmd += ["--port", str(p)]
            if self.uvloop:
                cmd.append("--uvloop")
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=open(self.workdir / f"echo-{i}.log", "ab"),
                cwd=str(Path(__file__).resolve().parent.parent), preexec_fn=die_with_parent)
            self.processes.append(proc)
        for proc in self.processes:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            if line.strip() != b"ready":
                raise LoadGeneratorError(f"the echo ESME did not bind (see {self.workdir}/echo-*.log)")

    async def stop(self) -> None:
        procs, self.processes = self.processes, []
        for proc in procs:
            if proc.returncode is None:
                proc.stdin.close()
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()

    def kill(self) -> None:
        for proc in self.processes:
            if proc.returncode is None:
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
