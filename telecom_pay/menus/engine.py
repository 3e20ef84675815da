"""Walks the menu tree (telecom_pay/menus/tree.py) for one dialogue: a USSD
session or an IVR call. Channel-neutral: it answers every input with a
`Screen` that the channel renders.

Operations run through the Conversation, the same path as an SMS command:
`ZF` through the menu previews, holds the payment under the same pending
key and asks for the PIN; the PIN books with the same idempotency rules
(a USSD input's durable record gives `mo:<id>`) and the same lockout, so
three wrong PINs by IVR lock SMS too.

State (where the dialogue is, the values collected so far, the way back)
lives in the session store under `menu:<session id>` with a TTL. A PIN is
never in it: the step that takes the PIN runs the operation at once. When a
dialogue ends before its PIN (released, timed out, hung up), the payment it
left pending is dropped, so nothing moves later by accident.

Credentials never appear on a screen: an account opened in a menu gets its
initial PIN and password by SMS, as an SMS opening does.
"""
from __future__ import annotations

import re
from typing import Any

from twisted.logger import Logger

from telecom_pay.commands import keywords as kw
from telecom_pay.commands.parser import Command, ParseError, parse
from telecom_pay.commands.replies import normalize_lang, render
from telecom_pay.merchants import payments as sp_payments
from telecom_pay.menus.screen import Collect, Option, Say, Screen
from telecom_pay.menus.tree import GUEST, HOME, NEW, TREE, Ask, Do, Menu, Node, Transfer
from telecom_pay.money import AmountError, parse_amount
from telecom_pay.msisdn import MsisdnError, mask, normalize
from telecom_pay.outcomes import Outcome, Result

log = Logger(namespace="telecom_pay.menus")

BACK, HOME_KEY = "0", "00"
SP_ENTRY = "sp:"                    # entry "sp:<tag>": a pushed SP payment request's PIN page
MAX_INVALID = 3                     # wrong inputs in a row, then the dialogue ends
MAX_MERCHANTS = 8                   # keys 1-8; 9 is "another code"
_CODE_RE = re.compile(r"^[A-Za-z0-9]{2,12}$")
_REQUESTS = {"topup": kw.TOPUP, "pay": kw.PAY, "send": kw.SEND, "airtime": kw.AIRTIME}
# outcomes after which the PIN was not (or could not be) checked
_PIN_NOT_PASSED = {Outcome.PIN_WRONG, Outcome.PIN_LOCKED, Outcome.PIN_FORMAT, Outcome.NOTHING_PENDING,
                   Outcome.PIN_CHANGE_REQUIRED, Outcome.CONFIRMATION_EXPIRED}
_COLLECT = {
    "amount": Collect("amount", 1, 12),
    "merchant_code": Collect("merchant_code", 2, 12),
    "msisdn": Collect("msisdn", 5, 16),
    "pin": Collect("pin", 6, 6, secret=True),
    "pin_change": Collect("pin_change", 12, 13, secret=True),
}


