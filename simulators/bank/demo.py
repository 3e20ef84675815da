"""The bank simulator's part in `telecom-pay demo`: an issuer with a debit
card for each demo handset, bound to the handset's account as soon as the
account is open (so `CZ 100` works right after `KT`, `A`)."""
from __future__ import annotations

import asyncio

from twisted.internet import task

from simulators.bank.simulator import BankSimulator
from telecom_pay.aio import as_deferred, wait_deferred

EXPIRY = "3012"


def demo_pan(msisdn: str) -> str:
    """622202 + the last 10 digits of the number: a card per handset."""
    digits = "".join(c for c in msisdn if c.isdigit())
    return "622202" + digits[-10:].rjust(10, "0")


async def start(settings, demo, reactor, handsets, stoppers) -> str:
    cfg = settings.section("bank_sim")
    sim = BankSimulator({"bank_code": cfg.get("bank_code", "bank"),
                         "settlement_dir": cfg.get("settlement_dir", "var/settlement")}, reactor)
    iso = demo.get("bank_iso", "tcp:8583:interface=127.0.0.1")
    http = demo.get("bank_http", "tcp:8026:interface=127.0.0.1")
    await wait_deferred(sim.listen(iso))
    await wait_deferred(sim.listen_http(http))
    for msisdn in handsets:
        sim.add_card(demo_pan(msisdn), EXPIRY, "debit", balance=int(cfg.get("demo_card_balance", 1_000_000)))
    payout_pans: set[str] = set()
    for merchant in settings.merchants:          # settlement accounts (merchants of one company share one)
        pan = str(merchant.get("payout_pan") or "")
        if pan and pan not in payout_pans:
            payout_pans.add(pan)
            sim.add_card(pan, str(merchant.get("payout_expiry", EXPIRY)), "debit", balance=0)
    stoppers.append(lambda: _stop(sim))
    return (f"bank simulator: ISO 8583 on port {iso.split(':')[1]}, control on "
            f"http://127.0.0.1:{http.split(':')[1]}/cards; demo cards {', '.join(demo_pan(h) for h in handsets)}")


def _stop(sim):
    sim.drop_connections()
    stop = getattr(sim, "stop", None)
    return stop() if stop else None


async def bind_cards(daemon, settings, handsets) -> None:
    """Bind each handset's demo card once its account is active (every second)."""
    service = daemon.core.service
    bound: set[str] = set()

    async def sweep():
        for msisdn in handsets:
            if msisdn in bound:
                continue
            account = await service.account_info(msisdn)
            if account is None or account.status != "active":
                continue
            result = await service.bind_card(msisdn, demo_pan(msisdn), EXPIRY, channel="demo", actor="demo")
            if result.ok:
                bound.add(msisdn)

    loop = task.LoopingCall(lambda: as_deferred(sweep()))
    loop.clock = daemon.reactor
    d = loop.start(1.0, now=True)
    d.addErrback(lambda f: None)
    await asyncio.sleep(0)
