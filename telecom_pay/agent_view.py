"""What an agent sees of one subscriber, found by number: status, balance,
the last operations, the bound card (last 4) and the account's audit
trail, in one call, and the look-up itself audited.

An agent finds a caller by the number the caller gives; there is no list
to browse, and every look-up leaves a row (which agent, as which web user
and role, from which address) so a curious agent is visible afterwards.
The audit row is written before anything is read: a look-up that could
not be recorded shows nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from telecom_pay import accounts as acct
from telecom_pay.ledger.tables import ACTIVE, audit_log, operations
from telecom_pay.msisdn import MsisdnError, mask, normalize
from telecom_pay.outcomes import Outcome, Result

LAST_OPERATIONS = 10
AUDIT_TRAIL = 30


@dataclass(frozen=True)
class Looker:
    """Who looks: the agent code acted as, and the person behind it."""
    agent_code: str
    username: str
    role: str
    address: str | None
    channel: str = "web"


async def lookup(service, msisdn: str, who: Looker) -> Result:
    """Result OK with params["subscriber"], NO_ACCOUNT, INVALID_NUMBER or
    NOT_AUTHORIZED (an unknown or inactive agent code). A look-up of a
    number without an account is audited too (the attempt is the fact)."""
    try:
        number = normalize(msisdn, service.settings.region)
    except MsisdnError:
        return Result(Outcome.INVALID_NUMBER)
    ledger = service.ledger

    async def record(conn):
        agent = await acct.find_agent(conn, who.agent_code)
        if agent is None or agent.status != ACTIVE:
            return None
        w = await acct.find_wallet(conn, number)
        await acct.audit(conn, actor=f"agent:{who.agent_code}", channel=who.channel, action="agent_lookup",
                         account_id=w.id if w is not None else None, username=who.username, role=who.role,
                         address=who.address, msisdn=mask(number), found=w is not None)
        return w.id if w is not None else 0
    account_id = await ledger.write(record)
    if account_id is None:
        return Result(Outcome.NOT_AUTHORIZED)
    if account_id == 0:
        return Result(Outcome.NO_ACCOUNT)

    async def read(conn):
        w = await acct.get_account(conn, account_id)
        card = await acct.active_card(conn, account_id)
        ops = (await conn.execute(sa.select(operations).where(operations.c.account_id == account_id)
                                  .order_by(operations.c.id.desc()).limit(LAST_OPERATIONS))).all()
        trail = (await conn.execute(sa.select(audit_log).where(audit_log.c.account_id == account_id)
                                    .order_by(audit_log.c.id.desc()).limit(AUDIT_TRAIL))).all()
        return w, card, ops, trail
    w, card, ops, trail = await ledger.read(read)
    view = {
        "msisdn": w.msisdn, "status": w.status, "holder_name": w.holder_name, "kyc_tier": w.kyc_tier,
        "language": w.language, "balance": w.balance - w.pending_out, "pending_in": w.pending_in,
        "pending_out": w.pending_out,
        "withdrawable": max(0, w.balance - w.pending_out - w.consumption),
        "opened_at": w.created_at.isoformat(),
        "expires_at": w.expires_at.isoformat() if w.expires_at else None,
        "card": {"last4": card.last4, "card_type": card.card_type, "bank_code": card.bank_code,
                 "bound_at": card.bound_at.isoformat()} if card is not None else None,
        "operations": [{"ref": o.ref, "kind": o.kind, "amount": o.amount, "fee": o.fee, "state": o.state,
                        "channel": o.channel, "at": o.created_at.isoformat()} for o in ops],
        "audit": [{"at": a.at.isoformat(), "action": a.action, "channel": a.channel, "actor": a.actor,
                   "details": a.details or {}} for a in trail],
    }
    return Result(Outcome.OK, balance=view["balance"], params={"action": "lookup", "subscriber": view})
