"""Merchant / SP settlement: for a business day (T+1 by default) each
merchant gets one batch netting its payments minus refunds minus its fees
plus the fees refunds gave back, plus what an earlier batch carried in, with
a statement, paid out through the bank port to the merchant's bound
settlement account, or marked for a file payout.

A refund after its payment's day was paid out takes the merchant's account
below zero; it is in the batch of the refund's own day. A batch whose net is
below zero pays nothing ("carried"); the first batch of a later day created
after it takes that amount ("carried_in", the carried one becomes
"forwarded") in the same transaction, under a lock on the carried row, so
the amount is taken exactly once whatever order days are run in.

Exactly once: a batch is unique per (merchant, day); its payout is a pending
ledger operation (merchant -> bank settlement) whose key names the attempt;
a new attempt is made only after the previous one was definitively declined
(voided), never while one is in doubt.

A batch in "paying" (or "review") takes its state from its payout operation
in the database, whichever process learns the bank's answer
(`follow_payouts`): posted -> paid, voided -> failed (retried by the next
run), pending -> still paying, or "review" while the bank's answer waits for
an operator (`telecom-pay bank resolve`). The resolver in the daemon and
every `settle` run both call it, so no batch depends on the memory of the
process that started its payout.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import sqlalchemy as sa
from twisted.logger import Logger

from telecom_pay import accounts as acct
from telecom_pay import business_time
from telecom_pay.bank_port import BankStatus, CardRef
from telecom_pay.crashpoints import crash_point
from telecom_pay.ledger.ledger import Leg, OperationRequest, utcnow
from telecom_pay.ledger.tables import MERCHANT, T_PENDING, T_POSTED, T_VOIDED, Stamp, accounts, operations, transfers
from telecom_pay.service import PaymentService

log = Logger(namespace="telecom_pay.settlement")

metadata = sa.MetaData()
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
settlement_batches = sa.Table(
    "settlement_batches", metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("merchant_id", Id, nullable=False),
    sa.Column("business_date", sa.Date, nullable=False),
    sa.Column("payments", sa.Integer, nullable=False),
    sa.Column("gross", sa.BigInteger, nullable=False),
    sa.Column("refunds", sa.BigInteger, nullable=False),
    sa.Column("fees", sa.BigInteger, nullable=False),
    sa.Column("net", sa.BigInteger, nullable=False),
    sa.Column("fee_refunds", sa.BigInteger, nullable=False, server_default="0"),   # fees given back with refunds
    sa.Column("carried_in", sa.BigInteger, nullable=False, server_default="0"),    # a negative net brought forward
    sa.Column("method", sa.String(8), nullable=False),      # bank | file
    sa.Column("state", sa.String(10), nullable=False),      # created | paying | review | paid | failed | file | empty
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("operation_key", sa.String(160)),
    sa.Column("payout_ref", sa.String(12)),
    sa.Column("error", sa.String(200)),
    sa.Column("statement", sa.JSON, nullable=False),
    sa.Column("created_at", Stamp, nullable=False),
    sa.Column("updated_at", Stamp, nullable=False),
    sa.UniqueConstraint("merchant_id", "business_date", name="uq_settlement_merchant_day"),
)
# the FK to accounts lives in the migration; here the column is enough
settlement_batches.c.merchant_id.append_foreign_key(sa.ForeignKey(accounts.c.id))

CREATED, PAYING, PAID, FAILED, FILE, EMPTY = "created", "paying", "paid", "failed", "file", "empty"
CARRIED = "carried"         # the net was below zero: nothing paid, the amount waits for a later batch
FORWARDED = "forwarded"     # a carried batch whose amount a later batch took (statement "carried_to")
REVIEW = "review"           # the payout's bank answer waits for an operator's decision


class SettlementError(ValueError):
    pass


@dataclass(frozen=True)
class BatchReport:
    merchant_code: str
    business_date: date
    state: str
    payments: int
    gross: int
    refunds: int
    fees: int
    net: int
    payout_ref: str | None
    note: str = ""
    fee_refunds: int = 0
    carried_in: int = 0


class Settlement:
    def __init__(self, service: PaymentService, *, delay_days: int = 1, file_dir: str | Path = "var/settlement"):
        self.service = service
        self.ledger = service.ledger
        self.delay_days = delay_days
        self.file_dir = Path(file_dir)

    def window(self, day: date) -> tuple[datetime, datetime]:
        """The payments of business day `day`: [local midnight, next local midnight)."""
        return business_time.day_window(day, self.service.tz)

    async def run(self, day: date, *, merchant_code: str | None = None) -> list[BatchReport]:
        """Settle `day` for every merchant (or one). Safe to run again: paid
        batches are reported, failed ones retried, in-doubt ones left alone."""
        if not business_time.is_settleable(day, self.service.clock(), self.service.tz, self.delay_days):
            raise SettlementError(f"{day} is not settleable yet (T+{self.delay_days}: from "
                                  f"{business_time.first_settlement_day(day, self.delay_days)})")
        async def merchants(conn):
            q = sa.select(accounts).where(accounts.c.kind == MERCHANT)
            if merchant_code:
                q = q.where(accounts.c.code == merchant_code.upper())
            return (await conn.execute(q.order_by(accounts.c.code))).all()
        rows = await self.ledger.read(merchants)
        if merchant_code and not rows:
            raise SettlementError(f"unknown merchant {merchant_code}")
        await follow_payouts(self.service)
        reports = []
        for m in rows:
            batch = await self._batch(m, day)
            try:
                reports.append(await self._pay(m, batch))
            except Exception as exc:    # the batch keeps its durable state; the next run follows it
                log.failure("settlement of {merchant} for {day} failed", merchant=m.code, day=day)
                batch = await self._get(batch.id)
                reports.append(self._report(m, batch, f"interrupted ({type(exc).__name__}); run again"))
        return reports

    async def _batch(self, merchant, day: date):
        """The day's batch, created from the ledger on first run."""
        start, end = self.window(day)

        async def job(conn):
            existing = (await conn.execute(sa.select(settlement_batches).where(
                settlement_batches.c.merchant_id == merchant.id,
                settlement_batches.c.business_date == day))).first()
            if existing is not None:
                return existing
            t, o = transfers, operations
            in_window = sa.and_(o.c.created_at >= start, o.c.created_at < end, t.c.state == T_POSTED,
                                o.c.kind.in_(("payment", "airtime", "refund")))
            legs = (await conn.execute(sa.select(t.c.kind, t.c.amount, t.c.debit_account_id, t.c.credit_account_id,
                                                 o.c.ref, o.c.kind.label("op_kind"))
                                       .join(o, o.c.id == t.c.operation_id).where(
                in_window, sa.or_(t.c.debit_account_id == merchant.id, t.c.credit_account_id == merchant.id))
                .order_by(o.c.id))).all()
            sales = ("payment", "airtime")          # the airtime SP is paid for the top-ups it made
            gross = sum(l.amount for l in legs if l.kind in sales and l.credit_account_id == merchant.id)
            refunds = sum(l.amount for l in legs if l.kind == "refund" and l.debit_account_id == merchant.id)
            fees = sum(l.amount for l in legs if l.kind == "fee" and l.debit_account_id == merchant.id)
            fee_refunds = sum(l.amount for l in legs if l.kind == "fee_refund" and l.credit_account_id == merchant.id)
            payments = len({l.ref for l in legs if l.kind in sales})
            carried = await _carried_before(conn, merchant.id, day)
            carried_in = sum(c.net for c in carried)
            net = gross - refunds - fees + fee_refunds + carried_in
            method = "file" if self._merchant_config(merchant.code).get("payout") == "file" else "bank"
            now = self.service.clock()
            statement = {"merchant": merchant.code, "business_date": day.isoformat(), "payments": payments,
                         "gross": gross, "refunds": refunds, "fees": fees, "fee_refunds": fee_refunds,
                         "carried_in": carried_in, "carried_from": [c.business_date.isoformat() for c in carried],
                         "net": net, "refs": sorted({l.ref for l in legs})}
            state = CREATED if net > 0 else CARRIED if net < 0 else EMPTY
            await conn.execute(settlement_batches.insert().values(
                merchant_id=merchant.id, business_date=day, payments=payments, gross=gross, refunds=refunds,
                fees=fees, fee_refunds=fee_refunds, carried_in=carried_in, net=net, method=method, state=state,
                statement=statement, created_at=now, updated_at=now))
            for c in carried:
                taken = await conn.execute(settlement_batches.update().where(
                    settlement_batches.c.id == c.id, settlement_batches.c.state == CARRIED).values(
                    state=FORWARDED, statement={**c.statement, "carried_to": day.isoformat()}, updated_at=now))
                if taken.rowcount != 1:         # cannot happen under the lock; never take an amount twice
                    raise SettlementError(f"the carried batch of {c.business_date} was taken meanwhile")
            return (await conn.execute(sa.select(settlement_batches).where(
                settlement_batches.c.merchant_id == merchant.id,
                settlement_batches.c.business_date == day))).first()
        return await self.ledger.write(job)

    def _merchant_config(self, code: str) -> dict:
        return next((m for m in self.service.settings.merchants if m.get("code", "").upper() == code), {})

    async def _pay(self, merchant, batch) -> BatchReport:
        if batch.state in (CREATED, FAILED):
            if batch.method == "file":
                batch = await self._file_payout(merchant, batch)
            else:
                batch = await self._bank_payout(merchant, batch)
        elif batch.state == PAYING and batch.method != "file":
            batch = await self._resume_unsent(merchant, batch)
        return self._report(merchant, batch)

    async def _resume_unsent(self, merchant, batch):
        """A payout booked but never sent (the process stopped between the
        attempt and the credit) is sent now under the attempt's own key. The
        bridge records a key before its 0200 leaves and sends a key once, so
        a resume racing the original process still pays at most once."""
        if self.service.bank is None or not hasattr(self.service.bank, "known_outcome"):
            return batch
        rec = await self.ledger.get_operation(batch.operation_key)
        if rec is None or rec.state != T_PENDING or await self.service.bank.known_outcome(rec.key) is not None:
            return batch
        card = await self.ledger.read(lambda conn: acct.active_card(conn, merchant.id))
        if card is None:
            return batch
        log.info("settlement {key}: attempt booked but never sent; sending it now", key=rec.key)
        return await self._credit(batch, rec.key, card)

    @staticmethod
    def _report(merchant, batch, note: str | None = None) -> BatchReport:
        note = note or {PAID: "paid", FILE: "in payout file", EMPTY: "nothing to pay",
                        CARRIED: "below zero: carried into the next batch",
                        FORWARDED: f"carried into {(batch.statement or {}).get('carried_to')}",
                        PAYING: "bank answer pending",
                        REVIEW: f"bank answer in manual review: telecom-pay bank resolve {batch.operation_key}",
                        FAILED: f"payout failed: {batch.error}"}.get(batch.state, batch.state)
        return BatchReport(merchant.code, batch.business_date, batch.state, batch.payments, batch.gross,
                           batch.refunds, batch.fees, batch.net, batch.payout_ref, note, batch.fee_refunds,
                           batch.carried_in)

    async def _start_attempt(self, merchant, batch, *, pending: bool):
        """Book the payout (pending for the bank, posted for a file) under a
        key naming the attempt, and mark the batch, in one job."""
        key = f"settle:{merchant.code}:{batch.business_date.isoformat()}:{batch.attempts + 1}"

        async def job(conn):
            rec = await self.ledger.book(conn, OperationRequest(
                key=key, kind="settlement", pending=pending, channel="settlement", actor="settlement",
                account_id=merchant.id, legs=(Leg(merchant.id, self.service.system["bank_settlement"], batch.net,
                                                  "settlement"),),
                details={"business_date": batch.business_date.isoformat()}))
            await conn.execute(settlement_batches.update().where(settlement_batches.c.id == batch.id).values(
                state=PAYING if pending else FILE, attempts=batch.attempts + 1, operation_key=key,
                payout_ref=rec.ref, error=None, updated_at=self.service.clock()))
            return rec
        return key, await self.ledger.write(job)

    async def _bank_payout(self, merchant, batch):
        card = await self.ledger.read(lambda conn: acct.active_card(conn, merchant.id))
        if card is None:
            return await self._set_state(batch.id, FAILED, "no settlement account bound")
        if self.service.bank is None:
            return await self._set_state(batch.id, FAILED, "bank unavailable")
        try:
            key, _ = await self._start_attempt(merchant, batch, pending=True)
        except Exception as exc:       # e.g. the merchant account no longer holds the net
            return await self._set_state(batch.id, FAILED, str(exc))
        crash_point("settlement_after_attempt")
        return await self._credit(batch, key, card)

    async def _credit(self, batch, key: str, card):
        answer = await self.service.bank.credit_card(
            operation_key=key, card=CardRef(card.token, card.last4, card.bin, card.card_type, card.bank_code),
            amount=batch.net)
        if answer.status is BankStatus.APPROVED:
            await self.ledger.post(key)
            return await self._set_state(batch.id, PAID)
        if answer.status is BankStatus.DECLINED:
            await self.ledger.void(key)
            return await self._set_state(batch.id, FAILED, f"declined {answer.response_code or answer.decline}")
        return await self._get(batch.id)        # in doubt: the bridge resolves it

    async def _file_payout(self, merchant, batch):
        _, rec = await self._start_attempt(merchant, batch, pending=False)
        self.file_dir.mkdir(parents=True, exist_ok=True)
        path = self.file_dir / f"payouts-{batch.business_date.isoformat()}.csv"
        new = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            if new:
                w.writerow(["business_date", "merchant_code", "merchant_name", "net", "reference"])
            w.writerow([batch.business_date.isoformat(), merchant.code, merchant.name, batch.net, rec.ref])
        return await self._get(batch.id)

    async def _set_state(self, batch_id: int, state: str, error: str | None = None):
        async def job(conn):
            await conn.execute(settlement_batches.update().where(settlement_batches.c.id == batch_id).values(
                state=state, error=error[:200] if error else None, updated_at=self.service.clock()))
        await self.ledger.write(job)
        return await self._get(batch_id)

    async def _get(self, batch_id: int):
        return await self.ledger.read(lambda conn: _first(conn, sa.select(settlement_batches).where(
            settlement_batches.c.id == batch_id)))

    async def batches(self, day: date) -> list:
        return await self.ledger.read(lambda conn: _all(conn, sa.select(settlement_batches).where(
            settlement_batches.c.business_date == day).order_by(settlement_batches.c.id)))


