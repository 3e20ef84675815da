"""Web opening and the forgotten password over real sockets: the code goes
by SMS (the outbox), is single use, bound to its number and purpose,
dies after five wrong tries, and its sends are bounded; the answers never
tell whether a number has an account; the opening is the service's (same
audit rows, channel web, the agreement recorded) and the PIN goes by SMS;
a subscriber opened by SMS logs in with the SMS password and must change
it; a reset ends every session of the number."""
from __future__ import annotations

import re
from datetime import datetime

import pytest
import sqlalchemy as sa

from channels.web.selfservice import AGREEMENT_VERSION, CODE_SENT
from telecom_pay import stats
from telecom_pay.ledger.tables import accounts, audit_log
from telecom_pay.webusers import UserError
from tests.aio import aio_test
from tests.selfkit import (
    NUMBER, NUMBER_E164, OTHER, OTHER_E164, PASSWORD, initial_pin, last_code, rows, sms_to, start_self, web_open)
from tests.webkit import Browser, stop_web


@aio_test
async def test_web_opening_sends_a_code_then_opens_with_the_agreement_and_the_pin_by_sms(stack):
    daemon, base = await start_self(stack)
    try:
        b, token = await web_open(daemon, base)
        me = await b.get("/api/v1/self")
        assert me.status == 200 and me.json()["status"] == "active" and me.json()["balance"] == 0, me.text
        assert me.json()["pin_change_required"] is True and me.json()["msisdn"] == NUMBER_E164
        texts = await sms_to(daemon, NUMBER_E164)
        assert len(texts) == 3, texts                      # the code, then the welcome and the PIN
        pin = await initial_pin(daemon, NUMBER_E164)
        assert PASSWORD not in "".join(texts)                 # the chosen password never travels
        acct = (await rows(daemon, sa.select(accounts).where(accounts.c.msisdn == NUMBER_E164)))[0]
        trail = await rows(daemon, sa.select(audit_log).where(audit_log.c.account_id == acct.id)
                           .order_by(audit_log.c.id))
        assert [(a.action, a.channel) for a in trail][:3] == [
            ("open_requested", "web"), ("agreement_accepted", "web"), ("confirm", "web")], trail
        assert trail[1].details["version"] == AGREEMENT_VERSION and len(trail[1].details["sha256"]) == 64
        tz = daemon.core.service.tz
        today = datetime.now(tz).date()
        figures = await stats.statistics(daemon.core.ledger, today, today, tz)
        assert figures["total"]["accounts_opened"] == {"web": 1}, figures["total"]
        web_rows = await rows(daemon, sa.select(audit_log.c.details).where(audit_log.c.action == "web_self_open"))
        assert web_rows[0].details["outcome"] == "ok" and PASSWORD not in str(web_rows)
        # logs in again with the number in local or E.164 form and the password set on the page
        assert (await b.request("DELETE", "/api/v1/session", headers={"X-CSRF-Token": token})).status == 200
        b2 = Browser(base)
        again = await b2.api_login("+86 139 0013 9000", PASSWORD)
        assert again.status == 200 and again.json()["must_change_password"] is False, again.text
        # the PIN from the SMS must be changed before it pays (as by SMS)
        h = {"X-CSRF-Token": again.json()["csrf_token"]}
        changed = await b2.post("/api/v1/self/pin", headers=h, json_body={"current_pin": pin, "new_pin": "258147"})
        assert changed.status == 200, changed.text
        assert (await daemon.core.service.pin_change_required(NUMBER)) is False
        # a second opening of the same number: the same answer, no SMS
        before = len(await sms_to(daemon, NUMBER_E164))
        r = await Browser(base).post("/api/v1/self/open/code", json_body={"msisdn": NUMBER})
        assert r.status == 202 and r.json()["message"] == CODE_SENT["open"]
        assert len(await sms_to(daemon, NUMBER_E164)) == before
    finally:
        await stop_web(daemon)


