"""The invariant checker reports every kind of corrupted book (each made by
raw SQL on a real database, both backends) and raises no false alarm while
payments commit under it."""
import asyncio

import pytest
import sqlalchemy as sa

from telecom_pay.ledger import schema
from telecom_pay.ledger.database import open_database
from telecom_pay.ledger.invariants import check_invariants
from telecom_pay.ledger.ledger import InsufficientFunds, Leg, Ledger, OperationRequest
from telecom_pay.ledger.tables import MERCHANT
from tests.aio import aio_test
from tests.ledgerkit import assert_sound, make_ledger, new_account


async def books(ledger):
    """A wallet with cash and credit-card money, a payment, a pending
    withdrawal and a voided one."""
    bank = ledger.system["bank_settlement"]
    w = await new_account(ledger, msisdn="8613800138000", name="w")
    m = await new_account(ledger, MERCHANT, code="M1")
    await ledger.execute(OperationRequest(key="cash", kind="topup", account_id=w, legs=(Leg(bank, w, 5000, "topup"),)))
    await ledger.execute(OperationRequest(key="card", kind="topup", account_id=w,
                                          legs=(Leg(bank, w, 3000, "topup", consumption_credit=True),)))
    await ledger.execute(OperationRequest(key="pay", kind="payment", account_id=w, counterparty_id=m,
                                          legs=(Leg(w, m, 1000, "payment"),)))
    await ledger.execute(OperationRequest(key="wd", kind="withdrawal", account_id=w, pending=True,
                                          legs=(Leg(w, bank, 500, "withdrawal", withdraw=True),)))
    await ledger.execute(OperationRequest(key="wd-void", kind="withdrawal", account_id=w, pending=True,
                                          legs=(Leg(w, bank, 200, "withdrawal", withdraw=True),)))
    await ledger.void("wd-void")
    await assert_sound(ledger)
    return w, m


def raw_sql(url, *statements):
    eng = sa.create_engine(schema.sync_url(url))
    with eng.begin() as conn:
        for s in statements:
            conn.execute(sa.text(s[0]), s[1])
    eng.dispose()


CORRUPTIONS = {
    "balance": (["UPDATE accounts SET balance = balance + 7 WHERE id = :w",
                 "UPDATE accounts SET balance = balance - 7 WHERE id = :m"], "balance"),
    "pending_out": (["UPDATE accounts SET pending_out = pending_out + 5 WHERE id = :w"], "pending_out"),
    "pending_in": (["UPDATE accounts SET pending_in = pending_in + 5 WHERE id = :m"], "pending_in"),
    "consumption": (["UPDATE accounts SET consumption = consumption + 100 WHERE id = :w"], "consumption 2100"),
    "operation_amount": (["UPDATE operations SET amount = amount + 1 WHERE idempotency_key = 'pay'"],
                         "amount is not their first leg"),
    "posted_without_legs": ([
        "INSERT INTO operations (ref, idempotency_key, kind, channel, actor, account_id, amount, fee, state,"
        " request, created_at) SELECT 'TZZZZZZZ', 'ghost', 'payment', 'sms', 'x', :w, 100, 0, 'posted', '{}',"
        " created_at FROM operations WHERE idempotency_key = 'pay'"], "operations without legs"),
    "pending_op_posted_legs": (["UPDATE operations SET state = 'pending' WHERE idempotency_key = 'pay'"],
                               "legs in another state"),
    "voided_op_pending_legs": (["UPDATE operations SET state = 'voided' WHERE idempotency_key = 'wd'"],
                               "legs in another state"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@aio_test
async def test_each_corruption_is_reported(database_url, corruption):
    ledger = await make_ledger(database_url)
    w, m = await books(ledger)
    statements, expected = CORRUPTIONS[corruption]
    raw_sql(database_url, *[(s, {"w": w, "m": m}) for s in statements])
    problems = await ledger.read(check_invariants)
    assert any(expected in p for p in problems), problems
    await ledger.close()
    await ledger.db.dispose()


@aio_test
async def test_consumption_money_paid_out_by_any_kind_is_reported(database_url):
    ledger = await make_ledger(database_url)
    w, _ = await books(ledger)
    # a leg of an unlisted kind that forgot the withdraw flag: credit-card money to the card side
    await ledger.execute(OperationRequest(key="cashout", kind="cashout", account_id=w,
                                          legs=(Leg(w, ledger.system["bank_settlement"], 2500, "cashout"),)))
    problems = await ledger.read(check_invariants)
    assert any("consumption-only funds out" in p and "cashout" in p for p in problems), problems
    await ledger.close()
    await ledger.db.dispose()


@aio_test
async def test_no_false_alarm_while_payments_commit(pg_url):
    first = await make_ledger(pg_url)
    bank, fee = first.system["bank_settlement"], first.system["fee_income"]
    m = await new_account(first, MERCHANT, code="M1")
    wallets = [await new_account(first, name=f"w{i}") for i in range(8)]
    for i, w in enumerate(wallets):
        await first.execute(OperationRequest(key=f"fund-{i}", kind="topup", account_id=w,
                                             legs=(Leg(bank, w, 1_000_000, "topup", consumption_credit=i % 2 == 0),)))
    writers = [Ledger(open_database(pg_url), max_batch=4) for _ in range(3)]
    stop = asyncio.Event()

    async def pay(lg, n):
        i = 0
        while not stop.is_set():
            w = wallets[(n + i) % len(wallets)]
            try:
                await lg.execute(OperationRequest(key=f"p-{n}-{i}", kind="payment", account_id=w,
                                                  legs=(Leg(w, m, 3, "payment"), Leg(w, fee, 1, "fee"))))
            except InsufficientFunds:
                pass
            i += 1

    load = [asyncio.ensure_future(pay(lg, n)) for n, lg in enumerate(writers) for _ in range(4)]
    try:
        alarms = []
        for _ in range(40):
            alarms += await first.read(check_invariants)
        assert alarms == []
    finally:
        stop.set()
        await asyncio.gather(*load)
    await assert_sound(first)
    for lg in [first] + writers:
        await lg.close()
        await lg.db.dispose()
