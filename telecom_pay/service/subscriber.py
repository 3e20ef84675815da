"""What subscribers do to their own wallet, from any channel (SMS, USSD,
IVR, web): open and confirm, balance and statement, pay, send, airtime,
top-up and withdrawal, card binding, PIN, freeze, close, language and the
call-back request. Each acts as `msisdn:<number>` unless a channel acting
for the subscriber names another actor.
"""
from __future__ import annotations

import time
from datetime import timedelta

import sqlalchemy as sa

from telecom_pay import accounts as acct
from telecom_pay import business_time
from telecom_pay.bank_port import BankStatus, CardRef
from telecom_pay.ledger.ledger import Leg, OperationRecord, OperationRequest
from telecom_pay.ledger.tables import (
    ACTIVE, CLOSED, FROZEN, MERCHANT, PENDING, WALLET, accounts, audit_log, operations, transfers)
from telecom_pay.msisdn import MsisdnError, mask
from telecom_pay.outcomes import BankDecline, Outcome, Result, StatementLine
from telecom_pay.security import generate_password, generate_pin, is_pin_format, is_weak_pin
from telecom_pay.risk import screen as risk_screen

from .base import ServiceCore, _STATUS_OUTCOME, _masked_local, _refuse, log

MERCHANT_PREVIEW_TTL = 10.0


