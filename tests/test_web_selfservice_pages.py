"""The self-service pages over real sockets, as a browser without
JavaScript posts them: the public forms carry their own token, bad input
reads as a message on the page (never a 500), the wallet forms need the
session's CSRF token, and a subscriber's pages are theirs only."""
from __future__ import annotations

import re

from tests.aio import aio_test
from tests.selfkit import NUMBER, NUMBER_E164, PASSWORD, initial_pin, last_code, sms_to, start_self
from tests.webkit import Browser, add_user, stop_web


def hidden(html: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', html).group(1)


@aio_test
async def test_opening_with_the_pages_and_the_wallet_forms(sqlite_url):
    daemon, base = await start_self({"database_url": sqlite_url})
    try:
        b = Browser(base)
        page = await b.get("/open")
        assert page.status == 200 and "tp_self" in b.cookies
        token = hidden(page.text, "form_token")
        forged = await Browser(base).post("/open/code", form={"msisdn": NUMBER, "form_token": token})
        assert forged.status == 403 and await sms_to(daemon, NUMBER_E164) == []
        bad = await b.post("/open/code", form={"msisdn": "12", "form_token": token})
        assert bad.status == 400 and "not a mobile number" in bad.text
        step = await b.post("/open/code", form={"msisdn": NUMBER, "form_token": hidden(bad.text, "form_token")})
        assert step.status == 200 and "a code was sent" in step.text and 'id="agreement"' in step.text
        code = await last_code(daemon, NUMBER_E164)
        form = {"msisdn": NUMBER, "code": code, "password": PASSWORD, "password_again": PASSWORD,
                "agreement_version": hidden(step.text, "agreement_version")}
        r = await b.post("/open", form={**form, "form_token": hidden(step.text, "form_token")})
        assert r.status == 400 and "Accept the agreement" in r.text
        r = await b.post("/open", form={**form, "accept_agreement": "on", "password_again": "other-pass-1",
                                        "form_token": hidden(r.text, "form_token")})
        assert r.status == 400 and "differ" in r.text
        r = await b.post("/open", form={**form, "accept_agreement": "on", "form_token": hidden(r.text, "form_token")})
        assert r.status == 303 and r.header("location") == "/me?opened=1", r.text
        home = await b.get("/me?opened=1")
        assert home.status == 200 and "¥0.00" in home.text and 'id="pin-warning"' in home.text
        csrf = hidden(home.text, "csrf_token")

        pay = await b.get("/me/pay")
        key = hidden(pay.text, "idempotency_key")
        assert key != hidden((await b.get("/me/pay")).text, "idempotency_key")        # a fresh key per form
        op = {"op": "pay", "merchant_code": "M001", "amount": "1.005", "pin": "258147", "idempotency_key": key}
        assert (await b.post("/me/operation", form=op)).status == 403                  # no CSRF token
        r = await b.post("/me/operation", form={**op, "csrf_token": csrf})
        assert r.status == 400 and "Amount:" in r.text and 'id="op-pay"' in r.text
        r = await b.post("/me/operation", form={**op, "amount": "1", "pin": await initial_pin(daemon, NUMBER_E164),
                                                "csrf_token": csrf})
        assert r.status == 409 and "PIN" in r.text                                   # the initial PIN pays nothing
        assert (await b.post("/me/operation", form={"op": "nope", "csrf_token": csrf})).status == 400
        r = await b.post("/me/operation", form={"op": "freeze", "csrf_token": csrf})
        assert r.status == 200 and 'id="op-unfreeze"' in r.text
        from channels.web.selfservice import OPERATIONS
        for op in OPERATIONS:                                 # odd form values: a message, never a 500
            for name in (op.body.fields if op.body else {"x": None}):
                for value in ("", "-1", "0.001", "x" * 300, "\u0000", "１２"):
                    r = await b.post("/me/operation", form={"op": op.name, name: value, "csrf_token": csrf})
                    assert 200 <= r.status < 500 and "Something went wrong" not in r.text, (op.name, name, r.text)
        for path in ("/open/code", "/open", "/forgot/code", "/forgot"):
            r = await b.post(path, form={"msisdn": "\u0000", "code": "x" * 300, "form_token": "bad"})
            assert r.status == 403
        statement = await b.get("/me/statement?page=abc")
        assert statement.status == 200 and "Nothing yet" in statement.text
        for path in ("/me/card", "/me/settings"):
            assert (await b.get(path)).status == 200
        # not logged in: to the login page; staff: not their page
        assert (await Browser(base).get("/me")).header("location") == "/login"
        await add_user(daemon, "agent9", "agent", password="s3cret-enough-pw", agent_code="AG001")
        staff = Browser(base)
        assert (await staff.api_login("agent9", "s3cret-enough-pw")).status == 200
        assert (await staff.get("/me")).status == 403 and (await staff.get("/me/statement.csv")).status == 403
    finally:
        await stop_web(daemon)
