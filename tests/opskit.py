"""The operations pages' tests share this: the daemon with its web section
(and, for the bank pages, its bank bridge talking ISO 8583 to the bank
simulator on 127.0.0.1), and a logged-in web user of a chosen role."""
from __future__ import annotations

import asyncio
import contextlib
import re

from twisted.internet import reactor

from simulators.bank import BankSimulator
from telecom_pay.aio import wait_deferred
from telecom_pay.daemon import Daemon
from telecom_pay.security import PasswordHasher
from telecom_pay.outcomes import Outcome
from tests.e2ekit import eventually
from tests.servicekit import MSISDN, open_active
from tests.webkit import FAST_HASHER, Browser, add_user, stop_web, web_settings

PASSWORD = "s3cret-enough-pw"
DEBIT = "6222020000001234"
MERCHANT_PAN = "6222020000000001"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


async def start(settings, *, sections=("web",), clock=None) -> tuple[Daemon, str]:
    daemon = Daemon(settings, reactor, sections=sections, clock=clock)
    daemon.startService()
    await wait_deferred(daemon.ready)
    web = daemon.components["web"]
    web.app.users.hasher = PasswordHasher(**FAST_HASHER)
    return daemon, f"http://127.0.0.1:{await web.wait_listening()}"


async def logged_in(daemon, base: str, username: str, role: str, **kw) -> tuple[Browser, str]:
    """A user of `role` logged in over the API; returns the browser and its CSRF token."""
    await add_user(daemon, username, role, password=PASSWORD, **kw)
    b = Browser(base)
    r = await b.api_login(username, PASSWORD)
    assert r.status == 200, r.text
    return b, r.json()["csrf_token"]


class SimBank:
    """The bank simulator on a free port, with a subscriber's debit card and
    a merchant's settlement account."""

    def __init__(self):
        self.sim = BankSimulator({"bank_code": "simbank"}, reactor)
        self.sim.add_card(DEBIT, "3012", "debit", balance=500_00)
        self.sim.add_card(MERCHANT_PAN, "3012", "debit", balance=0)
        self.listening = None
        self.port = 0

    async def listen(self) -> "SimBank":
        self.listening = await wait_deferred(self.sim.listen("tcp:0:interface=127.0.0.1"))
        self.port = self.listening.getHost().port
        return self

    def answer_late_and_never_reverse(self) -> None:
        """The bank processes the 0200 but answers after the bridge's
        time-out, and answers every reversal "96": the operation goes to
        manual review after `reversal_max_attempts`."""
        self.sim.faults.update({"answer_after": 3.0, "mtis": ["0200"], "reversal_answer": "96"})

    def swallow_and_never_reverse(self) -> None:
        """The 0200 is lost (no money moves, no answer) and every reversal is
        answered "96": manual review, where the truth is "declined"."""
        self.sim.faults.update({"no_answer": True, "mtis": ["0200"], "reversal_answer": "96"})

    def moved(self) -> int:
        return sum(m.amount for pan in (DEBIT, MERCHANT_PAN) for m in self.sim.card(pan).movements)

    async def close(self) -> None:
        self.sim.drop_connections()
        await wait_deferred(self.listening.stopListening())


def bank_settings(stack: dict, bank: SimBank, **extra):
    """The daemon's settings with its bank bridge on `bank`, quick to give up
    on a reversal (two attempts, then review), and merchant M001."""
    return web_settings(stack, **{
        "bank.reversal_retry_initial": 0.1, "bank.reversal_retry_max": 0.3, "bank.reversal_max_attempts": 2,
        "bank.reconnect_initial": 0.05, "bank.reconnect_max": 0.5, "bank.recovery_interval": 0,
        "bank.banks": [{"code": "simbank", "endpoint": f"tcp:host=127.0.0.1:port={bank.port}",
                        "bins": ["622202"], "terminal_id": "TP000001", "acquirer_id": "48020000",
                        "timeout": 1.0, "echo_interval": 30}],
        "merchants": [{"code": "M001", "name": "福彩中心"}], **extra})


@contextlib.asynccontextmanager
async def web_daemon(stack: dict):
    """The daemon with its web section only; yields it and its base URL."""
    daemon, base = await start(web_settings(stack))
    try:
        yield daemon, base
    finally:
        await stop_web(daemon)


@contextlib.asynccontextmanager
async def bank_daemon(stack: dict, *, clock=None):
    """The bank simulator and the daemon with its bank bridge and web
    section; yields the bank, the daemon and its base URL."""
    bank = await SimBank().listen()
    try:
        daemon, base = await start(bank_settings(stack, bank), sections=("bank", "web"), clock=clock)
        try:
            await asyncio.wait_for(daemon.components["bank"].port.wait_ready(), 15)
            yield bank, daemon, base
        finally:
            await stop_web(daemon)
    finally:
        await bank.close()


async def topup_in_doubt(daemon, bank: SimBank, key: str, amount: int, *, lost: bool = False) -> None:
    """An active subscriber with a bound card tops up while the bank answers
    too late (`lost`: never), and never confirms the reversal: the operation
    is in doubt, and goes to review after the bridge's attempts."""
    svc = daemon.core.service
    await open_active(svc)
    assert (await svc.bind_card(MSISDN, DEBIT, "3012", channel="t")).ok
    bank.swallow_and_never_reverse() if lost else bank.answer_late_and_never_reverse()
    assert (await svc.topup(MSISDN, amount, channel="t", key=key)).outcome is Outcome.IN_PROGRESS



async def in_review(b: Browser, key: str) -> dict:
    """Wait until the API lists `key` in review (the bridge gave up on its
    reversal); returns its row."""
    found: dict = {}

    async def listed() -> bool:
        r = await b.get("/api/v1/ops/bank/in-doubt")
        assert r.status == 200, r.text
        found.update(next((op for op in r.json()["operations"] if op["operation_key"] == key
                           and op["state"] == "review"), {}))
        return bool(found)
    await eventually(listed)
    return found


async def books_agree(svc, bank: SimBank) -> None:
    assert await svc.check_books() == []
    assert (await svc.ledger.balance(svc.system["bank_settlement"])).balance == bank.moved()
