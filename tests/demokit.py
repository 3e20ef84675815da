"""`telecom-pay demo` as a newcomer starts it (`make run`), as its own
process in a fresh directory, every port a free one (so tests run beside a
demo someone left running)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from benchmarks.tomlwriter import dumps
from telecom_pay.config import DEFAULT_CONFIG

CLI = [sys.executable, "-m", "telecom_pay.cli"]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class Demo:
    proc: subprocess.Popen
    printed: str
    http: int          # the SMSC simulator's control API and web handset
    agi: int           # the IVR's FastAGI port
    web: int           # the web interface

    @property
    def handset_url(self) -> str:
        return f"http://127.0.0.1:{self.http}/"

    def stop(self) -> int:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode


def write_config(tmp_path: Path, sections: dict | None = None) -> tuple[Path, int, int, int]:
    """`sections`: top-level tables that replace the default's (a risk rule easy to trigger)."""
    raw = tomllib.loads(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    raw.update(sections or {})
    smpp, http, iso, bank_http, ami, agi, web = free_ports(7)
    raw["demo"].update(smsc_smpp=f"tcp:{smpp}:interface=127.0.0.1", smsc_http=f"tcp:{http}:interface=127.0.0.1",
                       bank_iso=f"tcp:{iso}:interface=127.0.0.1", bank_http=f"tcp:{bank_http}:interface=127.0.0.1",
                       ami=f"tcp:{ami}:interface=127.0.0.1")
    raw["sms"]["binds"][0]["endpoint"] = f"tcp:host=127.0.0.1:port={smpp}"
    raw["bank"]["banks"][0]["endpoint"] = f"tcp:host=127.0.0.1:port={iso}"
    raw["ami"]["port"] = ami
    raw["ivr"]["endpoint"] = f"tcp:{agi}:interface=127.0.0.1"
    raw["web"]["endpoint"] = f"tcp:{web}:interface=127.0.0.1"
    path = tmp_path / "telecom-pay.toml"
    path.write_text(dumps(raw), encoding="utf-8")
    return path, http, agi, web


def start_demo(tmp_path: Path, timeout: float = 60.0, *, sections: dict | None = None) -> Demo:
    cfg, http, agi, web = write_config(tmp_path, sections)
    proc = subprocess.Popen([*CLI, "demo", "--config", str(cfg)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    printed = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        printed.append(line)
        if line.strip() == "ready" or time.monotonic() > deadline:
            break
    demo = Demo(proc, "".join(printed), http, agi, web)
    if "ready" not in demo.printed:
        demo.stop()
        raise AssertionError(f"the demo did not get ready:\n{demo.printed}")
    return demo