@aio_test
async def test_a_code_is_single_use_bound_to_its_number_and_purpose_and_dies_after_five_tries(sqlite_url):
    daemon, base = await start_self({"database_url": sqlite_url})
    try:
        b = Browser(base)
        assert (await b.post("/api/v1/self/open/code", json_body={"msisdn": NUMBER})).status == 202
        code = await last_code(daemon, NUMBER_E164)

        def body(**kw):
            return {"msisdn": NUMBER, "code": code, "password": PASSWORD, "accept_agreement": True, **kw}
        # not accepted, weak passwords: refused before the code is spent
        assert (await b.post("/api/v1/self/open", json_body=body(accept_agreement=False))).status == 400
        for weak in ("short1", "1234567890", "x13900139000", NUMBER_E164 + "ab"):
            r = await b.post("/api/v1/self/open", json_body=body(password=weak))
            assert r.status == 400 and r.json()["field"] == "password", (weak, r.text)
        # the code for another number, or for another purpose, does not open
        r = await b.post("/api/v1/self/open", json_body=body(msisdn=OTHER))
        assert r.status == 400 and r.json()["field"] == "code"
        r = await b.post("/api/v1/self/password-reset", json_body={"msisdn": NUMBER, "code": code,
                                                                  "new_password": PASSWORD})
        assert r.status == 400
        # wrong five times: then even the right code is dead
        wrong = "000000" if code != "000000" else "111111"
        for _ in range(5):
            assert (await b.post("/api/v1/self/open", json_body=body(code=wrong))).status == 400
        dead = await b.post("/api/v1/self/open", json_body=body())
        assert dead.status == 400 and "code" in dead.json()["error"], dead.text
        assert await daemon.core.service.account_info(NUMBER) is None
        # a new code works once; used again it is refused
        assert (await b.post("/api/v1/self/open/code", json_body={"msisdn": NUMBER})).status == 202
        code = await last_code(daemon, NUMBER_E164)
        assert (await b.post("/api/v1/self/open", json_body=body())).status == 201
        reused = await Browser(base).post("/api/v1/self/open", json_body=body())
        assert reused.status == 400
        # sends are bounded per number (3 in the window here) and per address
        r = await b.post("/api/v1/self/open/code", json_body={"msisdn": OTHER})
        assert r.status == 202
        assert [(await b.post("/api/v1/self/open/code", json_body={"msisdn": OTHER})).status
                for _ in range(3)] == [202, 202, 429]
        assert len(await sms_to(daemon, OTHER_E164)) == 3
        refused = await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "web_self_code_refused"))
        assert refused and refused[0].details["address"] == "127.0.0.1"
    finally:
        await stop_web(daemon)


@aio_test
async def test_codes_per_address_are_bounded_whatever_the_numbers(sqlite_url):
    daemon, base = await start_self({"database_url": sqlite_url}, **{"web.otp_per_address": 2})
    try:
        b = Browser(base)
        statuses = [(await b.post("/api/v1/self/open/code", json_body={"msisdn": n})).status
                    for n in ("13900139000", "13700137000", "13600136000")]
        assert statuses == [202, 202, 429]
        assert await sms_to(daemon, "8613600136000") == []
    finally:
        await stop_web(daemon)


@aio_test
async def test_bad_input_on_the_public_routes_is_a_clear_4xx(sqlite_url):
    daemon, base = await start_self({"database_url": sqlite_url})
    try:
        b = Browser(base)
        cases = [
            ("/api/v1/self/open/code", {}, 400), ("/api/v1/self/open/code", {"msisdn": 13900139000}, 400),
            ("/api/v1/self/open/code", {"msisdn": "12"}, 400), ("/api/v1/self/open/code", [], 400),
            ("/api/v1/self/open/code", {"msisdn": NUMBER, "extra": 1}, 400),
            ("/api/v1/self/open", {"msisdn": NUMBER, "code": "1", "password": PASSWORD}, 400),
            ("/api/v1/self/open", {"msisdn": NUMBER, "code": "1", "password": PASSWORD,
                                   "accept_agreement": "yes"}, 400),
            ("/api/v1/self/password-reset", {"msisdn": "+1 202", "code": "x", "new_password": "y"}, 400),
        ]
        for path, body, status in cases:
            r = await b.post(path, json_body=body)
            assert r.status == status and "error" in r.json(), (path, body, r.status, r.text)
        huge = await b.post("/api/v1/self/open/code", data=b'{"msisdn": "' + b"1" * 100_000 + b'"}',
                            headers={"Content-Type": "application/json"})
        assert huge.status == 413 and "error" in huge.json()
        form = await b.post("/api/v1/self/open/code", data=b"msisdn=1", headers={"Content-Type": "text/plain"})
        assert form.status == 415
        nul = await b.post("/api/v1/self/open/code", json_body={"msisdn": "139\x000139000"})
        assert nul.status == 400
    finally:
        await stop_web(daemon)


@aio_test
async def test_an_sms_opened_subscriber_logs_in_with_the_sms_password_and_must_change_it(stack):
    daemon, base = await start_self(stack)
    try:
        svc = daemon.core.service
        assert (await svc.open_account(NUMBER, channel="sms")).ok
        opened = await svc.confirm_open(NUMBER, channel="sms")
        sms_password = opened.params["password"]
        b = Browser(base)
        r = await b.api_login(NUMBER, sms_password)
        assert r.status == 200 and r.json()["must_change_password"] is True and r.json()["role"] == "subscriber"
        h = {"X-CSRF-Token": r.json()["csrf_token"]}
        blocked = await b.get("/api/v1/self")
        assert blocked.status == 403 and blocked.json()["password_change_required"] is True
        weak = await b.post("/api/v1/password", headers=h, json_body={"current_password": sms_password,
                                                                     "new_password": "12345678901"})
        assert weak.status == 400 and "digits" in weak.json()["error"]
        ok = await b.post("/api/v1/password", headers=h, json_body={"current_password": sms_password,
                                                                   "new_password": PASSWORD})
        assert ok.status == 200, ok.text
        assert (await b.get("/api/v1/self")).status == 200
        # the one truth: the account's own password changed (the SMS one no longer works)
        assert await svc.verify_password(NUMBER, PASSWORD) and not await svc.verify_password(NUMBER, sms_password)
        assert (await Browser(base).api_login(NUMBER, sms_password)).status == 401
        # a number without an account: the same answer as a wrong password, and no row is made
        nobody = await Browser(base).api_login(OTHER, PASSWORD)
        assert nobody.status == 401 and nobody.json()["error"] == "wrong username or password"
        assert await daemon.components["web"].app.users.get(OTHER_E164) is None
        # throttling is the staff's: failures lead to the CAPTCHA, per account, in any typed form of the number
        t = Browser(base)
        for typed in (NUMBER, NUMBER_E164, "+86" + NUMBER):
            assert (await t.api_login(typed, "wrong-password-1")).status == 401
        r = await t.api_login(NUMBER, PASSWORD)
        assert r.status == 401 and r.json()["captcha_required"] is True, r.text
    finally:
        await stop_web(daemon)


