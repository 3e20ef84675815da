"""The load generator against the echo ESME over real sockets, no daemon:
two workers (so replies that arrive on the other worker's bind must be
forwarded to the handset's owner), both workloads, closed and open loop.
Checks what the harness promises: every conversation is answered and
timed step by step in order, the open loop offers what its rate says, an MO
the platform throttled or never acknowledged is delivered again (same text,
same TP-MR), and a handset stops once its PIN has used every TP-MR. No
timing is asserted."""
from __future__ import annotations

import asyncio

from benchmarks.loadgen import EchoEsme, LoadGenerator
from benchmarks.population import Subscriber, msisdns
from benchmarks.smsc_load import KEYWORD_VARIANTS, TPMR_VALUES, Handset
from channels.smpp import pdu as P
from tests.aio import aio_test


async def _with_generator(tmp_path, fn, *, accounts=12, procs=2):
    lg = LoadGenerator([Subscriber(m, "258147") for m in msisdns(accounts)], tmp_path, procs=procs,
                       receipt_delay=0.01, uvloop=False)
    echo = None
    try:
        ports = await lg.start()
        assert len(set(ports)) == procs
        echo = EchoEsme(ports, tmp_path, uvloop=False)
        await echo.start()
        await lg.wait_bound(1)
        return await fn(lg)
    finally:
        if echo is not None:
            await echo.stop()
        await lg.stop()


@aio_test
async def test_both_workloads_closed_and_open_loop(tmp_path):
    async def scenario(lg):
        pay = await lg.run("payment", 40, timeout=10)
        kw = await lg.run("keyword", 30, timeout=10)
        await lg.drain()
        opened = await lg.run("payment", 1000, rate=40.0, limit=0.5, timeout=10)
        return pay, kw, opened, await lg.counters()

    pay, kw, opened, counters = await _with_generator(tmp_path, scenario)
    assert (len(pay.confirmed), len(pay.failed)) == (40, 0), pay.error_samples()
    for r in pay.records:
        assert r.kind == "payment" and r.ref and r.ref.startswith("T")
        assert r.scheduled <= r.t1 <= r.r1 <= r.t2 <= r.r2
    assert len({r.msisdn for r in pay.records}) == 12           # every handset took part
    assert (len(kw.confirmed), len(kw.failed)) == (30, 0), kw.error_samples()
    assert all(r.t1 <= r.r1 and r.t2 == 0.0 for r in kw.records)
    assert opened.mode == "fixed_rate" and opened.offered == 20   # 40/s for 0.5 s
    assert len(opened.confirmed) == 20, opened.error_samples()
    assert counters["forwarded"] > 0 and counters["stray_replies"] == 0, counters
    assert counters["mt_received"] == counters["mo_sent"] == 2 * 40 + 30 + 2 * 20


def test_a_handset_rests_when_its_pin_used_every_tp_mr():
    h = Handset("13900000001", "258147")
    for expected in range(TPMR_VALUES):
        assert h.room(h.pin)
        assert h.take_mr(h.pin) == expected
    assert not h.room(h.pin)
    assert h.room("ZF M888 1.00")                      # other texts have TP-MRs of their own
    from telecom_pay.commands.parser import parse
    assert {parse(v).name for v in KEYWORD_VARIANTS} == {"balance"}   # the platform reads each alike
    assert len(set(KEYWORD_VARIANTS)) == len(KEYWORD_VARIANTS)        # each its own dedup identity


class _Esme(asyncio.Protocol):
    """A hand-driven ESME: binds, then lets the test answer each deliver_sm."""

    def __init__(self):
        self.reader = P.PduReader()
        self.pdus: asyncio.Queue = asyncio.Queue()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(P.encode_pdu("bind_transceiver", 1, system_id="telecom-pay", password="secret",
                                     system_type="", interface_version=0x34))

    def data_received(self, data):
        for raw in self.reader.feed(data):
            self.pdus.put_nowait(P.decode_pdu(raw))

    async def next(self, command: str):
        while True:
            pdu = await asyncio.wait_for(self.pdus.get(), 10)
            if pdu.command == command:
                return pdu


@aio_test
async def test_a_throttled_or_unacknowledged_mo_is_delivered_again(tmp_path):
    lg = LoadGenerator([Subscriber(m, "258147") for m in msisdns(1)], tmp_path, procs=1, uvloop=False)
    try:
        (port,) = await lg.start()
        loop = asyncio.get_running_loop()
        _, esme = await loop.create_connection(_Esme, "127.0.0.1", port)
        assert (await esme.next("bind_transceiver_resp")).status == P.ESME_ROK
        await lg.wait_bound(1)
        run = asyncio.ensure_future(lg.run("keyword", 1, timeout=3))
        first = await esme.next("deliver_sm")
        esme.transport.write(P.encode_pdu("deliver_sm_resp", first.sequence, P.ESME_RTHROTTLED))
        again = await esme.next("deliver_sm")
        assert again.sequence != first.sequence
        assert (again.short_message, again.user_message_reference) == (first.short_message,
                                                                       first.user_message_reference)
        esme.transport.abort()          # unacknowledged, then the bind is gone: it waits for the next bind
        _, esme2 = await loop.create_connection(_Esme, "127.0.0.1", port)
        third = await esme2.next("deliver_sm")
        assert (third.short_message, third.user_message_reference) == (first.short_message,
                                                                       first.user_message_reference)
        esme2.transport.write(P.encode_pdu("deliver_sm_resp", third.sequence, message_id=""))
        result = await run               # nobody answers it: the round trip times out
        assert result.errors() == {"no_reply": 1}
        counters = await lg.counters()
        assert counters["redelivered"] == 2 and counters["deliver_sm_errors"] == 1, counters
        esme2.transport.abort()
    finally:
        await lg.stop()
