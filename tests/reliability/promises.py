"""What the platform promises after any crash, checked from the outside:
the SMSC simulator's record (what it saw acknowledged, what it was given),
the handsets' inboxes (what subscribers were told), the bank simulator's
card movements, and the database itself.

1. Every MO the SMSC saw acknowledged is recorded and answered.
2. Every payment a subscriber was told succeeded is in the ledger, posted,
   once; every operation booked on a subscriber was told to them.
3. No payment a subscriber was told failed is in the ledger.
4. Receipts pending at the crash arrive after the restart (every outbox row
   reached the SMSC and the handset).
5. The books pass the invariant checker (`telecom-pay db check`).
6. The bank's card movements equal the ledger's bank settlement account,
   and nothing waits on a bank answer that is known.
7. No settlement batch is left in "created" or "paying".

`settle()` waits until the platform has finished what it can finish (no
unanswered MO, no unsent reply, no pending operation), `check()` then lists
every broken promise as one line, so a failing test names them all.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa

from telecom_pay.ledger.tables import SYSTEM, T_PENDING, T_POSTED, WALLET, accounts, operations
from telecom_pay.messaging import ACCEPTED, inbound_messages, outbox
from telecom_pay.msisdn import normalize
from telecom_pay.settlement import settlement_batches
from tests.reliability.rig import Rig, eventually

REF_RE = re.compile(r"\bT[2-9A-HJ-NP-Z]{7}\b")
IN_PROGRESS = ("处理中", "in progress")
FAILED = ("失败", "未完成", "拒绝", "未成功", "Could not", "Declined", "not completed")
OPEN_BATCH_STATES = ("created", "paying")


@dataclass(frozen=True)
class Told:
    """What one subscriber was told about each reference."""
    succeeded: frozenset[str]
    failed: frozenset[str]
    in_progress: frozenset[str]


def told(texts: list[str]) -> Told:
    """Receipts name their operation by reference: progress notes and
    failures say so in their wording; anything else carrying a reference
    reports money moved (statements are not sent by these tests)."""
    ok, bad, wait = set(), set(), set()
    for text in texts:
        for ref in REF_RE.findall(text):
            if any(w in text for w in IN_PROGRESS):
                wait.add(ref)
            elif any(w in text for w in FAILED):
                bad.add(ref)
            else:
                ok.add(ref)
    return Told(frozenset(ok), frozenset(bad), frozenset(wait))


def _engine(rig: Rig):
    return sa.create_engine(rig.sync_database_url)


def _e164(rig: Rig, msisdn: str) -> str:
    return normalize(msisdn, rig.settings.region)


def unfinished(rig: Rig) -> list[str]:
    """What the platform still owes: empty once it is done."""
    engine = _engine(rig)
    try:
        with engine.connect() as c:
            waiting = [
                f"{c.execute(sa.select(sa.func.count()).select_from(inbound_messages).where(inbound_messages.c.state != 'processed')).scalar_one()} unanswered MO",
                f"{c.execute(sa.select(sa.func.count()).select_from(outbox).where(outbox.c.state.in_(('queued', 'sending')))).scalar_one()} unsent replies",
                f"{c.execute(sa.select(sa.func.count()).select_from(operations).where(operations.c.state == T_PENDING)).scalar_one()} pending operations",
            ]
    finally:
        engine.dispose()
    waiting.append(f"{rig.smsc.waiting_deliveries} deliveries waiting at the SMSC")
    return [w for w in waiting if not w.startswith("0 ")]


async def settle(rig: Rig, timeout: float = 8.0) -> list[str]:
    """Until nothing is owed (or timeout); returns what is still owed."""
    await eventually(lambda: not unfinished(rig), timeout, interval=0.2)
    return unfinished(rig)


async def check(rig: Rig, msisdns: list[str], *, books: bool = True,
                posted: dict[str, dict[str, int | set[int]]] | None = None) -> list[str]:
    """Every broken promise, one line each (empty: all kept). `posted`
    states what the driver asked for: msisdn -> operation kind -> how many
    posted operations (or the set of counts allowed), so that a request
    booked twice, or a lost one, is named even if it was told."""
    problems: list[str] = []
    engine = _engine(rig)
    try:
        with engine.connect() as c:
            for msisdn in msisdns:
                problems += _subscriber(rig, c, msisdn)
            for msisdn, kinds in (posted or {}).items():
                counts = _tally(rig, c, msisdn)
                for kind, allowed in kinds.items():
                    allowed = {allowed} if isinstance(allowed, int) else set(allowed)
                    if counts.get(kind, 0) not in allowed:
                        problems.append(f"{msisdn}: {counts.get(kind, 0)} {kind} operation(s) posted; the requests "
                                        f"made allow {' or '.join(map(str, sorted(allowed)))}")
            problems += _bank(rig, c)
            problems += [f"settlement batch {r.business_date} of merchant {r.merchant_id} stays {r.state!r}"
                         for r in c.execute(sa.select(settlement_batches).where(
                             settlement_batches.c.state.in_(OPEN_BATCH_STATES)))]
    finally:
        engine.dispose()
    if books:
        done = await rig.cli("db", "check")
        if done.returncode != 0:
            problems.append(f"telecom-pay db check failed ({done.returncode}): {done.stdout.strip()[-800:]}")
    return problems


def _subscriber(rig: Rig, c, msisdn: str) -> list[str]:
    problems = []
    e164 = _e164(rig, msisdn)
    handset = rig.smsc.handset(msisdn)
    # 1. acknowledged MOs are recorded and answered
    acked = [m for m in handset.sent if m.acked_at is not None]
    inbound = c.execute(sa.select(inbound_messages).where(inbound_messages.c.msisdn == e164)).all()
    if len(inbound) < len(acked):
        problems.append(f"{msisdn}: the SMSC saw {len(acked)} MO acknowledged, {len(inbound)} recorded")
    for row in inbound:
        if row.state != "processed":
            problems.append(f"{msisdn}: MO #{row.id} recorded but never answered")
    # 4. every reply reached the SMSC and the handset
    delivered = {part.message_id for message in handset.inbox for part in message.parts}
    replies = c.execute(sa.select(outbox).where(outbox.c.msisdn == e164)).all()
    for row in replies:
        ids = set(row.message_ids or ())
        if (row.meta or {}).get("ussd_op") is not None:
            # a USSD page belongs to its dialogue: shown on the screen if the
            # dialogue still lives, given up (failed) if the network refused it
            if row.state not in (ACCEPTED, "failed"):
                problems.append(f"{msisdn}: USSD page #{row.id} never sent (state {row.state})")
            continue
        if row.state != ACCEPTED or not ids:
            problems.append(f"{msisdn}: reply #{row.id} (to MO #{row.inbound_id}) never accepted by the SMSC "
                            f"(state {row.state})")
        elif not ids <= delivered:
            problems.append(f"{msisdn}: reply #{row.id} accepted but never reached the handset")
    # 2 and 3. what they were told against what the ledger holds
    texts = [m.text for m in handset.inbox]
    said = told(texts)
    wallet = c.execute(sa.select(accounts.c.id).where(accounts.c.kind == WALLET,
                                                       accounts.c.msisdn == e164)).scalar()
    ops = {r.ref: r for r in c.execute(sa.select(operations).where(operations.c.account_id == wallet))} \
        if wallet is not None else {}
    for ref in sorted(said.succeeded):
        op = ops.get(ref)
        if op is None:
            problems.append(f"{msisdn}: told {ref} succeeded; no such operation in the ledger")
        elif op.state != T_POSTED:
            problems.append(f"{msisdn}: told {ref} ({op.kind}) succeeded; the ledger has it {op.state}")
    for ref in sorted(said.failed):
        op = ops.get(ref)
        if op is not None and op.state == T_POSTED:
            problems.append(f"{msisdn}: told {ref} ({op.kind}) failed; the ledger has it posted")
    for ref in sorted(said.succeeded & said.failed):
        problems.append(f"{msisdn}: told {ref} both succeeded and failed")
    for ref, op in sorted(ops.items()):
        if op.state == T_POSTED and ref not in said.succeeded:
            problems.append(f"{msisdn}: {op.kind} {ref} of {op.amount} is posted; the subscriber was never told "
                            f"it succeeded")
    return problems


def _bank(rig: Rig, c) -> list[str]:
    problems = []
    moved = sum(m.amount for card in rig.bank.issuer.cards.values() for m in card.movements)
    held = c.execute(sa.select(accounts.c.balance).where(accounts.c.kind == SYSTEM,
                                                          accounts.c.code == "bank_settlement")).scalar() or 0
    if moved != held:
        problems.append(f"the bank's card movements sum to {moved}; the ledger's bank settlement account holds "
                        f"{held}")
    pending = c.execute(sa.select(operations.c.kind, operations.c.ref, operations.c.amount).where(
        operations.c.state == T_PENDING)).all()
    problems += [f"{kind} {ref} of {amount} stays pending" for kind, ref, amount in pending]
    return problems


def tally(rig: Rig, msisdns: list[str]) -> dict[str, dict[str, int]]:
    """Posted operations by subscriber and kind (for the soak's summary)."""
    engine = _engine(rig)
    try:
        with engine.connect() as c:
            return {msisdn: _tally(rig, c, msisdn) for msisdn in msisdns}
    finally:
        engine.dispose()


def _tally(rig: Rig, c, msisdn: str) -> dict[str, int]:
    rows = c.execute(sa.select(operations.c.kind, sa.func.count()).join(
        accounts, accounts.c.id == operations.c.account_id).where(
        accounts.c.msisdn == _e164(rig, msisdn), accounts.c.kind == WALLET, operations.c.state == T_POSTED)
        .group_by(operations.c.kind)).all()
    return {kind: n for kind, n in rows}
