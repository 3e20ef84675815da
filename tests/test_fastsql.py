"""Fast statements (SQLAlchemy Core run on the raw driver in write jobs)
store and read back exactly what SQLAlchemy itself does: instants, JSON,
booleans and literal values, on SQLite and PostgreSQL."""
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from telecom_pay.ledger.fastsql import Fast
from telecom_pay.messaging import outbox
from tests.aio import aio_test
from tests.ledgerkit import make_ledger

COLS = ("channel", "msisdn", "text", "inbound_id", "state", "next_attempt_at", "meta", "created_at",
        "updated_at", "secret", "queue_key")
INSERT = outbox.insert().values({c: sa.bindparam(c, type_=outbox.c[c].type) for c in COLS}).returning(outbox.c.id)
FAST_INSERT = Fast(INSERT)
BY_ID = sa.select(outbox).where(outbox.c.id == sa.bindparam("id"))
FAST_BY_ID = Fast(BY_ID)
MARK = Fast(outbox.update().where(outbox.c.id == sa.bindparam("_id")).values(
    state="accepted", attempts=outbox.c.attempts + 1, text=sa.case((outbox.c.secret, ""), else_=outbox.c.text)))


def _row(i: int, at: datetime) -> dict:
    return dict(channel="sms", msisdn=f"8613800{i:06d}", text=f"回执 {i}", inbound_id=None, state="queued",
                next_attempt_at=at, meta={"ussd_op": 17, "zh": "支付"} if i % 2 else None, created_at=at,
                updated_at=at, secret=bool(i % 3 == 0), queue_key=None)


@aio_test
async def test_rows_written_raw_equal_rows_written_by_sqlalchemy(database_url):
    ledger = await make_ledger(database_url)
    try:
        # an instant in another zone, with microseconds: stored as UTC either way
        at = datetime(2026, 12, 1, 0, 30, 15, 123456, tzinfo=timezone(timedelta(hours=8)))
        rows = [_row(i, at) for i in range(6)]

        async def both(conn):
            raw_ids = [r.id for r in await FAST_INSERT.insert_returning(conn, rows)]
            sa_ids = [(await conn.execute(INSERT, r)).scalar_one() for r in rows]
            return raw_ids, sa_ids
        raw_ids, sa_ids = await ledger.write(both, refuses=False)
        assert len(set(raw_ids + sa_ids)) == 12 and raw_ids == sorted(raw_ids)

        def comparable(r):
            d = dict(r._mapping) if hasattr(r, "_mapping") else r._asdict()
            d.pop("id")
            return d

        async def read(conn):
            via_sa = [comparable((await conn.execute(BY_ID, {"id": i})).one()) for i in raw_ids + sa_ids]
            via_fast = [comparable(await FAST_BY_ID.first(conn, id=i)) for i in raw_ids + sa_ids]
            return via_sa, via_fast
        via_sa, via_fast_in_job = await ledger.write(read, refuses=False)
        # what the raw path stored reads back (through SQLAlchemy) as what SQLAlchemy stored
        assert via_sa[:6] == via_sa[6:]
        # and the raw reader returns the same values SQLAlchemy's does
        assert via_fast_in_job == via_sa
        assert via_sa[0]["created_at"] == at and via_sa[0]["created_at"].tzinfo is not None
        assert via_sa[1]["meta"] == {"ussd_op": 17, "zh": "支付"} and via_sa[0]["meta"] is None
        # outside a write job a Fast statement goes through SQLAlchemy
        assert comparable(await ledger.read(lambda conn: FAST_BY_ID.first(conn, id=raw_ids[1]))) == via_sa[1]

        # literal values in the statement and column expressions
        await ledger.write(lambda conn: MARK.execute_many(conn, [{"_id": i} for i in raw_ids[:3]]), refuses=False)
        after = await ledger.read(lambda conn: conn.execute(
            sa.select(outbox.c.state, outbox.c.attempts, outbox.c.text).where(outbox.c.id.in_(raw_ids[:3]))
            .order_by(outbox.c.id)))
        assert [tuple(r) for r in after] == [("accepted", 1, ""), ("accepted", 1, "回执 1"), ("accepted", 1, "回执 2")]
    finally:
        await ledger.close()
        await ledger.db.dispose()


class _Refused(Exception):
    pass


@aio_test
async def test_read_hot_answers_like_a_plain_read_and_passes_refusals_on(database_url):
    ledger = await make_ledger(database_url)
    try:
        at = datetime(2026, 12, 1, 23, 30, tzinfo=timezone.utc)
        [row] = await ledger.write(lambda conn: FAST_INSERT.insert_returning(conn, [_row(1, at)]), refuses=False)
        hot = await ledger.read_hot(lambda conn: FAST_BY_ID.first(conn, id=row.id))
        plain = await ledger.read(lambda conn: FAST_BY_ID.first(conn, id=row.id))
        assert hot._asdict() == dict(plain._mapping)
        assert hot.created_at == at and hot.meta == {"ussd_op": 17, "zh": "支付"}

        async def refuses(conn):
            await FAST_BY_ID.first(conn, id=row.id)
            raise _Refused("no such wallet")
        try:
            await ledger.read_hot(refuses)
        except _Refused as exc:
            assert str(exc) == "no such wallet"
        else:
            raise AssertionError("the refusal did not reach the caller")
        # and the ledger goes on (a refusal did not spoil the batch it rode in)
        assert (await ledger.read_hot(lambda conn: FAST_BY_ID.first(conn, id=row.id))).id == row.id
    finally:
        await ledger.close()
        await ledger.db.dispose()