class MenuEngine:
    def __init__(self, conversation, sessions=None, *, ttl: float = 600.0, tree: dict[str, Node] = TREE):
        self.conv = conversation
        self.service = conversation.service
        self.sessions = sessions or conversation.sessions
        self.settings = conversation.settings
        self.ttl = ttl
        self.tree = tree

    # ------------------------------------------------------------ entry points

    async def start(self, session_id: str, msisdn: str | None, *, channel: str, entry: str | None = None,
                    lang: str | None = None) -> Screen:
        try:
            msisdn = normalize(msisdn, self.settings.region) if msisdn else None
        except MsisdnError:
            msisdn = None
        if lang is None:
            lang = await self.conv.language(msisdn) if msisdn else normalize_lang(self.settings.default_language)
        state: dict[str, Any] = {"msisdn": msisdn, "channel": channel, "lang": normalize_lang(lang), "stack": [],
                                 "data": {}, "path": [], "pin_verified": False, "pending_key": None,
                                 "invalid": 0, "node": None}
        state["home"] = await self._home(msisdn)
        target = state["home"]
        if entry and entry.startswith(SP_ENTRY) and msisdn:
            # a pushed SP payment request (telecom_pay/merchants/payments.py): its PIN page
            tag = entry[len(SP_ENTRY):]
            live = [p for p in await sp_payments.live_requests(self.service, msisdn, state["lang"]) if p.tag == tag]
            if live:
                state["sp"] = {"tag": tag, "action": kw.PAY, "amount": live[0].amount,
                               "merchant_code": live[0].merchant_code, "merchant_name": live[0].merchant_name}
                return await self._save(session_id, state, self._pin_screen(state, state["sp"]))
        if entry == "pending" and msisdn:
            pending = await self.conv.pending(msisdn)
            if pending is not None and pending.get("action") == kw.OPEN:
                target = "confirm_open"
            elif pending is not None:
                state["pending_key"] = pending.get("key")
                screen = self._pin_screen(state, pending)
                return await self._save(session_id, state, screen)
        elif entry and entry in self.tree:
            target = entry
        screen = await self._enter(state, target)
        return await self._save(session_id, state, screen)

    async def answer(self, session_id: str, text: str, *, message_id: int | None = None,
                     key: str | None = None) -> Screen:
        """One input. `message_id`: the input's durable record (USSD); what
        its PIN books is keyed `mo:<id>`, so a re-answered record finds it.
        Without a record (IVR) the pending action's own key is the booking's
        key, consumed once; `key` (the IVR's call and step) is accepted but
        not needed for that."""
        state = await self.sessions.get(self._key(session_id))
        if state is None:
            return self._expired()
        t = (text or "").strip()
        screen = await self._answer(state, t, message_id)
        return await self._save(session_id, state, screen)

    async def more(self, session_id: str) -> Screen:
        """The next page: of a statement, the next page of transactions; of
        any other long screen, a text channel's next page of it."""
        state = await self.sessions.get(self._key(session_id))
        if state is None:
            return self._expired()
        last = _screen_from(state.get("screen"))
        if last is None:
            return self._expired()
        if state.get("node") == "statement_result":
            state["data"]["stmt_page"] = int(state["data"].get("stmt_page", 1)) + 1
            screen = await self._statement(state)
        else:
            screen = Screen(**{**_screen_fields(last), "page": last.page + 1})
        return await self._save(session_id, state, screen)

    async def current(self, session_id: str) -> Screen | None:
        state = await self.sessions.get(self._key(session_id))
        return None if state is None else _screen_from(state.get("screen"))

    async def end(self, session_id: str, reason: str) -> None:
        state = await self.sessions.take(self._key(session_id))
        if state is None:
            return
        if state.get("pending_key") and state.get("msisdn"):
            try:
                if await self.conv.drop_pending(state["msisdn"], state["pending_key"]):
                    log.info("menu {sid} of {msisdn} ended ({reason}) before its PIN: the pending action is "
                             "dropped", sid=session_id.split(":")[0], msisdn=mask(state["msisdn"]), reason=reason)
            except Exception:
                log.failure("dropping the pending action of an ended menu failed (it expires by its TTL)")

    # ------------------------------------------------------------ stepping

    async def _answer(self, state: dict, t: str, message_id: int | None) -> Screen:
        if t == HOME_KEY:
            state["stack"] = []
            return await self._enter(state, state["home"])
        if t == BACK:
            while state["stack"]:
                target = state["stack"].pop()
                if isinstance(self.tree.get(target), (Menu, Ask)):
                    return await self._enter(state, target, push=False)
            return self._goodbye(state)
        node_id = state.get("node")
        node = self.tree.get(node_id)
        if isinstance(node, Menu):
            choice = state.get("choices", {}).get(t)
            if choice is not None:
                state["invalid"] = 0
                state["data"].update(choice.get("set") or {})
                if choice["target"] == "@back":
                    return await self._answer(state, BACK, message_id)
                return await self._enter(state, choice["target"], came_from=node_id)
            if state["channel"] == "ussd" and t and not t.isdigit():
                return await self._typed(state, t, message_id)
            return await self._invalid(state, "invalid_choice")
        if isinstance(node, Ask):
            return await self._input(state, node, t, message_id)
        # a result: USSD takes a typed command (or the PIN a typed command asked for)
        if state["channel"] == "ussd" and t:
            return await self._typed(state, t, message_id)
        return await self._enter(state, state["home"])

    async def _input(self, state: dict, node: Ask, t: str, message_id: int | None) -> Screen:
        value: Any = None
        if node.kind == "amount":
            try:
                value = parse_amount(t)
            except AmountError:
                value = None
        elif node.kind == "merchant_code":
            value = t.upper() if _CODE_RE.match(t) else None
        elif node.kind == "msisdn":
            try:
                value = normalize(t, self.settings.region)
            except MsisdnError:
                value = None
        elif node.kind == "pin":
            if re.fullmatch(r"\d{6}", t):
                state["invalid"] = 0
                return await self._pin(state, t, message_id)
        elif node.kind == "pin_change":
            digits = t.replace(" ", "")
            if re.fullmatch(r"\d{12}", digits):
                state["invalid"] = 0
                return await self._change_pin(state, digits[:6], digits[6:])
        if value is None:
            return await self._invalid(state, node.invalid)
        state["invalid"] = 0
        if node.field:
            state["data"][node.field] = value
        return await self._enter(state, node.next, came_from=node.id)

    async def _invalid(self, state: dict, prompt: str) -> Screen:
        state["invalid"] = state.get("invalid", 0) + 1
        if state["invalid"] >= MAX_INVALID:
            return self._goodbye(state, "too_many_tries")
        again = await self._enter(state, state["node"], push=False)
        return _prefixed(again, Say.prompt(prompt))

    async def _enter(self, state: dict, node_id: str, *, came_from: str | None = None, push: bool = True) -> Screen:
        node = self.tree[node_id]
        if came_from is not None and push and isinstance(self.tree.get(came_from), (Menu, Ask)):
            state["stack"] = (state["stack"] + [came_from])[-12:]
        state["path"] = (state["path"] + [node_id])[-12:]
        if isinstance(node, Menu):
            state["node"] = node_id
            options = await self._choices(state, node)
            return self._screen(state, node_id, says=(Say.prompt(node.title),), options=options)
        if isinstance(node, Ask):
            state["node"] = node_id
            return self._screen(state, node_id, says=(Say.prompt(node.prompt),), collect=_COLLECT[node.kind])
        if isinstance(node, Transfer):
            state["node"] = node_id
            return self._screen(state, node_id, says=(Say.prompt(node.prompt),), end=True, transfer=node.target)
        return await self._do(state, node)

    async def _choices(self, state: dict, node: Menu) -> tuple[Option, ...]:
        choices: dict[str, dict] = {}
        options: list[Option] = []
        if node.dynamic == "merchants":
            lang = state["lang"]
            for i, m in enumerate(self.settings.merchants[:MAX_MERCHANTS], start=1):
                code = str(m["code"]).upper()
                name = (m.get("name_en") if lang == "en" else None) or m.get("name") or code
                key = str(i)
                choices[key] = {"target": "pay_amount", "set": {"merchant_code": code}}
                options.append(Option(key, Say.prompt(f"merchant_{code}", text=name), "pay_amount"))
        for c in node.choices:
            if c.target == "callback" and not hasattr(self.service, "request_callback"):
                continue
            if c.target == "pay_code" and state["channel"] == "ivr":
                continue                  # a merchant code has letters: no keypad types it
            choices[c.key] = {"target": c.target}
            options.append(Option(c.key, Say.prompt(c.label), c.target))
        state["choices"] = choices
        return tuple(options)

    # ------------------------------------------------------------ operations

    async def _do(self, state: dict, node: Do) -> Screen:
        msisdn, channel, lang = state["msisdn"], state["channel"], state["lang"]
        op = node.op
        if msisdn is None and op not in ("open_for",):
            return self._result(state, Result(Outcome.NO_ACCOUNT))
        if op == "balance":
            return self._result(state, await self.service.balance(msisdn, channel=channel))
        if op == "statement":
            state["data"]["stmt_page"] = 1
            return await self._statement(state)
        if op == "request":
            return await self._request(state, node.params["action"])
        if op == "freeze":
            return self._result(state, await self.conv.run(msisdn, Command(name=kw.FREEZE), channel=channel, lang=lang))
        if op == "language":
            result = await self.conv.run(msisdn, Command(name=kw.LANG, lang=node.params["lang"]), channel=channel,
                                         lang=lang)
            if isinstance(result, Result) and result.ok:
                state["lang"] = normalize_lang(node.params["lang"])
            return self._result(state, result)
        if op == "open":
            return await self._open(state)
        if op == "open_for":
            target = state["data"].get("for")
            result = await self.conv.run(target, Command(name=kw.OPEN), channel=channel, lang=lang)
            if isinstance(result, Result) and result.outcome is Outcome.CONFIRM_REQUIRED:
                await self.service.notify(target, result)      # the agreement, to that phone
                return self._told(state, "open_sms_sent", result)
            return self._result(state, result)
        if op == "confirm_open":
            return await self._confirm_open(state)
        if op == "cancel_open":
            result = await self.conv.run(msisdn, Command(name=kw.CANCEL), channel=channel, lang=lang)
            state["home"] = await self._home(msisdn)
            return self._result(state, result)
        if op == "callback":
            return self._result(state, await self.service.request_callback(msisdn, channel=channel))
        raise ValueError(f"unknown menu operation {op!r}")

    async def _request(self, state: dict, action: str) -> Screen:
        d = state["data"]
        cmd = Command(name=_REQUESTS[action], amount=d.get("amount"), merchant_code=d.get("merchant_code"),
                      msisdn=d.get("to"))
        result = await self.conv.run(state["msisdn"], cmd, channel=state["channel"], lang=state["lang"])
        if isinstance(result, Result) and result.outcome is Outcome.PIN_REQUIRED:
            pending = await self.conv.pending(state["msisdn"])
            if pending is not None:
                state["pending_key"] = pending.get("key")
                return self._pin_screen(state, pending)
        return self._result(state, result)

    def _pin_screen(self, state: dict, pending: dict, *, wrong: bool = False) -> Screen:
        state["node"] = "pin"
        state["path"] = (state["path"] + ["pin"])[-12:]
        action = pending.get("action")
        says: list[Say] = [Say.prompt("outcome_pin_wrong")] if wrong else []
        says.append(Say.prompt(f"confirm_{action}"))
        if pending.get("amount"):
            says.append(Say.money(pending["amount"]))
        if action == kw.PAY and pending.get("merchant_code"):
            code = str(pending["merchant_code"]).upper()
            says += [Say.prompt("to_merchant"), Say.prompt(f"merchant_{code}", text=pending.get("merchant_name") or code)]
        elif action == kw.SEND and pending.get("to"):
            says += [Say.prompt("to_number"), Say.digits(pending["to"])]
        says.append(Say.prompt("enter_pin"))
        return self._screen(state, "pin", says=tuple(says), collect=_COLLECT["pin"],
                            result=Result(Outcome.PIN_WRONG) if wrong else None)

    async def _pin(self, state: dict, pin: str, message_id: int | None) -> Screen:
        msisdn = state["msisdn"]
        if msisdn is None:
            return self._result(state, Result(Outcome.NO_ACCOUNT))
        if state.get("sp"):
            # the SP request this page showed: its PIN goes to that request (by its tag), nothing else
            result = await sp_payments.confirm(self.service, msisdn, pin, tag=state["sp"]["tag"],
                                               channel=state["channel"], lang=state["lang"])
            if result.outcome is Outcome.PIN_WRONG:
                return self._pin_screen(state, state["sp"], wrong=True)
            state["sp"] = None
            return self._result(state, result)
        result = await self.conv.answer_pin(msisdn, pin, channel=state["channel"], lang=state["lang"],
                                            message_id=message_id, expect_key=state.get("pending_key"))
        if result.outcome is Outcome.PIN_WRONG:
            pending = await self.conv.pending(msisdn)      # held again: another try
            if pending is not None:
                return self._pin_screen(state, pending, wrong=True)
        state["pending_key"] = None
        if result.outcome not in _PIN_NOT_PASSED:
            state["pin_verified"] = True
        return self._result(state, result)

    async def _change_pin(self, state: dict, old: str, new: str) -> Screen:
        if state["msisdn"] is None:
            return self._result(state, Result(Outcome.NO_ACCOUNT))
        result = await self.service.change_pin(state["msisdn"], old, new, channel=state["channel"])
        if result.outcome is Outcome.OK:
            state["pin_verified"] = True
        return self._result(state, result)

    async def _statement(self, state: dict) -> Screen:
        page = int(state["data"].get("stmt_page", 1))
        result = await self.service.statement(state["msisdn"], channel=state["channel"], page=page,
                                              lang=state["lang"])
        screen = self._result(state, result)
        if result.outcome is Outcome.OK and state["channel"] != "ivr":
            state["node"] = "statement_result"      # `more` fetches the next page
        return screen

    async def _open(self, state: dict) -> Screen:
        msisdn, channel, lang = state["msisdn"], state["channel"], state["lang"]
        result = await self.conv.run(msisdn, Command(name=kw.OPEN), channel=channel, lang=lang)
        if not isinstance(result, Result) or result.outcome is not Outcome.CONFIRM_REQUIRED:
            return self._result(state, result)
        if channel == "ivr":
            # a caller id proves nothing: the phone itself confirms, by SMS
            await self.service.notify(msisdn, result)
            return self._told(state, "open_sms_sent", result)
        screen = await self._enter(state, "confirm_open", push=False)
        return _prefixed(screen, *[Say.prompt("agreement_text")])

    async def _confirm_open(self, state: dict, message_id: int | None = None) -> Screen:
        msisdn = state["msisdn"]
        result = await self.conv.run(msisdn, Command(name=kw.CONFIRM), channel=state["channel"], lang=state["lang"],
                                     message_id=message_id)
        if isinstance(result, Result) and result.outcome is Outcome.OK and result.params.get("pin"):
            await self.service.notify(msisdn, result)           # credentials go by SMS only
            state["home"] = HOME
            state["stack"] = []
            return self._told(state, "account_opened", Result(Outcome.OK, balance=0,
                                                              params={"action": "confirm_open"}))
        state["home"] = await self._home(msisdn)
        return self._result(state, result)

    async def _typed(self, state: dict, t: str, message_id: int | None) -> Screen:
        """A command typed into a USSD session, as it would be sent by SMS."""
        msisdn = state["msisdn"]
        try:
            cmd = parse(t)
        except ParseError:
            cmd = None
        if cmd is not None and cmd.name == kw.CONFIRM:
            return await self._confirm_open(state, message_id)
        replies = await self.conv.handle(msisdn, t, channel=state["channel"], message_id=message_id)
        if getattr(replies, "secret", False):           # never reached for A (above); kept as a guard
            replies = [self._text_of("credentials_by_sms", state["lang"])]
        if cmd is not None and cmd.name == kw.LANG and cmd.lang:
            state["lang"] = normalize_lang(cmd.lang)
        state["node"] = "result"
        state["home"] = await self._home(msisdn)
        return self._screen(state, "result", text="\n".join(replies))

    # ------------------------------------------------------------ screens

    def _result(self, state: dict, result: Result | list[str]) -> Screen:
        """What an operation answered: a text channel shows the SMS reply's
        words; the IVR plays the result and goes on with the home menu."""
        if not isinstance(result, Result):          # help text from the conversation
            state["node"] = "result"
            return self._screen(state, "result", text="\n".join(result))
        text = "\n".join(render(result, state["lang"], tz=self.service.tz))
        says = result_says(result)
        state["node"] = "result"
        state["path"] = (state["path"] + ["result"])[-12:]
        if state["channel"] == "ivr":
            return self._then_home(state, says, result, text)
        return self._screen(state, "result", says=says, text=text, result=result)

    def _told(self, state: dict, prompt: str, result: Result) -> Screen:
        says = (Say.prompt(prompt),)
        text = self._text_of(prompt, state["lang"])
        state["node"] = "result"
        if state["channel"] == "ivr":
            return self._then_home(state, says, result, text)
        return self._screen(state, "result", says=says, text=text, result=result)

    def _then_home(self, state: dict, says: tuple[Say, ...], result: Result, text: str) -> Screen:
        home = self.tree[state["home"]]
        state["node"] = home.id
        state["stack"] = []
        # the options are computed synchronously from the tree: the home menus are not dynamic
        choices = {c.key: {"target": c.target} for c in home.choices
                   if not (c.target == "callback" and not hasattr(self.service, "request_callback"))}
        state["choices"] = choices
        options = tuple(Option(c.key, Say.prompt(c.label), c.target) for c in home.choices if c.key in choices)
        return self._screen(state, home.id, says=says + (Say.prompt(home.title),), options=options, text=text,
                            result=result)

    def _screen(self, state: dict, node: str, **fields) -> Screen:
        meta = {"path": ">".join(state["path"]), "pin_verified": bool(state.get("pin_verified"))}
        return Screen(node=node, lang=state["lang"], meta=meta, **fields)

    def _goodbye(self, state: dict, prompt: str = "goodbye") -> Screen:
        state["node"] = "goodbye"
        return self._screen(state, "goodbye", says=(Say.prompt(prompt),), end=True)

    def _expired(self) -> Screen:
        return Screen(node="expired", says=(Say.prompt("session_expired"),), end=True,
                      lang=normalize_lang(self.settings.default_language))

    @staticmethod
    def _text_of(prompt: str, lang: str) -> str:
        from telecom_pay.menus.prompts import default_prompts
        return default_prompts().text(prompt, lang)

    async def _home(self, msisdn: str | None) -> str:
        if msisdn is None:
            return GUEST
        account = await self.service.account_info(msisdn)
        if account is None or account.status in ("pending", "closed"):
            return NEW
        return HOME

    async def _save(self, session_id: str, state: dict, screen: Screen) -> Screen:
        key = self._key(session_id)
        if screen.end:
            await self.sessions.delete(key)
            return screen
        state["screen"] = _screen_dict(screen)
        await self.sessions.put(key, state, ttl=self.ttl)
        return screen

    @staticmethod
    def _key(session_id: str) -> str:
        return f"menu:{session_id}"


