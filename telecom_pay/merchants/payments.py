"""SP payment requests (README.md here): a merchant asks, the subscriber
confirms with the payment PIN by SMS, and the outcome is told back.

The request and the SMS that asks the subscriber commit together; the
money moves only through PaymentService.pay (ZF's path: limits, lockout,
PIN, risk screen, fee plan) under the key `sp:<payment id>`, and the
request's new state, its callback and the booking are one transaction
(the `after_book` hook), so a request is never confirmed without its
money nor paid twice. Every state change is an UPDATE guarded by
`status = 'pending'`: of an expiry sweep and a PIN arriving at once, or of
two instances, exactly one wins.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from telecom_pay import accounts as acct
from telecom_pay.commands.replies import normalize_lang, render
from telecom_pay.ledger.tables import ACTIVE, accounts, operations
from telecom_pay.messaging import queue_outgoing
from telecom_pay.msisdn import MsisdnError, normalize
from telecom_pay.notices import SMS_CHANNEL
from telecom_pay.outcomes import Outcome, Result
from telecom_pay.risk.cases import HELD, REFUSED, risk_cases

from . import directory, events
from .api_settings import MerchantApiSettings
from .objects import payment_object
from .tables import P_CONFIRMED, P_DECLINED, P_EXPIRED, P_PENDING, sp_payments

MAX_PIN_FAILURES = 3          # wrong PINs that decline one request (the account's lockout counts apart)
TAG_TRIES = 50
#: what a refused confirmation declines the request with (README.md: decline_reason)
_DECLINED_BY = {
    Outcome.LIMIT_PER_TXN: "limit", Outcome.LIMIT_DAILY: "limit", Outcome.LIMIT_MONTHLY: "limit",
    Outcome.INSUFFICIENT_FUNDS: "insufficient_funds", Outcome.NOT_WITHDRAWABLE: "insufficient_funds",
    Outcome.ACCOUNT_FROZEN: "account_not_active", Outcome.ACCOUNT_CLOSED: "account_not_active",
    Outcome.ACCOUNT_PENDING: "account_not_active", Outcome.NO_ACCOUNT: "account_not_active",
    Outcome.UNKNOWN_MERCHANT: "merchant_disabled", Outcome.MERCHANT_INACTIVE: "merchant_disabled",
    Outcome.RISK_REFUSED: "risk",
}
_COMPARED = ("msisdn", "amount", "description", "notify_url")


class PaymentRefused(Exception):
    """A refused API request: `status` (HTTP), `code` (the API's), a sentence."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class _NotPending(Exception):
    """Raised in the booking's job: the request stopped being pending (it
    expired, was declined) before the PIN's booking: nothing is paid."""

    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


def new_payment_id() -> str:
    return "pay_" + secrets.token_hex(12)


# ------------------------------------------------------------ the merchant's side

async def create(service, profile: directory.MerchantProfile, *, order_id: str, msisdn: str, amount: int,
                 description: str, notify_url: str | None = None) -> tuple[dict, bool]:
    """A new request (True) or the one this order id already made (False)."""
    try:
        number = normalize(msisdn, service.settings.region)
    except MsisdnError:
        raise PaymentRefused(400, "invalid_msisdn", "msisdn is not a mobile number", field="msisdn")
    try:
        given_url = directory.check_notify_url(notify_url)
    except directory.MerchantError as exc:
        raise PaymentRefused(400, "invalid_notify_url", str(exc))
    request = {"msisdn": number, "amount": amount, "description": description, "notify_url": given_url}
    cfg = MerchantApiSettings.of(service.settings)

    async def existing(conn):
        row = (await conn.execute(sa.select(sp_payments).where(
            sp_payments.c.merchant_id == profile.account_id, sp_payments.c.order_id == order_id))).first()
        if row is None:
            return None
        differs = [k for k in _COMPARED if (row.request or {}).get(k) != request[k]]
        if differs:
            raise PaymentRefused(409, "order_id_conflict",
                                 f"the order id {order_id} was used with other content ({', '.join(differs)})",
                                 fields=differs)
        return await _object(conn, row, profile.code)

    async def job(conn):
        replay = await existing(conn)
        if replay is not None:
            return replay, False
        w = await acct.find_wallet(conn, number, lock=True)     # one subscriber's requests one at a time
        if w is None:
            raise PaymentRefused(422, "no_account", "no wallet is open at this number")
        if w.status != ACTIVE:
            raise PaymentRefused(422, "account_not_active", "the subscriber's wallet is not active")
        now = service.clock()
        taken = set((await conn.execute(sa.select(sp_payments.c.tag).where(
            sp_payments.c.msisdn == number, sp_payments.c.status == P_PENDING))).scalars())
        tag = next((t for t in (f"{secrets.randbelow(9000) + 1000}" for _ in range(TAG_TRIES)) if t not in taken),
                   None)
        if tag is None:
            raise PaymentRefused(422, "too_many_pending", "the subscriber has too many payments waiting")
        public_id = new_payment_id()
        push = bool((service.settings.section("sms").get("ussd") or {}).get("push"))
        values = dict(public_id=public_id, merchant_id=profile.account_id, order_id=order_id, msisdn=number,
                      account_id=w.id, amount=amount, fee=0, description=description,
                      notify_url=given_url or profile.notify_url, request=request, status=P_PENDING,
                      tag=tag, pin_failures=0, confirm_by="ussd" if push else SMS_CHANNEL,
                      operation_key=f"sp:{public_id}",
                      created_at=now, expires_at=now + timedelta(seconds=cfg.expiry_seconds), updated_at=now)
        try:
            async with conn.begin_nested():
                await conn.execute(sp_payments.insert().values(**values))
        except IntegrityError:
            # another instance inserted this order id first: its answer is ours
            replay = await existing(conn)
            if replay is None:
                raise
            return replay, False
        lang = normalize_lang(w.language)
        ask = Result(Outcome.PIN_REQUIRED, amount=amount, params={
            "action": "sp_request", "tag": tag, "order_id": order_id,
            "merchant_name": profile.name if lang == "zh" else profile.name_en})
        # where USSD push is on, the SMS channel pushes this request's own PIN page
        # (menus: entry "sp:<tag>") instead, and sends this SMS if the page fails
        meta = {"confirm": Outcome.PIN_REQUIRED.value, "sp_tag": tag} if push else None
        await queue_outgoing(conn, SMS_CHANNEL, number, render(ask, lang, tz=service.tz), key=f"sp-ask:{public_id}",
                             meta=meta)
        row = (await conn.execute(sa.select(sp_payments).where(sp_payments.c.public_id == public_id))).first()
        return await _object(conn, row, profile.code), True
    return await service.ledger.write(job)


async def get(service, profile: directory.MerchantProfile, public_id: str) -> dict | None:
    """The merchant's own request, or None (another merchant's is unknown to it)."""
    async def q(conn):
        row = (await conn.execute(sa.select(sp_payments).where(
            sp_payments.c.public_id == public_id, sp_payments.c.merchant_id == profile.account_id))).first()
        return None if row is None else await _object(conn, row, profile.code)
    return await service.ledger.read(q)


async def find_own(service, merchant_id: int, public_id: str):
    """The sp_payments row of `merchant_id` with that id, or None."""
    return await service.ledger.read(lambda conn: _first(conn, sa.select(sp_payments).where(
        sp_payments.c.public_id == public_id, sp_payments.c.merchant_id == merchant_id)))


async def _first(conn, q):
    return (await conn.execute(q)).first()


async def refunded_of(conn, row) -> int:
    """Fen refunded so far (the refunds module's figure, once it is there)."""
    try:
        from telecom_pay.merchants import refunds
    except ImportError:
        return 0
    op_id = (await conn.execute(sa.select(operations.c.id).where(
        operations.c.idempotency_key == row.operation_key))).scalar()
    return 0 if op_id is None else int(await refunds.refunded_amount(conn, op_id))


async def _object(conn, row, merchant_code: str) -> dict:
    return payment_object(row, merchant_code=merchant_code, refunded=await refunded_of(conn, row))


# ------------------------------------------------------------ state changes (each with its callback)

async def _merchant_code(conn, merchant_id: int) -> str:
    return (await conn.execute(sa.select(accounts.c.code).where(accounts.c.id == merchant_id))).scalar_one()


async def _resolve(conn, row_id: int, now, *, status: str, reason: str | None = None, ref: str | None = None,
                   fee: int | None = None, require_live: bool = False):
    """Move a pending request to `status` and owe its callback; None when it
    was no longer pending (someone else resolved it first)."""
    values: dict[str, Any] = dict(status=status, decline_reason=reason, resolved_at=now, updated_at=now)
    if ref is not None:
        values["ref"] = ref
    if fee is not None:
        values["fee"] = fee
    cond = [sp_payments.c.id == row_id, sp_payments.c.status == P_PENDING]
    if require_live:
        cond.append(sp_payments.c.expires_at > now)
    done = await conn.execute(sp_payments.update().where(*cond).values(**values))
    if done.rowcount != 1:
        return None
    row = (await conn.execute(sa.select(sp_payments).where(sp_payments.c.id == row_id))).first()
    code = await _merchant_code(conn, row.merchant_id)
    event = {P_CONFIRMED: "payment.confirmed", P_DECLINED: "payment.declined", P_EXPIRED: "payment.expired"}[status]
    await events.enqueue(conn, merchant_id=row.merchant_id, event_type=event, subject_id=row.public_id,
                         url=row.notify_url, data=await _object(conn, row, code), now=now)
    return row


async def expire_due(service, *, limit: int = 200) -> int:
    """Expire the pending requests past their time (+ their callbacks): the
    daemon's sweep. Safe with several instances: each row is moved by one
    guarded UPDATE, whoever gets there first."""
    def due(now):
        return sa.select(sp_payments.c.id).where(sp_payments.c.status == P_PENDING, sp_payments.c.expires_at <= now) \
            .order_by(sp_payments.c.expires_at).limit(limit)
    # a read first: an idle sweep costs the writer (the money's group commit) nothing
    if (await service.ledger.read(lambda conn: conn.execute(due(service.clock())))).first() is None:
        return 0

    async def job(conn):
        now = service.clock()
        ids = list((await conn.execute(due(now))).scalars())
        n = 0
        for row_id in ids:
            if await _resolve(conn, row_id, now, status=P_EXPIRED) is not None:
                n += 1
        return n
    return await service.ledger.write(job)


# ------------------------------------------------------------ the subscriber's side

@dataclass(frozen=True)
class _Pending:
    id: int
    public_id: str
    tag: str
    order_id: str
    amount: int
    merchant_id: int
    merchant_code: str
    merchant_name: str
    operation_key: str
    status: str
    expired: bool


async def _requests(service, msisdn: str, *, tag: str | None, lang: str) -> list[_Pending]:
    """The number's pending requests (with `tag`: its latest request with that
    tag, whatever its state), oldest first."""
    now = service.clock()
    q = (sa.select(sp_payments, accounts.c.code, accounts.c.name)
         .select_from(sp_payments.join(accounts, accounts.c.id == sp_payments.c.merchant_id))
         .where(sp_payments.c.msisdn == msisdn))
    if tag is None:
        q = q.where(sp_payments.c.status == P_PENDING).order_by(sp_payments.c.id)
    else:
        q = q.where(sp_payments.c.tag == tag).order_by(sp_payments.c.status != P_PENDING,
                                                       sp_payments.c.id.desc()).limit(1)
    rows = (await service.ledger.read(lambda conn: conn.execute(q))).all()
    return [_Pending(r.id, r.public_id, r.tag, r.order_id, r.amount, r.merchant_id, r.code,
                     service.merchant_display(r.code, r.name, lang), r.operation_key, r.status,
                     r.expires_at <= now) for r in rows]


def _params(p: _Pending, **more) -> dict:
    return {"tag": p.tag, "order_id": p.order_id, "merchant_code": p.merchant_code,
            "merchant_name": p.merchant_name, **more}


async def live_requests(service, msisdn: str, lang: str = "zh") -> list[_Pending]:
    return [p for p in await _requests(service, msisdn, tag=None, lang=lang) if not p.expired]


async def confirm(service, msisdn: str, pin: str, *, tag: str | None, channel: str, lang: str) -> Result | None:
    """A PIN for one of the number's SP requests (by `tag`, or the only one
    pending). None when no SP request is pending and no tag was given: the
    PIN answers something else (the conversation's own pending action)."""
    if tag is None:
        live = await live_requests(service, msisdn, lang)
        if not live:
            return None
        if len(live) > 1:
            return Result(Outcome.PIN_REQUIRED, params={"action": "sp_choose", "tags": [p.tag for p in live]})
        p = live[0]
    else:
        found = await _requests(service, msisdn, tag=tag, lang=lang)
        if not found or found[0].status == P_DECLINED:
            return Result(Outcome.NOTHING_PENDING)
        p = found[0]
    if p.status == P_EXPIRED or (p.status == P_PENDING and p.expired):
        if p.status == P_PENDING:
            await service.ledger.write(lambda conn: _resolve(conn, p.id, service.clock(), status=P_EXPIRED))
        return Result(Outcome.CONFIRMATION_EXPIRED)
    # pending and live, or confirmed (the key's replay answers with the receipt, no PIN check)
    outcome: list[str] = []

    async def after_book(conn, rec, case):
        now = service.clock()
        if case == HELD:
            # a held SP payment is declined at once (README.md): its reservation
            # voided and its case closed in this transaction, nothing half-done
            await service.ledger.resolve_in(conn, rec.key, post=False)
            await conn.execute(risk_cases.update().where(
                risk_cases.c.operation_key == rec.key, risk_cases.c.status == HELD).values(
                status=REFUSED, decided_at=now, decided_by="sp-api",
                reason="an SP payment request is declined, never held"))
            done = await _resolve(conn, p.id, now, status=P_DECLINED, reason="risk", require_live=True)
        else:
            fee = int(((rec.request or {}).get("details") or {}).get("merchant_fee") or 0)
            done = await _resolve(conn, p.id, now, status=P_CONFIRMED, ref=rec.ref, fee=fee, require_live=True)
        if done is None:
            raise _NotPending(P_EXPIRED)
        outcome.append(done.status)
        return case == HELD        # the hold is settled here: declined, not "under review"
    try:
        result = await service.pay(msisdn, p.merchant_code, p.amount, pin, channel=channel, key=p.operation_key,
                                   reference=p.order_id[:64], lang=lang, after_book=after_book)
    except _NotPending:
        await service.ledger.write(lambda conn: _resolve(conn, p.id, service.clock(), status=P_EXPIRED))
        return Result(Outcome.CONFIRMATION_EXPIRED)
    if outcome == [P_DECLINED] or result.outcome is Outcome.RISK_HELD:
        return Result(Outcome.OK, amount=p.amount, params=_params(p, action="sp_declined", reason="risk"))
    if result.outcome is Outcome.OK or p.status != P_PENDING:
        return result
    return await _refused(service, p, result)


async def _refused(service, p: _Pending, result: Result) -> Result:
    """What a refused confirmation does to the request: a wrong PIN counts
    (the third declines it), a lockout or a refusal by limits, funds, the
    account's state or risk declines it; anything passing (a velocity hold,
    a PIN still to change) leaves it pending until it expires."""
    now = service.clock()
    if result.outcome is Outcome.PIN_WRONG:
        async def count(conn):
            await conn.execute(sp_payments.update().where(
                sp_payments.c.id == p.id, sp_payments.c.status == P_PENDING).values(
                pin_failures=sp_payments.c.pin_failures + 1, updated_at=now))
            failures = (await conn.execute(sa.select(sp_payments.c.pin_failures).where(
                sp_payments.c.id == p.id))).scalar_one()
            if failures >= MAX_PIN_FAILURES:
                await _resolve(conn, p.id, now, status=P_DECLINED, reason="wrong_pin")
            return failures
        failures = await service.ledger.write(count)
        if failures >= MAX_PIN_FAILURES:
            return Result(Outcome.OK, amount=p.amount, params=_params(p, action="sp_declined", reason="wrong_pin"))
        left = min(int(result.params.get("attempts_left") or MAX_PIN_FAILURES), MAX_PIN_FAILURES - failures)
        return Result(Outcome.PIN_WRONG, params={**result.params, "attempts_left": left})
    reason = "wrong_pin" if result.outcome is Outcome.PIN_LOCKED else _DECLINED_BY.get(result.outcome)
    if reason is None:
        return result
    await service.ledger.write(lambda conn: _resolve(conn, p.id, now, status=P_DECLINED, reason=reason))
    if result.outcome is Outcome.PIN_LOCKED:
        return result               # the lockout's text (how long); the request is declined with it
    return Result(Outcome.OK, amount=p.amount, params=_params(p, action="sp_declined", reason=reason))


async def decline(service, msisdn: str, tag: str, *, lang: str) -> Result:
    """`N 8812`: the subscriber declines that request."""
    found = await _requests(service, msisdn, tag=tag, lang=lang)
    if not found or found[0].status != P_PENDING:
        return Result(Outcome.NOTHING_PENDING)
    p = found[0]
    done = await service.ledger.write(
        lambda conn: _resolve(conn, p.id, service.clock(), status=P_DECLINED, reason="subscriber_declined"))
    if done is None:
        return Result(Outcome.NOTHING_PENDING)
    return Result(Outcome.OK, amount=p.amount, params=_params(p, action="sp_declined", reason="subscriber_declined"))


async def answer_again(service, msisdn: str, tag: str | None, *, lang: str) -> Result | None:
    """A recorded `tag PIN` (or a bare PIN that answered an SP request)
    answered once more after a restart: the request's state as it is now,
    never a second attempt (the PIN's digits were not stored)."""
    found = await _requests(service, msisdn, tag=tag, lang=lang) if tag is not None else []
    if not found:
        return None
    p = found[0]
    if p.status == P_CONFIRMED:
        rec = await service.ledger.get_operation(p.operation_key)
        return Result(Outcome.OK, ref=rec.ref if rec else None, amount=p.amount,
                      params=_params(p, action="pay"))
    if p.status == P_DECLINED:
        row = await service.ledger.read(lambda conn: _first(conn, sa.select(sp_payments.c.decline_reason).where(
            sp_payments.c.id == p.id)))
        return Result(Outcome.OK, amount=p.amount,
                      params=_params(p, action="sp_declined", reason=row.decline_reason if row else None))
    if p.status == P_EXPIRED or p.expired:
        return Result(Outcome.CONFIRMATION_EXPIRED)
    return Result(Outcome.PIN_REQUIRED, amount=p.amount, params=_params(p, action="sp_request"))
