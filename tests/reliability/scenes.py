"""A subscriber ready to pay, prepared through the real channel (KT, A, the
initial PIN changed by MM, a debit card bound through the bank simulator,
top-ups and payments by SMS) by the daemon running in the test process:
faster than a process start, and never armed."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from telecom_pay.aio import wait_deferred
from telecom_pay.msisdn import normalize
from tests.e2ekit import PIN_RE, REF_RE
from tests.reliability.rig import EXPIRY, Rig

PIN = "246810"


@dataclass
class Subscriber:
    msisdn: str
    pan: str
    pin: str
    handset: object


async def say(handset, text: str, *, expect: str | None = None, timeout: float = 45.0) -> str:
    """Send an MO and return the next reply (containing `expect`, if given)."""
    await wait_deferred(handset.send(text))
    return await reply(handset, expect=expect, timeout=timeout)


async def reply(handset, *, expect: str | None = None, timeout: float = 45.0) -> str:
    pred = (lambda t: expect in t) if expect else None
    return await wait_deferred(handset.wait_for_reply(pred, timeout=timeout))


async def send_unacked(handset, text: str) -> None:
    """Send an MO without waiting for its deliver_sm_resp (the daemon is
    about to die); the SMSC keeps re-delivering it until someone answers."""
    d = handset.send(text)
    d.addErrback(lambda f: None)
    await asyncio.sleep(0)


async def prepare(rig: Rig, msisdn: str, pan: str, *, card_balance: int = 100_000, topups: tuple[int, ...] = (),
                  payments: tuple[tuple[str, int], ...] = ()) -> Subscriber:
    """An open account with its own PIN and a bound debit card; `topups`
    (CZ) and `payments` (ZF merchant amount) made by SMS, amounts in fen."""
    (sub,) = await prepare_many(rig, [(msisdn, pan)], card_balance=card_balance, topups=topups, payments=payments)
    return sub


async def prepare_many(rig: Rig, who: list[tuple[str, str]], *, card_balance: int = 100_000,
                       topups: tuple[int, ...] = (), payments: tuple[tuple[str, int], ...] = ()) -> list[Subscriber]:
    """`prepare` for several (msisdn, pan) at once, by one daemon, in parallel."""
    for _, pan in who:
        rig.bank.add_card(pan, EXPIRY, "debit", balance=card_balance)
    daemon = await rig.in_process()
    try:
        return list(await asyncio.gather(*(_open(rig, daemon, msisdn, pan, topups, payments) for msisdn, pan in who)))
    finally:
        await rig.stop_in_process(daemon)


async def _open(rig: Rig, daemon, msisdn: str, pan: str, topups, payments) -> Subscriber:
    phone = rig.smsc.handset(msisdn)
    assert "A" in await say(phone, "KT")
    await wait_deferred(phone.send("A"))
    first = PIN_RE.search(await reply(phone, expect="MM")).group(1)
    svc = daemon.core.service
    assert (await svc.bind_card(normalize(msisdn, rig.settings.region), pan, EXPIRY, channel="test")).ok
    changed = await say(phone, f"MM {first} {PIN}")
    assert "修改" in changed or "changed" in changed, changed
    for amount in topups:
        await say(phone, f"CZ {amount / 100:.2f}")
        done = await say(phone, PIN)
        assert REF_RE.search(done) and f"{amount / 100:.2f}" in done, done
    for merchant, amount in payments:
        await say(phone, f"ZF {merchant} {amount / 100:.2f}")
        done = await say(phone, PIN)
        assert REF_RE.search(done) and f"{amount / 100:.2f}" in done, done
    return Subscriber(msisdn, pan, PIN, phone)
