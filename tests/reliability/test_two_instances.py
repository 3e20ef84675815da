"""Two daemon processes over one PostgreSQL and one Redis, each with its
own SMPP bind; the SMSC simulator hands MOs to both binds in turn. Several
subscribers pay (ZF, PIN, receipt) at once; one instance dies part way
(SIGKILL, by its own hand right after recording an MO it has not
acknowledged, so it surely leaves work to take over) and is not started
again. Afterwards: every promise of promises.py holds
(money moved once per payment the subscriber was told of, the books sound,
every acknowledged MO answered), no MO was answered twice, and the only
replies a handset got twice are ones the dead instance had handed to the
SMSC without living to record it (the SMSC's acceptance is not atomic
with the database: after it the reply is sent at least once)."""
from __future__ import annotations

import asyncio
from collections import Counter

import sqlalchemy as sa

from telecom_pay.ledger.tables import T_POSTED, WALLET, accounts, operations
from telecom_pay.messaging import inbound_messages, outbox
from tests.aio import aio_test
from tests.reliability import promises
from tests.reliability.rig import Rig
from tests.reliability.scenes import prepare_many, reply

LEASE = 2.0                  # seconds: the survivor takes the dead one's rows over this long after its last renewal
SUBSCRIBERS = [(f"1380013{n:04d}", f"622202000010{n:04d}") for n in range(8)]
LOAD_SECONDS = 6.0
DIES_AT = "after_mo_recorded:60"     # its 60th MO: a second or two into the load
# A handset's TP-MR is 8 bits: its 257th MO repeats the first one's, and with
# the same text inside the dedup window it is (rightly) a re-delivery. Each
# subscriber stays below that, whatever the platform's speed.
MAX_PAYMENTS = 110


async def _bound(rig: Rig) -> set[str]:
    return {b.bind_id for b in rig.smsc.binds if b.bound_at is not None}


async def _pay_stream(sub, n: int, stop: asyncio.Event, asked: list[tuple[str, int]]) -> None:
    """One subscriber's payments, one conversation at a time, each for an
    amount of its own (so a payment booked twice would show): ZF, the PIN
    prompt, the PIN, the receipt. An answer that does not come in time (it
    was in the killed instance's hands) is not waited for beyond that."""
    i = 0
    while not stop.is_set() and i < MAX_PAYMENTS:
        i += 1
        amount = 100 + n * 1000 + i          # fen, unique per request
        asked.append((sub.msisdn, amount))
        for text in (f"ZF M001 {amount / 100:.2f}", sub.pin):
            d = sub.handset.send(text)
            d.addErrback(lambda f: None)
            try:
                await reply(sub.handset, timeout=LEASE * 4)
            except Exception:
                pass


@aio_test
async def test_two_instances_one_killed_money_moves_once_and_every_mo_is_answered_once(rigs_two):
    rig = await Rig.up("postgres", extra={"daemon.instance_id": "sms-a", "daemon.claim_lease": LEASE})
    rigs_two.append(rig)
    try:
        subs = await prepare_many(rig, SUBSCRIBERS, card_balance=1_000_000, topups=(50_000,))
        config_b = rig.write_config(bank_timeout=3.0, extra={"daemon.instance_id": "sms-b",
                                                             "daemon.claim_lease": LEASE},
                                    name="telecom-pay-b.toml")
        a = await rig.start(crash_at=DIES_AT)
        binds_a = await _bound(rig)
        await rig.start(config=config_b)
        binds_b = await _bound(rig) - binds_a
        assert len(binds_a) == len(binds_b) == 1
        prepared = {m: len(rig.smsc.handset(m).inbox) for m, _ in SUBSCRIBERS}

        stop = asyncio.Event()
        asked: list[tuple[str, int]] = []
        loop = asyncio.get_running_loop()
        began = loop.time()
        streams = [asyncio.ensure_future(_pay_stream(sub, n, stop, asked)) for n, sub in enumerate(subs)]
        assert await a.wait_exit(LOAD_SECONDS) == -9, "instance A did not die at its crash point:\n" + rig.logs()
        left = _held_by(rig, "sms-a")                # what the dead one held: the survivor must finish it
        assert left["unanswered"], left              # at least the MO it died holding
        await asyncio.sleep(max(0.0, began + LOAD_SECONDS - loop.time()))
        stop.set()
        await asyncio.gather(*streams)
        # every MO is acknowledged by someone in the end (the SMSC re-delivers what the dead one held)
        await promises.eventually(lambda: all(m.acked_at is not None or m.failed for s in subs
                                              for m in s.handset.sent), 20)
        owed = await promises.settle(rig, timeout=20)

        # what the load's subscribers were told (the top-up's receipt came before)
        said = {m: promises.told([t.text for t in rig.smsc.handset(m).inbox[prepared[m]:]]) for m, _ in SUBSCRIBERS}
        posted = {m: {"payment": len(said[m].succeeded), "topup": 1} for m, _ in SUBSCRIBERS}
        broken = await promises.check(rig, [m for m, _ in SUBSCRIBERS], posted=posted)
        broken += _answered_once(rig, binds_a, prepared)
        broken += _booked_once(rig)
        broken += _taken_over(rig, left, "sms-b")
        assert not broken, ("broken promises:\n  " + "\n  ".join(broken) + "\nstill owed: " + ", ".join(owed)
                            + f"\nheld by the dead instance: {left}\n" + rig.logs())
        # the load was real and spread: both instances were handed MOs, payments went through after the kill
        delivered_to = Counter(r.bind_id for r in rig.smsc.traffic
                               if r.direction == "out" and r.command == "deliver_sm")
        assert all(delivered_to[b] > 0 for b in binds_a | binds_b), delivered_to
        assert sum(len(s.succeeded) for s in said.values()) >= len(SUBSCRIBERS), said
    finally:
        await rig.close()


