"""The durable inbound record and outbox, on both databases."""
from datetime import timedelta

from telecom_pay.messaging import MessageStore
from tests.aio import aio_test
from tests.ledgerkit import make_ledger


@aio_test
async def test_inbound_dedup_and_outbox_lifecycle(database_url):
    ledger = await make_ledger(database_url)
    store = MessageStore(ledger)
    first = await store.record_inbound("sms", "8613800138000", "k1", "YE")
    again = await store.record_inbound("sms", "8613800138000", "k1", "YE")
    assert first.is_new and not again.is_new and again.id == first.id
    assert [m.id for m in await store.unprocessed("sms")] == [first.id]
    ids = await store.complete(first.id, "sms", "8613800138000", ["part one", "part two"])
    assert len(ids) == 2 and await store.unprocessed("sms") == []
    due = await store.claim_due("sms")
    assert [d.text for d in due] == ["part one", "part two"]
    assert await store.claim_due("sms") == []                  # claimed once
    await store.accepted(due[0].id, ["abc123"])
    await store.retry_later(due[1].id, "throttled", due[1].attempts)
    assert await store.pending_count("sms") == 1
    assert await store.claim_due("sms") == []                  # backing off
    later = store.clock
    store.clock = lambda: later() + timedelta(seconds=5)
    assert [d.id for d in await store.claim_due("sms")] == [due[1].id]
    assert await store.receipt({"zzz", "abc123"}, "DELIVRD") == due[0].id
    assert (await store.get(due[0].id)).delivery == "DELIVRD"
    assert await store.receipt({"nope"}, "DELIVRD") is None
    # a restart puts what was being sent back in the queue
    assert await store.requeue_sending("sms") == 1
    assert [d.id for d in await store.claim_due("sms")] == [due[1].id]
    await ledger.close()
    await ledger.db.dispose()
