"""SMS the platform sends a subscriber about an agent's or operator's
operation: the agreement that opens an account, a new PIN or password, a
cash-in, a freeze, a number change.

They are queued in the outbox inside the operation's own transaction: the
agent CLI runs in a process without the SMS channel, so a notice held in
memory would be lost, and one sent before the commit could announce an
operation that rolled back. The daemon's outbox scan sends them. This is
also the only way a generated PIN or password leaves the platform: to the
subscriber's phone, never to the agent's screen.

A notice that asks the subscriber to confirm (the agreement, a payment's
PIN) says so in its meta (`confirm`): where USSD push works the channel
shows it as a menu page instead, and sends this SMS only if that fails.
"""
from __future__ import annotations

from telecom_pay.commands.replies import normalize_lang, render
from telecom_pay.messaging import queue_outgoing
from telecom_pay.outcomes import Outcome, Result

SMS_CHANNEL = "sms"


async def queue_notice(conn, msisdn: str, language: str | None, result: Result, *, secret: bool = False,
                       key: str | None = None) -> list:
    meta = {"confirm": result.outcome.value} \
        if result.outcome in (Outcome.CONFIRM_REQUIRED, Outcome.PIN_REQUIRED) else None
    return await queue_outgoing(conn, SMS_CHANNEL, msisdn, render(result, normalize_lang(language)),
                                secret=secret, key=key, meta=meta)
