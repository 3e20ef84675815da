"""One IVR call: the menu engine's screens played to a caller over FastAGI.

The caller is identified by `agi_callerid` (a mobile number normalised to
E.164; withheld, "unknown" or a fixed line is None: the menu still offers
an agent and account opening); a call-back (`agi_arg_1` = `callback`) by
the number in `agi_arg_2` when the dialplan passes it. The call is answered, then each screen is
rendered (`telecom_pay.menus.ivr.render_ivr`) and played: STREAM FILE for
recorded prompts, SAY NUMBER / SAY DIGITS for values, all with escape digits
when input follows so a key interrupts the prompt. Input is collected with
GET DATA (the last prompt plays while it waits) or, once a key has cut a
prompt short, WAIT FOR DIGIT key by key, up to the step's max digits, `#`
ending it early. `*` alone repeats the screen. No input within the timeout
replays the screen; after the step's retries the caller hears goodbye and
the call is hung up. The PIN is just an input of the engine's PIN step: the
same service checks it, so the lockout counts across SMS, USSD and IVR.
PIN digits are never logged (nor is any input: only its length).

Hang-up rule. Once the caller has entered the PIN (Asterisk has answered
GET DATA / WAIT FOR DIGIT with the digits), the operation runs to its end
whatever the line does: the engine call is never cancelled, a hang-up
only stops what is played afterwards. A spend (payment, money sent,
airtime) gets its SMS receipt queued with the money itself, so it
survives a hang-up and a crash alike; any other result the caller is gone
before hearing to its end is sent by SMS when the call ends
(`PaymentService.notify`). Money that moved is always told. A hang-up at
any point before the PIN is entered ends the engine session
(`engine.end`): a pending payment is dropped and nothing moves. Every call
ends with `engine.end`, whatever the peer did.

Results for the dialplan: `TP_RESULT` (the outcome of the last operation,
or `transfer`, `timeout`, `error`, `done`) and, for a hand-off to an agent,
`TP_TRANSFER` (the dialplan target, `context,exten,priority`). A hand-off
ends the AGI without HANGUP so the dialplan goes on, after the AGI line, to
`GotoIf($["${TP_TRANSFER}" != ""]?${TP_TRANSFER})` (config/asterisk/
extensions.conf); it is recorded first (`CallLog.record_handoff`) so the
agent console shows who is coming, where in the menu they were and whether
they passed the PIN check.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from twisted.logger import Logger

from channels.ivr.agi import AgiEnvironment, Response
from channels.ivr.server import AgiConnection, CallGone
from telecom_pay.msisdn import MsisdnError, mask, normalize

log = Logger(namespace="telecom_pay.ivr")

KEYS = "0123456789*#"
WITHHELD = {"", "unknown", "anonymous", "restricted", "private", "withheld"}


def _listens_with_get_data(plays) -> bool:
    """Input after a recorded prompt: GET DATA plays that prompt and listens."""
    return bool(plays) and plays[-1].kind == "file"


def caller_msisdn(callerid: str, region: str) -> str | None:
    """The subscriber's MSISDN from the switch's caller id, or None when it
    is withheld or not a mobile number."""
    text = (callerid or "").strip()
    if text.lower() in WITHHELD:
        return None
    try:
        return normalize(text, region)
    except MsisdnError:
        return None


@dataclasses.dataclass
class IvrSettings:
    sounds: str = "telecom-pay"
    agent_target: str = "telecom-pay-agents,s,1"
    dtmf_timeout_ms: int | None = None         # None: the renderer's value
    retries: int | None = None
    goodbye_prompt: str = "goodbye"
    no_input_prompt: str = "no_input"
    region: str = "CN"

    @classmethod
    def from_config(cls, cfg: dict[str, Any], region: str) -> "IvrSettings":
        t = cfg.get("dtmf_timeout_ms")
        r = cfg.get("retries")
        return cls(sounds=str(cfg.get("sounds", "telecom-pay")),
                   agent_target=str(cfg.get("agent_target", "telecom-pay-agents,s,1")),
                   dtmf_timeout_ms=int(t) if t is not None else None,
                   retries=int(r) if r is not None else None,
                   goodbye_prompt=str(cfg.get("goodbye_prompt", "goodbye")),
                   no_input_prompt=str(cfg.get("no_input_prompt", "no_input")), region=region)


class IvrCalls:
    """Serves every call: the handler `AgiFactory` starts per connection."""

    def __init__(self, engine, service, call_log, prompts, render, settings: IvrSettings):
        self.engine = engine
        self.service = service
        self.call_log = call_log
        self.prompts = prompts
        self.render = render          # telecom_pay.menus.ivr.render_ivr
        self.settings = settings
        self.stats = {"calls": 0, "receipts_by_sms": 0, "transfers": 0}

    async def __call__(self, conn: AgiConnection, env: AgiEnvironment) -> None:
        await Call(self, conn, env).run()


class Call:
    def __init__(self, calls: IvrCalls, conn: AgiConnection, env: AgiEnvironment):
        self.calls = calls
        self.conn = conn
        self.env = env
        self.call_id = env.uniqueid or f"noid-{id(conn)}"
        self.session_id = f"ivr:{self.call_id}"
        self.callback = bool(env.args) and env.args[0] == "callback"
        # a call-back the platform originated may name the number it dialled
        # (AGI(agi://HOST:4573/ivr,callback,MSISDN)): that beats a caller id
        dialled = env.args[1] if self.callback and len(env.args) > 1 else ""
        self.msisdn = (caller_msisdn(dialled, calls.settings.region) if dialled else None) \
            or caller_msisdn(env.callerid, calls.settings.region)
        self.step = 0
        self.unheard = None           # a result the caller has not heard to its end (after a PIN)
        self.lang = "zh"
        self.outcome = "done"

    @property
    def who(self) -> str:
        return mask(self.msisdn) if self.msisdn else "withheld"

    async def run(self) -> None:
        calls = self.calls
        calls.stats["calls"] += 1
        clock = calls.call_log.ledger.clock
        started = clock()
        await self._event("agi_start", detail={"script": self.env.network_script, "callback": self.callback})
        log.info("{kind} {call_id} with {who}", kind="call-back" if self.callback else "call", call_id=self.call_id,
                 who=self.who)
        reason = "hangup"
        try:
            await self.conn.send("ANSWER")
            screen = await calls.engine.start(self.session_id, self.msisdn, channel="ivr")
            reason = await self._dialogue(screen)
        except CallGone:
            reason = "hangup"
        except Exception:
            # the core failed (database down, a bug): the caller hears goodbye
            # rather than silence; what a PIN started is the core's to finish
            reason = "error"
            log.failure("call {call_id} failed", call_id=self.call_id)
            await self._sorry()
        finally:
            if self.unheard is not None:          # gone (or failed) before the result was heard
                await self._receipt_by_sms()
            try:
                await calls.engine.end(self.session_id, reason)
            except Exception:
                log.failure("ending the menu session of call {call_id} failed", call_id=self.call_id)
            duration = int((clock() - started).total_seconds())
            await self._event("agi_end", duration_s=duration, detail={"reason": reason, "steps": self.step})
            self.conn.close()

    # ------------------------------------------------------------ the dialogue

    async def _dialogue(self, screen) -> str:
        """Plays screens until the call ends; returns why it ended."""
        calls = self.calls
        no_input = 0
        told_lang = None
        while True:
            self.lang = getattr(screen, "lang", self.lang) or self.lang
            if self.lang != told_lang:
                # the switch speaks numbers (SAY NUMBER) in the channel's
                # language, and the dialplan's own prompts read TP_LANG
                await self._set("CHANNEL(language)", self.lang)
                await self._set("TP_LANG", self.lang)
                told_lang = self.lang
            turn = calls.render(screen, calls.prompts, sounds=calls.settings.sounds)
            result = getattr(screen, "result", None)
            if result is not None:
                self.outcome = str(getattr(result.outcome, "value", result.outcome))
            if screen.transfer or turn.transfer:
                await self._transfer(screen, turn)
                return "transfer"
            collect = turn.collect
            if collect is not None:
                collect = self._with_settings(collect)
            last_turn = collect is None or turn.hangup or screen.end
            pressed = await self._play(turn.plays, escape=not last_turn)
            if self.conn.hung_up:
                raise CallGone("hung up")
            if last_turn or pressed is not None or not _listens_with_get_data(turn.plays):
                # played to its end (or cut short by the caller's own key): the result was heard
                self.unheard = None
            if last_turn:
                await self._finish()
                return "completed"
            digits = await self._collect(turn.plays, collect, pressed)
            self.unheard = None               # its last prompt played while GET DATA listened
            if digits is None:
                no_input += 1
                if no_input > collect.retries:
                    await self._prompt(self.calls.settings.goodbye_prompt)
                    self.outcome = "timeout"
                    await self._finish()
                    return "timeout"
                await self._prompt(self.calls.settings.no_input_prompt)
                continue                          # the same screen again
            no_input = 0
            if digits == "*":
                screen = await calls.engine.current(self.session_id) or screen
                continue
            self.step += 1
            key = f"ivr:{self.call_id}:{self.step}"
            # From here on the input is the engine's: a PIN is checked and what
            # it confirms runs to its end even if the line drops meanwhile.
            screen = await calls.engine.answer(self.session_id, digits, key=key)
            if collect.secret and getattr(screen, "result", None) is not None:
                self.unheard = screen.result

    def _with_settings(self, collect):
        s = self.calls.settings
        changes = {}
        if s.dtmf_timeout_ms is not None:
            changes["timeout_ms"] = s.dtmf_timeout_ms
        if s.retries is not None:
            changes["retries"] = s.retries
        return dataclasses.replace(collect, **changes) if changes else collect

    async def _play(self, plays, *, escape: bool) -> str | None:
        """Plays the prompts but, when input follows and the last one is a
        recorded prompt, that one: GET DATA plays it while it listens. A
        key pressed during a prompt stops the playing and is returned."""
        digits = KEYS if escape else ""
        todo = list(plays)
        if escape and _listens_with_get_data(todo):
            todo = todo[:-1]
        for play in todo:
            if self.conn.hung_up:
                return None
            if play.kind == "file":
                r = await self.conn.send("STREAM FILE", play.value, digits)
            elif play.kind == "number":
                r = await self.conn.send("SAY NUMBER", play.value, digits)
            else:
                r = await self.conn.send("SAY DIGITS", play.value, digits)
            self._warn_if_failed(r, play)
            key = self._key(r)
            if key is not None and escape:
                return key
        return None

    def _warn_if_failed(self, r: Response, play) -> None:
        if r.failed and not self.conn.hung_up:
            log.warn("{command} failed on a live channel ({text}): is the sound {value} installed?",
                     command=r.command.split(" ")[0], text=r.text, value=play.value)

    @staticmethod
    def _key(r: Response) -> str | None:
        n = r.number
        if r.code == 200 and n is not None and n > 0 and chr(n) in KEYS:
            return chr(n)
        return None

    async def _collect(self, plays, spec, pressed: str | None) -> str | None:
        """The input of one step, without its `#`; None when nothing (or
        too little) came before the timeout."""
        wait = spec.timeout_ms / 1000.0
        if pressed is None and _listens_with_get_data(plays):
            r = await self.conn.send("GET DATA", plays[-1].value, spec.timeout_ms, spec.max_digits,
                                     wait=wait * (spec.max_digits + 1))
            if r.failed:
                if self.conn.hung_up:
                    raise CallGone("hung up")
                # the prompt could not be played (no sound file): listen without it
                digits = await self._wait_digits("", spec)
            else:
                digits = r.result
        else:
            digits = await self._wait_digits(pressed or "", spec)
        digits = digits.split("#", 1)[0] if "#" in digits else digits
        if digits == "*":
            return "*"
        if len(digits) < max(1, spec.min_digits):
            return None
        log.debug("call {call_id}: input of {n} keys", call_id=self.call_id, n=len(digits))
        return digits

    async def _wait_digits(self, digits: str, spec) -> str:
        while len(digits) < spec.max_digits and not digits.endswith("#") and digits != "*":
            r = await self.conn.send("WAIT FOR DIGIT", spec.timeout_ms, wait=spec.timeout_ms / 1000.0)
            if r.failed:
                raise CallGone("hung up")
            key = self._key(r)
            if key is None:
                break                             # timeout: result=0
            digits += key
        return digits

    # ------------------------------------------------------------ endings

    async def _prompt(self, name: str) -> None:
        """A prompt of the channel's own (no input, goodbye), not of a screen."""
        if name:
            await self.conn.send("STREAM FILE", f"{self.calls.settings.sounds}/{self.lang}/{name}", "")

    async def _sorry(self) -> None:
        try:
            if not self.conn.hung_up:
                await self._prompt(self.calls.settings.goodbye_prompt)
                self.outcome = "error"
                await self._finish()
        except CallGone:
            pass

    async def _finish(self) -> None:
        """The dialogue is over: say how for the dialplan and hang up."""
        await self._set("TP_RESULT", self.outcome)
        if not self.conn.hung_up:
            await self.conn.send("HANGUP")

    async def _set(self, name: str, value: str) -> None:
        if not self.conn.closed:
            await self.conn.send("SET VARIABLE", name, value)

    async def _transfer(self, screen, turn) -> None:
        calls = self.calls
        meta = getattr(screen, "meta", {}) or {}
        target = calls.settings.agent_target
        handoff = await calls.call_log.record_handoff(
            call_id=self.call_id, msisdn=self.msisdn, caller_id=self.env.callerid or None,
            menu_path=str(meta.get("path", screen.node)), pin_verified=bool(meta.get("pin_verified", False)),
            target=target)
        calls.stats["transfers"] += 1
        log.info("call {call_id} from {who} handed to {target} (hand-off {id})", call_id=self.call_id,
                 who=self.who, target=target, id=handoff)
        await self._play(turn.plays, escape=False)
        await self._set("TP_TRANSFER", target)
        self.outcome = "transfer"
        await self._set("TP_RESULT", "transfer")

    async def _receipt_by_sms(self) -> None:
        result, self.unheard = self.unheard, None
        if self.msisdn is None:
            return
        if result.params.get("receipt") == "sms":
            return        # a spend's receipt was queued with the money (PaymentService.RECEIPT_BY_SMS)
        self.calls.stats["receipts_by_sms"] += 1
        log.info("call {call_id}: {who} hung up before hearing the result; it goes by SMS",
                 call_id=self.call_id, who=self.who)
        try:
            await self.calls.service.notify(self.msisdn, result)
        except Exception:
            log.failure("the SMS receipt of call {call_id} failed", call_id=self.call_id)

    async def _event(self, event: str, **kw) -> None:
        try:
            await self.calls.call_log.record_event(self.call_id, event, channel=self.env.channel or None,
                                                   msisdn=self.msisdn, **kw)
        except Exception:
            log.failure("recording {event} of call {call_id} failed", event=event, call_id=self.call_id)
