"""Money held in suspense after an ownership transfer, paid back to the
former holder: one supervisor asks, a second person approves, and only
then is it paid out in cash at the asking agent's counter (suspense →
the agent's float: the agent hands over cash and gets the e-money, the
mirror of a cash-in).

Four eyes because suspense money belongs to nobody on screen: the former
holder is gone from the number, so a single person could pay it to anyone.
The request and the approval are audit rows (durable, and the record
auditors read anyway); the payout's idempotency key is the held
operation's ref, so a hold is paid back at most once, whatever is
clicked twice.

A part of PaymentService (a mixin over the one ServiceCore, like the
audience parts): channels call `suspense_holds`, `request_suspense_payback`
and `approve_suspense_payback` on the façade.
"""
from __future__ import annotations

import sqlalchemy as sa

from telecom_pay import accounts as acct
from telecom_pay.ledger.ledger import InsufficientFunds, Leg, OperationRequest
from telecom_pay.ledger.tables import ACTIVE, audit_log, operations
from telecom_pay.msisdn import normalize
from telecom_pay.outcomes import Outcome, Result

from .base import ServiceCore

HOLD_KIND = "ownership_hold"
PAYBACK_KIND = "suspense_payback"
REQUESTED, APPROVED = "suspense_payback_requested", "suspense_payback_approved"


def payback_key(ref: str) -> str:
    return f"{PAYBACK_KIND}:{ref}"


class SuspenseOperations(ServiceCore):
    """Supervisors paying back what an ownership transfer held."""

    async def suspense_holds(self, msisdn: str) -> list[dict]:
        """The holds taken from former holders of this number, with their
        payback state: held | requested (by whom) | paid."""
        number = normalize(msisdn, self.settings.region)

        async def read(conn):
            holds = (await conn.execute(sa.select(operations).where(operations.c.kind == HOLD_KIND)
                                        .order_by(operations.c.id.desc()))).all()
            out = []
            for h in holds:
                details = (h.request or {}).get("details") or {}
                if details.get("msisdn") != number:
                    continue
                out.append({"ref": h.ref, "amount": h.amount, "at": h.created_at.isoformat(),
                            "previous_holder": details.get("previous_holder") or "",
                            **await self._state(conn, h.ref)})
            return out
        return await self.ledger.read(read)

    async def _state(self, conn, ref: str) -> dict:
        paid = (await conn.execute(sa.select(operations.c.ref).where(
            operations.c.idempotency_key == payback_key(ref)))).first()
        if paid is not None:
            return {"state": "paid", "payback_ref": paid.ref}
        req = await self._request(conn, ref)
        if req is not None:
            return {"state": "requested", "requested_by": req.actor, "agent_code": req.details.get("agent_code")}
        return {"state": "held"}

    async def _request(self, conn, ref: str):
        return (await conn.execute(sa.select(audit_log).where(
            audit_log.c.action == REQUESTED, audit_log.c.details["ref"].as_string() == ref)
            .order_by(audit_log.c.id.desc()).limit(1))).first()

    async def _hold(self, conn, ref: str):
        return (await conn.execute(sa.select(operations).where(
            operations.c.ref == ref, operations.c.kind == HOLD_KIND))).first()

    async def request_suspense_payback(self, ref: str, *, requested_by: str, agent_code: str, **details) -> Result:
        """The first person: asks to pay the hold `ref` out at `agent_code`'s counter."""
        async def job(conn):
            hold = await self._hold(conn, ref)
            if hold is None:
                return Result(Outcome.NOT_FOUND)
            agent = await acct.find_agent(conn, agent_code)
            if agent is None or agent.status != ACTIVE:
                return Result(Outcome.NOT_AUTHORIZED)
            state = await self._state(conn, ref)
            if state["state"] != "held":
                # paid already, or asked already (waiting for the second person)
                return Result(Outcome.NOTHING_PENDING if state["state"] == "paid" else Outcome.IDEMPOTENCY_CONFLICT,
                              params={"action": "suspense_payback", **state})
            await acct.audit(conn, actor=requested_by[:64], channel="web", action=REQUESTED,
                             account_id=hold.account_id, ref=ref, amount=hold.amount, agent_code=agent_code,
                             **details)
            return Result(Outcome.OK, ref=ref, amount=hold.amount,
                          params={"action": "suspense_payback", "state": "requested"})
        return await self.ledger.write(job)

    async def approve_suspense_payback(self, ref: str, *, approved_by: str, **details) -> Result:
        """The second person: pays the requested hold out, once. The one who
        asked cannot approve."""
        async def job(conn):
            hold = await self._hold(conn, ref)
            if hold is None:
                return Result(Outcome.NOT_FOUND)
            state = await self._state(conn, ref)
            if state["state"] == "paid":
                return Result(Outcome.NOTHING_PENDING, params={"action": "suspense_payback", **state})
            req = await self._request(conn, ref)
            if req is None:
                return Result(Outcome.NOTHING_PENDING, params={"action": "suspense_payback", "state": "held"})
            askers = (await conn.execute(sa.select(audit_log.c.actor).where(
                audit_log.c.action == REQUESTED, audit_log.c.details["ref"].as_string() == ref))).scalars().all()
            if approved_by[:64] in askers:        # whoever asked (two asking at once: either) cannot approve
                return Result(Outcome.NOT_AUTHORIZED, params={"reason": "second_person_required"})
            agent = await acct.find_agent(conn, req.details["agent_code"])
            if agent is None or agent.status != ACTIVE:
                return Result(Outcome.NOT_AUTHORIZED)
            suspense = self.system["suspense"]
            try:
                rec = await self.ledger.book(conn, OperationRequest(
                    key=payback_key(ref), kind=PAYBACK_KIND, channel="agent", actor=f"agent:{agent.code}",
                    account_id=hold.account_id, counterparty_id=agent.id, parent_id=hold.id,
                    legs=(Leg(suspense, agent.id, hold.amount, PAYBACK_KIND),),
                    details={"held_ref": ref, "requested_by": req.actor, "approved_by": approved_by[:64]}))
            except InsufficientFunds:
                return Result(Outcome.INSUFFICIENT_FUNDS)
            if rec.replayed:                      # another approval committed first
                return Result(Outcome.NOTHING_PENDING, params={"action": "suspense_payback", "state": "paid"})
            await acct.audit(conn, actor=approved_by[:64], channel="web", action=APPROVED,
                             account_id=hold.account_id, ref=ref, payback_ref=rec.ref, amount=rec.amount,
                             requested_by=req.actor, agent_code=agent.code, **details)
            return Result(Outcome.OK, ref=rec.ref, amount=rec.amount,
                          params={"action": "suspense_payback", "state": "paid"})
        return await self.ledger.write(job)

