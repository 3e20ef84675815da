"""The daemon under test, as its own process (`telecom-pay run --config`),
and what the kernel says it cost: CPU time (user + system, from
/proc/<pid>/stat) and peak resident memory (VmHWM, /proc/<pid>/status)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child before exec: the kernel SIGKILLs the daemon when the
    process that started it dies, however it dies (Linux; elsewhere a no-op),
    so a killed benchmark or test never leaves a daemon behind."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class DaemonError(RuntimeError):
    pass


def daemon_command(config_path: Path, log_level: str) -> list[str]:
    script = Path(sys.executable).with_name("telecom-pay")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "telecom_pay.cli"]
    return head + ["--config", str(config_path), "run", "--log-level", log_level]


class DaemonProcess:
    def __init__(self, config_path: Path, workdir: Path, *, log_level: str = "info",
                 env: dict[str, str] | None = None, name: str = "daemon"):
        self.command = daemon_command(config_path, log_level)
        self.stdout_path = workdir / f"{name}.stdout"
        self.log_path = workdir / f"{name}.log"
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 60.0) -> None:
        """Start it and wait for its `ready` line."""
        with open(self.stdout_path, "wb") as out, open(self.log_path, "wb") as err:
            # its own process group, so a kill reaches anything it started
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                                         start_new_session=True, preexec_fn=die_with_parent)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if b"ready" in self.stdout_path.read_bytes().split():
                return
            if self.proc.poll() is not None:
                raise DaemonError(f"the daemon exited with status {self.proc.returncode} before it was ready; "
                                  f"last log lines:\n{self.log_tail()}")
            if loop.time() > deadline:
                await self.stop()
                raise DaemonError(f"the daemon was not ready within {timeout:.0f} s; last log lines:\n"
                                  f"{self.log_tail()}")
            await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a clean shutdown), SIGKILL if it does not exit in time."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while proc.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            self.kill()
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL to its process group at once, without a clean shutdown
        (the benchmark is interrupted, or a crash test pulls the plug)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    async def wait_exit(self, timeout: float) -> int | None:
        """Its exit status once it has exited by itself; None if it still
        runs after `timeout` seconds."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.proc.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return self.proc.poll()

    def cpu_seconds(self) -> float:
        """User + system CPU time the daemon has used so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()   # after "pid (comm) "
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / _TICKS

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def reset_peak_rss(self) -> bool:
        """Restart the VmHWM high-water mark (Linux 4.0+, own processes), so
        each run reports its own peak; False where the kernel refuses."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
