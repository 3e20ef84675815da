"""USSD dialogues over SMPP: the menu as pages, one session per dialled code.

The conventions (NOTES-packages.md): a PSSR indication (op 1) carrying the
dialled code opens a session; each page we send is a USSR request (op 2)
and the subscriber's answer a USSR confirm (op 0x12); our last page is a
PSSR response (op 0x11). The network ends a dialogue with a vendor release
code (0x20, 0x21, 0x81 ...) or the end bit of `its_session_info`.

its_session_info (SMPP 3.4 5.3.2.43): its first octet, the session number,
is echoed back unchanged on every page so the SMSC routes it to the right
dialogue; the second carries the sequence number of the dialogue unit,
which the ESME assigns, and the end bit. We count the sequence up with each
page, and the phone's answer echoes it: that is what tells the SMSC's
re-delivery of an answer (same sequence: a duplicate, dropped by the
inbound record) from the same key pressed again on the next page (a new
answer). Echoing the whole value unchanged made the second `1` of a
dialogue look like a re-delivery of the first.

The menu is the MenuEngine's (telecom_pay/menus/engine.py): this module only
maps PDUs to engine calls and screens to pages. A session nobody answers
within `timeout` seconds is ended (engine.end drops the PIN action it left
pending: an unfinished payment moves no money) and closed towards the
network, since a phone left waiting on a page would hold the radio dialogue
until the network's own timer fires.

Platform-initiated sessions (push): the pending confirmation (an agreement,
a payment's PIN) is shown as a page in a session we open with a fresh
its_session_info. Where it cannot reach the subscriber (push off, the SMSC
refuses it, nobody answers in time) the SMS it stands for goes instead.

`UssdSessions` is the table of open dialogues and their deadlines, fed a
clock and free of I/O; `UssdDialogue` drives the engine and hands what is
to be sent to the channel, which records it in the outbox before it goes.
"""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

from twisted.internet import task
from twisted.logger import Logger

from channels.smpp import pdu as P
from channels.smpp.session import UssdInfo
from telecom_pay.menus.ussd import UCS2_LIMIT, page_limit
from telecom_pay.msisdn import mask

log = Logger(namespace="telecom_pay.ussd")

BEGIN, ANSWER, RELEASE, IGNORE = "begin", "answer", "release", "ignore"
MORE_KEYS = frozenset({"99", "*"})
HOME = "home"              # the entry of a code that opens the home menu
PENDING_NODES = frozenset({"pin", "confirm_open"})   # the engine's pages of a pending confirmation

UNKNOWN_CODE = {
    "zh": "未知的服务代码 {code}. 请拨 {home}",
    "en": "Unknown service code {code}. Please dial {home}",
}
TIMED_OUT = {
    "zh": "会话超时, 未完成的操作已取消. 请重新拨 {home}",
    "en": "Session timed out; nothing unfinished was done. Dial {home} again",
}


def fit_page(text: str) -> str:
    """A USSD page is one PDU, within the menus' page limit (the renderer
    pages menus; this guards texts written here)."""
    limit = page_limit(text)
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…" if limit == UCS2_LIMIT else text[: limit - 3] + "..."


def classify(ussd: UssdInfo) -> str:
    """What one inbound USSD PDU means for the dialogue."""
    op = ussd.service_op
    if op is not None and op >= 0x20:
        return RELEASE              # vendor range: release, user abort, network timeout
    if op in (P.USSD_PSSR_IND, P.USSD_USSR_CONF):
        return RELEASE if ussd.session_ended else (BEGIN if op == P.USSD_PSSR_IND else ANSWER)
    if ussd.session_ended:
        return RELEASE
    return IGNORE                   # a USSN confirmation, a PSSD: nothing to answer


def next_page_info(info: int | None, *, end: bool) -> int | None:
    """its_session_info of our next page after one carrying `info`: the same
    session number, the next dialogue-unit sequence, the end bit if last."""
    if info is None:
        return None
    sequence = (((info >> 1) & 0x7F) + 1) & 0x7F
    return (info & 0xFF00) | sequence << 1 | (1 if end else 0)


def page_ussd(after: UssdInfo, *, end: bool) -> UssdInfo:
    """The TLVs of the page that answers `after` (an inbound PDU or our last page)."""
    return UssdInfo(P.USSD_PSSR_RESP if end else P.USSD_USSR_REQ, next_page_info(after.session_info, end=end),
                    after.user_message_reference)


