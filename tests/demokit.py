"""`telecom-pay demo` as a newcomer starts it (`make run`), as its own
process in a fresh directory, every port a free one (so tests run beside a
demo someone left running).

A test may override config values (`overrides`, merged table by table:
`{"web": {"idle_timeout": 4}}`) and start the demo's clock at a chosen
instant (`clock_at`, through libfaketime: the whole process, so every
stored time and "today" agree, as they would at that hour). `Demo` also
drives the simulated handsets through the SMSC simulator's control API, so
what a test sends travels over SMPP as a phone's would."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchmarks.tomlwriter import dumps
from telecom_pay.config import DEFAULT_CONFIG

CLI = [sys.executable, "-m", "telecom_pay.cli"]
LIBFAKETIME = next(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"), Path("/usr/lib/faketime/libfaketime.so.1"))


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
    cwd: Path = Path(".")   # where it runs (its var/ holds the database)

    @property
    def handset_url(self) -> str:
        return f"http://127.0.0.1:{self.http}/"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web}"

    def printed_url(self, label: str) -> str:
        """A URL the demo printed on the line starting with `label` (the
        sample shop's, the carrier top-up system's)."""
        for line in self.printed.splitlines():
            if line.startswith(label):
                return "http://" + line.split("http://", 1)[1].split()[0].rstrip("/")
        raise AssertionError(f"the demo printed no {label!r} line:\n{self.printed}")

    @property
    def database(self) -> Path:
        """The embedded default's SQLite file (the demo runs in its own directory)."""
        return self.cwd / "var" / "telecom-pay.sqlite3"

    def control(self, method: str, path: str, body: dict | None = None, timeout: float = 60.0) -> dict:
        """One call to the SMSC simulator's control API (JSON in and out)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", method=method, data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()!r}") from None

    def handset(self, msisdn: str, language: str | None = None) -> dict:
        return self.control("POST", "/handsets", {"msisdn": msisdn, **({"language": language} if language else {})})

    def inbox_size(self, msisdn: str) -> int:
        return self.control("GET", f"/handsets/{msisdn}/inbox")["next"]

    def send(self, msisdn: str, text: str) -> dict:
        """An MO from the handset, over SMPP; returns once the platform acknowledged it."""
        return self.control("POST", f"/handsets/{msisdn}/mo", {"text": text, "wait": 20})

    def wait_sms(self, msisdn: str, since: int, containing: str, timeout: float = 30.0) -> tuple[str, int]:
        """The first MT from inbox index `since` on that contains `containing`,
        and the index after it (the control API's long poll, not a sleep)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            got = self.control("GET", f"/handsets/{msisdn}/inbox?since={since}&wait={max(left, 0.1):.1f}",
                               timeout=left + 10)
            for i, m in enumerate(got["inbox"]):
                if containing in m["text"]:
                    return m["text"], since + i + 1
            since = got["next"]
            if time.monotonic() >= deadline:
                raise AssertionError(f"no SMS containing {containing!r} reached {msisdn} within {timeout:.0f} s")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode


def write_config(tmp_path: Path, overrides: dict | None = None, sections: dict | None = None
                 ) -> tuple[Path, int, int, int]:
    """`overrides`: values merged into the default's tables; `sections`:
    top-level tables that replace the default's (a risk rule easy to trigger)."""
    raw = tomllib.loads(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    raw.update(sections or {})
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    smpp, http, iso, bank_http, ami, agi, web = free_ports(7)
    raw["demo"].update(smsc_smpp=f"tcp:{smpp}:interface=127.0.0.1", smsc_http=f"tcp:{http}:interface=127.0.0.1",
                       bank_iso=f"tcp:{iso}:interface=127.0.0.1", bank_http=f"tcp:{bank_http}:interface=127.0.0.1",
                       ami=f"tcp:{ami}:interface=127.0.0.1")
    raw["sms"]["binds"][0]["endpoint"] = f"tcp:host=127.0.0.1:port={smpp}"
    raw["bank"]["banks"][0]["endpoint"] = f"tcp:host=127.0.0.1:port={iso}"
    raw["ami"]["port"] = ami
    raw["ivr"]["endpoint"] = f"tcp:{agi}:interface=127.0.0.1"
    raw["web"]["endpoint"] = f"tcp:{web}:interface=127.0.0.1"
    if "shop" in raw["demo"]:              # the sample shop, its notify URL on the same free port
        [shop] = free_ports(1)
        raw["demo"]["shop"]["endpoint"] = f"tcp:{shop}:interface=127.0.0.1"
        for merchant in raw.get("merchants", []):
            if str(merchant.get("code")) == raw["demo"]["shop"].get("merchant_code") and merchant.get("notify_url"):
                merchant["notify_url"] = f"http://127.0.0.1:{shop}/notify"
    airtime = str(raw.get("airtime", {}).get("merchant_code") or "")
    if raw["demo"].get("topup") and airtime:     # the carrier top-up system the airtime SP calls
        [topup] = free_ports(1)
        raw["demo"]["topup"] = f"tcp:{topup}:interface=127.0.0.1"
        for merchant in raw.get("merchants", []):
            if str(merchant.get("code")) == airtime and merchant.get("notify_url"):
                merchant["notify_url"] = f"http://127.0.0.1:{topup}/topups"
    path = tmp_path / "telecom-pay.toml"
    path.write_text(dumps(raw), encoding="utf-8")
    return path, http, agi, web


def clock_env(at: str) -> dict[str, str]:
    """The environment that starts a process's clock at `at` ("YYYY-MM-DD
    HH:MM:SS", UTC) and lets it run on from there; timers (monotonic time)
    stay real: with a faked monotonic clock libfaketime 0.9.10 hangs timed
    thread waits (aiosqlite's). Its one flaw left: time.sleep fails with
    EINVAL, which ends the log flusher thread (telecom_pay/logfile.py) of a
    demo whose stderr the tests discard anyway. libfaketime is installed by
    scripts/ensure-services.sh."""
    if not LIBFAKETIME.exists():
        raise AssertionError(f"{LIBFAKETIME} is missing: scripts/ensure-services.sh installs faketime (make test)")
    return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": f"@{at}", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_DONT_RESET": "1", "TZ": "UTC"}


def start_demo(tmp_path: Path, timeout: float = 120.0, *, overrides: dict | None = None,
               sections: dict | None = None, clock_at: str | None = None) -> Demo:
    cfg, http, agi, web = write_config(tmp_path, overrides, sections)
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(clock_env(clock_at) if clock_at else {}))
    proc = subprocess.Popen([*CLI, "demo", "--config", str(cfg)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    printed = []
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        printed.append(line)
        if line.strip() == "ready" or time.monotonic() > deadline:
            break
    demo = Demo(proc, "".join(printed), http, agi, web, Path(tmp_path))
    if "ready" not in demo.printed:
        demo.stop()
        raise AssertionError(f"the demo did not get ready:\n{demo.printed}")
    return demo


@contextlib.contextmanager
def running_demo(tmp_path: Path, **kw):
    """`start_demo` for a `with` (a module's fixture): stopped however the block ends."""
    demo = start_demo(tmp_path, **kw)
    try:
        yield demo
    finally:
        demo.stop()
