"""The conversation layer: one subscriber message in, reply messages out.

It keeps what a message leaves pending in the session store: `KT` waits for
`A`; `ZF M001 12.50` (and every other command that spends or unlocks)
waits for the 6-digit PIN. A pending action is consumed atomically (`take`),
so a PIN sent twice never pays twice. When the channel names the recorded
message that carries the PIN (`message_id`), the operation's idempotency key
is derived from it (`mo:<message_id>`) and the action is kept under that
message (`answering:<message_id>`) until its answer is recorded: if the
process dies between the money commit and the reply, answering the same
recorded message again finds the operation by its key and sends the
original receipt (the stored text is masked, so the PIN itself is gone; with
nothing booked, the PIN is asked for again).

Every message gets an answer: unknown or malformed text gets help, and an
unexpected failure gets a short "try again later" (logged), never silence
and never a traceback.
"""
from __future__ import annotations

import asyncio
import time
import uuid

from twisted.logger import Logger

from telecom_pay.commands import keywords as kw
from telecom_pay.commands.parser import Command, ParseError, parse
from telecom_pay.commands.redaction import is_masked_pin_answer, masked_tag
from telecom_pay.commands.replies import normalize_lang, render, render_help, render_parse_error
from telecom_pay.ledger.ledger import balance_after
from telecom_pay.merchants import payments as sp_payments
from telecom_pay.msisdn import mask, normalize
from telecom_pay.outcomes import Outcome, Result
from telecom_pay.service import PaymentService
from telecom_pay.sessions import SessionStore

log = Logger(namespace="telecom_pay.conversation")

TRY_LATER = {"zh": "系统繁忙, 请稍后再试.", "en": "Service busy, please try again later."}
LANG_TTL = 365 * 24 * 3600
LANGUAGE_CACHE_TTL = 3600
LOCAL_LANGUAGE_TTL = 30.0
LOCAL_LANGUAGE_MAX = 200_000
# PIN-answer notes whose answer is recorded are deleted together, this often
ANSWERED_FLUSH_S = 0.25

# Commands that wait for the PIN before anything happens.
PIN_GUARDED = {kw.PAY, kw.SEND, kw.AIRTIME, kw.TOPUP, kw.WITHDRAW, kw.UNFREEZE, kw.CLOSE}
# The reply an operation recovered by its key gets, by the operation's kind.
_ACTION_OF_KIND = {"payment": "pay", "p2p": "send", "airtime": "airtime", "topup": "topup",
                   "withdrawal": "withdraw", "close_refund": "close"}


class Replies(list):
    """Reply texts; `secret` when they carry a credential (a PIN or a
    password), so the outbox forgets the text once the SMSC has it."""
    secret = False


def replies_for(texts: list[str], result: Result | None = None) -> Replies:
    out = Replies(texts)
    if result is not None and (result.params.get("pin") or result.params.get("password")):
        out.secret = True
    return out


def message_key(message_id: int) -> str:
    """The idempotency key of the operation a recorded message's PIN answer books."""
    return f"mo:{message_id}"


