"""The bank simulator as testers use it: a raw ISO 8583 client over TCP on
127.0.0.1 (duplicates, reversals, malformed input, faults), the HTTP control
API over real HTTP, and the settlement file."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import time

import treq
from hypothesis import given, settings, strategies as st
from twisted.internet import reactor
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport

from bank_bridge import spec
from bank_bridge.framing import FrameDecoder, encode_frame
from simulators.bank import BankSimulator
from simulators.bank.host import IssuerProtocol
from telecom_pay.aio import wait_deferred
from tests.aio import aio_test

PAN = "6222020000001234"
TERMINAL = "TP000009"


class RawClient(Protocol):
    """A bare ISO 8583 client: sends what the test says, collects answers."""

    def __init__(self):
        self.decoder = FrameDecoder()
        self.answers: list[dict] = []
        self.closed = False

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        for raw in self.decoder.feed(data):
            self.answers.append(spec.decode_message(raw))

    def connectionLost(self, reason=None):
        self.closed = True

    def send(self, message: dict) -> None:
        self.transport.write(encode_frame(spec.encode_message(message)))

    async def answer(self, count: int = 1, timeout: float = 5.0) -> dict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.answers) < count:
            if loop.time() > deadline or self.closed:
                raise AssertionError(f"no answer #{count}")
            await asyncio.sleep(0.01)
        return self.answers[count - 1]


async def until(predicate, timeout: float = 5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


class Host:
    def __init__(self, tmp_path=None):
        self.sim = BankSimulator({"bank_code": "icbc", "settlement_dir": str(tmp_path) if tmp_path else None,
                                  "cards": [{"pan": PAN, "expiry": "3012", "type": "debit", "balance": 100_00}]},
                                 reactor)
        self.ports = []

    async def start(self):
        self.iso = await wait_deferred(self.sim.listen("tcp:0:interface=127.0.0.1"))
        self.http = await wait_deferred(self.sim.listen_http("tcp:0:interface=127.0.0.1"))
        self.base = f"http://127.0.0.1:{self.http.getHost().port}"
        return self

    async def client(self) -> RawClient:
        endpoint = clientFromString(reactor, f"tcp:host=127.0.0.1:port={self.iso.getHost().port}")
        return await wait_deferred(connectProtocol(endpoint, RawClient()))

    async def close(self):
        self.sim.drop_connections()
        await wait_deferred(self.iso.stopListening())
        await wait_deferred(self.http.stopListening())

    async def http_json(self, method: str, path: str, body=None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {b"content-type": [b"application/json"]} if data is not None else None
        response = await wait_deferred(treq.request(method, self.base + path, data=data, headers=headers,
                                                    persistent=False))
        content = await wait_deferred(treq.content(response))
        return response.code, content


def host_test(fn):
    @aio_test
    async def wrapper(tmp_path):
        host = await Host(tmp_path).start()
        try:
            await fn(host, tmp_path)
        finally:
            await host.close()
    wrapper.__name__ = fn.__name__
    return wrapper


def financial(stan: str, amount: int, *, processing: str = spec.PROC_PURCHASE, **extra) -> dict:
    now = time.time()
    return {"t": "0200", "2": PAN, "3": processing, "4": f"{amount:012d}", "7": time.strftime("%m%d%H%M%S", time.gmtime(now)),
            "11": stan, "37": f"0000000{stan[:5]}", "41": TERMINAL, "49": "156", **extra}


@host_test
async def test_sign_on_and_echo_answered(host, tmp_path):
    client = await host.client()
    client.send({"t": "0800", "11": "000001", "41": TERMINAL, "70": "001"})
    client.send({"t": "0800", "11": "000002", "41": TERMINAL, "70": "301"})
    first, second = await client.answer(1), await client.answer(2)
    assert [(a["t"], a["11"], a["39"], a["70"]) for a in (first, second)] == [
        ("0810", "000001", "00", "001"), ("0810", "000002", "00", "301")]


@host_test
async def test_duplicate_stan_gets_the_first_answer_and_no_second_movement(host, tmp_path):
    client = await host.client()
    client.send(financial("000010", 10_00))
    first = await client.answer(1)
    client.send(financial("000010", 10_00))
    again = await client.answer(2)
    assert first["39"] == "00" and again == first and "38" in first
    assert host.sim.card(PAN).balance == 90_00 and len(host.sim.card(PAN).movements) == 1


@host_test
async def test_reversal_applied_exactly_once(host, tmp_path):
    client = await host.client()
    original = financial("000020", 30_00)
    client.send(original)
    assert (await client.answer(1))["39"] == "00"
    data = spec.OriginalData("0200", "000020", original["7"], "48020000").encode()
    reversal = dict(financial("000021", 30_00), t="0420", **{"90": data})
    client.send(reversal)
    client.send(dict(reversal, t="0421"))
    answers = [await client.answer(2), await client.answer(3)]
    assert [(a["t"], a["39"]) for a in answers] == [("0430", "00"), ("0430", "00")]
    card = host.sim.card(PAN)
    assert card.balance == 100_00
    assert [(m.kind, m.amount, m.reversed) for m in card.movements] == [("debit", -30_00, True),
                                                                         ("reversal", 30_00, False)]


@host_test
async def test_reversal_of_unknown_original_is_acknowledged_and_blocks_it(host, tmp_path):
    client = await host.client()
    data = spec.OriginalData("0200", "000030", "1123000000", "48020000").encode()
    client.send(dict(financial("000031", 5_00), t="0420", **{"90": data}))
    assert ((await client.answer(1))["t"], (await client.answer(1))["39"]) == ("0430", "25")
    client.send(financial("000030", 5_00))                 # the original arrives after its reversal
    assert (await client.answer(2))["39"] != "00"
    assert host.sim.card(PAN).balance == 100_00


@host_test
async def test_malformed_messages_refused_server_keeps_serving(host, tmp_path):
    client = await host.client()
    bad_amount = spec.encode_message({"t": "0200", "11": "000040", "41": TERMINAL, "4": "00000000ABCD"})
    client.transport.write(encode_frame(bad_amount))
    refused = await client.answer(1)
    assert (refused["t"], refused["11"], refused["39"]) == ("0210", "000040", "30")
    client.transport.write(encode_frame(b"\x00garbage\xff\xfe"))       # unidentifiable: dropped
    client.send({"t": "0800", "11": "000041", "41": TERMINAL, "70": "301"})
    assert (await client.answer(2))["11"] == "000041"
    client.transport.write(b"\xff\xff" + b"x" * 10)                    # wrong length header
    await until(lambda: client.closed)
    other = await host.client()                                         # the server is still up
    other.send(financial("000042", 1_00))
    assert (await other.answer(1))["39"] == "00"
    notes = [m["note"] for m in host.sim.messages if m["note"]]
    assert any("malformed" in n for n in notes) and any("framing error" in n for n in notes)


class TcpStringTransport(StringTransport):
    def setTcpNoDelay(self, enabled):
        self.no_delay = enabled


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=400))
def test_fuzz_random_bytes_never_break_the_host(data):
    sim = BankSimulator({"cards": [{"pan": PAN, "expiry": "3012", "balance": 100}]}, reactor)
    protocol = IssuerProtocol(sim)
    transport = TcpStringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    for raw in FrameDecoder().feed(transport.value()):
        assert spec.decode_message(raw)["t"] in spec.RESPONSE_MTIS
    fresh = IssuerProtocol(sim)
    fresh_transport = TcpStringTransport()
    fresh.makeConnection(fresh_transport)
    fresh.dataReceived(encode_frame(spec.encode_message({"t": "0800", "11": "000001", "70": "301"})))
    assert spec.decode_message(FrameDecoder().feed(fresh_transport.value())[0])["39"] == "00"


@host_test
async def test_faults_latency_decline_and_no_answer(host, tmp_path):
    client = await host.client()
    host.sim.faults.update({"latency": 0.05})
    client.send(financial("000050", 1_00))
    assert (await client.answer(1))["39"] == "00"
    host.sim.faults.update({"latency": 0, "decline_all": "91"})
    client.send(financial("000051", 1_00))
    assert (await client.answer(2))["39"] == "91"
    host.sim.faults.clear()
    host.sim.faults.update({"no_answer": True})
    client.send(financial("000052", 1_00))
    client.send({"t": "0800", "11": "000053", "41": TERMINAL, "70": "301"})   # 0800 is not in the fault's MTIs
    assert (await client.answer(3))["11"] == "000053"
    assert host.sim.card(PAN).balance == 99_00


# -- HTTP control API ------------------------------------------------------------------

@host_test
async def test_http_cards_crud(host, tmp_path):
    code, body = await host.http_json("POST", "/cards", {"pan": "6222081111112222", "expiry": "2912",
                                                         "type": "credit", "balance": 0, "limit": 300_00})
    assert code == 201 and json.loads(body)["available"] == 300_00
    assert (await host.http_json("POST", "/cards", {"pan": "6222081111112222", "expiry": "2912"}))[0] == 409
    assert (await host.http_json("POST", "/cards", raw=b"{not json"))[0] == 400
    code, body = await host.http_json("POST", "/cards", {"pan": "12", "expiry": "2912"})
    assert code == 400 and "pan" in json.loads(body)["error"]
    code, body = await host.http_json("PATCH", "/cards/6222081111112222", {"status": "blocked"})
    assert code == 200 and json.loads(body)["status"] == "blocked"
    assert (await host.http_json("PATCH", "/cards/6222081111112222", {"balance": 1.5}))[0] == 400
    code, body = await host.http_json("GET", "/cards")
    assert {c["pan"] for c in json.loads(body)} == {PAN, "6222081111112222"}
    assert (await host.http_json("DELETE", "/cards/6222081111112222"))[0] == 200
    assert (await host.http_json("GET", "/cards/6222081111112222"))[0] == 404


@host_test
async def test_http_balance_movements_faults_messages(host, tmp_path):
    client = await host.client()
    client.send(financial("000060", 12_34))
    await client.answer(1)
    code, body = await host.http_json("GET", f"/cards/{PAN}")
    card = json.loads(body)
    assert card["balance"] == 100_00 - 12_34 and card["movements"][0]["stan"] == "000060"
    code, body = await host.http_json("POST", "/faults", {"answer_after": 3, "mtis": ["0200"]})
    assert code == 200 and json.loads(body)["answer_after"] == 3.0
    assert host.sim.faults.answer_after == 3.0
    assert (await host.http_json("POST", "/faults", {"latency": -1}))[0] == 400
    assert (await host.http_json("POST", "/faults", {"explode": True}))[0] == 400
    assert (await host.http_json("POST", "/faults", raw=b"[1,"))[0] == 400
    assert (await host.http_json("DELETE", "/faults"))[0] == 200 and host.sim.faults.answer_after is None
    code, body = await host.http_json("GET", "/messages?limit=2")
    records = json.loads(body)
    assert [(r["direction"], r["mti"]) for r in records] == [("in", "0200"), ("out", "0210")]
    assert records[0]["fields"]["2"] == "622202******1234"          # no full PAN in the traffic record


@host_test
async def test_settlement_file_excludes_reversed_movements(host, tmp_path):
    client = await host.client()
    kept = financial("000070", 10_00)
    reversed_ = financial("000071", 20_00)
    credit = financial("000072", 5_00, processing=spec.PROC_CREDIT)
    for m in (kept, reversed_, credit):
        client.send(m)
    await client.answer(3)
    data = spec.OriginalData("0200", "000071", reversed_["7"], "48020000").encode()
    client.send(dict(financial("000073", 20_00), t="0420", **{"90": data}))
    await client.answer(4)
    today = time.strftime("%Y-%m-%d")
    rows = host.sim.settlement_rows(today)
    assert [(r["stan"], r["amount"], r["type"], r["response"]) for r in rows] == [
        ("000070", 10_00, "debit", "00"), ("000072", 5_00, "credit", "00")]
    code, body = await host.http_json("POST", "/settlement-file", {"date": today})
    assert code == 200
    path = json.loads(body)["path"]
    parsed = list(csv.DictReader(io.StringIO(open(path).read())))
    assert [r["card_last4"] for r in parsed] == ["1234", "1234"]
    assert list(parsed[0]) == ["date", "stan", "rrn", "card_last4", "amount", "type", "response"]
    host.sim.settlement_dir = None
    code, body = await host.http_json("POST", "/settlement-file", {"date": today})
    assert code == 200 and body.decode().startswith("date,stan,rrn")
    assert (await host.http_json("POST", "/settlement-file", {"date": "yesterday"}))[0] == 400


def test_cards_from_fixture_files(tmp_path):
    (tmp_path / "cards.json").write_text(json.dumps([{"pan": PAN, "expiry": "3012", "balance": 5}]))
    (tmp_path / "cards.toml").write_text('[[cards]]\npan = "6222089999990000"\nexpiry = "3001"\n'
                                         'type = "credit"\nlimit = 100\n')
    sim = BankSimulator({"cards_file": str(tmp_path / "cards.json")}, reactor)
    sim.load_cards(tmp_path / "cards.toml")
    assert sim.card(PAN).balance == 5 and sim.card("6222089999990000").available == 100


def test_command_line_simulator_serves_iso_and_http(tmp_path):
    """`python -m simulators.bank` as a tester starts it."""
    import socket
    import subprocess
    import sys
    import urllib.request

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    iso_port, http_port = free_port(), free_port()
    (tmp_path / "cards.json").write_text(json.dumps([{"pan": PAN, "expiry": "3012", "balance": 7}]))
    proc = subprocess.Popen([sys.executable, "-m", "simulators.bank", "--iso", f"tcp:{iso_port}:interface=127.0.0.1",
                             "--http", f"tcp:{http_port}:interface=127.0.0.1", "--cards", str(tmp_path / "cards.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/cards/{PAN}", timeout=2) as r:
                    assert json.loads(r.read())["balance"] == 7
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", iso_port), timeout=5) as conn:
            conn.sendall(encode_frame(spec.encode_message({"t": "0800", "11": "000001", "70": "301"})))
            decoder, frames = FrameDecoder(), []
            while not frames:
                frames = decoder.feed(conn.recv(4096))
            assert spec.decode_message(frames[0])["39"] == "00"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