@aio_test
async def test_the_forgotten_password_is_reset_by_a_code_and_every_session_ends(stack):
    daemon, base = await start_self(stack)
    try:
        b, token = await web_open(daemon, base)
        other_session = Browser(base)
        assert (await other_session.api_login(NUMBER, PASSWORD)).status == 200
        public = Browser(base)
        r = await public.post("/api/v1/self/password-reset/code", json_body={"msisdn": NUMBER})
        assert r.status == 202 and r.json()["message"] == CODE_SENT["reset"]
        code = await last_code(daemon, NUMBER_E164)
        # a number without an account: the same answer, and nothing sent
        r = await public.post("/api/v1/self/password-reset/code", json_body={"msisdn": OTHER})
        assert r.status == 202 and r.json()["message"] == CODE_SENT["reset"]
        assert await sms_to(daemon, OTHER_E164) == []
        new = "black-coffee-7"
        weak = await public.post("/api/v1/self/password-reset",
                                 json_body={"msisdn": NUMBER, "code": code, "new_password": "87654321"})
        assert weak.status == 400
        done = await public.post("/api/v1/self/password-reset",
                                 json_body={"msisdn": NUMBER, "code": code, "new_password": new})
        assert done.status == 200, done.text
        assert (await b.get("/api/v1/self")).status == 401
        assert (await other_session.get("/api/v1/self")).status == 401
        assert (await Browser(base).api_login(NUMBER, PASSWORD)).status == 401
        assert (await Browser(base).api_login(NUMBER, new)).status == 200
        again = await public.post("/api/v1/self/password-reset",
                                  json_body={"msisdn": NUMBER, "code": code, "new_password": "another-one-9"})
        assert again.status == 400                           # the code was used
        audited = await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "web_password_reset"))
        assert len(audited) == 1 and new not in str(audited[0].details)
    finally:
        await stop_web(daemon)


@aio_test
async def test_after_an_ownership_transfer_the_former_holders_sessions_see_nothing(sqlite_url):
    daemon, base = await start_self({"database_url": sqlite_url})
    try:
        b, _ = await web_open(daemon, base)
        assert (await b.get("/api/v1/self")).status == 200
        moved = await daemon.core.service.transfer_ownership("AG001", NUMBER, holder_name="Wang Fang", id_type="ID",
                                                             id_number="110101199003074512")
        assert moved.ok, moved
        gone = await b.get("/api/v1/self")
        assert gone.status == 401 and (await b.get("/api/v1/session")).status == 401
        # the former holder's password is not the new account's; the new holder's comes by SMS, to be changed
        assert (await Browser(base).api_login(NUMBER, PASSWORD)).status == 401
        sms_password = re.search(r"(?:登录密码|login password) (\S+?)[(（ ]", (await sms_to(daemon, NUMBER_E164))[-1])
        r = await Browser(base).api_login(NUMBER, sms_password.group(1))
        assert r.status == 200 and r.json()["must_change_password"] is True, r.text
        reassigned = await rows(daemon, sa.select(audit_log).where(audit_log.c.action == "web_login_reassigned"))
        assert len(reassigned) == 1
    finally:
        await stop_web(daemon)


@aio_test
async def test_a_staff_username_cannot_be_a_mobile_number(sqlite_url):
    """A typed number is a subscriber's login, so a staff user named like one could never log in."""
    daemon, base = await start_self({"database_url": sqlite_url})
    try:
        users = daemon.components["web"].app.users
        for name in (NUMBER, NUMBER_E164):
            with pytest.raises(UserError, match="cannot be a mobile number"):
                await users.create(name, "agent", actor="test", actor_role="system", address=None,
                                   agent_code="AG001")
        created, _ = await users.create("agent-7", "agent", actor="test", actor_role="system", address=None,
                                        agent_code="AG001")
        assert created.username == "agent-7"
    finally:
        await stop_web(daemon)
