"""The double-entry ledger on both SQLite and PostgreSQL."""
import asyncio

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from telecom_pay.ledger.database import open_database
from telecom_pay.ledger.ledger import (
    AccountUnavailable, AlreadyResolved, IdempotencyConflict, InsufficientFunds, Leg, Ledger,
    NotWithdrawable, OperationRequest, UnknownOperation)
from telecom_pay.ledger.tables import FROZEN, MERCHANT
from tests.aio import aio_test
from tests.ledgerkit import assert_sound, make_ledger, new_account


async def funded_wallet(ledger, amount, *, consumption=False, key=None):
    w = await new_account(ledger, msisdn=None, name="w")
    if amount:
        await ledger.execute(OperationRequest(
            key=key or f"fund-{w}", kind="topup", account_id=w,
            legs=(Leg(ledger.system["bank_settlement"], w, amount, "topup", consumption_credit=consumption),)))
    return w


@aio_test
async def test_transfer_moves_money_and_books_balance(database_url):
    ledger = await make_ledger(database_url)
    w = await funded_wallet(ledger, 10_000)
    m = await new_account(ledger, MERCHANT, code="M001", name="Lottery")
    rec = await ledger.execute(OperationRequest(
        key="pay-1", kind="payment", account_id=w, counterparty_id=m, legs=(Leg(w, m, 1250, "payment"),)))
    assert rec.state == "posted" and rec.ref.startswith("T") and len(rec.ref) == 8
    assert rec.balance_of(w).balance == 8750
    assert (await ledger.balance(m)).balance == 1250
    assert (await ledger.balance(ledger.system["bank_settlement"])).balance == -10_000
    await assert_sound(ledger)
    await ledger.close()


@aio_test
async def test_insufficient_funds_changes_nothing(database_url):
    ledger = await make_ledger(database_url)
    w = await funded_wallet(ledger, 1000)
    m = await new_account(ledger, MERCHANT, code="M1")
    with pytest.raises(InsufficientFunds) as e:
        await ledger.execute(OperationRequest(key="k", kind="payment", legs=(Leg(w, m, 1001, "payment"),)))
    assert e.value.available == 1000
    assert (await ledger.balance(w)).balance == 1000
    assert await ledger.get_operation("k") is None
    await assert_sound(ledger)
    await ledger.close()


@aio_test
async def test_idempotent_replay_and_conflict(database_url):
    ledger = await make_ledger(database_url)
    w = await funded_wallet(ledger, 5000)
    m = await new_account(ledger, MERCHANT, code="M1")
    req = OperationRequest(key="sms:abc", kind="payment", account_id=w, legs=(Leg(w, m, 700, "payment"),))
    first = await ledger.execute(req)
    again = await ledger.execute(req)
    assert again.replayed and again.ref == first.ref and again.id == first.id
    assert (await ledger.balance(w)).balance == 4300          # moved once
    with pytest.raises(IdempotencyConflict) as e:
        await ledger.execute(OperationRequest(key="sms:abc", kind="payment", account_id=w,
                                              legs=(Leg(w, m, 800, "payment"),)))
    assert e.value.differs == ["amount"]
    assert "amount" in str(e.value)
    await assert_sound(ledger)
    await ledger.close()


