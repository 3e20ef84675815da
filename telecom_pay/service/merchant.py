"""Merchants: their registration from config, the account settlement pays
them into, and the refunds they give back against a payment they received.
"""
from __future__ import annotations

import time
import uuid

import sqlalchemy as sa

from telecom_pay import accounts as acct
from telecom_pay.bank_port import BankStatus
from telecom_pay.ledger.chart import insert_account
from telecom_pay.merchants import directory, events, refunds
from telecom_pay.ledger.ledger import IdempotencyConflict, Leg, OperationRequest
from telecom_pay.ledger.tables import MERCHANT, accounts, operations
from telecom_pay.outcomes import BankDecline, Outcome, Result

from .base import ServiceCore, _refuse


FEE_PLAN_TTL = 30.0


class MerchantOperations(ServiceCore):
    """Merchant registration, payout accounts and refunds."""

    # ------------------------------------------------------------ merchants

    async def register_merchant(self, code: str, name: str, *, name_en: str | None = None,
                                entry: dict | None = None) -> int:
        """A merchant from `[[merchants]]`: its account and profile (created
        once, the entry's keys applied at each start)."""
        code = code.upper()
        self.merchant_names[code] = {"zh": name, "en": name_en or name}
        entry = entry or {"code": code, "name": name, "name_en": name_en}

        async def job(conn):
            row = await acct.find_merchant(conn, code)
            if row is not None:
                if row.name != name:
                    await conn.execute(accounts.update().where(accounts.c.id == row.id).values(name=name))
                mid = row.id
            else:
                # below zero only by a refund after its payout: the next settlement takes it back
                mid = await insert_account(conn, kind=MERCHANT, code=code, name=name, allow_negative=True)
                await acct.audit(conn, actor="admin", channel="config", action="merchant_registered",
                                 account_id=mid, code=code)
            await directory.ensure_from_config(conn, mid, entry, self.clock())
            return mid
        self.forget_merchant_plan(code)
        return await self.ledger.write(job)

    # ------------------------------------------------------------ the airtime SP

    async def airtime_sp(self, conn):
        """The merchant `HF` pays: `[airtime] merchant_code`, an SP of
        category airtime standing for the carrier's top-up system (None:
        airtime is booked to the platform's own airtime account)."""
        code = str(self.settings.section("airtime").get("merchant_code") or "").upper()
        if not code:
            return None
        cached = self.__dict__.get("_airtime_sp")
        if cached is not None and cached.code == code:
            return cached
        p = await directory.get_profile(conn, code=code)
        if p is None or p.category != "airtime":
            from telecom_pay.config import ConfigError
            raise ConfigError(f"airtime.merchant_code {code} is not a merchant of category airtime")
        self.__dict__["_airtime_sp"] = p
        return p

    async def order_airtime(self, conn, rec, target: str) -> None:
        """The carrier's top-up system is told to credit `target`, by a
        signed callback owed in the transaction that took the money."""
        sp = await self.airtime_sp(conn)
        if sp is None:
            return
        await events.enqueue(conn, merchant_id=sp.account_id, event_type="airtime.ordered", subject_id=rec.ref,
                             url=sp.notify_url, now=self.clock(),
                             data={"ref": rec.ref, "msisdn": target, "amount": rec.amount,
                                   "created_at": events.iso(rec.created_at)})

    # ------------------------------------------------------------ fee plans

    def forget_merchant_plan(self, code: str) -> None:
        self.__dict__.setdefault("_fee_plans", {}).pop(code.upper(), None)

    async def payment_fee(self, conn, merchant, amount: int) -> tuple[int, str]:
        """The fee of a payment to `merchant` (an accounts row): its own fee
        plan (paid by the merchant), else [fees.payment]. Plans are kept for
        FEE_PLAN_TTL seconds, so a payment costs no profile read; a change
        made through another instance applies within that time."""
        plans = self.__dict__.setdefault("_fee_plans", {})
        now = time.monotonic()
        cached = plans.get(merchant.code)
        if cached is None or cached[1] < now:
            p = await directory.get_profile(conn, account_id=merchant.id)
            rule = p.fee_rule() if p is not None else None
            if len(plans) > 10_000:
                plans.clear()
            plans[merchant.code] = cached = (rule, now + FEE_PLAN_TTL)
        rule = cached[0]
        return (rule.fee(amount), "merchant") if rule is not None else self.settings.fee("payment", amount)

    async def bind_merchant_account(self, merchant_code: str, pan: str, expiry: str) -> Result:
        """The account settlement pays a merchant into, verified by its bank."""
        code = merchant_code.upper()
        if self.bank is None:
            return Result(Outcome.BANK_UNAVAILABLE)
        m = await self.ledger.read(lambda conn: acct.find_merchant(conn, code))
        if m is None:
            return Result(Outcome.UNKNOWN_MERCHANT)
        v = await self.bank.verify_card(pan=pan, expiry=expiry, holder_msisdn="")
        if v.status is not BankStatus.APPROVED or v.card is None:
            return Result(Outcome.BANK_DECLINED, params={"action": "bind_card",
                                                         "reason": (v.decline or BankDecline.OTHER).value})
        card = v.card

        async def job(conn):
            await acct.bind_card(conn, m.id, token=card.token, last4=card.last4, bin=card.bin,
                                 card_type=card.card_type, bank_code=card.bank_code, actor="admin", channel="admin")
            return Result(Outcome.OK, params={"action": "bind_card", "last4": card.last4})
        return await self._run(job)

    # ------------------------------------------------------------ refunds

    async def refund(self, merchant_code: str, ref: str, amount: int | None = None, *, actor: str,
                     key: str | None = None) -> Result:
        """A merchant refunds (part of) a payment it received, at once (no
        review: the caller is the operator's tooling). The legs, and the
        merchant's fee given back in proportion, are those of
        telecom_pay.merchants.refunds, whose requests and reviews this
        shares the payment's lock and its refundable amount with."""
        code = merchant_code.upper()
        key = key or f"refund:{ref}:{uuid.uuid4().hex}"

        async def job(conn):
            m = await acct.find_merchant(conn, code)
            if m is None:
                raise _refuse(Outcome.UNKNOWN_MERCHANT)
            q = sa.select(operations).where(operations.c.ref == ref)
            if conn.dialect.name != "sqlite":   # refunds of one payment queue here (SQLite has one writer)
                q = q.with_for_update()
            op = (await conn.execute(q)).first()
            if op is None or op.kind != "payment" or op.counterparty_id != m.id or op.state != "posted":
                raise _refuse(Outcome.NOT_FOUND)
            prior = (await conn.execute(sa.select(operations).where(operations.c.idempotency_key == key))).first()
            if prior is not None:
                # a replay: the legs it was booked with (the amount refunded since
                # includes this refund itself); the ledger compares the rest
                value = sum(leg["amount"] for leg in prior.request["legs"] if leg["kind"] == "refund")
                if amount is not None and amount != value:
                    raise IdempotencyConflict(key, ["amount"])
                legs = [Leg(**leg) for leg in prior.request["legs"]]
            else:
                try:
                    value, _fee, legs = await refunds.refund_legs(
                        conn, op, amount, fee_income_id=self.system["fee_income"],
                        reserved=await refunds.reserved_amount(conn, op.id))
                except refunds.RefundError as exc:
                    raise _refuse(Outcome.INVALID_AMOUNT, refundable=exc.extra["refundable"]) from exc
            rec = await self.ledger.book(conn, OperationRequest(
                key=key, kind="refund", legs=tuple(legs), channel="merchant", actor=actor,
                account_id=op.account_id, counterparty_id=m.id, parent_id=op.id))
            if not rec.replayed:
                await acct.audit(conn, actor=actor, channel="merchant", action="refund", account_id=op.account_id,
                                 payment_ref=ref, amount=value)
            replays.append(rec.replayed)
            w = await acct.get_account(conn, op.account_id)
            return Result(Outcome.OK, ref=rec.ref, amount=value,
                          balance=rec.balance_of(op.account_id).available,
                          params={"action": "refund", "merchant_code": code, "msisdn": w.msisdn,
                                  "merchant_name": self.merchant_display(code, m.name, w.language)})
        replays: list[bool] = []
        result = await self._run(job)
        if result.outcome is Outcome.OK and not replays[-1]:
            await self._notify(result.params["msisdn"], result)
        return result