def session_id(msisdn: str, ussd: UssdInfo, key: str = "its_session_info") -> str:
    """`ussd:<msisdn>:<session>`. The session is the session number of
    its_session_info (its first octet, SMPP 3.4 5.3.2.43; the second carries
    the dialogue unit's sequence and the end bit, which may change from one
    PDU to the next), or user_message_reference where the SMSC keys
    sessions on that (`key`), or when it passes no its_session_info."""
    if key == "its_session_info" and ussd.session_info is not None:
        return f"ussd:{msisdn}:{ussd.session_info >> 8}"
    if ussd.user_message_reference is not None:
        return f"ussd:{msisdn}:{ussd.user_message_reference}"
    if ussd.session_info is not None:
        return f"ussd:{msisdn}:{ussd.session_info >> 8}"
    return f"ussd:{msisdn}:-"


@dataclass(frozen=True)
class UssdSettings:
    """`[sms.ussd]`: `codes` maps each service code to the menu entry it
    opens ("home", or a node the engine knows); `timeout` is how long a page
    waits for an answer; `push` whether the SMSC takes platform-initiated
    USSR requests; `session_key` which TLV the SMSC keys sessions on."""
    codes: Mapping[str, str] = field(default_factory=lambda: {"*188#": HOME})
    timeout: float = 120.0
    push: bool = False
    session_key: str = "its_session_info"

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None) -> "UssdSettings":
        data = dict(data or {})
        unknown = set(data) - {"codes", "timeout", "push", "session_key"}
        if unknown:
            raise ValueError(f"unknown sms.ussd settings: {', '.join(sorted(unknown))}")
        codes = data.get("codes", {"*188#": HOME})
        if isinstance(codes, (list, tuple)):
            codes = {c: HOME for c in codes}
        if not codes or not all(isinstance(c, str) and c.startswith("*") and c.endswith("#") for c in codes):
            raise ValueError("sms.ussd.codes: service codes such as \"*188#\"")
        key = data.get("session_key", "its_session_info")
        if key not in ("its_session_info", "user_message_reference"):
            raise ValueError("sms.ussd.session_key: its_session_info or user_message_reference")
        timeout = float(data.get("timeout", 120.0))
        if timeout <= 0:
            raise ValueError("sms.ussd.timeout must be positive")
        return cls(codes=dict(codes), timeout=timeout, push=bool(data.get("push", False)), session_key=key)

    @property
    def home_code(self) -> str:
        return next((c for c, entry in self.codes.items() if entry == HOME), next(iter(self.codes)))


@dataclass
class OpenSession:
    """One dialogue as this process knows it: enough to answer it and to end it."""
    session_id: str
    msisdn: str
    session_info: int | None        # of the last PDU either side sent
    user_message_reference: int | None
    bind: str | None
    code: str
    deadline: float
    pushed: bool = False
    answered: bool = False          # a pushed page the subscriber has answered
    fallback: tuple[str, ...] = ()  # what to send by SMS if a push never reaches them

    def next_page(self, *, end: bool) -> UssdInfo:
        """The TLVs of our next page in this session."""
        info = page_ussd(UssdInfo(None, self.session_info, self.user_message_reference), end=end)
        self.session_info = info.session_info
        return info


class UssdSessions:
    """The open dialogues and when each one times out. No I/O: `clock` is
    a function returning seconds."""

    def __init__(self, timeout: float, clock: Callable[[], float]):
        self.timeout = timeout
        self.clock = clock
        self._open: dict[str, OpenSession] = {}

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, sid: str) -> bool:
        return sid in self._open

    def get(self, sid: str) -> OpenSession | None:
        return self._open.get(sid)

    def open(self, sid: str, msisdn: str, ussd: UssdInfo, *, bind: str | None, code: str,
             pushed: bool = False, fallback: tuple[str, ...] = ()) -> OpenSession:
        s = OpenSession(sid, msisdn, ussd.session_info, ussd.user_message_reference, bind, code,
                        self.clock() + self.timeout, pushed=pushed, fallback=tuple(fallback))
        self._open[sid] = s
        return s

    def waiting(self, sid: str) -> None:
        """A page went out: its answer is due within the timeout."""
        s = self._open.get(sid)
        if s is not None:
            s.deadline = self.clock() + self.timeout

    def close(self, sid: str) -> OpenSession | None:
        return self._open.pop(sid, None)

    def expired(self) -> list[OpenSession]:
        """Takes the sessions whose answer is overdue out of the table."""
        now = self.clock()
        gone = [s for s in self._open.values() if s.deadline <= now]
        for s in gone:
            del self._open[s.session_id]
        return gone

    def free_session_number(self, msisdn: str, rng: random.Random) -> int:
        """A session number (0-255) no open dialogue of `msisdn` uses, for a push."""
        used = {s.session_info >> 8 for s in self._open.values()
                if s.msisdn == msisdn and s.session_info is not None}
        free = [n for n in range(256) if n not in used]
        return rng.choice(free) if free else rng.randrange(256)


