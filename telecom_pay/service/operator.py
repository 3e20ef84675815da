"""What operations staff and the platform's own recovery run: agent float
funding (bounded and audited: it becomes wallet money), the resolution of
bank operations left in doubt, and the check of the books.
"""
from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from telecom_pay import accounts as acct
from telecom_pay import business_time
from telecom_pay.ledger.ledger import AlreadyResolved, Leg, OperationRecord, OperationRequest, UnknownOperation
from telecom_pay.ledger.tables import operations
from telecom_pay.outcomes import Outcome, Result

from .base import ServiceCore, _refuse, log


class OperatorOperations(ServiceCore):
    """Operations staff and recovery: float, in-doubt bank operations, books."""

    # ------------------------------------------------------------ agent float

    async def fund_agent(self, agent_code: str, amount: int, *, operator: str, key: str | None = None) -> Result:
        """An operator puts cash float on an agent's account (from `cash`):
        float is money the agent can hand out as wallet balance, so it is
        bounded per operation and per local day (config) and audited."""
        if amount <= 0:
            return Result(Outcome.INVALID_AMOUNT)
        if amount > self.settings.agent_float_max_per_operation:
            return Result(Outcome.LIMIT_PER_TXN, params={"limit": self.settings.agent_float_max_per_operation})
        key = self._key(key, "float")

        async def job(conn):
            agent = await self._agent(conn, agent_code)
            booked = (await conn.execute(sa.select(operations.c.id).where(
                operations.c.idempotency_key == key))).first()
            if booked is None:                    # a replay returns the original, bound or not
                today = await acct.funded_since(conn, agent.id, business_time.day_start(self.clock(), self.tz))
                if today + amount > self.settings.agent_float_max_per_day:
                    raise _refuse(Outcome.LIMIT_DAILY, limit=self.settings.agent_float_max_per_day)
            rec = await self.ledger.book(conn, OperationRequest(
                key=key, kind="agent_float", legs=(Leg(self.system["cash"], agent.id, amount, "agent_float"),),
                channel="operator", actor=f"operator:{operator}", account_id=agent.id))
            if not rec.replayed:
                await acct.audit(conn, actor=f"operator:{operator}", channel="operator", action="agent_funded",
                                 account_id=agent.id, amount=amount, ref=rec.ref)
            return self._money_result("agent_float", rec, agent.id)
        return await self._run(job)

    # ------------------------------------------------------------ bank recovery and in-doubt resolution

    async def resolve_in_doubt(self, operation_key: str, approved: bool) -> None:
        """The bank's answer to an operation is known at last (the bridge's
        reversal, an operator's decision, or start-up recovery): post or void
        it, and let a payout's batch follow. Idempotent: told again, it
        changes nothing and tells the subscriber nothing new."""
        try:
            rec = await (self.ledger.post(operation_key) if approved else self.ledger.void(operation_key))
        except (UnknownOperation, AlreadyResolved) as exc:
            log.warn("in-doubt resolution of {key} ignored: {exc}", key=operation_key, exc=exc)
            if isinstance(exc, AlreadyResolved) and operation_key.startswith("settle:"):
                from telecom_pay.settlement import follow_payouts
                await follow_payouts(self, operation_key)
            return
        # The money is booked: each step that follows is best-effort on its
        # own (a batch also follows on the next settle run).
        if rec.kind == "settlement":
            from telecom_pay.settlement import follow_payouts     # settlement builds on this module
            await self._best_effort(operation_key, follow_payouts(self, rec.key))
        if not rec.replayed:
            await self._best_effort(operation_key, self._tell_resolution(rec, approved))

    @staticmethod
    async def _best_effort(key: str, step) -> None:
        try:
            await step
        except Exception as exc:
            log.warn("after resolving {key}: {err} (the booking stands)", key=key, err=type(exc).__name__)

    async def _tell_resolution(self, rec: OperationRecord, approved: bool) -> None:
        w = await self.ledger.read(lambda conn: acct.get_account(conn, rec.account_id)) if rec.account_id else None
        if w is None or w.msisdn is None:
            return
        action = {"topup": "topup", "withdrawal": "withdraw", "close_refund": "close"}.get(rec.kind, rec.kind)
        if approved:
            result = self._money_result(action, rec, rec.account_id)
            if rec.kind == "close_refund":
                result = await self._finish_close(w.msisdn, "bank", result)
            await self._notify(w.msisdn, result)
        else:
            await self._notify(w.msisdn, Result(Outcome.BANK_UNAVAILABLE, ref=rec.ref,
                                                params={"action": action, "reason": "issuer_unavailable"}))

    async def recover_bank_operations(self) -> int:
        """Finish every pending bank operation whose answer the port knows
        (telecom_pay/bank_recovery.py); run on start and by the daemon's sweep."""
        from telecom_pay.bank_recovery import recover_bank_operations
        return await recover_bank_operations(self)

    # ------------------------------------------------------------ checks

    async def check_books(self) -> list[str]:
        """The invariants, and every operation pending longer than
        `[ledger] pending_alarm_minutes` (default 30)."""
        from telecom_pay.ledger.invariants import check_invariants
        from telecom_pay.ledger.pending_alarm import stale_pending
        problems = await self.ledger.read(check_invariants)
        minutes = float(self.settings.section("ledger").get("pending_alarm_minutes", 30))
        cutoff = self.clock() - timedelta(minutes=minutes)
        return problems + await self.ledger.read(lambda conn: stale_pending(conn, cutoff))
