"""Login throttling: after repeated failures of an account or from an
address a CAPTCHA is required (server-drawn, one use, answer kept
server-side), an account is locked after more, an address is refused;
the counts live in the session store, so instances sharing Redis share
them, and the lock is kept on the user's row."""
from __future__ import annotations

import sqlalchemy as sa

from telecom_pay.ledger.tables import audit_log
from telecom_pay.webusers import web_users
from tests.aio import aio_test
from tests.webkit import Browser, add_user, start_web, stop_web, users_of, web_settings

PASSWORD = "s3cret-enough-pw"
THROTTLE = {"web.captcha_after": 3, "web.lock_after": 5, "web.lock_minutes": 10, "web.address_limit": 12}


async def solved_captcha(daemon, browser: Browser) -> dict:
    """A CAPTCHA from the API, answered with what the server kept (the
    test reads the store, as only the server can)."""
    made = await browser.post("/api/v1/captcha")
    assert made.status == 201 and made.json()["svg"].startswith("<svg")
    captcha_id = made.json()["captcha_id"]
    answer = (await daemon.core.sessions.get(f"web:captcha:{captcha_id}"))["answer"]
    assert answer.isdigit() and len(answer) == 5
    return {"captcha_id": captcha_id, "captcha_answer": answer}


@aio_test
async def test_captcha_after_failures_then_lock(stack):
    daemon, base = await start_web(web_settings(stack, **THROTTLE))
    try:
        await add_user(daemon, "agent9", "agent", password=PASSWORD, agent_code="AG001")
        b = Browser(base)
        for i in range(3):
            r = await b.api_login("agent9", "wrong-password")
            assert r.status == 401 and r.json()["captcha_required"] is (i == 2), r.json()
        # the right password alone is not enough now
        r = await b.api_login("agent9", PASSWORD)
        assert r.status == 401 and r.json()["captcha_required"] and "CAPTCHA" in r.json()["error"]
        # a wrong answer uses the CAPTCHA up: the right answer to it afterwards does not count
        c = await solved_captcha(daemon, b)
        assert (await b.api_login("agent9", PASSWORD, captcha_id=c["captcha_id"],
                                  captcha_answer="00000" if c["captcha_answer"] != "00000" else "11111")).status == 401
        assert (await b.api_login("agent9", PASSWORD, **c)).status == 401
        # a solved one lets the right password in, and success clears the account's count
        assert (await b.api_login("agent9", PASSWORD, **await solved_captcha(daemon, b))).status == 200
        assert (await users_of(daemon).failures("agent9", "127.0.0.1"))[0] == 0

        # another account: five failures (CAPTCHAs solved from the third on: the address has failed before)
        await add_user(daemon, "agent10", "agent", password=PASSWORD, agent_code="AG001")
        other = Browser(base)
        for _ in range(5):
            r = await other.api_login("agent10", "wrong-password", **await solved_captcha(daemon, other))
            assert r.status == 401
        locked = await other.api_login("agent10", PASSWORD, **await solved_captcha(daemon, other))
        assert locked.status == 423 and "locked" in locked.json()["error"]

        async def row(conn):
            return (await conn.execute(sa.select(web_users).where(web_users.c.username == "agent10"))).first()
        user = await daemon.core.ledger.read(row)
        assert user.locked_until is not None and user.failed_logins == 5
        async def locks(conn):
            return (await conn.execute(sa.select(audit_log).where(audit_log.c.action == "web_login_locked"))).all()
        [lock] = await daemon.core.ledger.read(locks)
        assert lock.actor == "agent10" and lock.details["role"] == "agent" and lock.details["address"] == "127.0.0.1"
        assert lock.details["before"] == {"locked_until": None} and lock.details["after"]["locked_until"]

        # the address: past its limit every login from it is refused for the window
        for _ in range(4):
            await other.api_login("nobody", "guess", **await solved_captcha(daemon, other))
        refused = await other.api_login("agent9", PASSWORD, **await solved_captcha(daemon, other))
        assert refused.status == 429 and "address" in refused.json()["error"]
    finally:
        await stop_web(daemon)


@aio_test
async def test_login_page_shows_the_captcha_after_failures(sqlite_url):
    import re
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}, **THROTTLE))
    try:
        await add_user(daemon, "ops3", "ops_admin", password=PASSWORD)
        b = Browser(base)
        page = await b.get("/login")
        assert "captcha_answer" not in page.text
        for _ in range(3):
            token = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
            page = await b.post("/login", form={"login_token": token, "username": "ops3", "password": "bad"})
            assert page.status == 401
        assert "<svg" in page.text and 'name="captcha_answer"' in page.text
        captcha_id = re.search(r'name="captcha_id" value="([^"]+)"', page.text).group(1)
        answer = (await daemon.core.sessions.get(f"web:captcha:{captcha_id}"))["answer"]
        assert answer not in re.sub(r'points="[^"]*"|c[xy]="[^"]*"|r="[^"]*"|stroke-width="[^"]*"', "", page.text)
        token = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
        ok = await b.post("/login", form={"login_token": token, "username": "ops3", "password": PASSWORD,
                                          "captcha_id": captcha_id, "captcha_answer": answer})
        assert ok.status == 303 and ok.header("location") == "/home"
    finally:
        await stop_web(daemon)


@aio_test
async def test_instances_sharing_redis_share_the_counts(pg_url, redis_url, redis_prefix):
    stack = {"database_url": pg_url, "sessions_url": redis_url, "prefix": redis_prefix}
    first, base_a = await start_web(web_settings(stack, **THROTTLE))
    second, base_b = await start_web(web_settings(stack, **THROTTLE))
    try:
        await add_user(first, "agent11", "agent", password=PASSWORD, agent_code="AG001")
        a, b = Browser(base_a), Browser(base_b)
        for _ in range(3):
            assert (await a.api_login("agent11", "wrong-password")).status == 401
        r = await b.api_login("agent11", PASSWORD)       # the other instance knows the three failures
        assert r.status == 401 and r.json()["captcha_required"]
        c = await solved_captcha(first, a)               # a CAPTCHA made by one instance, answered at the other
        ok = await b.api_login("agent11", PASSWORD, **c)
        assert ok.status == 200
        # and the session works on both: one store
        assert (await Browser(base_a, cookies=dict(b.cookies)).get("/api/v1/session")).status == 200
    finally:
        await stop_web(second)
        await stop_web(first)
