"""What the subscriber's web self-service needs beyond the operations every
channel shares: opening on the web (the code SMS, the agreement accepted
on the page, a login password the subscriber chose) and the login
password itself.

The login password of a subscriber lives in one place whatever channel
opened the account: `credentials.password_hash` of their account (set
by `confirm_open`, an agent's opening or an ownership transfer, and by a
web opening with the password typed on the page). The web login reads
it there (`verify_password`), and a change or a reset writes it there.
"""
from __future__ import annotations

from datetime import timedelta

from telecom_pay import accounts as acct
from telecom_pay.ledger.ledger import utcnow
from telecom_pay.ledger.tables import ACTIVE, FROZEN, PENDING, credentials
from telecom_pay.messaging import queue_outgoing
from telecom_pay.notices import SMS_CHANNEL, queue_notice
from telecom_pay.outcomes import Outcome, Result
from telecom_pay.security import generate_pin

from .base import ServiceCore, _refuse

_CODE_TEXT = {
    "zh": {"open": "您的手机支付网站开户验证码 {code}, {minutes} 分钟内有效. 请勿告诉他人.",
           "reset": "您的手机支付登录密码重置验证码 {code}, {minutes} 分钟内有效. 请勿告诉他人."},
    "en": {"open": "Your mobile pay web opening code is {code}, valid {minutes} min. Never share it.",
           "reset": "Your mobile pay password reset code is {code}, valid {minutes} min. Never share it."},
}


class SelfServiceOperations(ServiceCore):
    """Opening on the web and the subscriber's login password."""

    async def code_may_go_to(self, msisdn: str, purpose: str) -> bool:
        """Whether a one-time code for `purpose` is worth an SMS: an opening
        code to a number without an open account, a reset code to one with
        an active or frozen account. The web answers the same either way."""
        w = await self.account_info(msisdn)
        if purpose == "open":
            return w is None or w.status == PENDING
        return w is not None and w.status in (ACTIVE, FROZEN)

    async def send_code(self, msisdn: str, purpose: str, code: str, *, minutes: int) -> None:
        """The code SMS, through the outbox (durable, sent by the SMS
        channel's scan); marked secret, so its text is blanked once the
        SMSC accepted it."""
        msisdn = self._norm(msisdn)
        w = await self.account_info(msisdn)
        lang = (w.language if w is not None else None) or self.settings.default_language
        text = _CODE_TEXT.get(lang, _CODE_TEXT["zh"])[purpose].format(code=code, minutes=minutes)

        async def job(conn):
            await queue_outgoing(conn, SMS_CHANNEL, msisdn, [text], secret=True)
        await self.ledger.write(job)

    async def web_open(self, msisdn: str, password_hash: str, *, agreement_version: str, agreement_sha256: str,
                       language: str | None = None) -> Result:
        """Opening on the web after the number was proven by a code: the same
        steps as KT then A (a pending wallet, its confirmation, the same
        tier and double-entry wallet, the same audit rows), with channel
        `web`, in one transaction, plus the agreement the page showed. The
        initial PIN goes by SMS as after A; the login password is the one
        chosen on the page (hashed by the caller), so it is not initial."""
        msisdn = self._norm(msisdn)
        lang = language or self.settings.default_language
        actor = f"msisdn:{msisdn}"
        pin = generate_pin()

        async def job(conn):
            w = await acct.find_wallet(conn, msisdn)
            if w is not None:
                if w.status != PENDING:
                    raise _refuse(Outcome.ACCOUNT_EXISTS, status=w.status)
                await acct.transition(conn, w, "close", actor=actor, channel="web", reason="replaced by web opening")
            wid = await acct.create_pending_wallet(
                conn, msisdn, language=lang, expires_at=self.clock() + timedelta(minutes=self.settings.confirm_minutes),
                actor=actor, channel="web")
            await acct.audit(conn, actor=actor, channel="web", action="agreement_accepted", account_id=wid,
                             version=agreement_version, sha256=agreement_sha256)
            await acct.transition(conn, await acct.get_account(conn, wid), "confirm", actor=actor, channel="web")
            await acct.set_credentials(conn, wid, pin_hash=self.pins.hash(wid, pin), password_hash=password_hash)
            await queue_notice(conn, msisdn, lang, Result(Outcome.OK, balance=0, params={
                "action": "confirm_open", "pin": pin}), secret=True, key=f"web_open:{wid}")
            return Result(Outcome.OK, balance=0, params={"action": "web_open", "msisdn": msisdn})
        return await self._run(job)

    async def store_login_password(self, conn, msisdn: str, password_hash: str) -> bool:
        """Inside the caller's write job (the web user's row changes in the
        same transaction): the new login password of the number's account;
        False when it has no active or frozen account. Only the password
        column changes: a PIN's failures and lock stay as they are."""
        w = await acct.find_wallet(conn, msisdn)
        if w is None or w.status not in (ACTIVE, FROZEN):
            return False
        await conn.execute(credentials.update().where(credentials.c.account_id == w.id).values(
            password_hash=password_hash, updated_at=utcnow()))
        await acct.audit(conn, actor=f"msisdn:{msisdn}", channel="web", action="password_changed", account_id=w.id)
        return True
