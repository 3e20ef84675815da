"""The web self-service's test plumbing: a daemon with its web section
only, the codes and PINs read from the outbox (where the SMS channel would
pick them up), and a subscriber opened on the web and logged in."""
from __future__ import annotations

import re

import sqlalchemy as sa
from twisted.internet import reactor

from telecom_pay.aio import wait_deferred
from telecom_pay.daemon import Daemon
from telecom_pay.messaging import outbox
from telecom_pay.security import PasswordHasher
from tests.bankdouble import InProcessBank
from tests.webkit import FAST_HASHER, Browser, web_settings

CODE_RE = re.compile(r"(?<!\d)(\d{6})(?!\d)")
NUMBER, NUMBER_E164 = "13900139000", "8613900139000"
OTHER, OTHER_E164 = "13700137000", "8613700137000"
PASSWORD = "green-tea-42"


async def start_self(stack: dict, *, bank=None, **extra) -> tuple[Daemon, str]:
    daemon = Daemon(web_settings(stack, **extra), reactor, sections=("web",), bank=bank or InProcessBank())
    daemon.startService()
    await wait_deferred(daemon.ready)
    web = daemon.components["web"]
    web.app.users.hasher = PasswordHasher(**FAST_HASHER)
    daemon.core.service.passwords = PasswordHasher(**FAST_HASHER)
    return daemon, f"http://127.0.0.1:{await web.wait_listening()}"


async def rows(daemon, query):
    async def read(conn):
        return (await conn.execute(query)).all()
    return await daemon.core.ledger.read(read)


async def sms_to(daemon, msisdn: str) -> list[str]:
    """Every text queued for the number, oldest first."""
    return [r.text for r in await rows(daemon, sa.select(outbox.c.text).where(outbox.c.msisdn == msisdn)
                                       .order_by(outbox.c.id))]


async def last_code(daemon, msisdn: str) -> str:
    return CODE_RE.search((await sms_to(daemon, msisdn))[-1]).group(1)


async def web_open(daemon, base: str, number: str = NUMBER, password: str = PASSWORD) -> tuple[Browser, str]:
    """Opened on the web and logged in: (the browser, its CSRF token)."""
    b = Browser(base)
    r = await b.post("/api/v1/self/open/code", json_body={"msisdn": number})
    assert r.status == 202, r.text
    e164 = "86" + number
    r = await b.post("/api/v1/self/open", json_body={"msisdn": number, "code": await last_code(daemon, e164),
                                                     "password": password, "accept_agreement": True})
    assert r.status == 201, r.text
    return b, r.json()["csrf_token"]


async def initial_pin(daemon, e164: str) -> str:
    texts = [t for t in await sms_to(daemon, e164) if "MM" in t]
    return CODE_RE.search(texts[-1]).group(1)
