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
    queued = await store.complete(first.id, "sms", "8613800138000", ["part one", "part two"])
    assert [q.text for q in queued] == ["part one", "part two"] and await store.unprocessed("sms") == []
    due = await store.due("sms")
    assert [d.id for d in due] == [q.id for q in queued]
    assert await store.due("sms", exclude={queued[0].id}) == [due[1]]       # in flight: not again
    await store.accepted(due[0].id, ["abc123", "abc124"])
    await store.accepted(due[0].id, ["abc123", "abc124"])                   # a repeat is harmless
    await store.retry_later(due[1].id, "throttled", due[1].attempts)
    assert await store.pending_count("sms") == 1
    assert await store.due("sms") == []                                    # backing off
    later = store.clock
    store.clock = lambda: later() + timedelta(seconds=5)
    assert [d.id for d in await store.due("sms")] == [due[1].id]
    assert await store.receipt({"zzz", "abc124"}, "DELIVRD") == due[0].id
    assert (await store.get(due[0].id)).delivery == "DELIVRD"
    assert await store.receipt({"nope"}, "DELIVRD") is None
    assert await store.complete(None, "sms", "8613800138000", []) == []
    await ledger.close()
    await ledger.db.dispose()


@aio_test
async def test_queue_outgoing_inside_a_write_job_once_per_key_and_secrets_blanked(database_url):
    import sqlalchemy as sa
    from telecom_pay.messaging import outbox, queue_outgoing
    ledger = await make_ledger(database_url)
    store = MessageStore(ledger)

    async def job(conn):
        return await queue_outgoing(conn, "sms", "8613800138000", ["PIN 482913"], secret=True, key="reset:1")
    (first,) = await ledger.write(job)
    assert first.secret and await ledger.write(job) == []          # a redo queues nothing again
    (due,) = await store.due("sms")
    assert due.id == first.id and due.secret and due.text == "PIN 482913"
    await store.accepted(due.id, ["m1"])
    row = await store.get(due.id)
    assert row.text == "" and row.state == "accepted" and row.message_ids == ["m1"]
    assert await store.receipt({"m1"}, "DELIVRD") == due.id
    (plain,) = await store.complete(None, "sms", "8613800138000", ["Balance 1.00"])
    await store.accepted(plain.id, ["m2"])
    assert (await store.get(plain.id)).text == "Balance 1.00"     # only credentials are blanked
    (given_up,) = await store.complete(None, "sms", "8613800138000", ["PIN 771204"], secret=True)
    store.max_attempts = 1
    await store.retry_later(given_up.id, "undeliverable", 0)
    assert (await store.get(given_up.id)).state == "failed"
    rows = await ledger.read(lambda c: _all(c, sa.select(outbox.c.text).order_by(outbox.c.id)))
    assert [r.text for r in rows] == ["", "Balance 1.00", ""]
    await ledger.close()
    await ledger.db.dispose()


async def _all(conn, query):
    return (await conn.execute(query)).all()
