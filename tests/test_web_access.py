"""Who may do what: CSRF tokens on every state-changing call made with the
cookie (API header, form field, the login form's own token), 403 for a
wrong role on API and pages, the first-login password change before
anything else, and the admin page creating a user with a one-time
password (audited)."""
from __future__ import annotations

import re

import sqlalchemy as sa

from telecom_pay.ledger.tables import audit_log
from tests.aio import aio_test
from tests.webkit import Browser, add_user, start_web, stop_web, users_of, web_settings

PASSWORD = "s3cret-enough-pw"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


async def audit_rows(daemon, action):
    async def read(conn):
        return (await conn.execute(sa.select(audit_log).where(audit_log.c.action == action))).all()
    return await daemon.core.ledger.read(read)


@aio_test
async def test_csrf_refusals(sqlite_url):
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}))
    try:
        await add_user(daemon, "ops1", "ops_admin", password=PASSWORD)
        b = Browser(base)
        token = (await b.api_login("ops1", PASSWORD)).json()["csrf_token"]
        body = {"username": "newagent", "role": "agent", "agent_code": "AG001"}
        for headers in ({}, {"X-CSRF-Token": "x" + token[1:]}, {"X-CSRF-Token": ""}):
            r = await b.post("/api/v1/users", json_body=body, headers=headers)
            assert r.status == 403 and "CSRF" in r.json()["error"], (headers, r.text)
        r = await b.request("DELETE", "/api/v1/session")
        assert r.status == 403 and (await b.get("/api/v1/session")).status == 200     # still logged in
        assert (await b.get("/api/v1/users")).json()["users"][0]["username"] == "ops1"   # nothing created
        created = await b.post("/api/v1/users", json_body=body, headers={"X-CSRF-Token": token})
        assert created.status == 201, created.text

        # pages: a form without (or with another session's) token changes nothing
        page = await b.get("/admin/users")
        form = {"username": "viaform", "role": "agent_supervisor"}
        assert (await b.post("/admin/users", form=form)).status == 403
        assert (await b.post("/admin/users", form={**form, "csrf_token": "forged"})).status == 403
        assert "viaform" not in (await b.get("/admin/users")).text
        assert (await b.post("/logout", form={})).status == 403
        ok = await b.post("/admin/users", form={**form, "csrf_token": csrf_of(page.text)})
        assert ok.status == 201 and "viaform" in ok.text

        # the login form: without its own token (a cross-site login) it is refused
        other = Browser(base)
        r = await other.post("/login", form={"username": "ops1", "password": PASSWORD})
        assert r.status == 403 and "tp_session" not in other.cookies
    finally:
        await stop_web(daemon)


async def subscriber_password(daemon, msisdn: str, password: str) -> None:
    """A subscriber's login password is their account's (channels/web/selfservice.py)."""
    svc = daemon.core.service
    assert (await svc.open_account(msisdn, channel="sms")).ok and (await svc.confirm_open(msisdn, channel="sms")).ok
    new_hash = await svc.passwords.hash(password)

    async def job(conn):
        assert await svc.store_login_password(conn, msisdn, new_hash)
    await daemon.core.ledger.write(job)


@aio_test
async def test_wrong_role_is_403(sqlite_url):
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}))
    try:
        await add_user(daemon, "agent1", "agent", password=PASSWORD, agent_code="AG001")
        await add_user(daemon, "sub1", "subscriber", password=PASSWORD, msisdn="8613800138000")
        await subscriber_password(daemon, "8613800138000", PASSWORD)
        for name in ("agent1", "sub1"):
            b = Browser(base)
            token = (await b.api_login(name, PASSWORD)).json()["csrf_token"]
            r = await b.get("/api/v1/users")
            assert r.status == 403 and "role" in r.json()["error"]
            r = await b.post("/api/v1/users", json_body={"username": "x-user", "role": "ops_admin"},
                             headers={"X-CSRF-Token": token})
            assert r.status == 403
            page = await b.get("/admin/users")
            assert page.status == 403 and "not for your role" in page.text
            home = await b.get("/home")
            assert (home.status, home.header("location")) == ((200, None) if name == "agent1" else (303, "/me"))
        assert (await Browser(base).get("/api/v1/users")).status == 401      # no login at all
        assert len(await audit_rows(daemon, "web_user_created")) == 2        # only the two made by the test
    finally:
        await stop_web(daemon)