@aio_test
async def test_two_phase_post_void_once(database_url):
    ledger = await make_ledger(database_url)
    w = await funded_wallet(ledger, 3000)
    bank = ledger.system["bank_settlement"]
    rec = await ledger.execute(OperationRequest(key="wd-1", kind="withdrawal", account_id=w, pending=True,
                                                legs=(Leg(w, bank, 2000, "withdrawal", withdraw=True),)))
    assert rec.state == "pending"
    b = rec.balance_of(w)
    assert (b.balance, b.available) == (3000, 1000)
    # the reserved amount cannot be spent again
    with pytest.raises(InsufficientFunds):
        await ledger.execute(OperationRequest(key="wd-2", kind="withdrawal",
                                              legs=(Leg(w, bank, 1500, "withdrawal", withdraw=True),)))
    posted = await ledger.post("wd-1")
    assert posted.state == "posted" and posted.balance_of(w).balance == 1000
    assert (await ledger.post("wd-1")).replayed                 # posting twice is harmless
    with pytest.raises(AlreadyResolved):
        await ledger.void("wd-1")
    # void path releases the reservation
    await ledger.execute(OperationRequest(key="wd-3", kind="withdrawal", account_id=w, pending=True,
                                          legs=(Leg(w, bank, 600, "withdrawal", withdraw=True),)))
    voided = await ledger.void("wd-3")
    assert voided.balance_of(w).available == 1000
    with pytest.raises(AlreadyResolved):
        await ledger.post("wd-3")
    with pytest.raises(UnknownOperation):
        await ledger.post("nope")
    await assert_sound(ledger)
    await ledger.close()


@aio_test
async def test_pending_credit_is_not_spendable_until_posted(database_url):
    ledger = await make_ledger(database_url)
    w = await funded_wallet(ledger, 0)
    m = await new_account(ledger, MERCHANT, code="M1")
    await ledger.execute(OperationRequest(key="top-1", kind="topup", account_id=w, pending=True,
                                          legs=(Leg(ledger.system["bank_settlement"], w, 500, "topup"),)))
    with pytest.raises(InsufficientFunds):
        await ledger.execute(OperationRequest(key="p", kind="payment", legs=(Leg(w, m, 100, "payment"),)))
    await ledger.post("top-1")
    await ledger.execute(OperationRequest(key="p", kind="payment", legs=(Leg(w, m, 100, "payment"),)))
    assert (await ledger.balance(w)).balance == 400
    await assert_sound(ledger)
    await ledger.close()


@aio_test
async def test_linked_legs_all_or_nothing(database_url):
    ledger = await make_ledger(database_url)
    w = await funded_wallet(ledger, 1000)
    m = await new_account(ledger, MERCHANT, code="M1")
    fee = ledger.system["fee_income"]
    with pytest.raises(InsufficientFunds):   # the payment fits, payment + fee does not
        await ledger.execute(OperationRequest(key="pf", kind="payment", fee=10,
                                              legs=(Leg(w, m, 1000, "payment"), Leg(w, fee, 10, "fee"))))
    assert (await ledger.balance(w)).balance == 1000
    assert (await ledger.balance(m)).balance == 0
    rec = await ledger.execute(OperationRequest(key="pf2", kind="payment", fee=10, account_id=w,
                                                legs=(Leg(w, m, 990, "payment"), Leg(w, fee, 10, "fee"))))
    assert rec.balance_of(w).balance == 0
    await assert_sound(ledger)
    await ledger.close()


@aio_test
async def test_consumption_only_funds(database_url):
    ledger = await make_ledger(database_url)
    w = await funded_wallet(ledger, 1000, consumption=True)       # from a credit card
    await ledger.execute(OperationRequest(key="debit-top", kind="topup", account_id=w,
                                          legs=(Leg(ledger.system["bank_settlement"], w, 300, "topup"),)))
    other = await funded_wallet(ledger, 0)
    m = await new_account(ledger, MERCHANT, code="M1")
    b = await ledger.balance(w)
    assert (b.balance, b.withdrawable) == (1300, 300)
    with pytest.raises(NotWithdrawable):
        await ledger.execute(OperationRequest(key="p2p", kind="p2p", legs=(Leg(w, other, 400, "p2p", withdraw=True),)))
    # spending uses consumption-only funds first
    await ledger.execute(OperationRequest(key="pay", kind="payment", legs=(Leg(w, m, 800, "payment"),)))
    b = await ledger.balance(w)
    assert (b.balance, b.withdrawable) == (500, 300)
    await ledger.execute(OperationRequest(key="p2p-ok", kind="p2p", legs=(Leg(w, other, 300, "p2p", withdraw=True),)))
    assert (await ledger.balance(other)).withdrawable == 300
    await assert_sound(ledger)
    await ledger.close()


