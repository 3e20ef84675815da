"""Login over real sockets: right and wrong passwords (API and the page),
the session cookie's flags, logout, the idle timeout, and the audit rows
each of them leaves."""
from __future__ import annotations

import asyncio
import re

import sqlalchemy as sa

from telecom_pay.ledger.tables import audit_log
from tests.aio import aio_test
from tests.webkit import Browser, add_user, start_web, stop_web, web_settings

PASSWORD = "s3cret-enough-pw"


async def audits(daemon, action: str) -> list:
    async def read(conn):
        return (await conn.execute(sa.select(audit_log).where(audit_log.c.action == action)
                                   .order_by(audit_log.c.id))).all()
    return await daemon.core.ledger.read(read)


def session_cookie_line(browser: Browser) -> str:
    lines = [c for c in browser.set_cookies if c.startswith("tp_session=") and "Max-Age=0" not in c]
    assert lines, browser.set_cookies
    return lines[-1]


@aio_test
async def test_api_login_right_and_wrong_and_logout(sqlite_url):
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}))
    try:
        await add_user(daemon, "agent7", "agent", password=PASSWORD, agent_code="AG001")
        b = Browser(base)
        wrong = await b.api_login("agent7", "not-the-password")
        assert wrong.status == 401 and wrong.json()["error"] == "wrong username or password"
        assert "tp_session" not in b.cookies
        nobody = await b.api_login("nobody", PASSWORD)
        assert nobody.status == 401 and nobody.json() == wrong.json()     # no hint which names exist
        assert (await b.get("/api/v1/session")).status == 401

        ok = await b.api_login("agent7", PASSWORD)
        assert ok.status == 200, ok.text
        me = ok.json()
        assert me["username"] == "agent7" and me["role"] == "agent" and not me["must_change_password"]
        assert (await b.get("/api/v1/session")).json()["csrf_token"] == me["csrf_token"]

        out = await b.request("DELETE", "/api/v1/session", headers={"X-CSRF-Token": me["csrf_token"]})
        assert out.status == 200 and "tp_session" not in b.cookies
        replay = Browser(base, cookies={"tp_session": re.match(r"tp_session=([^;]+)",
                                                               session_cookie_line(b)).group(1)})
        assert (await replay.get("/api/v1/session")).status == 401      # the old cookie is dead server-side

        failed = await audits(daemon, "web_login_failed")
        assert [(r.actor, r.channel, r.details["role"], r.details["address"]) for r in failed] == [
            ("agent7", "web", "agent", "127.0.0.1"), ("(unknown user)", "web", None, "127.0.0.1")]
        assert "nobody" not in str(failed[1].details)
        assert failed[0].details["before"] == {"failed_logins": 0} and failed[0].details["after"] == {
            "failed_logins": 1}
        login = await audits(daemon, "web_login")
        assert len(login) == 1 and login[0].details["before"] == {"failed_logins": 1}
        assert len(await audits(daemon, "web_logout")) == 1
    finally:
        await stop_web(daemon)


@aio_test
async def test_cookie_flags_default(sqlite_url):
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}))
    try:
        await add_user(daemon, "ops1", "ops_admin", password=PASSWORD)
        b = Browser(base)
        assert (await b.api_login("ops1", PASSWORD)).status == 200
        flags = [p.strip() for p in session_cookie_line(b).split(";")]
        assert "HttpOnly" in flags and "SameSite=Strict" in flags and "Path=/" in flags
        assert "Secure" not in flags
        again = await b.get("/login")
        assert again.status == 303 and again.header("location") == "/home"    # already logged in
        fresh = Browser(base)
        assert (await fresh.get("/login")).status == 200      # the login form's own token cookie too
        login_cookie = [c for c in fresh.set_cookies if c.startswith("tp_login=")][-1]
        assert "HttpOnly" in login_cookie and "SameSite=Strict" in login_cookie and "Secure" not in login_cookie
    finally:
        await stop_web(daemon)


