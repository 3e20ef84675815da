"""The conversation layer: one subscriber message in, reply messages out.

It keeps what a message leaves pending in the session store: `KT` waits for
`A`; `ZF M001 12.50` (and every other command that spends or unlocks)
waits for the 6-digit PIN. A pending action is consumed atomically (`take`),
so a PIN sent twice never pays twice; its idempotency key is fixed when the
action is first asked for, so a retried booking finds the original.

Every message gets an answer: unknown or malformed text gets help, and an
unexpected failure gets a short "try again later" (logged), never silence
and never a traceback.
"""
from __future__ import annotations

import uuid

from twisted.logger import Logger

from telecom_pay.commands import keywords as kw
from telecom_pay.commands.parser import Command, ParseError, parse
from telecom_pay.commands.replies import normalize_lang, render, render_help, render_parse_error
from telecom_pay.msisdn import mask, normalize
from telecom_pay.outcomes import Outcome, Result
from telecom_pay.service import PaymentService
from telecom_pay.sessions import SessionStore

log = Logger(namespace="telecom_pay.conversation")

TRY_LATER = {"zh": "系统繁忙, 请稍后再试.", "en": "Service busy, please try again later."}
LANG_TTL = 365 * 24 * 3600
LANGUAGE_CACHE_TTL = 3600

# Commands that wait for the PIN before anything happens.
PIN_GUARDED = {kw.PAY, kw.SEND, kw.AIRTIME, kw.TOPUP, kw.WITHDRAW, kw.UNFREEZE, kw.CLOSE}


class Conversation:
    def __init__(self, service: PaymentService, sessions: SessionStore | None = None):
        self.service = service
        self.sessions = sessions or service.sessions
        self.settings = service.settings

    # ------------------------------------------------------------ entry points

    async def handle(self, msisdn: str, text: str, *, channel: str = "sms") -> list[str]:
        """Answer one message from `msisdn`."""
        msisdn = normalize(msisdn, self.settings.region)
        lang = await self.language(msisdn)
        try:
            cmd = parse(text)
        except ParseError as err:
            return render_parse_error(err, lang)
        try:
            result = await self._dispatch(msisdn, cmd, channel, lang)
        except Exception:
            log.failure("command {name} from {msisdn} failed", name=cmd.name, msisdn=mask(msisdn))
            return [TRY_LATER[lang]]
        if isinstance(result, list):
            return result
        if result.outcome is Outcome.OK and result.params.get("action") == "lang":
            lang = result.params["lang"]
        return render(result, lang)

    async def render_for(self, msisdn: str, result: Result) -> list[str]:
        """Text for a notification (P2P received, a delayed bank answer)."""
        return render(result, await self.language(msisdn))

    async def language(self, msisdn: str) -> str:
        stored = await self.sessions.get(f"lang:{msisdn}")
        if stored:
            return normalize_lang(stored.get("lang"))
        account = await self.service.account_info(msisdn)
        if account is None:
            return normalize_lang(self.settings.default_language)
        lang = normalize_lang(account.language)
        # remembered for an hour: the account's language changes only by LANG,
        # which writes this key itself
        await self.sessions.put(f"lang:{msisdn}", {"lang": lang}, ttl=LANGUAGE_CACHE_TTL)
        return lang

    # ------------------------------------------------------------ dispatch

    async def _dispatch(self, msisdn: str, cmd: Command, channel: str, lang: str) -> Result | list[str]:
        svc = self.service
        name = cmd.name
        if name == kw.HELP:
            return render_help(lang, cmd.topic)
        if name == kw.LANG:
            await self.sessions.put(f"lang:{msisdn}", {"lang": cmd.lang}, ttl=LANG_TTL)
            return await svc.set_language(msisdn, cmd.lang)
        if name == kw.OPEN:
            result = await svc.open_account(msisdn, channel=channel, language=lang)
            if result.outcome is Outcome.CONFIRM_REQUIRED:
                await self._hold(msisdn, {"action": kw.OPEN}, self.settings.confirm_minutes)
            return result
        if name == kw.CONFIRM:
            pending = await self.sessions.take(self._pending_key(msisdn))
            if pending is not None and pending.get("action") != kw.OPEN:
                # a PIN-guarded action is waiting: `A` is not its PIN
                await self._hold(msisdn, pending, self.settings.pending_payment_minutes)
                return Result(Outcome.PIN_REQUIRED, amount=pending.get("amount"),
                              params=self._pending_params(pending))
            return await svc.confirm_open(msisdn, channel=channel)
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
        if name == kw.PIN_REPLY:
            return await self._pin_reply(msisdn, cmd.pin, channel, lang)
        if name in PIN_GUARDED:
            return await self._ask_pin(msisdn, cmd, lang)
        return Result(Outcome.UNKNOWN_COMMAND)

    async def _ask_pin(self, msisdn: str, cmd: Command, lang: str) -> Result:
        """Check what can be checked now, then wait for the PIN."""
        svc = self.service
        pending = {"action": cmd.name, "key": f"conv:{uuid.uuid4().hex}"}
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

    async def _pin_reply(self, msisdn: str, pin: str, channel: str, lang: str) -> Result:
        pending = await self.sessions.take(self._pending_key(msisdn))
        if pending is None or pending.get("action") == kw.OPEN:
            if pending is not None:
                await self._hold(msisdn, pending, self.settings.confirm_minutes)
            return Result(Outcome.NOTHING_PENDING)
        svc, action, key, amount = self.service, pending["action"], pending["key"], pending.get("amount")
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

    # ------------------------------------------------------------ helpers

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