def result_says(result: Result) -> tuple[Say, ...]:
    """A result as the IVR speaks it: recorded words and spoken values."""
    o = result.outcome
    if o is Outcome.OK:
        action = result.params.get("action")
        says: list[Say] = []
        if action == "statement":
            lines = result.params.get("lines") or []
            says.append(Say.prompt("statement_intro" if lines else "statement_empty"))
            for line in list(lines)[:3]:
                kind = _field(line, "kind")
                amount = _field(line, "amount")
                says.append(Say.prompt(f"kind_{kind}", text=str(kind)))
                if isinstance(amount, int):
                    says.append(Say.money(abs(amount)))
            return tuple(says)
        says.append(Say.prompt(f"done_{action}" if action else "done"))
        if result.amount:
            says += [Say.prompt("amount_is"), Say.money(result.amount)]
        if result.balance is not None:
            says += [Say.prompt("balance_is"), Say.money(result.balance)]
        return tuple(says)
    if o is Outcome.IN_PROGRESS:
        return (Say.prompt("outcome_in_progress"),)
    return (Say.prompt(f"outcome_{o.value}"),)


def _field(line: Any, name: str) -> Any:
    return line.get(name) if isinstance(line, dict) else getattr(line, name, None)


def _prefixed(screen: Screen, *says: Say) -> Screen:
    return Screen(**{**_screen_fields(screen), "says": tuple(says) + screen.says})


