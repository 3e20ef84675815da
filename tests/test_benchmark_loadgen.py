"""The load generator against the echo ESME over real sockets, no daemon:
two workers (so replies that arrive on the other worker's bind must be
forwarded to the handset's owner), both workloads, closed and open loop.
Checks what the harness promises: every conversation is answered and
timed step by step in order, the open loop offers what its rate says, and a
handset stops once its PIN has used every TP-MR. No timing is asserted."""
from __future__ import annotations

from benchmarks.loadgen import EchoEsme, LoadGenerator
from benchmarks.population import Subscriber, msisdns
from benchmarks.smsc_load import KEYWORD_VARIANTS, TPMR_VALUES, Handset
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
    for variant in KEYWORD_VARIANTS:
        assert variant.upper() in ("YE", "BAL")        # the platform reads each as the balance
    assert len(set(KEYWORD_VARIANTS)) == len(KEYWORD_VARIANTS)
