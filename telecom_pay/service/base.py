"""The unit of work every audience of the service shares: a write job and
its refusals (`_run`, `_run_keeping`, `_query`), the wallet, PIN and limit
checks made inside the job they guard, the PIN-guarded spend and the
two-phase bank path, the velocity slot and the notifiers. The audience parts
build on this one core, so a check means the same whoever asks for the
operation, and there is one place to change how a job commits or refuses.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Awaitable, Callable
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from twisted.logger import Logger

from telecom_pay import accounts as acct
from telecom_pay import business_time
from telecom_pay.bank_port import BankPort, BankStatus, CardRef
from telecom_pay.callbacks import CallbackPolicy, CallbackQueue
from telecom_pay.config import Settings
from telecom_pay.ledger.fastsql import Fast
from telecom_pay.ledger.ledger import (
    AccountUnavailable, IdempotencyConflict, InsufficientFunds, Ledger, NotWithdrawable, OperationRecord,
    OperationRequest)
from telecom_pay.ledger.tables import ACTIVE, CLOSED, FROZEN, PENDING, operations
from telecom_pay.msisdn import MsisdnError, local_form, mask, normalize
from telecom_pay.notices import SMS_CHANNEL, queue_notice
from telecom_pay.outcomes import BankDecline, Outcome, Result
from telecom_pay.risk import screen as risk_screen
from telecom_pay.security import PasswordHasher, PinHasher, check_limits, is_pin_format
from telecom_pay.sessions import SessionStore

#: Channels whose answer may never reach the subscriber (a caller hangs up
#: while the result is spoken, the network releases a USSD page): their
#: spends get an SMS receipt, queued in the booking's own transaction.
RECEIPT_BY_SMS = frozenset({"ivr", "ussd"})
#: the operation kinds that receipt covers (the spends of _guarded_payment)
RECEIPTED_KINDS = frozenset({"payment", "p2p", "airtime"})

log = Logger(namespace="telecom_pay.service")

Notifier = Callable[[str, Result], Awaitable[None] | None]

_STATUS_OUTCOME = {PENDING: Outcome.ACCOUNT_PENDING, FROZEN: Outcome.ACCOUNT_FROZEN,
                   CLOSED: Outcome.ACCOUNT_CLOSED}
# "not read yet" for an optional row argument whose absence (None) is meaningful
_UNREAD = object()
_BOOKED_ACCOUNT = Fast(sa.select(operations.c.account_id).where(operations.c.idempotency_key == sa.bindparam("key")))


class _Refusal(Exception):
    """Raised inside a write job to roll it back and answer with `result`."""

    def __init__(self, result: Result):
        super().__init__(result.outcome.value)
        self.result = result


def _refuse(outcome: Outcome, **params) -> _Refusal:
    return _Refusal(Result(outcome, params=params))


class ServiceCore:
    """The state and mechanics the audience parts share; not used alone:
    PaymentService composes it with them."""

    # ------------------------------------------------------------ set-up

    def __init__(self, ledger: Ledger, sessions: SessionStore, settings: Settings, *,
                 bank: BankPort | None = None, clock: Callable[[], datetime] | None = None,
                 password_hasher: PasswordHasher | None = None):
        self.ledger = ledger
        self.sessions = sessions
        self.settings = settings
        self.bank = bank
        if clock is not None:
            self.clock = clock
        self.pins = PinHasher(settings.pin_key)
        self.passwords = password_hasher or PasswordHasher()
        self.tz = ZoneInfo(settings.timezone)
        self.callbacks = CallbackQueue(ledger, CallbackPolicy.from_config(settings.section("ami")), self.tz)
        self.system: dict[str, int] = {}
        self.merchant_names: dict[str, dict[str, str]] = {}
        self.notifiers: list[Notifier] = []
        self._preview_merchants: dict[str, tuple] = {}
        if bank is not None:
            bank.set_resolver(self)

    @property
    def clock(self) -> Callable[[], datetime]:
        """The ledger's clock: the instant a check is made at and the instant
        the booking it guards is stamped with come from one source, so a
        limit's day and the operation's day can never disagree."""
        return self.ledger.clock

    @clock.setter
    def clock(self, fn: Callable[[], datetime]) -> None:
        self.ledger.clock = fn

    # ------------------------------------------------------------ notices

    def add_notifier(self, fn: Notifier) -> None:
        """Channels register to tell subscribers of events they did not ask
        about in that moment (P2P received, a delayed bank answer)."""
        self.notifiers.append(fn)

    async def notify(self, msisdn: str, result: Result) -> None:
        """Tell a subscriber a result outside the exchange that produced it:
        a menu sends credentials by SMS rather than on a screen, an IVR
        caller who hung up before hearing the result gets it by SMS."""
        await self._notify(msisdn, result)

    async def _notify(self, msisdn: str, result: Result) -> None:
        for fn in self.notifiers:
            try:
                r = fn(msisdn, result)
                if r is not None:
                    await r
            except Exception:
                log.failure("notifier failed for {msisdn}", msisdn=mask(msisdn))

    # ------------------------------------------------------------ helpers

    def _norm(self, msisdn: str) -> str:
        return normalize(msisdn, self.settings.region)

    def _key(self, key: str | None, kind: str) -> str:
        return key or f"{kind}:{uuid.uuid4().hex}"

    def merchant_display(self, code: str, row_name: str, lang: str = "zh") -> str:
        names = self.merchant_names.get(code)
        return names.get(lang, row_name) if names else row_name

    # ------------------------------------------------------------ the unit of work

    async def _run(self, job) -> Result:
        """Run a write job that returns a Result or raises _Refusal /
        LedgerError; refusals roll the job back and become Results."""
        try:
            return await self.ledger.write(job)
        except _Refusal as r:
            return r.result
        except IdempotencyConflict as e:
            return Result(Outcome.IDEMPOTENCY_CONFLICT, params={"differs": e.differs})
        except InsufficientFunds as e:
            return Result(Outcome.INSUFFICIENT_FUNDS, balance=e.available)
        except NotWithdrawable as e:
            return Result(Outcome.NOT_WITHDRAWABLE, params={"withdrawable": e.withdrawable})
        except AccountUnavailable as e:
            return Result(_STATUS_OUTCOME.get(e.status, Outcome.ACCOUNT_FROZEN))

    async def _run_keeping(self, job) -> Result:
        """Like _run, for PIN-guarded jobs: a wrong PIN rolls the job back
        but its failure count is committed."""
        async def wrapped(conn):
            try:
                async with conn.begin_nested():
                    return await job(conn)
            except _PinFailed as f:
                return await self._count_pin_failure(conn, f.wallet, f.channel)
        return await self._run(wrapped)

    async def _query(self, q) -> Result:
        """A read that may refuse (raise _Refusal) like a write job does (a
        hot-path read: see Ledger.read_hot)."""
        try:
            return await self.ledger.read_hot(q)
        except _Refusal as r:
            return r.result

    async def _wallet(self, conn, msisdn: str, *, need_active: bool = True):
        w = await acct.find_wallet(conn, msisdn)
        if w is None:
            raise _refuse(Outcome.NO_ACCOUNT)
        if need_active and w.status != ACTIVE:
            raise _refuse(_STATUS_OUTCOME[w.status])
        return w

    def _money_result(self, action: str, rec: OperationRecord, account_id: int, **params) -> Result:
        bal = rec.balance_of(account_id)
        return Result(Outcome.OK, ref=rec.ref, amount=rec.amount, fee=rec.fee or None,
                      balance=bal.available if bal else None, params={"action": action, **params})

    # ------------------------------------------------------------ PIN and limits

    async def _check_pin(self, conn, wallet, pin: str | None, *, before_change: bool = False,
                         channel: str = "-", cred=_UNREAD) -> None:
        """Verifies the PIN; a wrong one is counted (committed even though
        the payment is refused) and locks payments after N failures. An
        initial or agent-reset PIN travelled by SMS and may have been seen:
        it only changes itself (MM) or unfreezes (`before_change`), it
        never moves money. `cred`: the credentials row when the caller read
        it (locked) with the wallet.

        Across instances: the credentials row is locked FOR UPDATE, and a
        failure is counted by one UPDATE (accounts.record_pin_attempt). A
        refused job's savepoint releases the lock before the count, so two
        instances racing the same account may each try one PIN on the count
        both read; the count itself never loses a failure."""
        if not is_pin_format(pin):
            raise _refuse(Outcome.PIN_FORMAT)
        if cred is _UNREAD:
            # locked until the commit: another instance's check of this account waits for this one's count
            cred = await acct.get_credentials(conn, wallet.id, lock=True)
        now = self.clock()
        if cred is not None and cred.pin_locked_until is not None and cred.pin_locked_until > now:
            minutes = max(1, int((cred.pin_locked_until - now).total_seconds() // 60) + 1)
            raise _refuse(Outcome.PIN_LOCKED, locked_minutes=minutes)
        ok = self.pins.verify(wallet.id, pin, cred.pin_hash if cred else None)
        if not ok:
            raise _PinFailed(wallet, channel)
        if cred.pin_failures:
            await acct.record_pin_attempt(conn, wallet.id, ok=True, max_failures=self.settings.pin_max_failures,
                                          lock_until=now)
        if cred.must_change and not before_change:
            raise _refuse(Outcome.PIN_CHANGE_REQUIRED)

    async def _refuse_before_pin_change(self, conn, wallet) -> None:
        """Refuses a spend before asking for a PIN that could not authorise it."""
        cred = await acct.get_credentials(conn, wallet.id)
        if cred is not None and cred.must_change:
            raise _refuse(Outcome.PIN_CHANGE_REQUIRED)

    async def _count_pin_failure(self, conn, wallet, channel: str) -> Result:
        """Runs outside the refused job's savepoint, so the count commits.
        Every wrong PIN is audited with its channel; a lockout that repeats
        within a day raises a security alert agents see (a spoofed sender
        can lock a victim, never silently)."""
        now = self.clock()
        failures = await acct.record_pin_attempt(
            conn, wallet.id, ok=False, max_failures=self.settings.pin_max_failures,
            lock_until=now + timedelta(minutes=self.settings.pin_lock_minutes), now=now)
        actor = f"msisdn:{wallet.msisdn}"
        await acct.audit(conn, actor=actor, channel=channel, action="pin_wrong", account_id=wallet.id,
                         failures=failures)
        left = self.settings.pin_max_failures - failures
        if left > 0:
            return Result(Outcome.PIN_WRONG, params={"attempts_left": left})
        await acct.audit(conn, actor=actor, channel=channel, action="pin_locked", account_id=wallet.id)
        lockouts = await acct.count_audits(conn, wallet.id, "pin_locked", since=now - timedelta(days=1))
        if lockouts >= self.settings.lockout_alert_after:
            await acct.audit(conn, actor=actor, channel=channel, action="security_alert", account_id=wallet.id,
                             reason="repeated_lockouts", lockouts=lockouts)
        return Result(Outcome.PIN_LOCKED, params={"locked_minutes": self.settings.pin_lock_minutes})

    async def _check_limits(self, conn, wallet, amount: int, *, spent: tuple[int, int] | None = None) -> None:
        """`spent`: (today, this month) when the caller read them with the wallet."""
        limits = self.settings.limits.get(wallet.kyc_tier) or self.settings.limits[min(self.settings.limits)]
        if spent is not None:
            day_total, month_total = int(spent[0]), int(spent[1])
        else:
            now = self.clock()
            day_total, month_total = await acct.spent_since(conn, wallet.id, business_time.day_start(now, self.tz),
                                                            business_time.month_start(now, self.tz))
        refusal = check_limits(limits, amount, day_total, month_total)
        if refusal is not None:
            raise _refuse(refusal.outcome, limit=refusal.limit)

    # ------------------------------------------------------------ PIN-guarded spends

    def _velocity_key(self, msisdn: str) -> str:
        return f"velocity:{msisdn}:{int(self.clock().timestamp() // 60)}"

    async def _velocity(self, msisdn: str) -> tuple[Result | None, str | None]:
        """Holds a payment when the number already made N this minute. The
        slot is reserved first (INCR, atomic in the shared store), so
        payments checked at once by several instances cannot all pass on one
        count; a hold, and a payment that does not go through, gives its
        slot back (`_give_back`). Returns (hold or None, the key reserved)."""
        n = self.settings.velocity_per_minute
        if n <= 0:
            return None, None
        key = self._velocity_key(msisdn)
        count = await self.sessions.incr(key, ttl=61)
        if count > n:
            await self._give_back(key)
            return Result(Outcome.VELOCITY_HOLD, params={"retry_after": 60 - int(self.clock().timestamp()) % 60}), None
        return None, key

    async def _give_back(self, key: str | None) -> None:
        """Best effort: a slot not given back only holds the number a little
        early within this minute; it never lets a payment through."""
        if key is None:
            return
        try:
            await self.sessions.incr(key, ttl=61, amount=-1)
        except Exception as exc:
            log.warn("velocity slot not given back: {err}", err=type(exc).__name__)

    async def _guarded_payment(self, msisdn: str, pin: str | None, amount: int, build, *, key: str,
                               channel: str, action: str, check_limits: bool = True,
                               booked: list | None = None, after_book=None, **params) -> Result:
        """The common path of a PIN-guarded spend: velocity, wallet, PIN,
        limits and the booking, the last four in one atomic job. A key that
        was already booked answers with the original result before any
        check (a frozen account, a used-up limit or a mistyped PIN must not
        turn a done payment into a refusal). `booked` receives the record.
        `after_book(conn, rec, case)`: runs in the job right after a new
        booking, `case` the risk screen's (HELD: the money is only reserved),
        for what must happen with the money or not at all (the SP request it
        confirms, the airtime SP's order); raising rolls the booking back. A
        hook returning True has settled a hold itself: no "under review"
        notice is queued for it."""
        if amount <= 0:
            return Result(Outcome.INVALID_AMOUNT)
        booked = [] if booked is None else booked
        held, slot = await self._velocity(msisdn)
        if held is not None:
            existing = await self.ledger.get_operation(key)
            if existing is None:
                return held
            return await self._replay_payment(existing, build, action, booked, params)

        async def job(conn):
            # one statement reads the wallet, its credentials, whether the key
            # is booked and what it spent; a key already booked is answered
            # first (no read round trip before the job for a new payment)
            now = self.clock()
            w = await acct.spend_context(conn, msisdn, key, business_time.day_start(now, self.tz),
                                         business_time.month_start(now, self.tz))
            if w is not None:
                done = w.booked_account
            else:           # no wallet with credentials: the plain path (and its refusals)
                row = await _BOOKED_ACCOUNT.first(conn, key=key)
                done = None if row is None else row.account_id
            if done is not None:
                w = await acct.get_account(conn, done)
                req, extra = await build(conn, w)
                return await self._book_again(conn, req, action, w.id, booked, {**params, **extra})
            if w is None:
                w = await self._wallet(conn, msisdn)
                await self._check_pin(conn, w, pin, channel=channel)
            else:
                if w.status != ACTIVE:
                    raise _refuse(_STATUS_OUTCOME[w.status])
                await self._check_pin(conn, w, pin, channel=channel, cred=w)
            if check_limits:
                spent = (w.spent_day, w.spent_month) if hasattr(w, "spent_day") else None
                await self._check_limits(conn, w, amount, spent=spent)
            req, extra = await build(conn, w)
            rec, case = await risk_screen.book_screened(self.ledger, conn, self.settings.risk, req, now)
            # the hook may answer the hold itself (True: an SP request declines it)
            settled_hold = bool(await after_book(conn, rec, case)) \
                if after_book is not None and not rec.replayed else False
            booked.append(rec)
            result = self._money_result(action, rec, w.id, **params, **extra)
            if case == risk_screen.HELD:
                # held for review: told so (the SMS channel's reply is that SMS),
                # in this transaction, like the receipt below
                result = risk_screen.screened_result(result, rec.state)
                if channel != SMS_CHANNEL and not settled_hold:
                    await queue_notice(conn, msisdn, w.language, result, key=f"risk-held:{key}")
                return result
            if channel in RECEIPT_BY_SMS and not rec.replayed:
                # committed with the money or not at all: the receipt cannot be
                # lost to a crash between the booking and the end of the call
                await queue_notice(conn, msisdn, w.language, result, key=f"receipt:{key}")
                result = Result(result.outcome, ref=result.ref, amount=result.amount, fee=result.fee,
                                balance=result.balance, params={**result.params, "receipt": "sms"})
            return result
        try:
            result = await self._run_keeping(job)
        except BaseException:
            await self._give_back(slot)
            raise
        if result.outcome is Outcome.OK and not booked[-1].replayed:
            await self._after_commit(msisdn, action, channel, result)
        else:
            await self._give_back(slot)
        return result

    async def _replay_payment(self, existing: OperationRecord, build, action: str, booked: list,
                              params: dict) -> Result:
        """The original result of a booked key; a request that differs from
        what the key was booked with is a conflict naming the difference."""
        async def job(conn):
            w = await acct.get_account(conn, existing.account_id)
            req, extra = await build(conn, w)
            return await self._book_again(conn, req, action, w.id, booked, {**params, **extra})
        return await self._run(job)

    async def _book_again(self, conn, req: OperationRequest, action: str, account_id: int, booked: list,
                          params: dict) -> Result:
        """A booked key's replay: as it was first booked (held by a risk rule
        or not), answered for the state it is in now."""
        req, case = await risk_screen.as_first_booked(conn, req)
        rec = await self.ledger.book(conn, req)
        if case == risk_screen.RELEASED:          # the payment the release booked
            rec = await self.ledger.book(conn, risk_screen.release_request(rec))
        booked.append(rec)
        result = self._money_result(action, rec, account_id, **params)
        return risk_screen.screened_result(result, rec.state) if case is not None else result

    async def _after_commit(self, msisdn: str, action: str, channel: str, result: Result) -> None:
        """Best-effort work after a payment committed: nothing here may turn
        the success into a failure (the subscriber would pay again). The
        velocity slot was reserved before (see _velocity)."""
        try:
            log.info("{action} ok {msisdn} {ref} amount={amount} channel={channel}", action=action,
                     msisdn=mask(msisdn), ref=result.ref, amount=result.amount, channel=channel)
        except Exception:
            pass

    # ------------------------------------------------------------ the two-phase bank path

    async def _card_operation(self, msisdn: str, amount: int, *, key: str, kind: str, action: str, channel: str,
                              pin: str | None, check_pin: bool, check_limits: bool, debit_card_only: bool,
                              legs, bank_call) -> Result:
        """The two-phase path to the bank: book pending (with the checks, in
        one job), ask the bank, then post or void; an unknown answer leaves
        it pending for the bridge to resolve. A replayed key never asks the
        bank for a second movement (the bridge is idempotent on the key too)."""
        msisdn = self._norm(msisdn)
        if amount <= 0:
            return Result(Outcome.INVALID_AMOUNT)
        if self.bank is None:
            return Result(Outcome.BANK_UNAVAILABLE)
        existing = await self.ledger.get_operation(key)
        if existing is not None and existing.state != "pending":
            return await self._bank_replay(existing, action, msisdn)
        cards: list[CardRef] = []
        # A key still pending is replayed without the checks its first run
        # passed (status, PIN, limits): it only asks the bank again under the
        # same key, which the bridge answers from its record, never twice.
        replaying = existing is not None

        async def job(conn):
            w = await self._wallet(conn, msisdn, need_active=not replaying)
            if check_pin and not replaying:
                await self._check_pin(conn, w, pin, channel=channel)
            if check_limits and not replaying:
                await self._check_limits(conn, w, amount)
            card = await acct.active_card(conn, w.id)
            if card is None:
                raise _refuse(Outcome.NO_CARD)
            if debit_card_only and card.card_type != "debit":
                raise _refuse(Outcome.NO_CARD, need="debit")
            cards.append(CardRef(card.token, card.last4, card.bin, card.card_type, card.bank_code))
            leg_list, fee = legs(w, card)
            rec = await self.ledger.book(conn, OperationRequest(
                key=key, kind=kind, pending=True, legs=tuple(leg_list), channel=channel, actor=f"msisdn:{msisdn}",
                account_id=w.id, fee=fee, details={"card": card.last4}))
            return Result(Outcome.IN_PROGRESS, ref=rec.ref, amount=amount, fee=fee or None,
                          params={"action": action})
        booked = await self._run_keeping(job)
        if booked.outcome is not Outcome.IN_PROGRESS:
            return booked
        return await self._bank_outcome(action, key, msisdn, await bank_call(key, cards[0]))

    async def _bank_outcome(self, action: str, key: str, msisdn: str, answer) -> Result:
        if answer.status is BankStatus.APPROVED:
            rec = await self.ledger.post(key)
            return self._money_result(action, rec, rec.account_id)
        if answer.status is BankStatus.DECLINED:
            rec = await self.ledger.void(key)
            reason = (answer.decline or BankDecline.OTHER).value
            outcome = Outcome.BANK_UNAVAILABLE if answer.decline is BankDecline.ISSUER_UNAVAILABLE \
                else Outcome.BANK_DECLINED
            return Result(outcome, amount=rec.amount, params={"action": action, "reason": reason})
        rec = await self.ledger.get_operation(key)
        return Result(Outcome.IN_PROGRESS, ref=rec.ref if rec else None, amount=rec.amount if rec else None,
                      params={"action": action})

    async def _bank_replay(self, rec: OperationRecord, action: str, msisdn: str) -> Result:
        if rec.state == "posted":
            rec = await self.ledger.post(rec.key)      # replay: carries the balances
            return self._money_result(action, rec, rec.account_id)
        return Result(Outcome.BANK_DECLINED, ref=rec.ref, params={"action": action, "reason": "other"})

    # ------------------------------------------------------------ account state

    async def _transition(self, msisdn: str, action: str, *, channel: str, actor: str | None, notice: bool = False,
                          **details) -> Result:
        try:
            msisdn = self._norm(msisdn)
        except MsisdnError:
            return Result(Outcome.INVALID_NUMBER)

        async def job(conn):
            w = await self._wallet(conn, msisdn, need_active=False)
            try:
                await acct.transition(conn, w, action, actor=actor or f"msisdn:{msisdn}", channel=channel, **details)
            except acct.TransitionError as e:
                if action == "unfreeze" and e.status == ACTIVE:
                    raise _refuse(Outcome.ALREADY_ACTIVE)
                raise _refuse(_STATUS_OUTCOME.get(e.status, Outcome.ACCOUNT_FROZEN))
            if notice:                            # done by someone else: the subscriber is told
                await queue_notice(conn, msisdn, w.language, Result(Outcome.OK, params={"action": action}))
            return Result(Outcome.OK, balance=w.balance - w.pending_out, params={"action": action})
        return await self._run(job)


class _PinFailed(Exception):
    """A wrong PIN: the job is rolled back, the failure is then counted."""

    def __init__(self, wallet, channel: str):
        super().__init__("wrong PIN")
        self.wallet = wallet
        self.channel = channel


def _masked_local(msisdn: str | None) -> str:
    if not msisdn:
        return ""
    try:
        local = local_form(msisdn)
    except Exception:
        local = msisdn
    return local[:3] + "****" + local[-4:] if len(local) >= 8 else local