@aio_test
async def test_first_login_password_change_enforced(sqlite_url):
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}))
    try:
        await add_user(daemon, "ops1", "ops_admin", password=PASSWORD)
        admin = Browser(base)
        token = (await admin.api_login("ops1", PASSWORD)).json()["csrf_token"]
        made = await admin.post("/api/v1/users", json_body={"username": "agent2", "role": "agent",
                                                            "agent_code": "AG001"},
                                headers={"X-CSRF-Token": token})
        assert made.status == 201
        initial = made.json()["initial_password"]
        assert made.json()["must_change_password"] and len(initial) >= 10
        [row] = [r for r in await audit_rows(daemon, "web_user_created") if r.actor != "test"]
        assert row.actor == "ops1" and row.details["role"] == "ops_admin" and row.details["before"] is None
        assert row.details["after"]["username"] == "agent2" and initial not in str(row.details)

        b = Browser(base)
        me = await b.api_login("agent2", initial)
        assert me.status == 200 and me.json()["must_change_password"]
        csrf = me.json()["csrf_token"]
        home = await b.get("/home")
        assert home.status == 303 and home.header("location") == "/password"
        assert (await b.get("/")).header("location") == "/home"
        page = await b.get("/password")
        assert page.status == 200 and "one-time password" in page.text
        # the API refuses everything but the change, logout and who-am-I
        assert (await b.get("/api/v1/session")).status == 200
        # a weak or wrong change is refused
        weak = await b.post("/api/v1/password", json_body={"current_password": initial, "new_password": "short"},
                            headers={"X-CSRF-Token": csrf})
        assert weak.status == 400 and "at least 10" in weak.json()["error"]
        wrong = await b.post("/api/v1/password", json_body={"current_password": "nope-nope-nope",
                                                            "new_password": "a-better-passw0rd"},
                             headers={"X-CSRF-Token": csrf})
        assert wrong.status == 400 and "current password" in wrong.json()["error"]
        # the page form changes it
        form = {"csrf_token": csrf_of(page.text), "current_password": initial, "new_password": "a-better-passw0rd",
                "new_password_again": "a-better-passw0rd"}
        done = await b.post("/password", form=form)
        assert done.status == 303 and done.header("location") == "/home"
        assert (await b.get("/home")).status == 200
        assert not (await b.get("/api/v1/session")).json()["must_change_password"]
        [changed] = await audit_rows(daemon, "web_password_changed")
        assert changed.actor == "agent2" and changed.details["before"]["must_change_password"] is True
        assert changed.details["after"]["must_change_password"] is False
        # the old password is gone
        assert (await Browser(base).api_login("agent2", initial)).status == 401
        assert (await Browser(base).api_login("agent2", "a-better-passw0rd")).status == 200
    finally:
        await stop_web(daemon)


@aio_test
async def test_must_change_blocks_other_api_calls(sqlite_url):
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}))
    try:
        await add_user(daemon, "ops2", "ops_admin", password=PASSWORD, must_change=True)
        b = Browser(base)
        token = (await b.api_login("ops2", PASSWORD)).json()["csrf_token"]
        r = await b.get("/api/v1/users")
        assert r.status == 403 and r.json()["password_change_required"] is True
        assert (await b.get("/admin/users")).header("location") == "/password"
        r = await b.post("/api/v1/password", json_body={"current_password": PASSWORD,
                                                        "new_password": "another-passw0rd"},
                         headers={"X-CSRF-Token": token})
        assert r.status == 200 and not r.json()["must_change_password"]
        assert (await b.get("/api/v1/users")).status == 200
    finally:
        await stop_web(daemon)


@aio_test
async def test_admin_page_creates_a_user_and_shows_its_password_once(sqlite_url):
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}))
    try:
        await add_user(daemon, "ops1", "ops_admin", password=PASSWORD)
        b = Browser(base)
        assert (await b.api_login("ops1", PASSWORD)).status == 200
        page = await b.get("/admin/users")
        made = await b.post("/admin/users", form={"csrf_token": csrf_of(page.text), "username": "agent5",
                                                  "role": "agent", "agent_code": "AG001"})
        assert made.status == 201
        initial = re.search(r'<code id="initial-password">([^<]+)</code>', made.text).group(1)
        assert initial not in (await b.get("/admin/users")).text         # shown once
        assert (await Browser(base).api_login("agent5", initial)).json()["must_change_password"]
        dup = await b.post("/admin/users", form={"csrf_token": csrf_of(page.text), "username": "agent5",
                                                 "role": "agent", "agent_code": "AG001"})
        assert dup.status == 409 and "taken" in dup.text
        unknown = await b.post("/admin/users", form={"csrf_token": csrf_of(page.text), "username": "agent6",
                                                     "role": "agent", "agent_code": "AG999"})
        assert unknown.status == 400 and "AG999" in unknown.text
    finally:
        await stop_web(daemon)


@aio_test
async def test_development_users_only_beside_the_embedded_database(sqlite_url):
    """[[web.dev_users]] passwords are in the repository: on any other
    database they are not created (tests/test_demo.py logs one in on the
    embedded default)."""
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}))
    try:
        assert daemon.settings.section("web")["dev_users"]            # configured ...
        assert daemon.components["web"].dev_users == []               # ... and not used here
        assert await users_of(daemon).list() == []
        assert (await Browser(base).api_login("admin", "operate-dev-2026")).status == 401
    finally:
        await stop_web(daemon)


@aio_test
async def test_a_password_change_ends_the_other_sessions(stack):
    daemon, base = await start_web(web_settings(stack))
    try:
        await add_user(daemon, "agent4", "agent", password=PASSWORD, agent_code="AG001")
        here, elsewhere = Browser(base), Browser(base)
        token = (await here.api_login("agent4", PASSWORD)).json()["csrf_token"]
        assert (await elsewhere.api_login("agent4", PASSWORD)).status == 200
        changed = await here.post("/api/v1/password", json_body={"current_password": PASSWORD,
                                                                 "new_password": "a-new-passw0rd-4"},
                                  headers={"X-CSRF-Token": token})
        assert changed.status == 200, changed.text
        assert (await here.get("/api/v1/session")).status == 200          # the session that changed it stays
        assert (await elsewhere.get("/api/v1/session")).status == 401     # the other one is over
        assert (await elsewhere.get("/home")).header("location") == "/login"
    finally:
        await stop_web(daemon)