class SubscriberOperations(ServiceCore):
    """Operations a subscriber runs on their own wallet."""

    # ------------------------------------------------------------ opening

    async def open_account(self, msisdn: str, *, channel: str, language: str | None = None) -> Result:
        """KT: a pending account awaiting confirmation (A) within N minutes."""
        msisdn = self._norm(msisdn)
        lang = language or self.settings.default_language
        ttl = self.settings.confirm_minutes

        async def job(conn):
            now = self.clock()
            w = await acct.find_wallet(conn, msisdn)
            if w is not None:
                if w.status == PENDING and w.expires_at > now:
                    return Result(Outcome.CONFIRM_REQUIRED, params={"action": "open", "ttl_minutes": ttl})
                if w.status == PENDING:   # expired: replace it
                    await acct.transition(conn, w, "close", actor=f"msisdn:{msisdn}", channel=channel,
                                          reason="confirmation expired")
                else:
                    return Result(Outcome.ACCOUNT_EXISTS, params={"status": w.status})
            await acct.create_pending_wallet(conn, msisdn, language=lang, expires_at=now + timedelta(minutes=ttl),
                                             actor=f"msisdn:{msisdn}", channel=channel)
            return Result(Outcome.CONFIRM_REQUIRED, params={"action": "open", "ttl_minutes": ttl})
        return await self._run(job)

    async def confirm_open(self, msisdn: str, *, channel: str, message_key: str | None = None) -> Result:
        """A: activates the pending account and issues the initial PIN and
        password (returned once, for the channel to send; stored hashed)."""
        msisdn = self._norm(msisdn)
        # A cheap read before the slow hash: an `A` from a number with no
        # opening waiting (a flood from random numbers) costs one query.
        w = await self.ledger.read(lambda conn: acct.find_wallet(conn, msisdn))
        if w is None:
            return Result(Outcome.NOTHING_PENDING)
        if w.status != PENDING:
            return Result(Outcome.ALREADY_ACTIVE if w.status == ACTIVE else _STATUS_OUTCOME[w.status])
        if w.expires_at <= self.clock():
            pin = password = pw_hash = None       # the job closes it, nothing hashed
        else:
            pin, password = generate_pin(), generate_password()
            pw_hash = await self.passwords.hash(password)

        async def job(conn):
            w = await acct.find_wallet(conn, msisdn)
            if w is None:
                raise _refuse(Outcome.NOTHING_PENDING)
            if w.status != PENDING:
                raise _refuse(Outcome.ALREADY_ACTIVE if w.status == ACTIVE else _STATUS_OUTCOME[w.status])
            if w.expires_at <= self.clock():
                await acct.transition(conn, w, "close", actor=f"msisdn:{msisdn}", channel=channel,
                                      reason="confirmation expired")
                return Result(Outcome.CONFIRMATION_EXPIRED)
            if pw_hash is None:                   # a KT arrived after the first read: A again
                raise _refuse(Outcome.NOTHING_PENDING)
            await acct.transition(conn, w, "confirm", actor=f"msisdn:{msisdn}", channel=channel,
                                  **({"message": message_key} if message_key else {}))
            await acct.set_credentials(conn, w.id, pin_hash=self.pins.hash(w.id, pin), password_hash=pw_hash)
            return Result(Outcome.OK, balance=0, params={"action": "confirm_open", "pin": pin,
                                                         "password": password})
        return await self._run(job)

    async def reissue_lost_credentials(self, msisdn: str, message_key: str, *, channel: str) -> Result:
        """The process died after the `A` recorded as `message_key` opened the
        account and before its reply was recorded. That reply is the only copy
        of the initial PIN and password (they are stored hashed), and it never
        left: new ones are issued in its place, audited. Only for the message
        that opened the account, and only while the initial PIN is unchanged
        (once changed, the subscriber evidently had it)."""
        msisdn = self._norm(msisdn)
        pin, password = generate_pin(), generate_password()
        pw_hash = await self.passwords.hash(password)

        async def job(conn):
            w = await acct.find_wallet(conn, msisdn)
            if w is None or w.status != ACTIVE:
                raise _refuse(Outcome.ALREADY_ACTIVE if w is not None else Outcome.NOTHING_PENDING)
            confirms = (await conn.execute(sa.select(audit_log.c.details).where(
                audit_log.c.account_id == w.id, audit_log.c.action == "confirm"))).all()
            cred = await acct.get_credentials(conn, w.id)
            if not any((r.details or {}).get("message") == message_key for r in confirms) \
                    or cred is None or not cred.must_change:
                raise _refuse(Outcome.ALREADY_ACTIVE)
            await acct.set_credentials(conn, w.id, pin_hash=self.pins.hash(w.id, pin), password_hash=pw_hash)
            await acct.audit(conn, actor="system", channel=channel, action="credentials_reissued", account_id=w.id,
                             message=message_key, reason="the reply to A was never recorded")
            return Result(Outcome.OK, balance=w.balance - w.pending_out,
                          params={"action": "confirm_open", "pin": pin, "password": password})
        return await self._run(job)

    async def cancel_open(self, msisdn: str, *, channel: str) -> Result:
        """N after KT: the pending account is closed, nothing else changes."""
        msisdn = self._norm(msisdn)

        async def job(conn):
            w = await acct.find_wallet(conn, msisdn)
            if w is None or w.status != PENDING:
                raise _refuse(Outcome.NOTHING_PENDING)
            await acct.transition(conn, w, "close", actor=f"msisdn:{msisdn}", channel=channel, reason="cancelled")
            return Result(Outcome.OK, params={"action": "cancel"})
        return await self._run(job)

    # ------------------------------------------------------------ queries

    async def balance(self, msisdn: str, *, channel: str) -> Result:
        msisdn = self._norm(msisdn)

        async def q(conn):
            w = await acct.find_wallet(conn, msisdn)
            if w is None:
                return Result(Outcome.NO_ACCOUNT)
            if w.status in (PENDING, CLOSED):
                return Result(_STATUS_OUTCOME[w.status])
            available = w.balance - w.pending_out
            withdrawable = max(0, available - w.consumption)
            return Result(Outcome.OK, balance=available,
                          params={"action": "balance", "withdrawable": withdrawable,
                                  "pending_in": w.pending_in, "reserved": w.pending_out, "status": w.status,
                                  "language": w.language})
        return await self.ledger.read_hot(q)

    async def account_info(self, msisdn: str):
        """The wallet row (or None): language, status, tier; for channels."""
        msisdn = self._norm(msisdn)
        return await self.ledger.read_hot(lambda conn: acct.find_wallet(conn, msisdn))

    async def statement(self, msisdn: str, *, channel: str, page: int = 1, per_page: int = 5,
                        lang: str = "zh") -> Result:
        msisdn = self._norm(msisdn)
        page = max(1, page)

        async def q(conn):
            w = await acct.find_wallet(conn, msisdn)
            if w is None:
                return Result(Outcome.NO_ACCOUNT)
            if w.status in (PENDING, CLOSED):
                return Result(_STATUS_OUTCOME[w.status])
            lines, total = await self._statement_lines(conn, w.id, page, per_page, lang)
            pages = max(1, -(-total // per_page))
            return Result(Outcome.OK, balance=w.balance - w.pending_out,
                          params={"action": "statement", "lines": lines, "page": page, "pages": pages})
        return await self.ledger.read(q)

    async def _statement_lines(self, conn, account_id: int, page: int, per_page: int, lang: str):
        t = transfers
        mine = sa.or_(t.c.debit_account_id == account_id, t.c.credit_account_id == account_id)
        op_ids = sa.select(t.c.operation_id).where(mine, t.c.state != "voided").distinct()
        total = (await conn.execute(sa.select(sa.func.count()).select_from(op_ids.subquery()))).scalar_one()
        ops = (await conn.execute(sa.select(operations).where(operations.c.id.in_(op_ids))
                                  .order_by(operations.c.id.desc()).limit(per_page)
                                  .offset((page - 1) * per_page))).all()
        if not ops:
            return [], total
        legs = (await conn.execute(sa.select(t).where(t.c.operation_id.in_([o.id for o in ops]), mine))).all()
        others = {}
        for leg in legs:
            other = leg.credit_account_id if leg.debit_account_id == account_id else leg.debit_account_id
            others.setdefault(leg.operation_id, []).append(other)
        other_ids = {i for v in others.values() for i in v}
        names = {r.id: r for r in (await conn.execute(sa.select(accounts).where(accounts.c.id.in_(other_ids))))}
        lines = []
        for op in ops:
            signed = sum((l.amount if l.credit_account_id == account_id else -l.amount)
                         for l in legs if l.operation_id == op.id)
            cp = names.get(next((i for i in others.get(op.id, []) if names.get(i) is not None
                                 and names[i].kind != "system"), None)) if op.id in others else None
            if cp is None:
                counterparty = {"topup": "bank card", "withdrawal": "bank card", "airtime": "airtime",
                                "close_refund": "bank card"}.get(op.kind, op.kind)
            elif cp.kind == WALLET:
                counterparty = _masked_local(cp.msisdn)
            elif cp.kind == MERCHANT:
                counterparty = self.merchant_display(cp.code, cp.name, lang)
            else:
                counterparty = cp.name or cp.code or ""
            kind = op.kind
            if kind == "p2p":
                kind = "p2p_in" if signed > 0 else "p2p_out"
            lines.append(StatementLine(ref=op.ref, kind=kind, amount=signed, balance_after=None,
                                       at=op.created_at.isoformat(), counterparty=counterparty,
                                       state=op.state))
        return lines, total

    # ------------------------------------------------------------ payments

    async def preview_payment(self, msisdn: str, merchant_code: str, amount: int, *, lang: str = "zh") -> Result:
        """Checks a ZF before asking for the PIN, so the subscriber is not
        asked for a PIN for a payment that cannot happen."""
        msisdn = self._norm(msisdn)
        code = merchant_code.upper()

        async def q(conn):
            w, cred = await acct.find_wallet_with_credentials(conn, msisdn)
            if w is None:
                raise _refuse(Outcome.NO_ACCOUNT)
            if w.status != ACTIVE:
                raise _refuse(_STATUS_OUTCOME[w.status])
            if cred is not None and cred.must_change:
                raise _refuse(Outcome.PIN_CHANGE_REQUIRED)
            m = await self._merchant_for_preview(conn, code)
            if m is None:
                return Result(Outcome.UNKNOWN_MERCHANT, params={"merchant_code": code})
            if m.status != ACTIVE:
                return Result(Outcome.MERCHANT_INACTIVE, params={"merchant_code": code})
            fee, payer = await self.payment_fee(conn, m, amount)
            need = amount + (fee if payer == "subscriber" else 0)
            if w.balance - w.pending_out < need:
                return Result(Outcome.INSUFFICIENT_FUNDS, balance=w.balance - w.pending_out)
            return Result(Outcome.PIN_REQUIRED, amount=amount, params={
                "action": "pay", "merchant_code": code, "merchant_name": self.merchant_display(code, m.name, lang)})
        return await self._query(q)

    async def _merchant_for_preview(self, conn, code: str):
        """The merchant row, remembered for MERCHANT_PREVIEW_TTL: the preview
        only spares a PIN prompt for a payment that cannot happen; the
        payment itself reads the row again in its own transaction."""
        now = time.monotonic()
        hit = self._preview_merchants.get(code)
        if hit is not None and hit[1] > now:
            return hit[0]
        m = await acct.find_merchant(conn, code)
        if len(self._preview_merchants) > 10_000:
            self._preview_merchants.clear()
        self._preview_merchants[code] = (m, now + MERCHANT_PREVIEW_TTL)
        return m

    async def pay(self, msisdn: str, merchant_code: str, amount: int, pin: str | None, *, channel: str,
                  key: str | None = None, reference: str | None = None, lang: str = "zh",
                  after_book=None) -> Result:
        """`after_book`: see _guarded_payment (an SP request's confirmation)."""
        msisdn = self._norm(msisdn)
        code = merchant_code.upper()
        key = self._key(key, "pay")

        async def build(conn, w):
            m = await acct.find_merchant(conn, code)
            if m is None:
                raise _refuse(Outcome.UNKNOWN_MERCHANT, merchant_code=code)
            if m.status != ACTIVE:
                raise _refuse(Outcome.MERCHANT_INACTIVE, merchant_code=code)
            fee, payer = await self.payment_fee(conn, m, amount)
            legs = [Leg(w.id, m.id, amount, "payment")]
            if fee:
                legs.append(Leg(m.id if payer == "merchant" else w.id, self.system["fee_income"], fee, "fee"))
            req = OperationRequest(key=key, kind="payment", legs=tuple(legs), channel=channel,
                                   actor=f"msisdn:{msisdn}", account_id=w.id, counterparty_id=m.id,
                                   fee=fee if payer == "subscriber" else 0, memo=reference,
                                   details={"merchant_fee": fee if payer == "merchant" else 0})
            return req, {"merchant_code": code, "merchant_name": self.merchant_display(code, m.name, lang)}
        return await self._guarded_payment(msisdn, pin, amount, build, key=key, channel=channel, action="pay",
                                           after_book=after_book)

    async def preview_send(self, msisdn: str, to_msisdn: str, amount: int) -> Result:
        msisdn = self._norm(msisdn)
        try:
            to = self._norm(to_msisdn)
        except MsisdnError:
            return Result(Outcome.INVALID_NUMBER)
        if to == msisdn:
            return Result(Outcome.SELF_TRANSFER)

        async def q(conn):
            w = await self._wallet(conn, msisdn)
            await self._refuse_before_pin_change(conn, w)
            r = await acct.find_wallet(conn, to)
            if r is None or r.status != ACTIVE:
                return Result(Outcome.UNKNOWN_RECIPIENT, params={"counterparty": _masked_local(to)})
            withdrawable = max(0, w.balance - w.pending_out - w.consumption)
            if w.balance - w.pending_out < amount:
                return Result(Outcome.INSUFFICIENT_FUNDS, balance=w.balance - w.pending_out)
            if withdrawable < amount:
                return Result(Outcome.NOT_WITHDRAWABLE, params={"withdrawable": withdrawable})
            return Result(Outcome.PIN_REQUIRED, amount=amount,
                          params={"action": "send", "counterparty": _masked_local(to)})
        return await self._query(q)

    async def send(self, msisdn: str, to_msisdn: str, amount: int, pin: str | None, *, channel: str,
                   key: str | None = None) -> Result:
        """P2P: withdrawable funds only (never consumption-only credit-card money)."""
        msisdn = self._norm(msisdn)
        try:
            to = self._norm(to_msisdn)
        except MsisdnError:
            return Result(Outcome.INVALID_NUMBER)
        if to == msisdn:
            return Result(Outcome.SELF_TRANSFER)
        key = self._key(key, "p2p")

        async def build(conn, w):
            r = await acct.find_wallet(conn, to)
            if r is None or r.status != ACTIVE:
                raise _refuse(Outcome.UNKNOWN_RECIPIENT, counterparty=_masked_local(to))
            fee, _ = self.settings.fee("p2p", amount)
            legs = [Leg(w.id, r.id, amount, "p2p", withdraw=True)]
            if fee:
                legs.append(Leg(w.id, self.system["fee_income"], fee, "fee"))
            req = OperationRequest(key=key, kind="p2p", legs=tuple(legs), channel=channel, actor=f"msisdn:{msisdn}",
                                   account_id=w.id, counterparty_id=r.id, fee=fee)
            return req, {"counterparty": _masked_local(to), "recipient": to}
        booked: list[OperationRecord] = []
        result = await self._guarded_payment(msisdn, pin, amount, build, key=key, channel=channel, action="send",
                                             booked=booked)
        if result.outcome is Outcome.OK and not booked[-1].replayed:
            # the recipient's balance as the commit left it: no second read
            received = booked[-1].balance_of(booked[-1].counterparty_id)
            await self._notify(to, Result(Outcome.OK, ref=result.ref, amount=amount,
                                          balance=received.available if received else None,
                                          params={"action": "receive", "counterparty": _masked_local(msisdn)}))
        return result

    async def airtime(self, msisdn: str, amount: int, pin: str | None, *, channel: str, key: str | None = None,
                      for_msisdn: str | None = None) -> Result:
        msisdn = self._norm(msisdn)
        try:
            target = self._norm(for_msisdn) if for_msisdn else msisdn
        except MsisdnError:
            return Result(Outcome.INVALID_NUMBER)
        key = self._key(key, "airtime")

        async def build(conn, w):
            # the airtime SP's merchant account (the carrier's top-up system), or
            # the platform's own airtime sales account where no SP is configured
            sp = await self.airtime_sp(conn)
            credit = sp.account_id if sp is not None else self.system["airtime"]
            req = OperationRequest(key=key, kind="airtime", legs=(Leg(w.id, credit, amount, "airtime"),),
                                   channel=channel, actor=f"msisdn:{msisdn}", account_id=w.id,
                                   counterparty_id=sp.account_id if sp is not None else None,
                                   details={"for": target})
            return req, {"counterparty": _masked_local(target)}

        async def ordered(conn, rec, case):
            if case != risk_screen.HELD:     # a held one is ordered when released (risk_review)
                await self.order_airtime(conn, rec, target)
        return await self._guarded_payment(msisdn, pin, amount, build, key=key, channel=channel, action="airtime",
                                           after_book=ordered)

    # ------------------------------------------------------------ bank

    async def topup(self, msisdn: str, amount: int, *, channel: str, key: str | None = None,
                    pin: str | None = None, require_pin: bool = False) -> Result:
        """CZ: pending credit, bank debit of the bound card, post or void.
        Credit-card money is consumption-only."""
        def legs(w, card):
            return [Leg(self.system["bank_settlement"], w.id, amount, "topup",
                        consumption_credit=card.card_type == "credit")], 0
        return await self._card_operation(
            msisdn, amount, key=self._key(key, "topup"), kind="topup", action="topup", channel=channel,
            pin=pin if require_pin else None, check_pin=require_pin, check_limits=False, debit_card_only=False,
            legs=legs, bank_call=lambda k, card: self.bank.debit_card(operation_key=k, card=card, amount=amount))

    async def withdraw(self, msisdn: str, amount: int, pin: str | None, *, channel: str,
                       key: str | None = None) -> Result:
        """TX: pending debit of withdrawable funds, bank credit to a debit card."""
        def legs(w, card):
            fee, _ = self.settings.fee("withdrawal", amount)
            out = [Leg(w.id, self.system["bank_settlement"], amount, "withdrawal", withdraw=True)]
            if fee:
                out.append(Leg(w.id, self.system["fee_income"], fee, "fee"))
            return out, fee
        return await self._card_operation(
            msisdn, amount, key=self._key(key, "withdraw"), kind="withdrawal", action="withdraw", channel=channel,
            pin=pin, check_pin=True, check_limits=True, debit_card_only=True,
            legs=legs, bank_call=lambda k, card: self.bank.credit_card(operation_key=k, card=card, amount=amount))

    async def bind_card(self, msisdn: str, pan: str, expiry: str, *, channel: str, actor: str | None = None) -> Result:
        """Quick-pay binding after the bank verified the card (0100)."""
        msisdn = self._norm(msisdn)
        if self.bank is None:
            return Result(Outcome.BANK_UNAVAILABLE)
        w = await self.account_info(msisdn)
        if w is None:
            return Result(Outcome.NO_ACCOUNT)
        if w.status != ACTIVE:
            return Result(_STATUS_OUTCOME[w.status])
        v = await self.bank.verify_card(pan=pan, expiry=expiry, holder_msisdn=msisdn)
        if v.status is not BankStatus.APPROVED or v.card is None:
            if v.status is BankStatus.UNKNOWN or v.decline is BankDecline.ISSUER_UNAVAILABLE:
                return Result(Outcome.BANK_UNAVAILABLE, params={"action": "bind_card"})
            return Result(Outcome.BANK_DECLINED, params={"action": "bind_card",
                                                         "reason": (v.decline or BankDecline.OTHER).value})
        card = v.card

        async def job(conn):
            ww = await self._wallet(conn, msisdn)
            await acct.bind_card(conn, ww.id, token=card.token, last4=card.last4, bin=card.bin,
                                 card_type=card.card_type, bank_code=card.bank_code,
                                 actor=actor or f"msisdn:{msisdn}", channel=channel)
            return Result(Outcome.OK, params={"action": "bind_card", "last4": card.last4, "card_type": card.card_type})
        return await self._run(job)

    async def unbind_card(self, msisdn: str, *, channel: str, actor: str | None = None) -> Result:
        msisdn = self._norm(msisdn)

        async def job(conn):
            w = await self._wallet(conn, msisdn, need_active=False)
            if not await acct.unbind_card(conn, w.id, actor=actor or f"msisdn:{msisdn}", channel=channel):
                raise _refuse(Outcome.NO_CARD)
            return Result(Outcome.OK, params={"action": "unbind_card"})
        return await self._run(job)

    # ------------------------------------------------------------ PIN and state

    async def pin_change_required(self, msisdn: str) -> bool:
        """The account's PIN is an initial or reset one (see _check_pin)."""
        msisdn = self._norm(msisdn)

        async def q(conn):
            w = await acct.find_wallet(conn, msisdn)
            cred = await acct.get_credentials(conn, w.id) if w is not None else None
            return bool(cred is not None and cred.must_change)
        return await self.ledger.read(q)

    async def change_pin(self, msisdn: str, old_pin: str, new_pin: str, *, channel: str) -> Result:
        msisdn = self._norm(msisdn)
        if not is_pin_format(new_pin) or is_weak_pin(new_pin):
            return Result(Outcome.PIN_FORMAT, params={"weak": is_pin_format(new_pin)})

        async def job(conn):
            w = await self._wallet(conn, msisdn, need_active=False)
            if w.status in (PENDING, CLOSED):
                raise _refuse(_STATUS_OUTCOME[w.status])
            await self._check_pin(conn, w, old_pin, before_change=True, channel=channel)
            await acct.set_credentials(conn, w.id, pin_hash=self.pins.hash(w.id, new_pin), must_change=False)
            await acct.audit(conn, actor=f"msisdn:{msisdn}", channel=channel, action="pin_changed", account_id=w.id)
            return Result(Outcome.OK, params={"action": "change_pin"})
        return await self._run_keeping(job)

    async def verify_password(self, msisdn: str, password: str) -> bool:
        """Web login check (argon2id)."""
        w = await self.account_info(msisdn)
        if w is None or w.status == CLOSED:
            return False
        cred = await self.ledger.read(lambda conn: acct.get_credentials(conn, w.id))
        return await self.passwords.verify(cred.password_hash if cred else None, password)

    async def freeze(self, msisdn: str, *, channel: str, actor: str | None = None) -> Result:
        """DJ: immediate, no PIN (a lost phone must be stoppable). A spoofed
        sender could freeze a victim again after every JD: a subscriber's own
        freezes are audited with their channel and bounded per number and
        local day; one over the bound is refused, audited and alerted (the
        owner of a lost phone can always have an agent freeze it)."""
        if actor is not None:
            return await self._transition(msisdn, "freeze", channel=channel, actor=actor)
        try:
            msisdn = self._norm(msisdn)
        except MsisdnError:
            return Result(Outcome.INVALID_NUMBER)
        bound = self.settings.self_freezes_per_day

        async def job(conn):
            w = await self._wallet(conn, msisdn, need_active=False)
            if w.status == ACTIVE:
                today = business_time.day_start(self.clock(), self.tz)
                done = await acct.count_audits(conn, w.id, "freeze", since=today,
                                               actor=f"msisdn:{msisdn}")
                if done >= bound:
                    await acct.audit(conn, actor=f"msisdn:{msisdn}", channel=channel, action="security_alert",
                                     account_id=w.id, reason="freeze_rate", freezes_today=done)
                    return Result(Outcome.FREEZE_LIMIT, params={"limit": bound})
            try:
                await acct.transition(conn, w, "freeze", actor=f"msisdn:{msisdn}", channel=channel)
            except acct.TransitionError as e:
                raise _refuse(_STATUS_OUTCOME.get(e.status, Outcome.ACCOUNT_FROZEN))
            return Result(Outcome.OK, balance=w.balance - w.pending_out, params={"action": "freeze"})
        return await self._run(job)

    async def unfreeze(self, msisdn: str, pin: str | None, *, channel: str) -> Result:
        """JD: needs the PIN."""
        msisdn = self._norm(msisdn)

        async def job(conn):
            w = await self._wallet(conn, msisdn, need_active=False)
            if w.status != FROZEN:
                raise _refuse(Outcome.ALREADY_ACTIVE if w.status == ACTIVE else _STATUS_OUTCOME[w.status])
            await self._check_pin(conn, w, pin, before_change=True, channel=channel)
            await acct.transition(conn, w, "unfreeze", actor=f"msisdn:{msisdn}", channel=channel)
            return Result(Outcome.OK, balance=w.balance - w.pending_out, params={"action": "unfreeze"})
        return await self._run_keeping(job)

    async def close(self, msisdn: str, pin: str | None, *, channel: str, key: str | None = None) -> Result:
        """XH: the balance goes back to the bound card first, then the
        account closes. Nothing is closed while money is in flight."""
        msisdn = self._norm(msisdn)
        key = self._key(key, "close")
        card_holder: list[CardRef] = []

        async def job(conn):
            w = await self._wallet(conn, msisdn, need_active=False)
            if w.status not in (ACTIVE, FROZEN):
                raise _refuse(_STATUS_OUTCOME[w.status])
            await self._check_pin(conn, w, pin, channel=channel)
            if w.pending_out or w.pending_in:
                raise _refuse(Outcome.BALANCE_NOT_ZERO, reason="in_flight")
            if w.balance == 0:
                await acct.transition(conn, w, "close", actor=f"msisdn:{msisdn}", channel=channel)
                return Result(Outcome.OK, amount=0, balance=0, params={"action": "close"})
            if w.status != ACTIVE:
                raise _refuse(Outcome.ACCOUNT_FROZEN)
            card = await acct.active_card(conn, w.id)
            if card is None:
                raise _refuse(Outcome.NO_CARD)
            card_holder.append(CardRef(card.token, card.last4, card.bin, card.card_type, card.bank_code))
            rec = await self.ledger.book(conn, OperationRequest(
                key=key, kind="close_refund", pending=True, channel=channel, actor=f"msisdn:{msisdn}",
                account_id=w.id,
                # as TX: consumption-only money never leaves to a card, so the close
                # waits (refused, the money stays spendable) until it is spent
                legs=(Leg(w.id, self.system["bank_settlement"], w.balance, "close_refund", withdraw=True),)))
            return Result(Outcome.IN_PROGRESS, ref=rec.ref, amount=rec.amount, params={"action": "close"})
        booked = await self._run_keeping(job)
        if booked.outcome is not Outcome.IN_PROGRESS or not card_holder:
            return booked
        if self.bank is None:
            await self.ledger.void(key)
            return Result(Outcome.BANK_UNAVAILABLE, params={"action": "close"})
        answer = await self.bank.credit_card(operation_key=key, card=card_holder[0], amount=booked.amount)
        result = await self._bank_outcome("close", key, msisdn, answer)
        if result.outcome is Outcome.OK:
            try:
                return await self._finish_close(msisdn, channel, result)
            except Exception as exc:   # the money is on the card: that is the answer; XH again closes
                log.warn("close of {msisdn} paid {ref} but the account stays open: {err}", msisdn=mask(msisdn),
                         ref=result.ref, err=type(exc).__name__)
        return result

    async def _finish_close(self, msisdn: str, channel: str, paid: Result) -> Result:
        async def job(conn):
            w = await self._wallet(conn, msisdn, need_active=False)
            if w.balance == 0 and not w.pending_out and not w.pending_in:
                await acct.transition(conn, w, "close", actor=f"msisdn:{msisdn}", channel=channel)
            return Result(Outcome.OK, ref=paid.ref, amount=paid.amount, balance=0, params={"action": "close"})
        return await self._run(job)

    async def set_language(self, msisdn: str, language: str) -> Result:
        msisdn = self._norm(msisdn)
        if language not in ("zh", "en"):
            return Result(Outcome.MALFORMED, params={"usage": "lang"})

        async def job(conn):
            w = await acct.find_wallet(conn, msisdn)
            if w is not None:
                await conn.execute(accounts.update().where(accounts.c.id == w.id).values(language=language))
            return Result(Outcome.OK, params={"action": "lang", "lang": language})
        return await self._run(job)

    async def request_callback(self, msisdn: str, *, channel: str) -> Result:
        """HJ, or the menu's "call me back": the request is a row the switch
        component dials from (see telecom_pay.callbacks). No account is
        needed (a caller without one may want to be talked through opening
        it); a number with a request on its way gets the same answer and no
        second call; more than the day's bound is refused."""
        try:
            msisdn = self._norm(msisdn)
        except MsisdnError:
            return Result(Outcome.INVALID_NUMBER)
        done = await self.callbacks.request(msisdn, via=channel)
        if done.status == "limit":
            return Result(Outcome.CALLBACK_LIMIT, params={"limit": self.callbacks.policy.per_day})
        return Result(Outcome.OK, params={"action": "callback", "already": done.status == "open",
                                          "callback_id": done.callback_id})
