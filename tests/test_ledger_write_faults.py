"""The group commit when a job or the COMMIT itself fails, on both backends."""
import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from telecom_pay.ledger.chart import insert_account
from telecom_pay.ledger.ledger import Leg, LedgerError, OperationRequest
from telecom_pay.ledger.tables import WALLET, accounts
from telecom_pay.messaging import MessageStore, outbox
from tests.aio import aio_test
from tests.ledgerkit import assert_sound, make_ledger, new_account


class _Broken(LedgerError):
    code = "broken"


async def _count(ledger, query):
    return await ledger.read(lambda conn: _scalar(conn, query))


async def _scalar(conn, query):
    return (await conn.execute(query)).scalar_one()


@aio_test
async def test_failed_job_without_savepoint_commits_none_of_its_writes(database_url):
    ledger = await make_ledger(database_url)

    async def half_done(conn):
        await insert_account(conn, kind=WALLET, name="half", msisdn="8613700000001")
        raise _Broken("gave up after its first write")

    async def neighbour(conn):
        return await insert_account(conn, kind=WALLET, name="neighbour", msisdn="8613700000002")

    results = await asyncio.gather(ledger.write(half_done, refuses=False), ledger.write(neighbour, refuses=False),
                                   return_exceptions=True)
    assert isinstance(results[0], _Broken)
    assert isinstance(results[1], int)
    names = await ledger.read(lambda conn: _names(conn))
    assert "half" not in names and "neighbour" in names
    await ledger.close()
    await ledger.db.dispose()


async def _names(conn):
    return {r.name for r in (await conn.execute(sa.select(accounts.c.name)))}


class _CommitLostOnce:
    """The connection drops while COMMIT is answered: the commit took effect
    but the writer sees an error (the ambiguous case a redo must survive)."""

    def __init__(self, engine, *, takes_effect: bool = True):
        self.takes_effect = takes_effect
        self.armed = False
        self.fired = 0
        event.listen(engine, "commit", self._commit)

    def _commit(self, conn):
        if not self.armed:
            return
        self.armed = False
        self.fired += 1
        if self.takes_effect:
            conn.connection.dbapi_connection.commit()
        raise ConnectionError("connection lost during COMMIT")


@pytest.mark.parametrize("takes_effect", [True, False], ids=["committed", "not-committed"])
@aio_test
async def test_ambiguous_commit_is_not_redone(database_url, takes_effect):
    """Committed: answered with what the jobs returned, nothing redone.
    Not committed: redone job by job. Either way everything exists once."""
    ledger = await make_ledger(database_url)
    store = MessageStore(ledger)
    w = await new_account(ledger, msisdn="8613800138000")
    m = await new_account(ledger, "merchant", code="M1")
    await ledger.execute(OperationRequest(key="fund", kind="topup", account_id=w,
                                          legs=(Leg(ledger.system["bank_settlement"], w, 1000, "topup"),)))
    first = await store.record_inbound("sms", "8613800138000", "k1", "YE")
    second = await store.record_inbound("sms", "8613800138000", "k2", "YE")
    fault = _CommitLostOnce(ledger.db.sync_write, takes_effect=takes_effect)
    fault.armed = True
    done = await asyncio.gather(
        store.complete(first.id, "sms", "8613800138000", ["one", "two"]),
        store.complete(second.id, "sms", "8613800138000", ["three"]),
        ledger.execute(OperationRequest(key="pay", kind="payment", account_id=w,
                                        legs=(Leg(w, m, 100, "payment"),))))
    assert fault.fired == 1
    assert [len(d) for d in done[:2]] == [2, 1]
    assert done[2].replayed is False and done[2].amount == 100
    assert await _count(ledger, sa.select(sa.func.count()).select_from(outbox)) == 3
    assert (await ledger.balance(w)).balance == 900
    await assert_sound(ledger)
    await ledger.close()
    await ledger.db.dispose()


@aio_test
async def test_lost_commit_answer_of_a_lone_payment_is_its_success(database_url):
    """A payment alone in its batch: the caller hears OK (it committed), not
    an error that would have the subscriber pay again."""
    ledger = await make_ledger(database_url)
    w = await new_account(ledger, msisdn="8613800138000")
    m = await new_account(ledger, "merchant", code="M1")
    await ledger.execute(OperationRequest(key="fund", kind="topup", account_id=w,
                                          legs=(Leg(ledger.system["bank_settlement"], w, 1000, "topup"),)))
    fault = _CommitLostOnce(ledger.db.sync_write)
    fault.armed = True
    rec = await ledger.execute(OperationRequest(key="pay", kind="payment", account_id=w,
                                                legs=(Leg(w, m, 100, "payment"),)))
    assert fault.fired == 1 and rec.state == "posted" and rec.balance_of(w).balance == 900
    assert (await ledger.balance(w)).balance == 900
    await assert_sound(ledger)
    await ledger.close()
    await ledger.db.dispose()
