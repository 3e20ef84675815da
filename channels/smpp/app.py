"""The SMS (and USSD) channel: the ESME pool on one side, the core on the
other. USSD inputs take the same path (recorded, then answered, the page
queued in the outbox); what they mean for the menu is channels/smpp/ussd.py.

Path of one message (DESIGN section 3): deliver_sm -> durable inbound record,
deduplicated by the database -> deliver_sm_resp -> the conversation
(PaymentService) -> replies queued in the outbox in the same transaction that
marks the message processed -> submit_sm at once, and again from the outbox
until the SMSC accepts -> delivery receipt matched to the outbox record.

Duplicates: the database record is the only proof a message was seen (no
session-store marker, which could outlive a record that never committed). A
delivery is the same message as an earlier one when it has the same sender,
text and SMSC identity (TP-MR, `user_message_reference`) within
`dedup_window`; when the SMSC passes no identity, the same sender and text
within `redelivery_window` (a few seconds: the SMSC's resend after a lost
deliver_sm_resp). A later repeat is a new message and is answered; what it
asks is safe to do twice, or idempotent in the conversation (a PIN answer
books under its own message's key and consumes the pending action once).
The key stored is an HMAC of the content under the PIN key, so a PIN is not
recoverable from it; PIN answers and `MM old new` are stored masked.

Messages of one subscriber are handled in arrival order; different
subscribers in parallel. A restart requeues what was being sent and answers
what was recorded but not yet answered.

Several instances may run over one database, each with its own binds; the
SMSC may hand any of them any message. Who answers a message and who sends
a reply is claimed in the database (telecom_pay/messaging.py): the instance
that records a message answers it, the one that queues a reply sends it,
and each renews its claims while it works; what a dead instance held is
claimed by a live one once the lease runs out. The sets kept here only stop
this process from handling one row twice at the same time.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import OrderedDict
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger

from channels.smpp.client import SubmitError
from channels.smpp.pool import EsmePool
from channels.smpp.session import MessageReceived, ReceiptReceived, UssdInfo
from channels.smpp.ussd import UssdDialogue, UssdSettings
from telecom_pay.aio import as_deferred, wait_deferred
from telecom_pay.commands.conversation import message_key
from telecom_pay.service import RECEIPTED_KINDS
from telecom_pay.commands.redaction import is_masked_pin_answer, redact, redact_menu_input
from telecom_pay.core import Core
from telecom_pay.crashpoints import crash_point
from telecom_pay.messaging import DEFAULT_LEASE, MessageStore
from telecom_pay.msisdn import MsisdnError, mask, normalize
from telecom_pay.outcomes import Outcome, Result

log = Logger(namespace="telecom_pay.sms")

#: inbound_messages.channel of a USSD input: its answer is a page of a live
#: dialogue, so after a restart it is not answered as an SMS command
USSD_INPUT = "ussd"

USSD_SEND_ATTEMPTS = 3      # submits of one USSD page (0.5 s, 1 s apart) before it is given up

class SmsChannel(MultiService):
    def __init__(self, core: Core, binds: list[dict], *, reactor=None, channel: str = "sms",
                 dedup_window: float = 120.0, redelivery_window: float = 15.0, retry_poll: float = 1.0,
                 batch: int = 200, instance_id: str | None = None, lease: float = DEFAULT_LEASE,
                 ussd: UssdSettings | None = None, menus=None, prompts=None, render_ussd=None):
        super().__init__()
        self.core = core
        self.channel = channel
        self.dedup_window = dedup_window
        self.redelivery_window = redelivery_window
        self.retry_poll = retry_poll
        self.batch = batch
        self.messages = MessageStore(core.ledger, instance_id=instance_id, lease=lease)
        self.pool = EsmePool(binds, self, reactor=reactor)
        self.pool.setServiceParent(self)
        self._chains: dict[str, asyncio.Future] = {}
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task | None = None
        self._in_flight: set[asyncio.Future] = set()
        self._sending: set[int] = set()
        # ids accepted by the SMSC in this process, so a scan that read the
        # outbox a moment before their acceptance committed never resends them
        self._accepted: OrderedDict[int, None] = OrderedDict()
        self._answering: set[int] = set()
        self._answer_failed = False
        self.unanswered_sweep = 10.0          # seconds before a failed answer is tried again
        self._stopping = False
        from twisted.internet import reactor as default_reactor
        self.ussd: UssdDialogue | None = None
        if menus is not None:
            self.ussd = UssdDialogue(menus, prompts, ussd or UssdSettings(), language=core.conversation.language,
                                     render=render_ussd, clock=reactor or default_reactor,
                                     queue=self._queue, serialize=self._serialize, store=core.sessions)
        core.service.add_notifier(self._notify)
        self.stats = {"mo": 0, "duplicates": 0, "mt_accepted": 0, "mt_retry": 0, "receipts": 0}

    # ------------------------------------------------------------ lifecycle

    def startService(self):
        super().startService()
        self._stopping = False
        self._pump_task = asyncio.ensure_future(self._run())
        if self.ussd is not None:
            self.ussd.start()

    async def _run(self) -> None:
        try:
            await self._answer_unanswered("recorded before the restart", mine=True)
        except Exception:
            log.failure("answering what was recorded before the restart failed; trying again")
            self._answer_failed = True
        await self._pump()

    async def _answer_unanswered(self, why: str, *, mine: bool) -> None:
        """Claims and answers recorded (and acknowledged) messages whose answer
        is not under way anywhere: a dead instance's once their lease ran out,
        and with `mine` this instance id's own (after a restart under the same
        id, or when answering failed here because the database was down)."""
        while True:
            # this id's own rows all at once: they stay claimed by it, a second round would return them again
            claimed = await self.messages.claim_unanswered(self._inbound_channels, limit=None if mine else self.batch,
                                                           mine=mine)
            for inbound in claimed:
                if inbound.id in self._answering:
                    continue
                if mine and inbound.msisdn in self._chains:
                    # it may be this process's, waiting behind the subscriber's previous message
                    # (not yet in _answering): the next sweep answers it if nobody did
                    self._answer_failed = True
                    continue
                log.info("answering {msisdn}: {why}", msisdn=mask(inbound.msisdn), why=why)
                if inbound.channel == USSD_INPUT:
                    self._serialize(inbound.msisdn, self._answer_lost_ussd(inbound))
                    continue
                # the stored text: a PIN answer is masked, and the conversation recovers it by its key
                self._serialize(inbound.msisdn, self._answer(inbound.id, inbound.msisdn, inbound.text, None,
                                                             again=True))
            if mine or len(claimed) < self.batch:
                return

    def stopService(self):
        self._stopping = True
        self._wake.set()
        if self.ussd is not None:
            self.ussd.stop()
        d = defer.maybeDeferred(super().stopService)
        task = self._pump_task

        async def drain():
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
            if self._in_flight:
                await asyncio.wait(list(self._in_flight), timeout=5)
        d.addCallback(lambda _: as_deferred(drain()))
        return d

    # ------------------------------------------------------------ inbound

    def message_received(self, bind, event: MessageReceived):
        """Fires (-> deliver_sm_resp) once the message is durably recorded."""
        return as_deferred(self._receive(bind, event))

    async def _receive(self, bind, event: MessageReceived) -> None:
        refusal = None
        try:
            msisdn = normalize(event.msisdn, self.core.settings.region)
        except MsisdnError:
            # a short code, an alphanumeric sender or none: nobody to answer
            msisdn = event.msisdn[:20]
            refusal = "sender is not a mobile number"
        identified = event.user_message_reference is not None
        is_ussd = event.ussd is not None and event.ussd.service_op is not None
        inbound = await self.messages.record_inbound(
            USSD_INPUT if is_ussd else self.channel, msisdn, self._dedup_key(event), stored_text(event),
            window=self.dedup_window if identified else self.redelivery_window, failed=refusal)
        if not inbound.is_new:
            self.stats["duplicates"] += 1
            log.info("sms in {msisdn}: duplicate delivery ignored", msisdn=mask(msisdn))
            return
        self.stats["mo"] += 1
        crash_point("after_mo_recorded")
        if refusal is not None:
            log.info("sms in {msisdn}: not answered, {why}", msisdn=mask(msisdn), why=refusal)
            return
        log.debug("sms in {msisdn} len={n} parts={parts}", msisdn=mask(msisdn), n=len(event.text), parts=event.parts)
        ussd = event.ussd if event.ussd is not None and event.ussd.service_op is not None else None
        self._serialize(msisdn, self._answer(inbound.id, msisdn, event.text, ussd, bind))

    def _dedup_key(self, event: MessageReceived) -> str:
        """The message's identity as stored: keyed, so the text (maybe a PIN)
        cannot be found again from it by trying every candidate."""
        return hmac.new(self.core.settings.pin_key, f"mo:{event.smsc_message_key}".encode(),
                        hashlib.sha256).hexdigest()[:40]

    def _serialize(self, msisdn: str, coro) -> None:
        """Run `coro` after the previous message of the same subscriber."""
        previous = self._chains.get(msisdn)

        async def chained():
            if previous is not None:
                try:
                    await previous
                except Exception:
                    pass
            await coro
        fut = asyncio.ensure_future(chained())
        self._chains[msisdn] = fut
        self._in_flight.add(fut)

        def done(f):
            self._in_flight.discard(f)
            if self._chains.get(msisdn) is f:
                del self._chains[msisdn]
            if not f.cancelled() and f.exception() is not None:
                log.failure("answering {msisdn} failed", failure=_failure(f.exception()), msisdn=mask(msisdn))
        fut.add_done_callback(done)

    @property
    def _inbound_channels(self) -> tuple[str, str]:
        return (self.channel, USSD_INPUT)

    async def _answer_lost_ussd(self, inbound) -> None:
        """A USSD input recorded but not answered when its process died: its
        dialogue died with it (the network times the session out), so it is
        closed unanswered rather than read as an SMS command ("1" is none).
        A PIN answer that booked is told by SMS: a spend's receipt was
        queued with the money (PaymentService.RECEIPT_BY_SMS); anything
        else it booked (a top-up) gets its recovered result, found by the
        input's key as an SMS PIN answer's is. One that booked nothing paid
        nothing and says nothing."""
        self._answering.add(inbound.id)
        try:
            texts: list[str] = []
            secret = False
            if is_masked_pin_answer(inbound.text):
                rec = await self.core.service.ledger.get_operation(message_key(inbound.id))
                if rec is not None and rec.kind not in RECEIPTED_KINDS:
                    texts = await self.core.conversation.handle(inbound.msisdn, inbound.text, channel="ussd",
                                                                message_id=inbound.id, again=True)
                    secret = getattr(texts, "secret", False)
            self._dispatch(await self.messages.complete(inbound.id, self.channel, inbound.msisdn, list(texts),
                                                        secret=secret))
        except Exception:
            self._answer_failed = True
            raise
        finally:
            self._answering.discard(inbound.id)

    async def _answer(self, inbound_id: int, msisdn: str, text: str, ussd: UssdInfo | None, bind=None, *,
                      again: bool = False) -> None:
        self._answering.add(inbound_id)
        try:
            await self._answer_once(inbound_id, msisdn, text, ussd, bind, again=again)
        except Exception:
            self._answer_failed = True        # the pump's sweep answers it again later
            raise
        finally:
            self._answering.discard(inbound_id)

    async def _answer_once(self, inbound_id: int, msisdn: str, text: str, ussd: UssdInfo | None, bind=None, *,
                           again: bool = False) -> None:
        conv = self.core.conversation
        meta = None
        secret = False
        if ussd is not None:
            page = await self.ussd.turn(inbound_id, msisdn, text, ussd, bind.name if bind is not None else None) \
                if self.ussd is not None else None
            # a release or a notification's confirmation asks for no page: recorded, answered with nothing
            texts = [page.text] if page is not None else []
            meta = page.meta() if page is not None else None
        else:
            texts = await conv.handle(msisdn, text, channel=self.channel, message_id=inbound_id, again=again)
            secret = getattr(texts, "secret", False)
        self._dispatch(await self.messages.complete(inbound_id, self.channel, msisdn, texts, meta, secret=secret))
        try:
            await conv.answered(inbound_id)
        except Exception:
            log.failure("forgetting the answered PIN action of {msisdn} failed", msisdn=mask(msisdn))

    async def _notify(self, msisdn: str, result: Result) -> None:
        """A confirmation the subscriber did not ask for in this moment (an
        agreement, a payment's PIN) is pushed as a menu page where USSD push
        works; anything else, and the push's fallback, goes by SMS."""
        texts = await self.core.conversation.render_for(msisdn, result)
        if result.outcome in (Outcome.CONFIRM_REQUIRED, Outcome.PIN_REQUIRED) and self.ussd is not None:
            if await self.push_menu(msisdn, entry=_push_entry(result.outcome.value), fallback=list(texts)):
                return
        self._dispatch(await self.messages.complete(None, self.channel, msisdn, texts,
                                                    secret=getattr(texts, "secret", False)))

    async def push_menu(self, msisdn: str, *, entry: str = "pending", fallback: list[str] = ()) -> bool:
        """Opens a platform-initiated USSD session showing `entry` (the
        subscriber's pending confirmation); False when none was pushed (push
        off, nothing pending) and the caller sends its SMS. Once pushed,
        the dialogue sends `fallback` by SMS if the page does not reach them."""
        if self.ussd is None:
            return False
        page = await self.ussd.push(msisdn, entry=entry, fallback=fallback)
        if page is None:
            return False
        self._dispatch(await self.messages.complete(None, self.channel, msisdn, [page.text], page.meta()))
        return True

    async def _pushed_instead(self, out) -> bool:
        """A queued notice asking for a confirmation (an agent opened the
        account) goes as a pushed page; the SMS is its fallback, queued
        again by the dialogue if the page does not reach the subscriber."""
        # an SP payment request's page is its own (by its tag); any other opens at what is pending
        entry = f"sp:{out.meta['sp_tag']}" if out.meta.get("sp_tag") else _push_entry(out.meta["confirm"])
        page = await self.ussd.push(out.msisdn, entry=entry, fallback=[out.text])
        if page is None:
            return False
        self._dispatch(await self.messages.complete(None, self.channel, out.msisdn, [page.text], page.meta()))
        self._accepted[out.id] = None
        await self.messages.accepted(out.id, ["ussd-push"])
        return True

    async def _queue(self, msisdn: str, texts: list[str], meta: dict | None) -> None:
        """Records and sends what the USSD dialogue sends on its own (a
        timeout's closing page, a push's SMS fallback)."""
        self._dispatch(await self.messages.complete(None, self.channel, msisdn, texts, meta))

    # ------------------------------------------------------------ outbound

    def _dispatch(self, outgoing) -> None:
        """Hand queued messages to the SMSC now; `_sending` keeps the outbox
        scan from sending them a second time while they are in flight."""
        for out in outgoing:
            if out.id in self._sending or out.id in self._accepted:
                continue
            self._sending.add(out.id)
            fut = asyncio.ensure_future(self._send(out))
            self._in_flight.add(fut)

            def done(f, out_id=out.id):
                self._in_flight.discard(f)
                self._sending.discard(out_id)
            fut.add_done_callback(done)

    async def _pump(self) -> None:
        """Sends what is due from the outbox and nobody holds: retries after a
        back-off, everything left from before a restart, a dead instance's
        once its claims ran out. Every third of a lease it renews this
        instance's claims and takes over a dead one's unanswered messages."""
        loop = asyncio.get_running_loop()
        last_sweep = loop.time()
        tend_every = self.messages.lease / 3
        last_tend = loop.time()
        mine = True          # the first scan takes this id's own rows: a restart's
        while not self._stopping:
            self._wake.clear()
            try:
                if loop.time() >= last_tend + tend_every:
                    last_tend = loop.time()
                    await self.messages.renew(self._inbound_channels, frozenset(self._sending))
                    await self._answer_unanswered("its instance stopped answering", mine=False)
                due = await self.messages.claim_due(self.channel, limit=self.batch, mine=mine)
                mine = False
                self._dispatch(due)
                if self._answer_failed and loop.time() >= last_sweep + self.unanswered_sweep:
                    self._answer_failed = False
                    last_sweep = loop.time()
                    await self._answer_unanswered("answering failed before", mine=True)
            except Exception:
                # the database is away: keep going, everything is still in the outbox
                log.failure("outbox scan failed; trying again")
                self._answer_failed = True
                due = []
            if len(due) == self.batch:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=min(self.retry_poll, tend_every))
            except asyncio.TimeoutError:
                pass

    async def _send(self, out) -> None:
        crash_point("after_outbox_commit")
        ussd = None
        prefer = None
        meta = out.meta or {}
        if "confirm" in meta and self.ussd is not None and self.ussd.settings.push:
            try:
                if await self._pushed_instead(out):
                    return
            except Exception:
                log.failure("pushing {msisdn}'s confirmation as a USSD page failed; sending the SMS",
                            msisdn=mask(out.msisdn))
        if "ussd_op" in meta:
            ussd = UssdInfo(meta["ussd_op"], meta.get("its_session_info"), meta.get("user_message_reference"))
            prefer = next((b for b in self.pool.binds if b.name == meta.get("bind")), None)
        try:
            ids = await wait_deferred(self.pool.submit(out.msisdn, out.text, handle=out.id, ussd=ussd, prefer=prefer))
        except SubmitError as exc:
            if meta.get("push") and self.ussd is not None:
                # the SMSC does not take network-initiated USSD: the SMS it stands for goes instead
                await self._retry_later(out, f"push refused: {exc.reason}", final=True)
                await self.ussd.push_refused(out.msisdn, meta["push"], meta.get("fallback") or [], exc.reason)
                return
            self.stats["mt_retry"] += 1
            log.warn("sms out {msisdn} not accepted ({reason}); retrying", msisdn=mask(out.msisdn), reason=exc.reason)
            # a USSD page is worth a few quick tries only: its session times out in minutes
            await self._retry_later(out, exc.reason, final=ussd is not None and out.attempts + 1 >= USSD_SEND_ATTEMPTS)
            return
        except Exception as exc:
            self.stats["mt_retry"] += 1
            await self._retry_later(out, repr(exc))
            return
        self.stats["mt_accepted"] += 1
        crash_point("after_submit_sm_resp")
        self._accepted[out.id] = None
        if len(self._accepted) > 100_000:
            self._accepted.popitem(last=False)
        try:
            await self.messages.accepted(out.id, list(ids))
        except Exception:
            # sent, but not recorded as sent: after a restart it may go once more
            log.failure("recording {msisdn}'s message as accepted failed", msisdn=mask(out.msisdn))
            return
        log.debug("sms out {msisdn} len={n} parts={parts}", msisdn=mask(out.msisdn), n=len(out.text), parts=len(ids))

    async def _retry_later(self, out, reason: str, *, final: bool = False) -> None:
        try:
            await self.messages.retry_later(out.id, reason, self.messages.max_attempts if final else out.attempts)
        except Exception:
            # still queued in the outbox: the next scan sends it again
            log.failure("scheduling a retry for {msisdn} failed", msisdn=mask(out.msisdn))

    # ------------------------------------------------------------ receipts and links

    def receipt_received(self, bind, event: ReceiptReceived):
        """Acknowledged at once, recorded with the next burst: nothing depends
        on a delivery state (it informs statements and support), and holding
        the SMSC's deliver_sm window for a commit per receipt halved the room
        left for subscribers' messages. A receipt lost in a crash leaves its
        message `accepted` without a delivery state."""
        self.stats["receipts"] += 1
        d = as_deferred(self.messages.receipt(event.message_id_candidates | {event.message_id}, event.state))
        d.addErrback(lambda f: log.failure("recording a delivery receipt failed", f))
        return None

    def submit_result(self, bind, event) -> None:
        pass

    def link_up(self, bind) -> None:
        log.info("smpp bind {name} up", name=bind.name)
        self._wake.set()

    def link_down(self, bind) -> None:
        log.warn("smpp bind {name} down", name=bind.name)


