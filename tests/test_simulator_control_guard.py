"""The simulators' HTTP control APIs over real HTTP on 127.0.0.1: only
JSON bodies (415), only their own host names and port (421, a DNS-rebinding
guard), and the bank's settlement file only inside its directory."""
from __future__ import annotations

import asyncio
import json
import os

from twisted.internet import reactor

from simulators.bank.simulator import BankSimulator
from simulators.smsc.config import SmscConfig
from simulators.smsc.simulator import SmscSimulator
from telecom_pay.aio import wait_deferred
from tests.aio import aio_test


async def http(port: int, method: str, path: str, *, host: str | None = None, body: bytes = b"",
               content_type: str | None = "application/json") -> tuple[int, dict]:
    """One HTTP/1.0 request (no chunked answer) written by hand, so the Host and Content-Type
    headers are exactly what a browser under attack would send."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"{method} {path} HTTP/1.0", f"Host: {host if host is not None else f'127.0.0.1:{port}'}",
            "Connection: close"]
    if body or method in ("POST", "PUT", "PATCH"):
        head.append(f"Content-Length: {len(body)}")
    if content_type is not None:
        head.append(f"Content-Type: {content_type}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    try:
        parsed = json.loads(payload) if payload.strip() else {}
    except ValueError:
        parsed = {"raw": payload.decode("utf-8", "replace")}
    return int(status_line.split()[1]), parsed


async def smsc():
    sim = SmscSimulator(SmscConfig.from_mapping({"accounts": {"telecom-pay": "secret"}}), reactor)
    port = await wait_deferred(sim.listen_http("tcp:0:interface=127.0.0.1"))
    return sim, port


async def bank(settlement_dir=None):
    sim = BankSimulator({"bank_code": "icbc", "settlement_dir": str(settlement_dir) if settlement_dir else None},
                        reactor)
    port = await wait_deferred(sim.listen_http("tcp:0:interface=127.0.0.1"))
    return sim, port


@aio_test
async def test_smsc_control_api_refuses_other_hosts_and_non_json_bodies():
    sim, listening = await smsc()
    port = listening.getHost().port
    fault = json.dumps({"kind": "throttle", "count": 5}).encode()
    try:
        assert (await http(port, "GET", "/faults"))[0] == 200
        assert (await http(port, "GET", "/faults", host=f"localhost:{port}"))[0] == 200
        assert (await http(port, "GET", "/faults", host=f"[::1]:{port}"))[0] == 200
        for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1", ""):
            code, body = await http(port, "POST", "/faults", host=host, body=fault)
            assert code in (400, 421) and "error" in body, (host, code)
        assert (await http(port, "GET", "/", host=f"evil.example:{port}"))[0] == 421      # the page too
        for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
            code, body = await http(port, "POST", "/faults", body=fault, content_type=ctype)
            assert code == 415 and "application/json" in body["error"], ctype
        form = (b'--x\r\nContent-Disposition: form-data; name="kind"\r\n\r\nthrottle\r\n--x--\r\n')
        code, body = await http(port, "POST", "/faults", body=form, content_type="multipart/form-data; boundary=x")
        assert code == 415
        assert (await http(port, "POST", "/handsets", body=b"", content_type="text/plain"))[0] == 415
        assert sim.faults.active() == [] and sim.handsets == {}        # nothing refused took effect
        code, body = await http(port, "POST", "/faults", body=fault, content_type="application/json; charset=utf-8")
        assert code == 201 and body["kind"] == "throttle" and len(sim.faults.active()) == 1
    finally:
        await wait_deferred(listening.stopListening())
        await wait_deferred(sim.stop())


@aio_test
async def test_bank_control_api_refuses_other_hosts_and_non_json_bodies(tmp_path):
    sim, listening = await bank(tmp_path)
    port = listening.getHost().port
    faults = json.dumps({"decline_all": "05"}).encode()
    card = json.dumps({"pan": "6222020000009999", "expiry": "3012", "type": "debit", "balance": 100}).encode()
    try:
        assert (await http(port, "GET", "/cards"))[0] == 200
        code, _ = await http(port, "POST", "/faults", host=f"evil.example:{port}", body=faults)
        assert code == 421
        code, _ = await http(port, "POST", "/cards", host="evil.example", body=card)
        assert code == 421
        code, _ = await http(port, "POST", "/faults", body=faults, content_type="text/plain")
        assert code == 415
        code, _ = await http(port, "PATCH", "/cards/6222020000009999", body=b'{"balance": 1}', content_type=None)
        assert code == 415
        assert sim.faults.to_json().get("decline_all") in (None, "") and "6222020000009999" not in sim.issuer.cards
        assert (await http(port, "POST", "/cards", body=card))[0] == 201
        assert (await http(port, "POST", "/faults", body=faults))[0] == 200
    finally:
        await wait_deferred(listening.stopListening())


@aio_test
async def test_settlement_file_is_written_only_inside_the_settlement_directory(tmp_path):
    base = tmp_path / "settlement"
    base.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (base / "link").symlink_to(outside, target_is_directory=True)
    sim, listening = await bank(base)
    port = listening.getHost().port

    async def settle(**body):
        return await http(port, "POST", "/settlement-file", body=json.dumps({"date": "2026-06-15", **body}).encode())
    try:
        code, body = await settle()
        assert code == 200 and body["path"] == str(base / "settlement-icbc-2026-06-15.csv")
        code, body = await settle(path="2026/06")
        assert code == 200 and body["path"] == str(base / "2026" / "06" / "settlement-icbc-2026-06-15.csv")
        for path in ("../outside", "2026/../../outside", str(outside), "/tmp", "link", "link/deeper"):
            code, body = await settle(path=path)
            assert code == 403 and "error" in body, path
        assert os.listdir(outside) == [] and not (tmp_path / "settlement-icbc-2026-06-15.csv").exists()
        assert not (outside / "deeper").exists()
    finally:
        await wait_deferred(listening.stopListening())


@aio_test
async def test_without_a_settlement_directory_no_path_is_written(tmp_path):
    sim, listening = await bank(None)
    port = listening.getHost().port
    try:
        code, body = await http(port, "POST", "/settlement-file",
                                body=json.dumps({"date": "2026-06-15", "path": str(tmp_path)}).encode())
        assert code == 403 and os.listdir(tmp_path) == []
        code, body = await http(port, "POST", "/settlement-file", body=b'{"date": "2026-06-15"}')
        assert code == 200 and body["raw"].startswith("date,stan,rrn")           # the CSV itself
    finally:
        await wait_deferred(listening.stopListening())
