"""Nothing after a commit turns success into failure: the session store
failing once the payment committed leaves the answer a receipt, on SQLite +
in-process sessions and on PostgreSQL + Redis."""
import re

import sqlalchemy as sa

from telecom_pay.commands.conversation import Conversation
from telecom_pay.ledger.tables import operations
from telecom_pay.outcomes import Outcome
from telecom_pay.sessions import MemorySessionStore, RedisSessionStore, SessionStoreUnavailable
from tests.aio import aio_test
from tests.servicekit import MSISDN, OTHER, funded, make_service, open_active, shutdown


class _LostAfterReservation:
    """Answers until the payment's velocity slot is reserved (the increment
    made before the booking), then fails every call, as a store that went
    away in between does: whatever follows the commit finds it gone."""

    _lost = False

    async def incr(self, key, ttl, amount=1):
        self._check()
        value = await super().incr(key, ttl, amount)
        if amount > 0 and key.startswith("velocity:"):
            self._lost = True
        return value

    def _check(self):
        if self._lost:
            raise SessionStoreUnavailable("session store lost")

    async def get(self, key):
        self._check()
        return await super().get(key)

    async def put(self, key, value, ttl):
        self._check()
        return await super().put(key, value, ttl)

    async def put_if_absent(self, key, value, ttl):
        self._check()
        return await super().put_if_absent(key, value, ttl)

    async def take(self, key):
        self._check()
        return await super().take(key)

    async def delete(self, key):
        self._check()
        return await super().delete(key)


class _CountLostMemory(_LostAfterReservation, MemorySessionStore):
    pass


class _CountLostRedis(_LostAfterReservation, RedisSessionStore):
    pass


async def service_losing_counts(stack):
    svc = await make_service(stack["database_url"], sessions_url=stack["sessions_url"],
                             prefix=stack.get("prefix", "tp:"))
    await svc.sessions.close()
    svc.sessions = (_CountLostMemory() if stack["sessions_url"] == "memory://"
                    else _CountLostRedis(stack["sessions_url"], prefix=stack["prefix"]))
    return svc


async def operations_of(svc, kind):
    async def q(conn):
        return (await conn.execute(sa.select(sa.func.count()).select_from(operations)
                                   .where(operations.c.kind == kind))).scalar_one()
    return await svc.ledger.read(q)


@aio_test
async def test_payment_committed_then_store_fails_is_ok_once(stack):
    svc = await service_losing_counts(stack)
    pin = await funded(svc)
    r = await svc.pay(MSISDN, "M001", 1250, pin, channel="sms", key="conv:1")
    assert r.outcome is Outcome.OK and r.ref and r.balance == 8750
    assert await operations_of(svc, "payment") == 1 and svc.sessions._lost
    assert await svc.check_books() == []
    await shutdown(svc)


@aio_test
async def test_send_committed_then_store_and_notifier_fail_is_ok_once(stack):
    svc = await service_losing_counts(stack)
    pin = await funded(svc)
    await open_active(svc, OTHER)
    told = []

    def notifier(msisdn, result):
        told.append((msisdn, result))
        raise RuntimeError("channel down")
    svc.add_notifier(notifier)
    r = await svc.send(MSISDN, OTHER, 700, pin, channel="sms", key="conv:2")
    assert r.outcome is Outcome.OK and r.balance == 9300
    assert [(m, res.balance) for m, res in told] == [(OTHER, 700)]
    assert await operations_of(svc, "p2p") == 1 and svc.sessions._lost
    await shutdown(svc)


@aio_test
async def test_conversation_reply_is_the_receipt_when_the_store_fails_after_commit(stack):
    svc = await service_losing_counts(stack)
    conv = Conversation(svc)
    pin = await funded(svc)
    assert "12.50" in " ".join(await conv.handle(MSISDN, "ZF M001 12.50"))
    paid = " ".join(await conv.handle(MSISDN, pin))
    assert "87.50" in paid and re.search(r"\bT[2-9A-HJ-NP-Z]{7}\b", paid), paid
    assert await operations_of(svc, "payment") == 1 and svc.sessions._lost
    await shutdown(svc)


class _NotesLostMemory(MemorySessionStore):
    """Keeps the language cache but cannot store a pending confirmation."""

    async def put(self, key, value, ttl):
        if key.startswith("pending:"):
            raise SessionStoreUnavailable("session store lost")
        return await super().put(key, value, ttl)


@aio_test
async def test_kt_committed_then_store_fails_still_asks_for_a_and_a_opens(sqlite_url):
    svc = await make_service(sqlite_url)
    await svc.sessions.close()
    svc.sessions = _NotesLostMemory()
    conv = Conversation(svc)
    kt = " ".join(await conv.handle(MSISDN, "KT"))
    assert "A" in kt and "稍后" not in kt, kt
    welcome = " ".join(await conv.handle(MSISDN, "A"))
    assert re.search(r"(?<!\d)\d{6}(?!\d)", welcome), welcome
    assert (await svc.balance(MSISDN, channel="t")).outcome is Outcome.OK
    await shutdown(svc)


@aio_test
async def test_a_bank_resolution_stands_when_what_follows_it_fails(database_url):
    """The bank's late answer posts a pending payout; letting its batch
    follow then fails (the settlement table is gone: a real database error).
    The post stands, resolve_in_doubt returns normally (the bridge does not
    take it for a failed resolution), and a late top-up still tells the
    subscriber once."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from telecom_pay import accounts as acct
    from telecom_pay.ledger.ledger import Leg, OperationRequest
    from telecom_pay.ledger.schema import async_url
    svc = await make_service(database_url)
    pin = await funded(svc)
    assert (await svc.pay(MSISDN, "M001", 50_00, pin, channel="t", key="p-1")).outcome is Outcome.OK
    merchant = await svc.ledger.read(lambda c: acct.find_merchant(c, "M001"))
    await svc.ledger.execute(OperationRequest(
        key="settle:M001:2026-11-20:1", kind="settlement", pending=True, channel="settlement", actor="settlement",
        account_id=merchant.id, legs=(Leg(merchant.id, svc.system["bank_settlement"], 40_00, "settlement"),)))
    engine = create_async_engine(async_url(database_url))
    async with engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE settlement_batches RENAME TO settlement_batches_away"))
    try:
        await svc.resolve_in_doubt("settle:M001:2026-11-20:1", approved=True)
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.text("ALTER TABLE settlement_batches_away RENAME TO settlement_batches"))
        await engine.dispose()
    assert (await svc.ledger.get_operation("settle:M001:2026-11-20:1")).state == "posted"

    told = []
    svc.add_notifier(lambda msisdn, result: told.append(result))
    w = await svc.ledger.read(lambda c: acct.find_wallet(c, MSISDN))
    await svc.ledger.execute(OperationRequest(
        key="tp-late", kind="topup", pending=True, channel="sms", actor="t", account_id=w.id,
        legs=(Leg(svc.system["bank_settlement"], w.id, 100_00, "topup"),)))
    await svc.resolve_in_doubt("tp-late", approved=True)
    assert (await svc.ledger.get_operation("tp-late")).state == "posted"
    assert [(r.outcome, r.amount, r.balance) for r in told] == [(Outcome.OK, 100_00, 150_00)]
    await svc.resolve_in_doubt("tp-late", approved=True)             # told again: nothing new
    assert len(told) == 1
    assert (await svc.balance(MSISDN, channel="t")).balance == 150_00
    assert await svc.check_books() == []
    await shutdown(svc)
