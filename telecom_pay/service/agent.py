"""What call-center and business-hall agents do for a subscriber in front
of them or on the line. Each operation first checks that the agent is known
and active, and acts as `agent:<code>` on channel `agent`, so the audit trail
names who did it; even a look-up is audited (`_agent_read`). A PIN or
password an agent's act issues goes to the subscriber by SMS, never to the
agent.
"""
from __future__ import annotations

from datetime import timedelta

from telecom_pay import accounts as acct
from telecom_pay.ledger.chart import insert_account
from telecom_pay.ledger.ledger import Leg, OperationRequest, utcnow
from telecom_pay.ledger.tables import ACTIVE, AGENT, CLOSED, PENDING, accounts
from telecom_pay.msisdn import MsisdnError
from telecom_pay.notices import queue_notice
from telecom_pay.outcomes import Outcome, Result
from telecom_pay.security import generate_password, generate_pin

from .base import ServiceCore, _STATUS_OUTCOME, _refuse


class AgentOperations(ServiceCore):
    """Operations an agent runs for a subscriber."""

    # ------------------------------------------------------------ agents

    async def register_agent(self, code: str, name: str) -> int:
        async def job(conn):
            row = await acct.find_agent(conn, code)
            if row is not None:
                return row.id
            aid = await insert_account(conn, kind=AGENT, code=code, name=name)
            await acct.audit(conn, actor="admin", channel="config", action="agent_registered",
                             account_id=aid, code=code)
            return aid
        return await self.ledger.write(job)

    async def _agent(self, conn, agent_code: str):
        a = await acct.find_agent(conn, agent_code)
        if a is None or a.status != ACTIVE:
            raise _refuse(Outcome.NOT_AUTHORIZED)
        return a

    async def agent_authorized(self, agent_code: str) -> bool:
        a = await self.ledger.read(lambda conn: acct.find_agent(conn, agent_code))
        return a is not None and a.status == ACTIVE

    async def _as_agent(self, agent_code: str, fn) -> Result:
        if not await self.agent_authorized(agent_code):
            return Result(Outcome.NOT_AUTHORIZED)
        return await fn()

    # ------------------------------------------------------------ opening and cash

    async def agent_open(self, agent_code: str, msisdn: str, *, holder_name: str, id_type: str, id_number: str,
                         language: str | None = None, kyc_tier: int = 2) -> Result:
        """A call-center or counter agent opens an account for a caller with
        ID data, in the call-center flow: the platform texts the agreement
        (the KT reply), the subscriber confirms with A and then receives the
        initial PIN and password by SMS. The agent sees neither."""
        try:
            msisdn = self._norm(msisdn)
        except MsisdnError:
            return Result(Outcome.INVALID_NUMBER)
        lang = language or self.settings.default_language
        ttl = self.settings.confirm_minutes

        async def job(conn):
            await self._agent(conn, agent_code)
            w = await acct.find_wallet(conn, msisdn)
            if w is not None and w.status != PENDING:
                raise _refuse(Outcome.ACCOUNT_EXISTS, status=w.status)
            if w is not None:
                await acct.transition(conn, w, "close", actor=f"agent:{agent_code}", channel="agent",
                                      reason="replaced by agent opening")
            wid = await acct.create_pending_wallet(
                conn, msisdn, language=lang, expires_at=self.clock() + timedelta(minutes=ttl),
                actor=f"agent:{agent_code}", channel="agent", holder_name=holder_name, id_type=id_type,
                id_number=id_number, kyc_tier=kyc_tier)
            await queue_notice(conn, msisdn, lang, Result(Outcome.CONFIRM_REQUIRED, params={
                "action": "open", "ttl_minutes": ttl}), key=f"agent_open:{wid}")
            return Result(Outcome.OK, params={"action": "sms_sent", "what": "agreement", "msisdn": msisdn})
        return await self._run(job)

    async def cash_in(self, agent_code: str, msisdn: str, amount: int, *, key: str | None = None) -> Result:
        """Cash at a business-hall counter: the agent's float pays the wallet."""
        try:
            msisdn = self._norm(msisdn)
        except MsisdnError:
            return Result(Outcome.INVALID_NUMBER)
        if amount <= 0:
            return Result(Outcome.INVALID_AMOUNT)
        key = self._key(key, "cashin")

        async def job(conn):
            agent = await self._agent(conn, agent_code)
            w = await self._wallet(conn, msisdn)
            rec = await self.ledger.book(conn, OperationRequest(
                key=key, kind="cash_in", legs=(Leg(agent.id, w.id, amount, "cash_in"),), channel="agent",
                actor=f"agent:{agent_code}", account_id=w.id, counterparty_id=agent.id))
            if not rec.replayed:
                await queue_notice(conn, msisdn, w.language, self._money_result("cash_in", rec, w.id), key=key)
            return self._money_result("cash_in", rec, w.id, agent_balance=rec.balance_of(agent.id).available)
        return await self._run(job)

    # ------------------------------------------------------------ looking at a subscriber

    async def agent_balance(self, agent_code: str, msisdn: str) -> Result:
        """A subscriber's balance read by an agent: audited (who looked, when)."""
        return await self._agent_read(agent_code, msisdn, "balance", lambda: self.balance(msisdn, channel="agent"))

    async def agent_statement(self, agent_code: str, msisdn: str, *, page: int = 1, lang: str = "zh") -> Result:
        return await self._agent_read(agent_code, msisdn, "statement", lambda: self.statement(
            msisdn, channel="agent", page=page, lang=lang))

    SECURITY_EVENTS = ("pin_wrong", "pin_locked", "freeze", "unfreeze", "security_alert", "pin_reset",
                       "pin_changed")

    async def agent_security_log(self, agent_code: str, msisdn: str, *, limit: int = 50) -> Result:
        """What a caller's account went through (wrong PINs, lockouts,
        freezes, alerts) with channel and actor, newest first: how an agent
        recognises a spoofed sender keeping the account frozen or locked."""
        async def read():
            async def q(conn):
                w = await acct.find_wallet(conn, self._norm(msisdn))
                if w is None:
                    return Result(Outcome.NO_ACCOUNT)
                events = await acct.recent_audits(conn, w.id, self.SECURITY_EVENTS, limit=limit)
                return Result(Outcome.OK, params={"action": "security_log", "events": events})
            return await self.ledger.read(q)
        return await self._agent_read(agent_code, msisdn, "security_log", read)

    async def _agent_read(self, agent_code: str, msisdn: str, what: str, read) -> Result:
        try:
            msisdn = self._norm(msisdn)
        except MsisdnError:
            return Result(Outcome.INVALID_NUMBER)

        async def job(conn):
            await self._agent(conn, agent_code)
            w = await acct.find_wallet(conn, msisdn)
            await acct.audit(conn, actor=f"agent:{agent_code}", channel="agent", action="agent_read",
                             account_id=w.id if w is not None else None, what=what)
            return Result(Outcome.OK)
        allowed = await self._run(job)
        return await read() if allowed.ok else allowed

    # ------------------------------------------------------------ acting for a subscriber

    async def agent_freeze(self, agent_code: str, msisdn: str) -> Result:
        return await self._as_agent(agent_code, lambda: self._transition(
            msisdn, "freeze", channel="agent", actor=f"agent:{agent_code}", notice=True))

    async def agent_unfreeze(self, agent_code: str, msisdn: str) -> Result:
        return await self._as_agent(agent_code, lambda: self._transition(
            msisdn, "unfreeze", channel="agent", actor=f"agent:{agent_code}", notice=True))

    async def reset_pin(self, agent_code: str, msisdn: str) -> Result:
        """Agent reset: a new random PIN, the lock lifted; the PIN goes to the
        phone by SMS (never to the agent) and must be changed before use."""
        try:
            msisdn = self._norm(msisdn)
        except MsisdnError:
            return Result(Outcome.INVALID_NUMBER)
        pin = generate_pin()

        async def job(conn):
            await self._agent(conn, agent_code)
            w = await self._wallet(conn, msisdn, need_active=False)
            if w.status in (PENDING, CLOSED):
                raise _refuse(_STATUS_OUTCOME[w.status])
            await acct.set_credentials(conn, w.id, pin_hash=self.pins.hash(w.id, pin), must_change=True)
            await acct.audit(conn, actor=f"agent:{agent_code}", channel="agent", action="pin_reset", account_id=w.id)
            await queue_notice(conn, msisdn, w.language, Result(Outcome.OK, params={"action": "pin_reset", "pin": pin}),
                               secret=True)
            return Result(Outcome.OK, params={"action": "sms_sent", "what": "pin", "msisdn": msisdn})
        return await self._run(job)

    async def set_kyc_tier(self, agent_code: str, msisdn: str, tier: int) -> Result:
        if tier not in self.settings.limits:
            return Result(Outcome.MALFORMED, params={"usage": "kyc"})
        msisdn = self._norm(msisdn)

        async def job(conn):
            await self._agent(conn, agent_code)
            w = await self._wallet(conn, msisdn, need_active=False)
            await conn.execute(accounts.update().where(accounts.c.id == w.id).values(kyc_tier=tier))
            await acct.audit(conn, actor=f"agent:{agent_code}", channel="agent", action="kyc_tier", account_id=w.id,
                             **{"from": w.kyc_tier, "to": tier})
            return Result(Outcome.OK, params={"action": "kyc_tier", "tier": tier})
        return await self._run(job)

    # ------------------------------------------------------------ operator events on a number

    async def change_number(self, agent_code: str, old_msisdn: str, new_msisdn: str) -> Result:
        """Operator event: the account moves to the subscriber's new number."""
        try:
            old, new = self._norm(old_msisdn), self._norm(new_msisdn)
        except MsisdnError:
            return Result(Outcome.INVALID_NUMBER)

        async def job(conn):
            await self._agent(conn, agent_code)
            w = await self._wallet(conn, old, need_active=False)
            if await acct.find_wallet(conn, new) is not None:
                raise _refuse(Outcome.ACCOUNT_EXISTS)
            await conn.execute(accounts.update().where(accounts.c.id == w.id).values(msisdn=new, updated_at=utcnow()))
            await acct.audit(conn, actor=f"agent:{agent_code}", channel="agent", action="number_change",
                             account_id=w.id, **{"from": old, "to": new})
            moved = Result(Outcome.OK, params={"action": "number_change", "msisdn": new})
            for number in (old, new):
                await queue_notice(conn, number, w.language, moved)
            return moved
        return await self._run(job)

    async def transfer_ownership(self, agent_code: str, msisdn: str, *, holder_name: str, id_type: str,
                                 id_number: str) -> Result:
        """Operator event: the number has a new holder. The old account is
        closed; its balance is held in suspense for refund to the old holder
        (never handed to the new one); a new account opens for the holder."""
        msisdn = self._norm(msisdn)
        pin, password = generate_pin(), generate_password()
        pw_hash = await self.passwords.hash(password)

        async def job(conn):
            await self._agent(conn, agent_code)
            w = await self._wallet(conn, msisdn, need_active=False)
            if w.pending_out or w.pending_in:
                raise _refuse(Outcome.BALANCE_NOT_ZERO, reason="in_flight")
            held = None
            if w.balance:
                if w.status != ACTIVE:
                    await conn.execute(accounts.update().where(accounts.c.id == w.id).values(status=ACTIVE))
                held = await self.ledger.book(conn, OperationRequest(
                    key=f"ownership:{w.id}", kind="ownership_hold", channel="agent", actor=f"agent:{agent_code}",
                    account_id=w.id, legs=(Leg(w.id, self.system["suspense"], w.balance, "ownership_hold"),),
                    details={"previous_holder": w.holder_name or "", "msisdn": msisdn}))
                w = await acct.get_account(conn, w.id)
            await acct.transition(conn, w, "close", actor=f"agent:{agent_code}", channel="agent",
                                  reason="ownership transfer", held_ref=held.ref if held else None)
            wid = await acct.create_active_wallet(conn, msisdn, language=w.language, actor=f"agent:{agent_code}",
                                                  channel="agent", holder_name=holder_name, id_type=id_type,
                                                  id_number=id_number, kyc_tier=2)
            await acct.set_credentials(conn, wid, pin_hash=self.pins.hash(wid, pin), password_hash=pw_hash)
            await queue_notice(conn, msisdn, w.language, Result(Outcome.OK, balance=0, params={
                "action": "confirm_open", "pin": pin, "password": password}), secret=True)
            return Result(Outcome.OK, ref=held.ref if held else None, amount=held.amount if held else 0, balance=0,
                          params={"action": "ownership_transfer", "msisdn": msisdn,
                                  "held": held.amount if held else 0})
        return await self._run(job)

    async def cancel_number(self, agent_code: str, msisdn: str) -> Result:
        """Operator event: the number is cancelled; the account is frozen and
        its balance kept for refund."""
        msisdn = self._norm(msisdn)

        async def job(conn):
            await self._agent(conn, agent_code)
            w = await self._wallet(conn, msisdn, need_active=False)
            try:
                await acct.transition(conn, w, "cancel_number", actor=f"agent:{agent_code}", channel="agent")
            except acct.TransitionError as e:
                raise _refuse(_STATUS_OUTCOME.get(e.status, Outcome.ACCOUNT_FROZEN))
            return Result(Outcome.OK, balance=w.balance - w.pending_out, params={"action": "cancel_number"})
        return await self._run(job)
