"""A small menu engine with the contract of telecom_pay/menus/engine.py, for
testing the FastAGI call runner at that seam (timeouts, retries, `*`,
hang-ups, transfer, a payment that is still running when the caller hangs
up) with a tree small enough to script. The end-to-end tests use the real
engine."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from telecom_pay.menus.screen import Collect, Option, Say, Screen
from telecom_pay.outcomes import Outcome, Result


@dataclass
class TinyEngine:
    """root: 1 balance (end), 2 pay (PIN 123456, `pause` seconds before
    it answers), 5 a core that fails, 9 agent (transfer)."""
    pause: float = 0.0
    pin: str = "123456"
    started: list = field(default_factory=list)
    answers: list = field(default_factory=list)
    ended: list = field(default_factory=list)
    paid: list = field(default_factory=list)
    states: dict = field(default_factory=dict)

    def _root(self) -> Screen:
        return Screen("root", says=(Say.prompt("main_menu"),),
                      options=(Option("1", Say.prompt("opt_balance")), Option("2", Say.prompt("opt_pay")),
                               Option("9", Say.prompt("opt_agent"))), lang="en", meta={"path": "root"})

    async def start(self, session_id, msisdn, *, channel, entry=None, lang=None) -> Screen:
        self.started.append((session_id, msisdn, channel))
        self.states[session_id] = "root"
        return self._root()

    async def current(self, session_id):
        node = self.states.get(session_id)
        return self._root() if node == "root" else None

    async def answer(self, session_id, text, *, message_id=None, key=None) -> Screen:
        self.answers.append((session_id, "*" * len(text) if self.states.get(session_id) == "pin" else text, key))
        node = self.states.get(session_id)
        if node is None:
            return Screen("expired", end=True)
        if node == "root":
            if text == "1":
                return Screen("balance", says=(Say.prompt("balance_is"), Say.number(12345)), end=True, lang="en")
            if text == "2":
                self.states[session_id] = "pin"
                return Screen("pin", says=(Say.prompt("enter_pin"),), collect=Collect("pin", 6, 6, secret=True),
                              lang="en", meta={"path": "root>pay>pin"})
            if text == "5":
                raise RuntimeError("the database is down")
            if text == "9":
                return Screen("agent", says=(Say.prompt("connecting_agent"),), transfer="agents", lang="en",
                              meta={"path": "root>agent", "pin_verified": False})
            return self._root()
        if node == "pin":
            if self.pause:
                await asyncio.sleep(self.pause)
            if text != self.pin:
                return Screen("pin", says=(Say.prompt("wrong_pin"),), collect=Collect("pin", 6, 6, secret=True),
                              lang="en", result=Result(Outcome.PIN_WRONG))
            self.paid.append(key)
            self.states[session_id] = "done"
            return Screen("paid", says=(Say.prompt("paid"), Say.digits("1234")), end=True, lang="en",
                          result=Result(Outcome.OK, ref="T2345678", amount=1000))
        return Screen("expired", end=True)

    async def more(self, session_id):
        return await self.current(session_id)

    async def end(self, session_id, reason) -> None:
        self.ended.append((session_id, reason))
        self.states.pop(session_id, None)