def stored_text(event: MessageReceived) -> str:
    """What of an inbound message may be stored: SMS PIN answers are masked
    by the command parser; a USSD answer may also be a menu's PIN step,
    which the channel cannot know before it records the answer."""
    return redact_menu_input(event.text) if event.ussd is not None else redact(event.text)


def _push_entry(outcome: str) -> str:
    """Where a pushed session opens the menu: an account waiting for its
    agreement (opened by an agent, kept in the database rather than the
    session store) at the agreement; anything else at what is pending."""
    return "confirm_open" if outcome == Outcome.CONFIRM_REQUIRED.value else "pending"


def _failure(exc: BaseException):
    from twisted.python.failure import Failure
    return Failure(exc)


def make_channel(core: Core, config: dict[str, Any], reactor) -> SmsChannel:
    """Factory named in config: `[sms] factory = "channels.smpp.app:make_channel"`."""
    binds = config.get("binds") or []
    instance = core.settings.section("daemon")
    from telecom_pay.menus.engine import MenuEngine
    from telecom_pay.menus.prompts import Prompts
    from telecom_pay.menus.ussd import render_ussd
    ussd = UssdSettings.from_config(config.get("ussd"))
    menus = core.menus or MenuEngine(core.conversation, core.sessions)
    return SmsChannel(core, binds, reactor=reactor, dedup_window=float(config.get("dedup_window", 120)),
                      redelivery_window=float(config.get("redelivery_window", 15)),
                      retry_poll=float(config.get("retry_poll", 1.0)),
                      instance_id=instance.get("instance_id") or None,
                      lease=float(instance.get("claim_lease", DEFAULT_LEASE)),
                      ussd=ussd, menus=menus, prompts=Prompts.load(), render_ussd=render_ussd)