async def follow_payouts(service: PaymentService, operation_key: str | None = None) -> None:
    """Batches in paying or review (all, or the one paid under
    `operation_key`) take the state of their payout operation. A pending
    payout whose bank answer is known but was never booked (a failure after
    the answer) is finished first; one never sent is voided once it is old
    enough that no process can still be sending it (bank_recovery)."""
    from telecom_pay.bank_recovery import finish_from_bank
    ledger = service.ledger
    q = sa.select(settlement_batches).where(settlement_batches.c.state.in_((PAYING, REVIEW)))
    if operation_key is not None:
        q = q.where(settlement_batches.c.operation_key == operation_key)
    for batch in await ledger.read(lambda conn: _all(conn, q)):
        rec = await ledger.get_operation(batch.operation_key)
        if rec is None:
            continue
        if rec.state == T_PENDING and operation_key is None:
            answer = await finish_from_bank(service, rec.key, rec.created_at, rec.kind)
            rec = await ledger.get_operation(batch.operation_key)
            if rec.state == T_PENDING:
                state = REVIEW if answer is not None and answer.review else PAYING
                if state != batch.state:
                    await _follow(ledger, batch, state, None)
                continue
        if rec.state == T_POSTED:
            await _follow(ledger, batch, PAID, None)
        elif rec.state == T_VOIDED:
            await _follow(ledger, batch, FAILED, f"attempt {batch.attempts}: declined or reversed by the bank")
        elif rec.state == T_PENDING and operation_key is not None:
            answer = await service.bank.known_outcome(rec.key) if hasattr(service.bank, "known_outcome") else None
            if answer is not None and answer.review and batch.state != REVIEW:
                await _follow(ledger, batch, REVIEW, None)