@aio_test
async def test_frozen_account_cannot_pay(database_url):
    ledger = await make_ledger(database_url)
    w = await new_account(ledger, status=FROZEN)
    m = await new_account(ledger, MERCHANT, code="M1")
    with pytest.raises(AccountUnavailable):
        await ledger.execute(OperationRequest(key="x", kind="payment", legs=(Leg(w, m, 1, "payment"),)))
    await ledger.close()


@aio_test
async def test_group_commit_batches_concurrent_operations(database_url):
    ledger = await make_ledger(database_url)
    wallets = [await funded_wallet(ledger, 1000) for _ in range(20)]
    m = await new_account(ledger, MERCHANT, code="M1")
    ledger.batches = ledger.jobs = 0
    reqs = [OperationRequest(key=f"g-{i}", kind="payment", legs=(Leg(wallets[i % 20], m, 100 if i < 200 else 1, "payment"),))
            for i in range(200)]
    results = await asyncio.gather(*(ledger.execute(r) for r in reqs), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    assert len(ok) == 200 and not refused
    assert ledger.jobs == 200 and ledger.batches < 200 / 4     # shared commits
    assert (await ledger.balance(m)).balance == 20_000
    # refusals inside a batch do not spoil their neighbours
    await ledger.execute(OperationRequest(key="refill", kind="topup", legs=(
        Leg(ledger.system["bank_settlement"], wallets[0], 120, "topup"),)))
    before = ledger.batches
    mixed = [OperationRequest(key=f"h-{i}", kind="payment", legs=(Leg(wallets[0] if i % 2 else wallets[1], m, 60, "payment"),))
             for i in range(4)]
    res = await asyncio.gather(*(ledger.execute(r) for r in mixed), return_exceptions=True)
    assert [isinstance(r, InsufficientFunds) for r in res] == [True, False, True, False]
    assert ledger.batches == before + 1
    assert (await ledger.balance(wallets[0])).balance == 0
    await assert_sound(ledger)
    await ledger.close()


@aio_test
async def test_concurrent_debits_never_overdraw(database_url):
    """Real concurrent connections: four ledgers (own engines, own writers)
    debit one wallet at once; exactly what fits succeeds."""
    first = await make_ledger(database_url)
    w = await funded_wallet(first, 100)
    m = await new_account(first, MERCHANT, code="M1")
    ledgers = [first] + [Ledger(open_database(database_url), max_batch=4) for _ in range(3)]
    reqs = [OperationRequest(key=f"c-{i}", kind="payment", legs=(Leg(w, m, 7, "payment"),)) for i in range(40)]
    results = await asyncio.gather(*(ledgers[i % 4].execute(r) for i, r in enumerate(reqs)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, Exception)]
    others = [r for r in results if isinstance(r, Exception) and not isinstance(r, InsufficientFunds)]
    assert others == []
    assert len(ok) == 14
    assert (await first.balance(w)).balance == 2
    await assert_sound(first)
    for lg in ledgers:
        await lg.close()
        await lg.db.dispose()


ops = st.lists(st.tuples(
    st.sampled_from(["topup", "topup_credit", "pay", "p2p", "withdraw_pending", "post", "void", "replay"]),
    st.integers(0, 3), st.integers(0, 3), st.integers(1, 5000)), max_size=20)


@pytest.mark.parametrize("backend", ["sqlite"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops)
@aio_test
async def test_random_operations_keep_invariants(sqlite_url, backend, script):
    await _random_ops(sqlite_url, script)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops)
@aio_test
async def test_random_operations_keep_invariants_postgres(pg_url, script):
    await _random_ops(pg_url, script)


async def _random_ops(url, script):
    ledger = await make_ledger(url)
    bank = ledger.system["bank_settlement"]
    wallets = [await new_account(ledger) for _ in range(4)]
    m = await new_account(ledger, MERCHANT, code=None, name="m")
    pending: list[str] = []
    done: list[OperationRequest] = []
    for n, (what, a, b, amount) in enumerate(script):
        key = f"r{n}-{wallets[0]}"
        try:
            if what in ("topup", "topup_credit"):
                req = OperationRequest(key=key, kind="topup", legs=(Leg(bank, wallets[a], amount, "topup",
                                                                        consumption_credit=what == "topup_credit"),))
            elif what == "pay":
                req = OperationRequest(key=key, kind="payment", legs=(Leg(wallets[a], m, amount, "payment"),))
            elif what == "p2p":
                if a == b:
                    continue
                req = OperationRequest(key=key, kind="p2p", legs=(Leg(wallets[a], wallets[b], amount, "p2p", withdraw=True),))
            elif what == "withdraw_pending":
                req = OperationRequest(key=key, kind="withdrawal", pending=True,
                                       legs=(Leg(wallets[a], bank, amount, "withdrawal", withdraw=True),))
            elif what in ("post", "void"):
                if pending:
                    k = pending.pop(a % len(pending))
                    await (ledger.post(k) if what == "post" else ledger.void(k))
                continue
            else:
                if done:
                    await ledger.execute(done[a % len(done)])
                continue
            await ledger.execute(req)
            done.append(req)
            if req.pending:
                pending.append(req.key)
        except (InsufficientFunds, NotWithdrawable):
            pass
        await assert_sound(ledger)
    await ledger.close()
    await ledger.db.dispose()


@aio_test
async def test_a_key_twice_in_one_batch_moves_money_once(database_url):
    """Two deliveries of one request queued together (and neighbours): the
    batch goes job by job, the second is a replay of the first."""
    ledger = await make_ledger(database_url)
    w = await funded_wallet(ledger, 1000)
    m = await new_account(ledger, MERCHANT, code="M1")
    req = OperationRequest(key="dup", kind="payment", account_id=w, legs=(Leg(w, m, 300, "payment"),))
    others = [OperationRequest(key=f"o-{i}", kind="payment", legs=(Leg(w, m, 10, "payment"),)) for i in range(3)]
    results = await asyncio.gather(ledger.execute(req), *(ledger.execute(r) for r in others), ledger.execute(req))
    first, last = results[0], results[-1]
    assert first.replayed is False and last.replayed is True and last.id == first.id and last.ref == first.ref
    assert last.balance_of(w).balance == first.balance_of(w).balance
    assert (await ledger.balance(w)).balance == 1000 - 300 - 30
    await assert_sound(ledger)
    await ledger.close()


@aio_test
async def test_a_reference_collision_in_a_batch_redoes_it_job_by_job(database_url, monkeypatch):
    """The database refuses a batch's row (a reference already taken): the
    batch's writes are rolled back and every job is booked on its own, once."""
    from telecom_pay.ledger import ledger as ledger_mod
    ledger = await make_ledger(database_url)
    w = await funded_wallet(ledger, 1000)
    m = await new_account(ledger, MERCHANT, code="M1")
    taken = (await ledger.get_operation(f"fund-{w}")).ref
    real = ledger_mod.new_ref
    refs = iter([taken])
    monkeypatch.setattr(ledger_mod, "new_ref", lambda: next(refs, None) or real())
    batches = ledger.batches
    results = await asyncio.gather(*(ledger.execute(OperationRequest(
        key=f"c-{i}", kind="payment", legs=(Leg(w, m, 100, "payment"),))) for i in range(5)))
    assert ledger.batches == batches + 1
    assert len({r.ref for r in results}) == 5 and taken not in {r.ref for r in results}
    assert all(not r.replayed for r in results)
    assert (await ledger.balance(w)).balance == 500 and (await ledger.balance(m)).balance == 500
    await assert_sound(ledger)
    await ledger.close()
