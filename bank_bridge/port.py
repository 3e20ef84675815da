"""`IsoBankPort`: the core's BankPort (telecom_pay.bank_port) over ISO 8583.

One persistent connection per bank, cards routed by BIN. Every money
operation is recorded under its operation_key before the 0200 leaves, so the
same key never sends a second 0200. An answer decides it (APPROVED/DECLINED);
a time-out or lost connection makes it UNKNOWN and queues a durable reversal
advice: 0420, repeated as 0421 with back-off (also across restarts) until a
0430 with a final code arrives: "00" (reversed) or a code meaning there is
nothing to reverse ("25", original not found), `ReversalPolicy.final_codes`.
The resolver then hears `approved=False`. Any other answer ("96", "30", ...)
says nothing about the money and the repeats go on; after
`ReversalPolicy.max_attempts` attempts without a final answer the operation
goes to manual review (`telecom-pay bank in-doubt` / `bank resolve`,
bank_bridge/review.py), where an operator's decision, with its audit row,
tells the resolver `approved=True` or `False`. Nothing is decided by guess.
A late 0210 never approves anything: it is journalled and ignored.

The resolver is told at least once (again after a crash between the 0430
and its return, or if it raised), never before the caller has received
UNKNOWN; it must be idempotent.

Cards: `verify_card` sends PAN, expiry and the card token in an 0100; the
issuer registers the token and later 0200s name the card by token (field 48)
only, so no PAN is ever stored. See bank_bridge/spec.py.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Iterable

import iso8583
from twisted.internet import defer

from bank_bridge import link as L
from bank_bridge import spec
from bank_bridge.cards import InvalidCardData, card_token, mask_pan, validate_expiry, validate_pan
from bank_bridge.connection import BankConnection, ConnectionLostInFlight, RequestTimeout
from bank_bridge.store import BankStore, RrnSource, StanSource, utcnow
from telecom_pay.aio import wait_deferred
from telecom_pay.bank_port import BankResult, BankStatus, CardRef, CardVerification, InDoubtResolver
from telecom_pay.crashpoints import crash_point
from telecom_pay.outcomes import BankDecline

log = logging.getLogger(__name__)

REVERSAL_CONCURRENCY = 32

DECLINE_BY_CODE = {
    spec.RC_INSUFFICIENT_FUNDS: BankDecline.INSUFFICIENT_FUNDS,
    spec.RC_INVALID_CARD: BankDecline.INVALID_CARD,
    spec.RC_EXPIRED_CARD: BankDecline.EXPIRED_CARD,
    spec.RC_RESTRICTED: BankDecline.RESTRICTED,
    spec.RC_ISSUER_UNAVAILABLE: BankDecline.ISSUER_UNAVAILABLE,
}


def decline_for(response_code: str | None) -> BankDecline:
    return DECLINE_BY_CODE.get(response_code or "", BankDecline.OTHER)


@dataclass(frozen=True)
class BankRoute:
    """One bank from config `[[bank.banks]]`."""
    code: str
    endpoint: str                       # Twisted client endpoint, e.g. "tcp:host=10.0.0.5:port=8583"
    bins: tuple[str, ...]
    terminal_id: str                    # field 41, 8 characters
    acquirer_id: str                    # field 32, up to 11 digits
    timeout: float = 10.0               # seconds to wait for a response
    echo_interval: float = 30.0
    card_types: dict[str, str] = field(default_factory=dict)   # BIN -> "debit" | "credit"

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> "BankRoute":
        terminal = str(entry["terminal_id"])
        acquirer = str(entry["acquirer_id"])
        if len(terminal) != 8:
            raise ValueError(f"bank {entry.get('code')}: terminal_id must be 8 characters")
        if not (acquirer.isdigit() and len(acquirer) <= 11):
            raise ValueError(f"bank {entry.get('code')}: acquirer_id must be up to 11 digits")
        bins = tuple(str(b) for b in entry.get("bins", ()))
        if not bins or not all(b.isdigit() for b in bins):
            raise ValueError(f"bank {entry.get('code')}: bins must be a list of digit strings")
        return cls(code=str(entry["code"]), endpoint=str(entry["endpoint"]), bins=bins,
                   terminal_id=terminal, acquirer_id=acquirer,
                   timeout=float(entry.get("timeout", 10.0)),
                   echo_interval=float(entry.get("echo_interval", 30.0)),
                   card_types={str(k): str(v) for k, v in dict(entry.get("card_types", {})).items()})


@dataclass(frozen=True)
class ReversalPolicy:
    initial_delay: float = 1.0          # before the first repeat (0421)
    max_delay: float = 300.0
    factor: float = 2.0
    # 0430 codes that end a reversal: reversed, or the bank holds no such
    # original (so no money moved). Every other code keeps the repeats going.
    final_codes: frozenset[str] = frozenset({spec.RC_APPROVED, spec.RC_ORIGINAL_NOT_FOUND})
    max_attempts: int = 20              # then manual review (0 or less: repeat for ever)

    def delay(self, attempts: int) -> float:
        base = min(self.max_delay, self.initial_delay * self.factor ** max(0, attempts - 1))
        return base * random.uniform(0.8, 1.2)


class IsoBankPort:
    """BankPort over ISO 8583. Build it, `await start()`, `await stop()`;
    `bank_bridge.service.BankBridgeService` does that for the daemon."""

    def __init__(self, *, store: BankStore, routes: Iterable[BankRoute], reactor, card_key: bytes,
                 currency: str = spec.CURRENCY_CNY, reversal_policy: ReversalPolicy = ReversalPolicy(),
                 connect_initial_delay: float = 1.0, connect_max_delay: float = 30.0):
        self.store = store
        self.reactor = reactor
        self.card_key = card_key
        self.currency = currency
        self.reversal_policy = reversal_policy
        self.routes = {r.code: r for r in routes}
        if not self.routes:
            raise ValueError("at least one bank is required")
        self._stans = {r.code: StanSource(store, r.terminal_id) for r in self.routes.values()}
        self._rrns = RrnSource(store)
        self.connections = {
            r.code: BankConnection(code=r.code, endpoint=r.endpoint, terminal_id=r.terminal_id,
                                   reactor=reactor, stan_source=self._stans[r.code].take_nowait,
                                   response_timeout=r.timeout, echo_interval=r.echo_interval,
                                   on_event=self._link_event, initial_delay=connect_initial_delay,
                                   max_delay=connect_max_delay)
            for r in self.routes.values()}
        self._resolver: InDoubtResolver | None = None
        self._worker: asyncio.Task | None = None
        self._wakeup: defer.Deferred | None = None
        self._wake_call = None
        self._running = False
        self._dirty = False
        self._resolve_failures: dict[str, int] = {}
        self._in_flight: dict[str, asyncio.Future] = {}
        self._background: set[asyncio.Future] = set()

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        for source in self._stans.values():
            await source.prime()
        await self._rrns.prime()
        await self._recover_orphans()
        self._running = True
        for conn in self.connections.values():
            conn.start()
        self._worker = asyncio.ensure_future(self._reversal_worker())

    async def stop(self) -> None:
        self._running = False
        self._wake()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None
        for conn in self.connections.values():
            await wait_deferred(conn.stop())
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def wait_ready(self) -> None:
        """Until every bank link is signed on (for start-up and tests)."""
        for conn in self.connections.values():
            await wait_deferred(conn.when_ready())

    def link_status(self) -> dict[str, bool]:
        """Bank code -> signed on, for health checks and the admin pages."""
        return {code: conn.ready for code, conn in self.connections.items()}

    def set_resolver(self, resolver: InDoubtResolver) -> None:
        self._resolver = resolver
        self._wake()

    # -- BankPort ---------------------------------------------------------------

    async def debit_card(self, *, operation_key: str, card: CardRef, amount: int) -> BankResult:
        return await self._financial("debit", spec.PROC_PURCHASE, operation_key, card, amount)

    async def credit_card(self, *, operation_key: str, card: CardRef, amount: int) -> BankResult:
        return await self._financial("credit", spec.PROC_CREDIT, operation_key, card, amount)

    async def abandon_unsent(self, operation_key: str, *, debit: bool, amount: int) -> BankResult:
        """Claim a key nothing was ever sent under, so that nothing ever will
        be: it is recorded as declined without sending, as when no bank is
        signed on. The store records a key once, so if a 0200 under the key
        was recorded first, its answer is returned instead, and a sender
        racing this claim finds the decline and sends nothing."""
        existing = await self.store.get_operation(operation_key)
        if existing is not None:
            return _recorded_result(existing)
        route = next(iter(self.routes.values()))
        now = self.reactor.seconds()
        stan = await self._stans[route.code].next()
        rrn = await self._rrns.next(now)
        processing_code = spec.PROC_PURCHASE if debit else spec.PROC_CREDIT
        message = self._message(spec.FINANCIAL_REQUEST, route, stan, now)
        operation = dict(operation_key=operation_key, kind="debit" if debit else "credit", bank_code=route.code,
                         terminal_id=route.terminal_id, mti=spec.FINANCIAL_REQUEST, stan=stan, rrn=rrn,
                         transmitted_at=message["7"], processing_code=processing_code, pan_token="", last4="",
                         amount=amount, currency=self.currency, status="declined",
                         decline=BankDecline.ISSUER_UNAVAILABLE.value, created_at=utcnow(now), updated_at=utcnow(now))
        base = dict(bank_code=route.code, operation_key=operation_key, mti=spec.FINANCIAL_REQUEST, stan=stan,
                    rrn=rrn, terminal_id=route.terminal_id, pan_token="", last4="", amount=amount,
                    processing_code=processing_code)
        if not await self.store.insert_operation(operation, self._journal(now, "out", "abandoned", **base)):
            return _recorded_result(await self.store.get_operation(operation_key))
        log.warning("%s: booked but never sent; recorded as not sent", operation_key)
        return BankResult(BankStatus.DECLINED, decline=BankDecline.ISSUER_UNAVAILABLE, stan=stan, rrn=rrn)

    async def known_outcome(self, operation_key: str) -> BankResult | None:
        """What the bank's answer for `operation_key` is known to be (from the
        store): APPROVED, DECLINED (declined or reversed), UNKNOWN while a
        reversal or a review is open; None if no 0200 was ever recorded."""
        operation = await self.store.get_operation(operation_key)
        return None if operation is None else _recorded_result(operation)

    async def verify_card(self, *, pan: str, expiry: str, holder_msisdn: str) -> CardVerification:
        """0100 account verification (amount 0). `holder_msisdn` is not sent:
        this dialect has no field for it."""
        try:
            pan = validate_pan(pan)
            expiry = validate_expiry(expiry)
        except InvalidCardData:
            return CardVerification(BankStatus.DECLINED, decline=BankDecline.INVALID_CARD)
        route = self._route(pan)
        if route is None:
            log.info("verify_card: no bank for card %s", mask_pan(pan))
            return CardVerification(BankStatus.DECLINED, decline=BankDecline.INVALID_CARD)
        conn = self.connections[route.code]
        token = card_token(pan, self.card_key)
        now = self.reactor.seconds()
        stan = await self._stans[route.code].next()
        rrn = await self._rrns.next(now)
        message = self._message(spec.AUTH_REQUEST, route, stan, now, **{
            "2": pan, "3": spec.PROC_PURCHASE, "4": "0" * 12, "14": expiry, "37": rrn, "48": token})
        base = dict(bank_code=route.code, mti=spec.AUTH_REQUEST, stan=stan, rrn=rrn,
                    terminal_id=route.terminal_id, pan_token=token, last4=pan[-4:], amount=0,
                    processing_code=spec.PROC_PURCHASE)
        await self.store.journal(self._journal(now, "out", "sent", **base))
        try:
            response = await wait_deferred(conn.request(message, route.timeout))
        except (L.LinkNotReady, iso8583.EncodeError):
            await self.store.journal(self._journal(self.reactor.seconds(), "out", "not_sent", **base))
            return CardVerification(BankStatus.DECLINED, decline=BankDecline.ISSUER_UNAVAILABLE)
        except (RequestTimeout, ConnectionLostInFlight) as exc:
            await self.store.journal(self._journal(self.reactor.seconds(), "in", _failure_event(exc), **base))
            return CardVerification(BankStatus.UNKNOWN)
        code = response.get("39")
        await self.store.journal(self._journal(self.reactor.seconds(), "in", "response",
                                               **dict(base, mti=response["t"]), response_code=code))
        if code != spec.RC_APPROVED:
            return CardVerification(BankStatus.DECLINED, decline=decline_for(code), response_code=code)
        card_type = _card_type(response.get("62")) or route.card_types.get(pan[:6]) or "debit"
        ref = CardRef(token=token, last4=pan[-4:], bin=pan[:6], card_type=card_type, bank_code=route.code)
        return CardVerification(BankStatus.APPROVED, card=ref, response_code=code)

    # -- money ------------------------------------------------------------------

    async def _financial(self, kind: str, processing_code: str, operation_key: str, card: CardRef,
                         amount: int) -> BankResult:
        if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount < 10 ** 12:
            raise ValueError("amount must be a positive integer number of minor units")
        if not operation_key or len(operation_key) > 128:
            raise ValueError("operation_key must be 1..128 characters")
        existing = await self.store.get_operation(operation_key)
        if existing is not None:
            return _recorded_result(existing)
        route = self.routes.get(card.bank_code) or self._route(card.bin)
        if route is None:
            log.warning("%s %s: no bank for BIN %s", kind, operation_key, card.bin)
            return BankResult(BankStatus.DECLINED, decline=BankDecline.INVALID_CARD)
        conn = self.connections[route.code]
        now = self.reactor.seconds()
        stan = await self._stans[route.code].next()
        rrn = await self._rrns.next(now)
        message = self._message(spec.FINANCIAL_REQUEST, route, stan, now, **{
            "3": processing_code, "4": f"{amount:012d}", "37": rrn, "48": card.token})
        operation = dict(operation_key=operation_key, kind=kind, bank_code=route.code,
                         terminal_id=route.terminal_id, mti=spec.FINANCIAL_REQUEST, stan=stan, rrn=rrn,
                         transmitted_at=message["7"], processing_code=processing_code,
                         pan_token=card.token, last4=card.last4, amount=amount, currency=self.currency,
                         status="sent", created_at=utcnow(now), updated_at=utcnow(now))
        base = dict(bank_code=route.code, operation_key=operation_key, mti=spec.FINANCIAL_REQUEST,
                    stan=stan, rrn=rrn, terminal_id=route.terminal_id, pan_token=card.token,
                    last4=card.last4, amount=amount, processing_code=processing_code)
        if not conn.ready:
            # Nothing leaves: record a final decline so a repeat of the key is consistent.
            operation.update(status="declined", decline=BankDecline.ISSUER_UNAVAILABLE.value)
            if not await self.store.insert_operation(operation, self._journal(now, "out", "not_sent", **base)):
                return _recorded_result(await self.store.get_operation(operation_key))
            log.warning("%s %s: bank %s not signed on, declined without sending", kind, operation_key, route.code)
            return BankResult(BankStatus.DECLINED, decline=BankDecline.ISSUER_UNAVAILABLE, stan=stan, rrn=rrn)
        if not await self.store.insert_operation(operation, self._journal(now, "out", "sent", **base)):
            return _recorded_result(await self.store.get_operation(operation_key))
        # The exchange finishes (and records its outcome) even if our caller is cancelled.
        exchange = asyncio.ensure_future(self._exchange(conn, route, message, operation, base))
        self._background.add(exchange)
        self._in_flight[operation_key] = exchange
        exchange.add_done_callback(self._background.discard)
        exchange.add_done_callback(lambda _: self._in_flight.pop(operation_key, None))
        return await asyncio.shield(exchange)

    async def _exchange(self, conn: BankConnection, route: BankRoute, message: dict[str, str],
                        operation: dict[str, Any], base: dict[str, Any]) -> BankResult:
        key = operation["operation_key"]
        stan, rrn = operation["stan"], operation["rrn"]
        try:
            response = await wait_deferred(conn.request(message, route.timeout))
        except (L.LinkNotReady, iso8583.EncodeError) as exc:
            if isinstance(exc, iso8583.EncodeError):
                log.error("%s %s: message could not be encoded (%s); not sent", operation["kind"], key, exc)
            now = self.reactor.seconds()
            await self.store.finish_operation(
                key, status="declined", response_code=None, decline=BankDecline.ISSUER_UNAVAILABLE.value,
                journal=self._journal(now, "out", "not_sent", **base), now=now)
            return BankResult(BankStatus.DECLINED, decline=BankDecline.ISSUER_UNAVAILABLE, stan=stan, rrn=rrn)
        except (RequestTimeout, ConnectionLostInFlight) as exc:
            log.warning("%s %s (stan %s rrn %s): %s; reversal queued", operation["kind"], key, stan, rrn,
                        _failure_event(exc))
            await self._queue_reversal(operation, _failure_event(exc), base)
            return BankResult(BankStatus.UNKNOWN, stan=stan, rrn=rrn)
        crash_point("after_0200_sent")
        now = self.reactor.seconds()
        code = response.get("39")
        journal = self._journal(now, "in", "response", **dict(base, mti=response["t"]), response_code=code)
        if code == spec.RC_APPROVED:
            await self.store.finish_operation(key, status="approved", response_code=code, decline=None,
                                              journal=journal, now=now)
            crash_point("after_0210_received")
            return BankResult(BankStatus.APPROVED, response_code=code, stan=stan, rrn=rrn)
        decline = decline_for(code)
        await self.store.finish_operation(key, status="declined", response_code=code, decline=decline.value,
                                          journal=journal, now=now)
        return BankResult(BankStatus.DECLINED, decline=decline, response_code=code, stan=stan, rrn=rrn)

    async def _queue_reversal(self, operation: dict[str, Any], event: str, base: dict[str, Any]) -> None:
        now = self.reactor.seconds()
        route = self.routes[operation["bank_code"]]
        original = spec.OriginalData(mti=operation["mti"], stan=operation["stan"],
                                     transmitted_at=operation["transmitted_at"], acquirer_id=route.acquirer_id)
        reversal_stan = await self._stans[route.code].next()
        reversal = dict(operation_key=operation["operation_key"], bank_code=route.code,
                        terminal_id=operation["terminal_id"], stan=reversal_stan, rrn=operation["rrn"],
                        original_data=original.encode(), processing_code=operation["processing_code"],
                        pan_token=operation["pan_token"], amount=operation["amount"],
                        currency=operation["currency"], state="pending", attempts=0, next_attempt_at=now,
                        created_at=utcnow(now), updated_at=utcnow(now))
        await self.store.queue_reversal(reversal, self._journal(now, "in", event, **base), now)
        self._wake()

    async def _recover_orphans(self) -> None:
        """Operations left 'sent' by a crash may have reached the bank: reverse them."""
        for operation in await self.store.operations_in_state("sent"):
            if operation["bank_code"] not in self.routes:
                log.error("operation %s: bank %s no longer configured; left for manual review",
                          operation["operation_key"], operation["bank_code"])
                continue
            base = dict(bank_code=operation["bank_code"], operation_key=operation["operation_key"],
                        mti=operation["mti"], stan=operation["stan"], rrn=operation["rrn"],
                        terminal_id=operation["terminal_id"], pan_token=operation["pan_token"],
                        last4=operation["last4"], amount=operation["amount"],
                        processing_code=operation["processing_code"])
            log.warning("operation %s was in flight at the last stop: reversal queued",
                        operation["operation_key"])
            await self._queue_reversal(operation, "recovered", base)

    # -- reversal worker -------------------------------------------------------

    def _wake(self) -> None:
        self._dirty = True
        if self._wakeup is not None and not self._wakeup.called:
            self._wakeup.callback(None)

    async def _reversal_worker(self) -> None:
        while self._running:
            self._dirty = False         # set by _wake: new work arrived during the round
            try:
                next_due = await self._reversal_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reversal worker: round failed; retrying")
                next_due = self.reactor.seconds() + self.reversal_policy.initial_delay
            if not self._running:
                break
            if self._dirty:
                continue
            self._wakeup = defer.Deferred()
            # Idle, it still looks again after max_delay: another process sharing the
            # database (`telecom-pay settle`) may have queued a reversal.
            idle = self.reversal_policy.max_delay
            delay = idle if next_due is None else min(idle, max(0.0, next_due - self.reactor.seconds()))
            self._wake_call = self.reactor.callLater(delay, self._wake)
            try:
                await wait_deferred(self._wakeup)
            finally:
                if self._wake_call.active():
                    self._wake_call.cancel()

    async def _reversal_round(self) -> float | None:
        """One pass over the queue: every due reversal is sent (up to
        `REVERSAL_CONCURRENCY` at a time, so one silent bank does not hold
        up the others); returns when the next one falls due."""
        now = self.reactor.seconds()
        rows = await self.store.open_reversals()
        waiting = [r["next_attempt_at"] for r in rows if r["state"] == "pending" and r["next_attempt_at"] > now]
        due_rows = [r for r in rows if r["state"] == "acknowledged" or r["next_attempt_at"] <= now]
        limit = asyncio.Semaphore(REVERSAL_CONCURRENCY)

        async def work(row: dict[str, Any]) -> float | None:
            async with limit:
                if not self._running:
                    return None
                if row["state"] == "acknowledged":
                    return await self._resolve(row)
                return await self._attempt_reversal(row)

        results = await asyncio.gather(*(work(r) for r in due_rows), return_exceptions=True)
        for row, result in zip(due_rows, results):
            if isinstance(result, BaseException):
                log.error("reversal %s: %r; will retry", row["operation_key"], result)
                waiting.append(self.reactor.seconds() + self.reversal_policy.initial_delay)
            elif result is not None:
                waiting.append(result)
        return min(waiting) if waiting else None

    async def _attempt_reversal(self, row: dict[str, Any]) -> float | None:
        """Send 0420 (first) or 0421 (repeat). Returns when to try again, or
        None when acknowledged and the resolver has been told."""
        key = row["operation_key"]
        route = self.routes.get(row["bank_code"])
        attempts = row["attempts"] + 1
        retry_at = self.reactor.seconds() + self.reversal_policy.delay(attempts)
        if route is None:
            log.error("reversal %s: bank %s not configured", key, row["bank_code"])
            await self.store.reversal_attempted(key, attempts=row["attempts"], next_attempt_at=retry_at,
                                                journal=None, now=self.reactor.seconds())
            return retry_at
        conn = self.connections[route.code]
        mti = spec.REVERSAL_ADVICE if row["attempts"] == 0 else spec.REVERSAL_ADVICE_REPEAT
        base = dict(bank_code=route.code, operation_key=key, mti=mti, stan=row["stan"], rrn=row["rrn"],
                    terminal_id=row["terminal_id"], pan_token=row["pan_token"], amount=row["amount"],
                    processing_code=row["processing_code"])
        if not conn.ready:
            await self.store.reversal_attempted(key, attempts=row["attempts"], next_attempt_at=retry_at,
                                                journal=None, now=self.reactor.seconds())
            return retry_at
        now = self.reactor.seconds()
        message = self._message(mti, route, row["stan"], now, **{
            "3": row["processing_code"], "4": f"{row['amount']:012d}", "37": row["rrn"],
            "48": row["pan_token"], "90": row["original_data"]})
        await self.store.reversal_attempted(key, attempts=attempts, next_attempt_at=retry_at,
                                            journal=self._journal(now, "out", "sent", **base), now=now)
        policy = self.reversal_policy
        review = 0 < policy.max_attempts <= attempts
        try:
            response = await wait_deferred(conn.request(message, route.timeout))
        except (L.LinkNotReady, RequestTimeout, ConnectionLostInFlight) as exc:
            log.warning("reversal %s (%s, attempt %d): %s; %s", key, mti, attempts, type(exc).__name__,
                        "manual review" if review else "will repeat")
            await self.store.reversal_unanswered(
                key, response_code=None, review=review, now=self.reactor.seconds(),
                journal=self._journal(self.reactor.seconds(), "in", _failure_event(exc), **base))
            return None if review else retry_at
        now = self.reactor.seconds()
        code = response.get("39")
        journal = self._journal(now, "in", "response", **dict(base, mti=response["t"]), response_code=code)
        if code not in policy.final_codes:
            if review:
                log.error("reversal %s: answered %s after %d attempts; manual review (telecom-pay bank in-doubt)",
                          key, code, attempts)
            else:
                log.warning("reversal %s (%s, attempt %d): answered %s, not final; will repeat",
                            key, mti, attempts, code)
            await self.store.reversal_unanswered(key, response_code=_short(code, 2), review=review,
                                                 journal=journal, now=now)
            return None if review else retry_at
        if not await self.store.reversal_acknowledged(key, response_code=code, now=now, journal=journal):
            return None                 # decided meanwhile (manual review): the decision stands
        log.info("reversal %s acknowledged (response %s)", key, code)
        return await self._resolve(dict(row, state="acknowledged", resolution="declined"))

    async def _resolve(self, row: dict[str, Any]) -> float | None:
        """Tell the resolver; at-least-once (it must be idempotent). Returns
        when to try again, or None once it has been told."""
        key = row["operation_key"]
        exchange = self._in_flight.get(key)
        if exchange is not None:        # the caller hears UNKNOWN before the resolver hears the end
            await asyncio.wait([exchange])
            await asyncio.sleep(0)
        resolver = self._resolver
        if resolver is None:
            log.warning("reversal %s acknowledged but no resolver is set yet", key)
            return self.reactor.seconds() + self.reversal_policy.initial_delay
        try:
            await resolver.resolve_in_doubt(key, approved=row.get("resolution") == "approved")
        except Exception:
            failures = self._resolve_failures[key] = self._resolve_failures.get(key, 0) + 1
            log.exception("resolver failed for %s (%d times); will retry", key, failures)
            return self.reactor.seconds() + self.reversal_policy.delay(failures)
        self._resolve_failures.pop(key, None)
        await self.store.reversal_resolved(key, self.reactor.seconds())
        return None

    # -- link events ----------------------------------------------------------

    def _link_event(self, bank_code: str, event: object) -> None:
        if isinstance(event, L.SignedOn):
            self._wake()                # queued reversals go out as soon as the link is back
            return
        now = self.reactor.seconds()
        route = self.routes[bank_code]
        if isinstance(event, L.UnmatchedResponse):
            msg = event.response
            log.warning("bank %s: late or unknown %s stan=%s rrn=%s response=%s ignored; "
                        "any reversal stands", bank_code, msg["t"], msg.get("11"), msg.get("37"), msg.get("39"))
            entry = self._journal(now, "in", "late_response", bank_code=bank_code, mti=msg["t"],
                                  stan=msg.get("11"), rrn=msg.get("37"), terminal_id=msg.get("41"),
                                  response_code=_short(msg.get("39"), 2),
                                  amount=int(msg["4"]) if msg.get("4") else None,
                                  processing_code=_short(msg.get("3"), 6))
        elif isinstance(event, L.MessageRefused):
            entry = self._journal(now, "in", "refused", bank_code=bank_code, mti=event.mti,
                                  stan=event.stan, terminal_id=route.terminal_id, detail=event.reason[:200])
        elif isinstance(event, L.NetworkExchange):
            # One line per exchange: the request's direction, the answer's code.
            request, response = event.request, event.response
            kind = {spec.NET_SIGN_ON: "sign_on", spec.NET_SIGN_OFF: "sign_off",
                    spec.NET_ECHO: "echo"}.get(request.get("70", ""), "network")
            entry = self._journal(now, "in" if event.by_host else "out", kind, bank_code=bank_code,
                                  mti=request["t"], stan=request.get("11"), terminal_id=route.terminal_id,
                                  response_code=_short(response.get("39"), 2),
                                  detail="asked by the host" if event.by_host else None)
        elif isinstance(event, L.LinkDead):
            entry = self._journal(now, "in", "link_dead", bank_code=bank_code, terminal_id=route.terminal_id,
                                  detail=event.reason[:200])
        else:
            return
        task = asyncio.ensure_future(self._journal_link_event(entry))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    async def _journal_link_event(self, entry: dict[str, Any]) -> None:
        if entry.get("rrn"):            # a late answer: file it under its operation
            operation = await self.store.operation_by_rrn(entry["rrn"])
            if operation is not None:
                entry = dict(entry, operation_key=operation["operation_key"], pan_token=operation["pan_token"],
                             last4=operation["last4"])
        await self.store.journal(entry)

    # -- helpers ----------------------------------------------------------------

    def _route(self, number: str) -> BankRoute | None:
        """The bank whose longest configured BIN prefix matches `number`."""
        best: BankRoute | None = None
        best_len = 0
        for route in self.routes.values():
            for prefix in route.bins:
                if number.startswith(prefix) and len(prefix) > best_len:
                    best, best_len = route, len(prefix)
        return best

    def _message(self, mti: str, route: BankRoute, stan: str, now: float, **fields: str) -> dict[str, str]:
        message = {"t": mti, "11": stan, "41": route.terminal_id, "32": route.acquirer_id,
                   "49": self.currency}
        message.update(L.transmission_fields(now))
        message.update(fields)
        return message

    @staticmethod
    def _journal(now: float, direction: str, event: str, **fields: Any) -> dict[str, Any]:
        return dict(at=utcnow(now), direction=direction, event=event, **fields)


def _recorded_result(operation: dict[str, Any]) -> BankResult:
    status = operation["status"]
    common = dict(response_code=operation["response_code"], stan=operation["stan"], rrn=operation["rrn"])
    if status == "approved":
        return BankResult(BankStatus.APPROVED, **common)
    if status == "declined":
        return BankResult(BankStatus.DECLINED, decline=BankDecline(operation["decline"]), **common)
    if status == "reversed":
        # Final: reversed at the bank, the resolver has been (or is being) told approved=False.
        return BankResult(BankStatus.DECLINED, decline=BankDecline.ISSUER_UNAVAILABLE, **common)
    if status == "review":
        return BankResult(BankStatus.UNKNOWN, review=True, **common)
    return BankResult(BankStatus.UNKNOWN, **common)        # sent / reversing


def _failure_event(exc: BaseException) -> str:
    if isinstance(exc, RequestTimeout):
        return "timeout"
    if isinstance(exc, ConnectionLostInFlight):
        return "connection_lost"
    return "not_sent"


def _card_type(value: str | None) -> str | None:
    if value is None:
        return None
    return {"DEBIT": "debit", "CREDIT": "credit"}.get(value.strip().upper())


def _short(value: str | None, length: int) -> str | None:
    return value[:length] if value else None


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("bank journal write failed: %r", task.exception())