@aio_test
async def test_cookie_secure_when_configured(sqlite_url):
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}, **{"web.secure_cookies": True}))
    try:
        await add_user(daemon, "ops1", "ops_admin", password=PASSWORD)
        b = Browser(base)
        assert (await b.api_login("ops1", PASSWORD)).status == 200
        assert "Secure" in [p.strip() for p in session_cookie_line(b).split(";")]
    finally:
        await stop_web(daemon)


@aio_test
async def test_page_login_wrong_then_right_then_logout(sqlite_url):
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}))
    try:
        await add_user(daemon, "super1", "agent_supervisor", password=PASSWORD)
        b = Browser(base)
        root = await b.get("/")
        assert root.status == 303 and root.header("location") == "/login"
        page = await b.get("/login")
        assert page.status == 200 and 'action="/login"' in page.text
        assert "default-src 'none'" in page.header("content-security-policy")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
        wrong = await b.post("/login", form={"login_token": token, "username": "super1", "password": "nope"})
        assert wrong.status == 401 and "Wrong username or password." in wrong.text
        token = re.search(r'name="login_token" value="([^"]+)"', wrong.text).group(1)
        ok = await b.post("/login", form={"login_token": token, "username": "super1", "password": PASSWORD})
        assert ok.status == 303 and ok.header("location") == "/home"
        home = await b.get("/home")
        assert home.status == 200 and "Agent supervisor" in home.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', home.text).group(1)
        out = await b.post("/logout", form={"csrf_token": csrf})
        assert out.status == 303 and out.header("location") == "/login"
        after = await b.get("/home")
        assert after.status == 303 and after.header("location") == "/login"
    finally:
        await stop_web(daemon)


@aio_test
async def test_address_behind_a_trusted_proxy(sqlite_url):
    """Behind the TLS proxy every request comes from the proxy: the
    address throttled and audited is the client's, from X-Forwarded-For,
    and only when the peer is a trusted proxy."""
    daemon, base = await start_web(web_settings({"database_url": sqlite_url},
                                                **{"web.trusted_proxies": ["127.0.0.1"]}))
    try:
        await add_user(daemon, "agent7", "agent", password=PASSWORD, agent_code="AG001")
        b = Browser(base)
        await b.post("/api/v1/session", json_body={"username": "agent7", "password": "wrong"},
                     headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9"})
        await b.post("/api/v1/session", json_body={"username": "agent7", "password": "wrong"})
        failed = await audits(daemon, "web_login_failed")
        assert [r.details["address"] for r in failed] == ["203.0.113.9", "127.0.0.1"]
        users = daemon.components["web"].app.users
        assert (await users.failures("agent7", "203.0.113.9")) == (2, 1)
    finally:
        await stop_web(daemon)
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}))     # no proxy trusted
    try:
        await Browser(base).post("/api/v1/session", json_body={"username": "agent7", "password": "wrong"},
                                 headers={"X-Forwarded-For": "198.51.100.7"})
        assert (await audits(daemon, "web_login_failed"))[-1].details["address"] == "127.0.0.1"
    finally:
        await stop_web(daemon)


@aio_test
async def test_idle_timeout_ends_the_session_activity_keeps_it(stack):
    daemon, base = await start_web(web_settings(stack, **{"web.idle_timeout": 1.5}))
    try:
        await add_user(daemon, "agent8", "agent", password=PASSWORD, agent_code="AG001")
        b = Browser(base)
        assert (await b.api_login("agent8", PASSWORD)).status == 200
        for _ in range(3):                                  # 3 s of activity, each gap under the timeout
            await asyncio.sleep(1.0)
            assert (await b.get("/api/v1/session")).status == 200
        await asyncio.sleep(2.0)                            # idle longer than the timeout
        gone = await b.get("/api/v1/session")
        assert gone.status == 401 and "log in" in gone.json()["error"]
        page = await b.get("/home")
        assert page.status == 303 and page.header("location") == "/login"
    finally:
        await stop_web(daemon)


@aio_test
async def test_stop_closes_kept_alive_connections(sqlite_url):
    from tests.e2ekit import eventually
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}))
    site = daemon.components["web"].site
    try:
        assert (await Browser(base).get("/login")).status == 200
        assert site.open_connections                      # the client keeps its connection alive
    finally:
        await stop_web(daemon)
    await eventually(lambda: not site.open_connections, timeout=5)