def _engine(rig: Rig):
    return sa.create_engine(rig.sync_database_url)


def _held_by(rig: Rig, instance: str) -> dict[str, list[int]]:
    """Ids of the MOs not yet answered and replies not yet sent that `instance` holds."""
    engine = _engine(rig)
    try:
        with engine.connect() as c:
            return {
                "unanswered": list(c.execute(sa.select(inbound_messages.c.id).where(
                    inbound_messages.c.state == "received", inbound_messages.c.claimed_by == instance)).scalars()),
                "unsent": list(c.execute(sa.select(outbox.c.id).where(
                    outbox.c.state.in_(("queued", "sending")), outbox.c.claimed_by == instance)).scalars())}
    finally:
        engine.dispose()


def _taken_over(rig: Rig, left: dict[str, list[int]], survivor: str) -> list[str]:
    """What the dead instance held was finished, by the survivor."""
    engine = _engine(rig)
    try:
        with engine.connect() as c:
            mos = c.execute(sa.select(inbound_messages.c.id, inbound_messages.c.state, inbound_messages.c.claimed_by)
                            .where(inbound_messages.c.id.in_(left["unanswered"]))).all()
            replies = c.execute(sa.select(outbox.c.id, outbox.c.state, outbox.c.claimed_by)
                                .where(outbox.c.id.in_(left["unsent"]))).all()
    finally:
        engine.dispose()
    return ([f"MO #{r.id} the dead instance held is {r.state}, claimed by {r.claimed_by}" for r in mos
             if r.state != "processed" or r.claimed_by != survivor]
            + [f"reply #{r.id} the dead instance held is {r.state}, claimed by {r.claimed_by}" for r in replies
               if r.state != "accepted" or r.claimed_by != survivor])


def _answered_once(rig: Rig, dead_binds: set[str], prepared: dict[str, int]) -> list[str]:
    """No MO answered twice (two answers would queue the same reply twice
    for one inbound record), and every message a handset got is a reply in
    the outbox, or a second copy of one that the dead instance submitted
    before it could record the SMSC's acceptance."""
    problems = []
    engine = _engine(rig)
    try:
        with engine.connect() as c:
            rows = c.execute(sa.select(outbox.c.id, outbox.c.inbound_id, outbox.c.msisdn, outbox.c.text,
                                       outbox.c.message_ids, outbox.c.secret)).all()
    finally:
        engine.dispose()
    # (a credential's text is blanked once sent: those of one answer all read "")
    per_inbound = Counter((r.inbound_id, r.text) for r in rows if r.inbound_id is not None and not r.secret)
    problems += [f"MO #{mo} answered {n} times with {text!r}" for (mo, text), n in per_inbound.items() if n > 1]
    recorded = {m for r in rows for m in (r.message_ids or ())}
    for msisdn, skip in prepared.items():
        for message in rig.smsc.handset(msisdn).inbox[skip:]:
            extra = [p.message_id for p in message.parts if p.message_id not in recorded]
            for mid in extra:
                submitted = rig.smsc.messages.get(mid)
                if submitted is None or submitted.bind_id not in dead_binds:
                    problems.append(f"{msisdn} got {message.text!r} ({mid}), which no outbox row was "
                                    f"accepted as, from {submitted.bind_id if submitted else 'nowhere'}")
    return problems


def _booked_once(rig: Rig) -> list[str]:
    """Each payment request had an amount of its own: two posted payments
    of one subscriber with the same amount are one request booked twice."""
    engine = _engine(rig)
    try:
        with engine.connect() as c:
            rows = c.execute(sa.select(accounts.c.msisdn, operations.c.amount).join(
                accounts, accounts.c.id == operations.c.account_id).where(
                accounts.c.kind == WALLET, operations.c.kind == "payment",
                operations.c.state == T_POSTED)).all()
    finally:
        engine.dispose()
    twice = Counter((r.msisdn, r.amount) for r in rows)
    return [f"{m}: a payment of {amount} is posted {n} times" for (m, amount), n in twice.items() if n > 1]


# ------------------------------------------------------------ fixture

import pytest  # noqa: E402


@pytest.fixture
def rigs_two():
    """Whatever the test does or how it ends, no daemon it started survives."""
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.kill()
        rig.deployment.close()
