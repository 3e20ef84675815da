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
from telecom_pay.ledger.fastsql import Fast
from telecom_pay.ledger.ledger import utcnow
from telecom_pay.ledger.tables import (
    ACTIVE, AGENT, CLOSED, FROZEN, MERCHANT, PENDING, WALLET, Stamp, accounts, audit_log, cards, credentials,
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


# Statements built once: on the hot path, building costs more than running.
_WALLET_Q = sa.select(accounts).where(accounts.c.kind == WALLET, accounts.c.msisdn == sa.bindparam("msisdn"),
                                      accounts.c.status != CLOSED)
_WALLET = Fast(_WALLET_Q)
_WALLET_LOCKED = Fast(_WALLET_Q.with_for_update())
_BY_CODE = Fast(sa.select(accounts).where(accounts.c.kind == sa.bindparam("kind"),
                                          accounts.c.code == sa.bindparam("code")))
_BY_ID = Fast(sa.select(accounts).where(accounts.c.id == sa.bindparam("id")))


async def find_wallet(conn, msisdn: str, *, lock: bool = False):
    q = _WALLET_LOCKED if lock and conn.dialect.name != "sqlite" else _WALLET
    return await q.first(conn, msisdn=msisdn)


async def find_by_code(conn, kind: str, code: str):
    return await _BY_CODE.first(conn, kind=kind, code=code)


async def find_merchant(conn, code: str):
    return await find_by_code(conn, MERCHANT, code)


async def find_agent(conn, code: str):
    return await find_by_code(conn, AGENT, code)


async def get_account(conn, account_id: int):
    return await _BY_ID.first(conn, id=account_id)


async def create_pending_wallet(conn, msisdn: str, *, language: str, expires_at: datetime, actor: str,
                                channel: str, **kyc) -> int:
    """`kyc`: holder_name, id_type, id_number, kyc_tier when an agent opens it."""
    account_id = await insert_account(conn, kind=WALLET, status=PENDING, msisdn=msisdn, language=language,
                                      expires_at=expires_at, **kyc)
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


_CREDENTIALS = sa.select(credentials).where(credentials.c.account_id == sa.bindparam("id"))


async def get_credentials(conn, account_id: int, *, lock: bool = False):
    """`lock`: the row stays locked until the transaction ends (PostgreSQL;
    SQLite has one writer), so a PIN check and the count of its failure are
    not interleaved with another instance's check of the same account."""
    query = _CREDENTIALS_LOCKED if lock and conn.dialect.name == "postgresql" else _CREDENTIALS
    return (await conn.execute(query, {"id": account_id})).first()


_CREDENTIALS_LOCKED = _CREDENTIALS.with_for_update()
_PIN_OK = credentials.update().where(credentials.c.account_id == sa.bindparam("id")).values(
    pin_failures=0, pin_locked_until=None, updated_at=sa.bindparam("_at"))


def _pin_failed(now: datetime, max_failures: int, lock_until: datetime):
    """One statement that counts a wrong PIN against the row as it is when
    the UPDATE runs (a read then a write would lose a failure counted by
    another instance in between). SET expressions all see the old row."""
    c = credentials.c
    expired = sa.and_(c.pin_locked_until.is_not(None), c.pin_locked_until <= sa.literal(now, Stamp))
    failures = sa.case((expired, 1), else_=c.pin_failures + 1)
    return credentials.update().where(c.account_id == sa.bindparam("id")).values(
        pin_failures=failures,
        pin_locked_until=sa.case((expired, sa.null()), (failures >= max_failures, sa.literal(lock_until, Stamp)),
                                 else_=c.pin_locked_until),
        updated_at=sa.bindparam("_at")).returning(c.pin_failures)


# The credentials columns a PIN check reads, beside the wallet's own.
_CREDENTIAL_COLUMNS = (credentials.c.account_id.label("cred_account_id"), credentials.c.pin_hash,
                       credentials.c.pin_failures, credentials.c.pin_locked_until, credentials.c.must_change)
_WALLET_WITH_CREDENTIALS = Fast(
    sa.select(accounts, *_CREDENTIAL_COLUMNS)
    .select_from(accounts.outerjoin(credentials, credentials.c.account_id == accounts.c.id))
    .where(accounts.c.kind == WALLET, accounts.c.msisdn == sa.bindparam("msisdn"), accounts.c.status != CLOSED))


async def find_wallet_with_credentials(conn, msisdn: str):
    """(wallet, credentials) in one statement, for the paths every payment
    takes; the credentials part is None when the account has none."""
    row = await _WALLET_WITH_CREDENTIALS.first(conn, msisdn=msisdn)
    if row is None:
        return None, None
    return row, (row if row.cred_account_id is not None else None)


async def record_pin_attempt(conn, account_id: int, *, ok: bool, max_failures: int,
                             lock_until: datetime, now: datetime | None = None) -> int:
    """Returns the failure count after this attempt (0 on success). After a
    lockout has run out, counting starts again: one wrong PIN (a spoofed
    sender's, say) must not lock the account again at once."""
    now = now or utcnow()
    if ok:
        await conn.execute(_PIN_OK, {"id": account_id, "_at": utcnow()})
        return 0
    failures = (await conn.execute(_pin_failed(now, max_failures, lock_until),
                                   {"id": account_id, "_at": utcnow()})).scalar()
    return 1 if failures is None else failures      # no credentials row: the first failure of nothing


_ACTIVE_CARD = sa.select(cards).where(cards.c.account_id == sa.bindparam("id"), cards.c.status == "active")


async def active_card(conn, account_id: int):
    return (await conn.execute(_ACTIVE_CARD, {"id": account_id})).first()


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


_o = operations.c


def _spent_of(account_id, since: str):
    """What counts against the limits, once: spending kinds, pending
    included, voided not, since the instant bound as `since`."""
    return (sa.select(sa.func.coalesce(sa.func.sum(_o.amount), 0))
            # equalities, not IN: a Fast statement takes plain bind parameters
            .where(_o.account_id == account_id, sa.or_(*(_o.kind == k for k in SPENDING_KINDS)),
                   _o.state != "voided", _o.created_at >= sa.bindparam(since, type_=Stamp))
            .scalar_subquery())


_SPENT = Fast(sa.select(_spent_of(sa.bindparam("id"), "day"), _spent_of(sa.bindparam("id"), "month")))


# What a PIN-guarded spend needs, in one statement: the wallet, its
# credentials, whether the key was booked already, and what it spent today
# and this month (the limits' base; see spent_since).
# The credentials row is locked (PostgreSQL) as get_credentials(lock=True) does:
# an inner join, so a wallet without credentials takes the plain path.
_SPEND_CONTEXT = Fast(
    sa.select(accounts, *_CREDENTIAL_COLUMNS,
              sa.select(_o.account_id).where(_o.idempotency_key == sa.bindparam("key"))
              .scalar_subquery().label("booked_account"),
              _spent_of(accounts.c.id, "day").label("spent_day"),
              _spent_of(accounts.c.id, "month").label("spent_month"))
    .select_from(accounts.join(credentials, credentials.c.account_id == accounts.c.id))
    .where(accounts.c.kind == WALLET, accounts.c.msisdn == sa.bindparam("msisdn"), accounts.c.status != CLOSED)
    .with_for_update(of=credentials))


async def spend_context(conn, msisdn: str, key: str, day: datetime, month: datetime):
    """The wallet row (with credentials columns, `booked_account` and
    `spent_day`/`spent_month`) or None; see _SPEND_CONTEXT."""
    return await _SPEND_CONTEXT.first(conn, msisdn=msisdn, key=key, day=day, month=month)


async def spent_since(conn, account_id: int, day: datetime, month: datetime) -> tuple[int, int]:
    """What the account spent (payments, P2P, withdrawals, airtime; pending
    included, voided not) since the start of the day and of the month: the
    base of the daily and monthly limits, in one query."""
    day_total, month_total = await _SPENT.first(conn, id=account_id, day=day, month=month)
    return int(day_total), int(month_total)


_FUNDED = sa.select(sa.func.coalesce(sa.func.sum(_o.amount), 0)).where(
    _o.account_id == sa.bindparam("id"), _o.kind == "agent_float", _o.state != "voided",
    _o.created_at >= sa.bindparam("day"))


async def funded_since(conn, agent_id: int, day: datetime) -> int:
    """Float put on an agent's account since the start of the local day:
    the base of the operator's daily funding bound."""
    return int((await conn.execute(_FUNDED, {"id": agent_id, "day": day})).scalar_one())


async def count_audits(conn, account_id: int, action: str, *, since: datetime, actor: str | None = None) -> int:
    """How often `action` was recorded for the account since `since` (UTC)."""
    q = sa.select(sa.func.count()).select_from(audit_log).where(
        audit_log.c.account_id == account_id, audit_log.c.action == action, audit_log.c.at >= since)
    if actor is not None:
        q = q.where(audit_log.c.actor == actor)
    return int((await conn.execute(q)).scalar_one())


async def recent_audits(conn, account_id: int, actions, *, limit: int = 50) -> list[dict]:
    rows = (await conn.execute(sa.select(audit_log).where(
        audit_log.c.account_id == account_id, audit_log.c.action.in_(list(actions)))
        .order_by(audit_log.c.id.desc()).limit(limit))).all()
    return [{"at": r.at.isoformat(), "action": r.action, "channel": r.channel, "actor": r.actor,
             "details": r.details} for r in rows]