@dataclass(frozen=True)
class Page:
    """A page to send: its text and the TLVs and bind it goes with."""
    text: str
    ussd: UssdInfo
    bind: str | None
    session_id: str
    push: bool = False
    fallback: tuple[str, ...] = ()

    def meta(self) -> dict[str, Any]:
        """The outbox record's meta (how SmsChannel._send knows it is USSD)."""
        m = {"ussd_op": self.ussd.service_op, "its_session_info": self.ussd.session_info,
             "user_message_reference": self.ussd.user_message_reference, "bind": self.bind}
        if self.push:
            m["push"] = self.session_id
            m["fallback"] = list(self.fallback)
        return m


# what the channel gives the dialogue: queue (durably) and send pages and SMS;
# run a coroutine in the subscriber's order
Queue = Callable[[str, list[str], dict | None], Awaitable[None]]
Serialize = Callable[[str, Awaitable[None]], None]


class UssdDialogue:
    """Runs the USSD sessions of one channel on the menu engine."""

    def __init__(self, engine, prompts, settings: UssdSettings, *, language: Callable[[str], Awaitable[str]],
                 render: Callable, clock, queue: Queue, serialize: Serialize, rng: random.Random | None = None,
                 store=None):
        """`store`: the session store shared by every instance, where each
        page sent is noted, so that the instance whose timer fires can tell
        whether the dialogue went on through another one (the SMSC may
        hand a session's next answer to any bind)."""
        self.engine = engine
        self.store = store
        self._token = uuid.uuid4().hex[:12]
        self.prompts = prompts
        self.settings = settings
        self.language = language
        self.render = render
        self.reactor_clock = clock
        self.sessions = UssdSessions(settings.timeout, clock.seconds)
        self.queue = queue
        self.serialize = serialize
        self.rng = rng or random.Random()
        self._sweeper: task.LoopingCall | None = None
        self.stats = {"sessions": 0, "timeouts": 0, "releases": 0, "pushes": 0, "push_fallbacks": 0}

    # ------------------------------------------------------------ timers

    def start(self) -> None:
        """Checks deadlines a few times per timeout (at least once a second)."""
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = self.reactor_clock
        self._sweeper.start(min(1.0, self.settings.timeout / 4), now=False)

    def stop(self) -> None:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None

    def _sweep(self) -> None:
        for s in self.sessions.expired():
            self.serialize(s.msisdn, self._timed_out(s))

    async def _timed_out(self, s: OpenSession) -> None:
        if await self._continued_elsewhere(s):
            log.info("ussd {msisdn}: the session went on through another instance", msisdn=mask(s.msisdn))
            return
        self.stats["timeouts"] += 1
        log.info("ussd {msisdn}: no answer within {t}s, session ended", msisdn=mask(s.msisdn),
                 t=self.settings.timeout)
        await self._end(s, "timeout")
        lang = await self.language(s.msisdn)
        info = s.next_page(end=True)
        await self.queue(s.msisdn, [fit_page(TIMED_OUT[lang].format(home=self.settings.home_code))],
                         Page("", info, s.bind, s.session_id).meta())
        if s.pushed and not s.answered and s.fallback:
            await self._fall_back(s.msisdn, s.fallback, "no answer to the pushed page")

    async def _end(self, s: OpenSession | None, reason: str, sid: str | None = None) -> None:
        """Ends the engine's dialogue, which drops the PIN action it left
        pending; but a pushed page nobody answered showed a confirmation
        pending from elsewhere (an SMS, a merchant's request), which its
        SMS fallback still asks for: that session is left to expire."""
        if s is not None and s.pushed and not s.answered:
            return
        await self.engine.end(sid or s.session_id, reason)

    async def _noted(self, sid: str) -> None:
        if self.store is None:
            return
        try:
            await self.store.put(f"ussdpage:{sid}", {"by": self._token}, ttl=self.settings.timeout * 2)
        except Exception as exc:        # the timeout then ends the session here (as with one instance)
            log.warn("noting a USSD page failed: {err}", err=type(exc).__name__)

    async def _continued_elsewhere(self, s: OpenSession) -> bool:
        if self.store is None:
            return False
        try:
            note = await self.store.get(f"ussdpage:{s.session_id}")
        except Exception as exc:
            log.warn("reading a USSD page note failed: {err}", err=type(exc).__name__)
            return False
        return note is not None and note.get("by") != self._token

    # ------------------------------------------------------------ inbound

    async def turn(self, inbound_id: int, msisdn: str, text: str, ussd: UssdInfo, bind: str | None) -> Page | None:
        """The page answering one recorded inbound PDU, or None when it asks
        for none (a release, a notification's confirmation)."""
        kind = classify(ussd)
        sid = session_id(msisdn, ussd, self.settings.session_key)
        if kind == IGNORE:
            return None
        if kind == RELEASE:
            self.stats["releases"] += 1
            s = self.sessions.close(sid)
            log.info("ussd {msisdn}: released by the network (op {op})", msisdn=mask(msisdn), op=ussd.service_op)
            await self._end(s, "released", sid)
            if s is not None and s.pushed and not s.answered and s.fallback:
                await self._fall_back(msisdn, s.fallback, "the pushed page was released unanswered")
            return None
        stripped = text.strip()
        if kind == BEGIN:
            entry = self.settings.codes.get(stripped)
            if entry is None:
                lang = await self.language(msisdn)
                page = UNKNOWN_CODE[lang].format(code=stripped[:20] or "?", home=self.settings.home_code)
                return Page(fit_page(page), page_ussd(ussd, end=True), bind, sid)
            self.stats["sessions"] += 1
            self.sessions.close(sid)
            self.sessions.open(sid, msisdn, ussd, bind=bind, code=stripped)
            screen = await self.engine.start(sid, msisdn, channel="ussd", entry=None if entry == HOME else entry)
        else:
            s = self.sessions.get(sid)
            if s is None:
                # opened by another instance, or before a restart: the engine's store knows it
                s = self.sessions.open(sid, msisdn, ussd, bind=bind, code="")
            s.answered = True
            s.session_info = ussd.session_info      # the page it answers: ours to count on from
            if stripped in MORE_KEYS:
                screen = await self.engine.more(sid)
            else:
                screen = await self.engine.answer(sid, stripped, message_id=inbound_id)
        return await self._page(sid, msisdn, screen, ussd, bind)

    async def _page(self, sid: str, msisdn: str, screen, ussd: UssdInfo, bind: str | None) -> Page:
        text = self.render(screen, self.prompts)
        end = bool(screen.end or screen.transfer)
        s = self.sessions.get(sid)
        info = s.next_page(end=end) if s is not None else page_ussd(ussd, end=end)
        if end:
            self.sessions.close(sid)
        else:
            self.sessions.waiting(sid)
            await self._noted(sid)
        return Page(text, info, bind, sid)

    # ------------------------------------------------------------ push

    async def push(self, msisdn: str, *, entry: str = "pending", fallback: list[str] | tuple[str, ...] = ()
                   ) -> Page | None:
        """Opens a platform-initiated session showing `entry`; None when no
        page is to be pushed (push is off, or the engine has nothing to show)."""
        if not self.settings.push:
            return None
        number = self.sessions.free_session_number(msisdn, self.rng)
        ussd = UssdInfo(P.USSD_USSR_REQ, number << 8, None)
        sid = session_id(msisdn, ussd, "its_session_info")
        screen = await self.engine.start(sid, msisdn, channel="ussd", entry=entry)
        if screen.end or ((entry == "pending" or entry.startswith("sp:")) and screen.node not in PENDING_NODES):
            # nothing pending (it was answered meanwhile): the engine showed the home menu
            await self.engine.end(sid, "nothing to push")
            return None
        self.stats["pushes"] += 1
        self.sessions.open(sid, msisdn, ussd, bind=None, code="", pushed=True, fallback=tuple(fallback))
        page = await self._page(sid, msisdn, screen, ussd, None)
        return Page(page.text, page.ussd, None, sid, push=True, fallback=tuple(fallback))

    async def push_refused(self, msisdn: str, sid: str, fallback: list[str], reason: str) -> None:
        """The SMSC would not take the pushed page: the SMS goes instead."""
        self.sessions.close(sid)         # never shown: the engine's state of it expires by its TTL
        await self._fall_back(msisdn, tuple(fallback), f"the SMSC refused the push ({reason})")

    async def _fall_back(self, msisdn: str, texts: tuple[str, ...], why: str) -> None:
        self.stats["push_fallbacks"] += 1
        log.info("ussd push to {msisdn} not delivered: {why}; sending it by SMS", msisdn=mask(msisdn), why=why)
        await self.queue(msisdn, list(texts), None)

