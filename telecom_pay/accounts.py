"""Account lifecycle on the ledger's tables: pending (KT sent, awaiting A)
-> active -> frozen <-> active -> closed, plus the operator events (number
change, ownership transfer, number cancellation) and the audit log.

These are connection-level steps run inside a ledger write job, so a
lifecycle change and its audit record commit together.
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from telecom_pay.ledger.chart import insert_account
from telecom_pay.ledger.ledger import utcnow
from telecom_pay.ledger.tables import (
    ACTIVE, AGENT, CLOSED, FROZEN, MERCHANT, PENDING, WALLET, accounts, audit_log, cards, credentials,
    operations)

LIFECYCLE = {
    # action: (allowed from, to)
    "confirm": ({PENDING}, ACTIVE),
    "freeze": ({ACTIVE}, FROZEN),
    "unfreeze": ({FROZEN}, ACTIVE),
    "close": ({ACTIVE, FROZEN, PENDING}, CLOSED),
    "cancel_number": ({ACTIVE, FROZEN}, FROZEN),
}


class TransitionError(Exception):
    def __init__(self, action: str, status: str):
        super().__init__(f"cannot {action} an account that is {status}")
        self.action, self.status = action, status


async def audit(conn, *, actor: str, channel: str, action: str, account_id: int | None, **details) -> None:
    await conn.execute(audit_log.insert().values(at=utcnow(), actor=actor, channel=channel, action=action,
                                                 account_id=account_id, details=details))


async def find_wallet(conn, msisdn: str, *, lock: bool = False):
    q = sa.select(accounts).where(accounts.c.kind == WALLET, accounts.c.msisdn == msisdn,
                                  accounts.c.status != CLOSED)
    if lock and conn.dialect.name != "sqlite":
        q = q.with_for_update()
    return (await conn.execute(q)).first()


async def find_by_code(conn, kind: str, code: str):
    return (await conn.execute(sa.select(accounts).where(accounts.c.kind == kind, accounts.c.code == code))).first()


async def find_merchant(conn, code: str):
    return await find_by_code(conn, MERCHANT, code)


async def find_agent(conn, code: str):
    return await find_by_code(conn, AGENT, code)


async def get_account(conn, account_id: int):
    return (await conn.execute(sa.select(accounts).where(accounts.c.id == account_id))).first()


async def create_pending_wallet(conn, msisdn: str, *, language: str, expires_at: datetime, actor: str,
                                channel: str) -> int:
    account_id = await insert_account(conn, kind=WALLET, status=PENDING, msisdn=msisdn, language=language,
                                      expires_at=expires_at)
    await audit(conn, actor=actor, channel=channel, action="open_requested", account_id=account_id)
    return account_id


async def create_active_wallet(conn, msisdn: str, *, language: str, actor: str, channel: str,
                               holder_name: str | None = None, id_type: str | None = None,
                               id_number: str | None = None, kyc_tier: int = 1) -> int:
    account_id = await insert_account(conn, kind=WALLET, status=ACTIVE, msisdn=msisdn, language=language,
                                      holder_name=holder_name, id_type=id_type, id_number=id_number,
                                      kyc_tier=kyc_tier)
    await audit(conn, actor=actor, channel=channel, action="opened", account_id=account_id,
                kyc_tier=kyc_tier, with_id=bool(id_number))
    return account_id


async def transition(conn, account, action: str, *, actor: str, channel: str, **details) -> str:
    allowed, target = LIFECYCLE[action]
    if account.status not in allowed:
        raise TransitionError(action, account.status)
    now = utcnow()
    values = {"status": target, "updated_at": now}
    if target == CLOSED:
        values["closed_at"] = now
    if action == "confirm":
        values["expires_at"] = None
    await conn.execute(accounts.update().where(accounts.c.id == account.id).values(**values))
    await audit(conn, actor=actor, channel=channel, action=action, account_id=account.id,
                **{"from": account.status, "to": target, **details})
    return target


async def set_credentials(conn, account_id: int, *, pin_hash: str | None = None,
                          password_hash: str | None = None, must_change: bool = True) -> None:
    now = utcnow()
    values = {"pin_failures": 0, "pin_locked_until": None, "must_change": must_change, "updated_at": now}
    if pin_hash is not None:
        values["pin_hash"] = pin_hash
    if password_hash is not None:
        values["password_hash"] = password_hash
    exists = (await conn.execute(sa.select(credentials.c.account_id)
                                 .where(credentials.c.account_id == account_id))).first()
    if exists:
        await conn.execute(credentials.update().where(credentials.c.account_id == account_id).values(**values))
    else:
        await conn.execute(credentials.insert().values(account_id=account_id, **values))


async def get_credentials(conn, account_id: int):
    return (await conn.execute(sa.select(credentials).where(credentials.c.account_id == account_id))).first()


async def record_pin_attempt(conn, account_id: int, *, ok: bool, max_failures: int,
                             lock_until: datetime) -> int:
    """Returns the failure count after this attempt (0 on success)."""
    cred = await get_credentials(conn, account_id)
    failures = 0 if ok else (cred.pin_failures if cred else 0) + 1
    values = {"pin_failures": failures, "updated_at": utcnow()}
    if ok:
        values["pin_locked_until"] = None
    elif failures >= max_failures:
        values["pin_locked_until"] = lock_until
    await conn.execute(credentials.update().where(credentials.c.account_id == account_id).values(**values))
    return failures


async def active_card(conn, account_id: int):
    return (await conn.execute(sa.select(cards).where(cards.c.account_id == account_id,
                                                      cards.c.status == "active"))).first()


async def bind_card(conn, account_id: int, *, token: str, last4: str, bin: str, card_type: str,
                    bank_code: str, actor: str, channel: str) -> int:
    """Binds a verified card, replacing (unbinding) any card bound before."""
    now = utcnow()
    old = await active_card(conn, account_id)
    if old is not None:
        await conn.execute(cards.update().where(cards.c.id == old.id).values(status="unbound", unbound_at=now))
    card_id = (await conn.execute(cards.insert().values(
        account_id=account_id, token=token, last4=last4, bin=bin, card_type=card_type, bank_code=bank_code,
        status="active", bound_at=now).returning(cards.c.id))).scalar_one()
    await audit(conn, actor=actor, channel=channel, action="card_bound" if old is None else "card_changed",
                account_id=account_id, last4=last4, card_type=card_type, bank_code=bank_code)
    return card_id


async def unbind_card(conn, account_id: int, *, actor: str, channel: str) -> bool:
    old = await active_card(conn, account_id)
    if old is None:
        return False
    await conn.execute(cards.update().where(cards.c.id == old.id).values(status="unbound", unbound_at=utcnow()))
    await audit(conn, actor=actor, channel=channel, action="card_unbound", account_id=account_id, last4=old.last4)
    return True


SPENDING_KINDS = ("payment", "p2p", "withdrawal", "airtime")


async def spent_since(conn, account_id: int, day: datetime, month: datetime) -> tuple[int, int]:
    """What the account spent (payments, P2P, withdrawals, airtime; pending
    included, voided not) since the start of the day and of the month: the
    base of the daily and monthly limits, in one query."""
    o = operations.c
    q = sa.select(
        sa.func.coalesce(sa.func.sum(sa.case((o.created_at >= day, o.amount), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(o.amount), 0),
    ).where(o.account_id == account_id, o.kind.in_(SPENDING_KINDS), o.state != "voided", o.created_at >= month)
    day_total, month_total = (await conn.execute(q)).one()
    return int(day_total), int(month_total)