async def batches_awaiting_bank(ledger) -> list:
    """Batches whose payout's bank answer is open (paying, or review: an
    operator decides), oldest first, with the merchant's code and name: the
    operations page lists them beside the bank operation they wait for."""
    b = settlement_batches
    q = (sa.select(b.c.id, b.c.business_date, b.c.state, b.c.net, b.c.attempts, b.c.operation_key,
                   b.c.updated_at, accounts.c.code.label("merchant_code"), accounts.c.name.label("merchant_name"))
         .join(accounts, accounts.c.id == b.c.merchant_id).where(b.c.state.in_((PAYING, REVIEW)))
         .order_by(b.c.business_date, b.c.id))
    return await ledger.read(lambda conn: _all(conn, q))


async def _follow(ledger, batch, state: str, error: str | None) -> None:
    async def job(conn):
        await conn.execute(settlement_batches.update().where(
            settlement_batches.c.id == batch.id, settlement_batches.c.operation_key == batch.operation_key,
            settlement_batches.c.state.in_((PAYING, REVIEW))).values(
            state=state, error=error, updated_at=utcnow()))
    await ledger.write(job)


async def _carried_before(conn, merchant_id: int, day: date) -> list:
    """The merchant's carried batches of days before `day`, locked: the batch
    being created takes them all, so each carried amount is taken once, by
    the first batch of a later day created after it (whatever order the
    days are run in); a re-run finds its batch and takes nothing again."""
    q = sa.select(settlement_batches).where(
        settlement_batches.c.merchant_id == merchant_id, settlement_batches.c.state == CARRIED,
        settlement_batches.c.business_date < day).order_by(settlement_batches.c.business_date)
    if conn.dialect.name != "sqlite":     # two runs of different days queue here (SQLite has one writer)
        q = q.with_for_update()
    return (await conn.execute(q)).all()


async def _first(conn, q):
    return (await conn.execute(q)).first()


async def _all(conn, q):
    return (await conn.execute(q)).all()
