"""The back office's reads on both databases (the web tests run on SQLite):
the two kinds of orders in one list with every filter, one order with its
refund requests and callbacks, statements, the notification log and the
reconciliation of a day, each scoped to its merchant."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from telecom_pay.business_time import business_day
from telecom_pay.merchants import backoffice as bo
from telecom_pay.merchants import reconcile
from tests.aio import aio_test
from tests.merchantkit import build_world
from tests.servicekit import make_service, shutdown


@aio_test
async def test_reads_are_the_merchants_own_on_both_databases(database_url):
    svc = await make_service(database_url)
    try:
        world = await build_world(SimpleNamespace(core=SimpleNamespace(service=svc, ledger=svc.ledger)))
        m1, ids, other = world.m1, world.ids["M001"], world.ids["M002"]
        tz = svc.tz
        today = business_day(svc.clock(), tz)

        async def listed(**q):
            out = await svc.ledger.read(lambda c: bo.list_orders(c, m1, bo.OrderQuery(**q), tz))
            return sorted(o["id"] for o in out["orders"])
        every = await listed()
        assert every == sorted([ids["zf"], ids["zf_b"], ids["sp"], ids["sp_pending"]])
        assert await listed(type="api") == sorted([ids["sp"], ids["sp_pending"]])
        assert await listed(type="sms") == [ids["zf"]]
        assert await listed(status="pending") == [ids["sp_pending"]]
        assert await listed(amount_min=5_00, amount_max=12_34) == sorted([ids["zf"], ids["zf_b"]])
        assert await listed(number="ORD-1001") == [ids["sp"]] == await listed(number=ids["sp_ref"])
        assert await listed(number="A-77") == [ids["zf"]]
        assert await listed(number=other["zf"]) == [] == await listed(number="ORD-2001")
        assert await listed(date_from=today, date_to=today) == every
        assert await listed(date_to=today.replace(year=2020)) == []
        page = await svc.ledger.read(lambda c: bo.list_orders(c, m1, bo.OrderQuery(), tz, page=2, per_page=3))
        assert len(page["orders"]) == 1 and not page["more"]

        order = await svc.ledger.read(lambda c: bo.get_order(c, m1, ids["zf"]))
        assert (order["amount"], order["order_no"], order["status"], order["type"]) == (12_34, "A-77", "confirmed", "sms")
        assert [r["id"] for r in order["refunds"]] == [ids["refund"]] and order["refundable"] == 12_34 - 1_00
        sp = await svc.ledger.read(lambda c: bo.get_order(c, m1, ids["sp"]))
        assert [n["event_id"] for n in sp["notifications"]] == [ids["event"]] and sp["row_id"] == ids["sp_row"]
        for foreign in (other["zf"], other["sp"], other["sp_ref"]):
            assert await svc.ledger.read(lambda c: bo.get_order(c, m1, foreign)) is None

        assert [r["id"] for r in await svc.ledger.read(lambda c: bo.list_refunds(c, m1))] == [ids["refund"]]
        assert await svc.ledger.read(lambda c: bo.get_refund(c, m1, other["refund"])) is None
        batch = await svc.ledger.read(lambda c: bo.get_batch(c, m1, ids["batch"]))
        assert batch["net"] == 98_50 and [line["ref"] for line in batch["lines"]] == [ids["zf"]]
        assert batch["lines"][0]["amount"] == 12_34
        assert await svc.ledger.read(lambda c: bo.get_batch(c, m1, other["batch"])) is None
        log = await svc.ledger.read(lambda c: bo.list_notifications(c, m1))
        assert [n["event_id"] for n in log["notifications"]] == [ids["event"]]
        n = await svc.ledger.read(lambda c: bo.get_notification(c, m1, ids["event"]))
        assert len(n["attempt_log"]) == 2
        assert await svc.ledger.read(lambda c: bo.get_notification(c, m1, other["event"])) is None

        platform = await svc.ledger.read(lambda c: reconcile.platform_payments(c, m1, today, tz))
        assert sorted(p["ref"] for p in platform) == sorted([ids["zf"], ids["zf_b"], ids["sp_ref"]])
        result = reconcile.match(today, reconcile.parse(f"ORD-1001,20.00\nA-78,5\n{other['zf']},7\n"), platform)
        assert result.summary == {"matched": 2, "mismatched": 0, "missing_on_platform": 1, "missing_in_file": 1}
        assert [r["order"] for r in result.missing_in_file] == ["A-77"]
    finally:
        await shutdown(svc)


@pytest.mark.parametrize("text, words", [
    ("A,1\nA,2\n", "line 2: the order A is on line 1"), ("A,1\nB\n", "line 2: expected"),
    ("A,one\n", "line 1:"), ("\n\n", "no orders"), (b"A,1\n\xff,2\n", "line 2: the file is not UTF-8"),
    ("A\x00,1", "NUL"), ("x" * 65 + ",1", "longer than 64"),
])
def test_a_bad_file_is_refused_whole_naming_the_line(text, words):
    with pytest.raises(reconcile.FileError, match=words):
        reconcile.parse(text)


def test_a_file_with_a_header_a_bom_and_quotes_is_read():
    lines = reconcile.parse("\ufefforder_id,amount\r\n\"A,1\",12.50\r\n\r\nB, 3 \r\n".encode("utf-8"))
    assert [(x.line, x.order, x.amount) for x in lines] == [(2, "A,1", 12_50), (4, "B", 3_00)]