def _screen_fields(screen: Screen) -> dict:
    return {f: getattr(screen, f) for f in ("node", "says", "options", "collect", "text", "lines", "end",
                                             "transfer", "result", "lang", "page", "meta")}


def _say_dict(s: Say) -> dict:
    return {"kind": s.kind, "name": s.name, "value": s.value, "text": s.text}


def _screen_dict(screen: Screen) -> dict:
    """What `current` and `more` need again (no Result, no PIN)."""
    return {
        "node": screen.node, "says": [_say_dict(s) for s in screen.says],
        "options": [{"key": o.key, "label": _say_dict(o.label), "target": o.target} for o in screen.options],
        "collect": None if screen.collect is None else {
            "kind": screen.collect.kind, "min_length": screen.collect.min_length,
            "max_length": screen.collect.max_length, "secret": screen.collect.secret},
        "text": screen.text, "lines": list(screen.lines), "end": screen.end, "transfer": screen.transfer,
        "lang": screen.lang, "page": screen.page, "meta": screen.meta,
    }


def _screen_from(d: dict | None) -> Screen | None:
    if not d:
        return None
    return Screen(
        node=d["node"], says=tuple(Say(**s) for s in d["says"]),
        options=tuple(Option(o["key"], Say(**o["label"]), o["target"]) for o in d["options"]),
        collect=None if d["collect"] is None else Collect(**d["collect"]),
        text=d["text"], lines=tuple(d["lines"]), end=d["end"], transfer=d["transfer"], lang=d["lang"],
        page=d["page"], meta=d["meta"])