class Conversation:
    def __init__(self, service: PaymentService, sessions: SessionStore | None = None):
        self.service = service
        self.sessions = sessions or service.sessions
        self.settings = service.settings
        self._answering: set[int] = set()   # messages whose PIN action this process keeps (see _pin_reply)
        self._languages: dict[str, tuple[str, float]] = {}
        self._answered: list[str] = []      # notes to delete (see answered)
        self._answered_flush: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ entry points

    async def handle(self, msisdn: str, text: str, *, channel: str = "sms",
                     message_id: int | None = None, again: bool = False) -> Replies:
        """Answer one message from `msisdn`; `message_id` is its durable
        record (the key of what a PIN answer books). `again`: the recorded
        message is answered once more (after a restart), `text` is what was
        stored, a PIN answer masked."""
        msisdn = normalize(msisdn, self.settings.region)
        lang = await self.language(msisdn)
        if again and message_id is not None and is_masked_pin_answer(text):
            try:
                tag = masked_tag(text)
                if tag is not None:         # `8812 ******`: an SP request's state as it is now
                    result = await sp_payments.answer_again(self.service, msisdn, tag, lang=lang)
                    return replies_for(render(result or Result(Outcome.NOTHING_PENDING), lang, tz=self.service.tz))
                return replies_for(render(await self._recover_pin_answer(msisdn, message_id), lang, tz=self.service.tz))
            except Exception:
                log.failure("recovering the answer to {msisdn}'s PIN failed", msisdn=mask(msisdn))
                return replies_for([TRY_LATER[lang]])
        try:
            cmd = parse(text)
        except ParseError as err:
            return replies_for(render_parse_error(err, lang))
        try:
            result = await self._dispatch(msisdn, cmd, channel, lang, message_id, again)
        except Exception:
            log.failure("command {name} from {msisdn} failed", name=cmd.name, msisdn=mask(msisdn))
            return replies_for([TRY_LATER[lang]])
        if isinstance(result, list):
            return replies_for(result)
        if result.outcome is Outcome.OK and result.params.get("action") == "lang":
            lang = result.params["lang"]
        return replies_for(render(result, lang, tz=self.service.tz), result)

    async def answered(self, message_id: int) -> None:
        """The answer to `message_id` is recorded: its PIN answer needs no
        recovery. Only a PIN answer kept a note (no store round trip for any
        other message); one kept by a process that died expires by its TTL."""
        if message_id in self._answering:
            self._answering.discard(message_id)
            # deleted with the others answered meanwhile, in one round trip:
            # a note left behind is harmless (only an unanswered message's is read)
            self._answered.append(self._answering_key(message_id))
            if self._answered_flush is None:
                self._answered_flush = asyncio.get_running_loop().call_later(ANSWERED_FLUSH_S, self._flush_answered)

    def _flush_answered(self) -> None:
        self._answered_flush = None
        keys, self._answered = self._answered, []

        async def delete():
            try:
                await self.sessions.delete_many(keys)
            except Exception as exc:     # they expire by their TTL
                log.warn("forgetting {n} answered PIN notes failed: {err}", n=len(keys), err=type(exc).__name__)
        asyncio.ensure_future(delete())

    async def render_for(self, msisdn: str, result: Result) -> Replies:
        """Text for a notification (P2P received, a delayed bank answer, a PIN reset)."""
        return replies_for(render(result, await self.language(msisdn), tz=self.service.tz), result)

    async def language(self, msisdn: str) -> str:
        cached = self._languages.get(msisdn)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        stored = await self.sessions.get(f"lang:{msisdn}")
        if stored:
            lang = normalize_lang(stored.get("lang"))
        else:
            account = await self.service.account_info(msisdn)
            if account is None:
                return normalize_lang(self.settings.default_language)
            lang = normalize_lang(account.language)
            # remembered for an hour: the account's language changes only by LANG,
            # which writes this key itself
            await self.sessions.put(f"lang:{msisdn}", {"lang": lang}, ttl=LANGUAGE_CACHE_TTL)
        self._remember_language(msisdn, lang, now)
        return lang

    def _remember_language(self, msisdn: str, lang: str, now: float | None = None) -> None:
        """Kept in the process for LOCAL_LANGUAGE_TTL: a round trip saved on
        nearly every message. LANG sent through another instance reaches this
        one's replies within that time."""
        if len(self._languages) >= LOCAL_LANGUAGE_MAX:
            self._languages.clear()
        self._languages[msisdn] = (lang, (now or time.monotonic()) + LOCAL_LANGUAGE_TTL)

    # ------------------------------------------------------------ for the menus

    async def run(self, msisdn: str, cmd: Command, *, channel: str, lang: str,
                  message_id: int | None = None) -> Result | list[str]:
        """One command built by a menu instead of parsed from text: the same
        dispatch, so every channel has the same checks, limits and keys."""
        return await self._dispatch(normalize(msisdn, self.settings.region), cmd, channel, lang, message_id)

    async def answer_pin(self, msisdn: str, pin: str, *, channel: str, lang: str,
                         message_id: int | None = None, expect_key: str | None = None) -> Result:
        """The PIN for the action pending for `msisdn` (consumed once);
        `expect_key`: only if that is still the pending one (the action a
        menu page showed), else CONFIRMATION_EXPIRED and nothing is paid."""
        return await self._pin_reply(normalize(msisdn, self.settings.region), pin, channel, lang, message_id,
                                     expect_key)

    async def pending(self, msisdn: str) -> dict | None:
        """What `msisdn` has pending (no PIN in it): a menu shows it as a page."""
        return await self.sessions.get(self._pending_key(normalize(msisdn, self.settings.region)))

    async def drop_pending(self, msisdn: str, key: str) -> bool:
        """Drop the pending action `key`, if it is still the one pending (a
        menu session that asked for the PIN ended without it)."""
        pkey = self._pending_key(normalize(msisdn, self.settings.region))
        taken = await self.sessions.take(pkey)
        if taken is None:
            return False
        if taken.get("key") != key:      # another channel's since: leave it
            await self.sessions.put(pkey, taken, ttl=self.settings.pending_payment_minutes * 60)
            return False
        return True

    @staticmethod
    def pending_params(pending: dict) -> dict:
        return Conversation._pending_params(pending)

    # ------------------------------------------------------------ dispatch

    async def _dispatch(self, msisdn: str, cmd: Command, channel: str, lang: str,
                        message_id: int | None = None, again: bool = False) -> Result | list[str]:
        svc = self.service
        name = cmd.name
        if name == kw.HELP:
            return render_help(lang, cmd.topic)
        if name == kw.LANG:
            await self.sessions.put(f"lang:{msisdn}", {"lang": cmd.lang}, ttl=LANG_TTL)
            self._remember_language(msisdn, normalize_lang(cmd.lang))
            return await svc.set_language(msisdn, cmd.lang)
        if name == kw.OPEN:
            result = await svc.open_account(msisdn, channel=channel, language=lang)
            if result.outcome is Outcome.CONFIRM_REQUIRED:
                try:   # the pending account is committed; `A` finds it without this note
                    await self._hold(msisdn, {"action": kw.OPEN}, self.settings.confirm_minutes)
                except Exception as exc:
                    log.warn("KT from {msisdn} answered without its session note: {err}", msisdn=mask(msisdn),
                             err=type(exc).__name__)
            return result
        if name == kw.CONFIRM:
            pending = await self.sessions.take(self._pending_key(msisdn))
            if pending is not None and pending.get("action") != kw.OPEN:
                # a PIN-guarded action is waiting: `A` is not its PIN
                await self._hold(msisdn, pending, self.settings.pending_payment_minutes)
                return Result(Outcome.PIN_REQUIRED, amount=pending.get("amount"),
                              params=self._pending_params(pending))
            key = message_key(message_id) if message_id is not None else None
            result = await svc.confirm_open(msisdn, channel=channel, message_key=key)
            if again and key is not None and result.outcome is Outcome.ALREADY_ACTIVE:
                # this very A opened the account and its reply, the only copy of
                # the credentials, was never recorded: they never left
                return await svc.reissue_lost_credentials(msisdn, key, channel=channel)
            return result
        if name == kw.CANCEL and cmd.tag is not None:
            return await sp_payments.decline(svc, msisdn, cmd.tag, lang=lang)
        if name == kw.CANCEL:
            dropped = await self.sessions.take(self._pending_key(msisdn))
            if dropped is None or dropped.get("action") == kw.OPEN:
                return await svc.cancel_open(msisdn, channel=channel)   # KT then N: no account
            return Result(Outcome.OK, params={"action": "cancel"})
        if name == kw.BALANCE:
            return await svc.balance(msisdn, channel=channel)
        if name == kw.STATEMENT:
            return await svc.statement(msisdn, channel=channel, page=cmd.page, lang=lang)
        if name == kw.CHANGE_PIN:
            return await svc.change_pin(msisdn, cmd.old_pin, cmd.new_pin, channel=channel)
        if name == kw.FREEZE:
            await self.sessions.delete(self._pending_key(msisdn))
            return await svc.freeze(msisdn, channel=channel)
        if name == kw.CALLBACK:
            return await svc.request_callback(msisdn, channel=channel)
        if name == kw.PIN_REPLY:
            if cmd.tag is not None:
                return await self._sp_pin(msisdn, cmd, channel, lang, message_id)
            result = await self._pin_reply(msisdn, cmd.pin, channel, lang, message_id)
            if result.outcome is Outcome.NOTHING_PENDING:
                # no action of this conversation waited: the PIN may answer an SP request
                return await self._sp_pin(msisdn, cmd, channel, lang, message_id) or result
            return result
        if name in PIN_GUARDED:
            return await self._ask_pin(msisdn, cmd, lang)
        return Result(Outcome.UNKNOWN_COMMAND)

    async def _ask_pin(self, msisdn: str, cmd: Command, lang: str) -> Result:
        """Check what can be checked now, then wait for the PIN."""
        svc = self.service
        # the number travels with the note: a PIN answer's recovery checks it
        pending = {"action": cmd.name, "key": f"conv:{uuid.uuid4().hex}", "msisdn": msisdn}
        if cmd.name == kw.PAY:
            preview = await svc.preview_payment(msisdn, cmd.merchant_code, cmd.amount, lang=lang)
            if preview.outcome is not Outcome.PIN_REQUIRED:
                return preview
            pending.update(amount=cmd.amount, merchant_code=cmd.merchant_code, reference=cmd.reference,
                           merchant_name=preview.params.get("merchant_name"))
        elif cmd.name == kw.SEND:
            preview = await svc.preview_send(msisdn, cmd.msisdn, cmd.amount)
            if preview.outcome is not Outcome.PIN_REQUIRED:
                return preview
            pending.update(amount=cmd.amount, to=cmd.msisdn, counterparty=preview.params.get("counterparty"))
        else:
            account = await svc.account_info(msisdn)
            if account is None:
                return Result(Outcome.NO_ACCOUNT)
            if cmd.name == kw.UNFREEZE and account.status == "active":
                return Result(Outcome.ALREADY_ACTIVE)
            if account.status == "pending":
                return Result(Outcome.ACCOUNT_PENDING)
            if cmd.name not in (kw.UNFREEZE, kw.CLOSE) and account.status != "active":
                return Result(Outcome.ACCOUNT_FROZEN)
            if cmd.name != kw.UNFREEZE and await svc.pin_change_required(msisdn):
                return Result(Outcome.PIN_CHANGE_REQUIRED)
            if cmd.amount is not None:
                pending["amount"] = cmd.amount
            if cmd.name == kw.AIRTIME and cmd.msisdn:
                pending["for"] = cmd.msisdn
        await self._hold(msisdn, pending, self.settings.pending_payment_minutes)
        return Result(Outcome.PIN_REQUIRED, amount=pending.get("amount"), params=self._pending_params(pending))

    async def _pin_reply(self, msisdn: str, pin: str, channel: str, lang: str,
                         message_id: int | None = None, expect_key: str | None = None) -> Result:
        if message_id is None:
            pending = await self.sessions.take(self._pending_key(msisdn))
        else:
            # consumed, and kept under the message for recovery, in one step
            pending = await self.sessions.take_into(self._pending_key(msisdn), self._answering_key(message_id),
                                                    ttl=self.settings.pending_payment_minutes * 60)
            if pending is not None:
                self._answering.add(message_id)
        if expect_key is not None and pending is not None and pending.get("key") != expect_key:
            # another channel's request replaced the one this PIN was asked for
            # (a menu showed what it confirms): the PIN pays neither
            await self._hold(msisdn, pending, self.settings.pending_payment_minutes)
            if message_id is not None:
                self._answering.discard(message_id)
                await self.sessions.delete(self._answering_key(message_id))
            return Result(Outcome.CONFIRMATION_EXPIRED)
        if pending is None or pending.get("action") == kw.OPEN:
            if pending is not None:
                await self._hold(msisdn, pending, self.settings.confirm_minutes)
            return Result(Outcome.NOTHING_PENDING)
        key = pending["key"]
        if message_id is not None:
            key = message_key(message_id)
        svc, action, amount = self.service, pending["action"], pending.get("amount")
        if action == kw.PAY:
            result = await svc.pay(msisdn, pending["merchant_code"], amount, pin, channel=channel, key=key,
                                   reference=pending.get("reference"), lang=lang)
        elif action == kw.SEND:
            result = await svc.send(msisdn, pending["to"], amount, pin, channel=channel, key=key)
        elif action == kw.AIRTIME:
            result = await svc.airtime(msisdn, amount, pin, channel=channel, key=key, for_msisdn=pending.get("for"))
        elif action == kw.TOPUP:
            result = await svc.topup(msisdn, amount, channel=channel, key=key, pin=pin, require_pin=True)
        elif action == kw.WITHDRAW:
            result = await svc.withdraw(msisdn, amount, pin, channel=channel, key=key)
        elif action == kw.UNFREEZE:
            result = await svc.unfreeze(msisdn, pin, channel=channel)
        elif action == kw.CLOSE:
            result = await svc.close(msisdn, pin, channel=channel, key=key)
        else:
            return Result(Outcome.NOTHING_PENDING)
        if result.outcome is Outcome.PIN_WRONG:
            await self._hold(msisdn, pending, self.settings.pending_payment_minutes)   # may try again
        return result

    async def _sp_pin(self, msisdn: str, cmd: Command, channel: str, lang: str,
                      message_id: int | None) -> Result | None:
        """A PIN for an SP payment request (`8812 147258`, or a bare PIN with
        exactly one request and no action of this conversation pending);
        None: no request is pending and no tag was given. A bare PIN's
        message keeps a note naming the request, so answering it again
        after a restart tells that request's state (the key `sp:<id>` pays
        it at most once whatever happens)."""
        if cmd.tag is None and message_id is not None:
            live = await sp_payments.live_requests(self.service, msisdn, lang)
            if len(live) == 1:
                await self.sessions.put(self._answering_key(message_id),
                                        {"action": "sp", "tag": live[0].tag, "msisdn": msisdn},
                                        ttl=self.settings.pending_payment_minutes * 60)
                self._answering.add(message_id)
        return await sp_payments.confirm(self.service, msisdn, cmd.pin, tag=cmd.tag, channel=channel, lang=lang)

    async def _recover_pin_answer(self, msisdn: str, message_id: int) -> Result:
        """Answer again a recorded PIN answer whose reply was never recorded
        (the process died): the original result if its operation booked,
        else the PIN is asked for again (its digits were not stored)."""
        claimed = await self.sessions.get(self._answering_key(message_id))
        if claimed is not None and claimed.get("action") == "sp" and claimed.get("msisdn") == msisdn:
            again = await sp_payments.answer_again(self.service, msisdn, claimed.get("tag"),
                                                   lang=await self.language(msisdn))
            return again or Result(Outcome.NOTHING_PENDING)
        rec = await self.service.ledger.get_operation(message_key(message_id))
        if rec is None:
            if claimed is None or claimed.get("msisdn") != msisdn or claimed.get("action") == kw.OPEN:
                return Result(Outcome.NOTHING_PENDING)
            pending = claimed
            await self._hold(msisdn, pending, self.settings.pending_payment_minutes)
            return Result(Outcome.PIN_REQUIRED, amount=pending.get("amount"), params=self._pending_params(pending))
        action = _ACTION_OF_KIND.get(rec.kind, (claimed or {}).get("action", rec.kind))
        params = {"action": action}
        for k in ("merchant_code", "merchant_name", "counterparty"):
            if claimed and claimed.get(k):
                params[k] = claimed[k]
        if rec.state == "pending":
            return Result(Outcome.IN_PROGRESS, ref=rec.ref, amount=rec.amount, params=params)
        if rec.state == "voided":
            return Result(Outcome.BANK_DECLINED, amount=rec.amount, params={**params, "reason": "other"})
        balance = None
        if rec.account_id is not None:      # the balance the original receipt would have told
            after = balance_after(rec, rec.account_id) or await self.service.ledger.balance(rec.account_id)
            balance = after.available
        return Result(Outcome.OK, ref=rec.ref, amount=rec.amount, fee=rec.fee or None, balance=balance,
                      params=params)

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _answering_key(message_id: int) -> str:
        return f"answering:{message_id}"

    @staticmethod
    def _pending_key(msisdn: str) -> str:
        return f"pending:{msisdn}"

    async def _hold(self, msisdn: str, pending: dict, minutes: int) -> None:
        await self.sessions.put(self._pending_key(msisdn), pending, ttl=minutes * 60)

    @staticmethod
    def _pending_params(pending: dict) -> dict:
        params = {"action": pending["action"]}
        for k in ("merchant_code", "merchant_name", "counterparty"):
            if pending.get(k):
                params[k] = pending[k]
        return params
