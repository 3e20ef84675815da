"""The operators' merchant pages over real sockets: the list of merchants
with their profiles; onboarding from the form (the bank verifies the
settlement account first; the API secret is shown once and is the derived
one); refusals that write nothing; a merchant's page that disables and
enables it, rotates its key and creates its first merchant admin, who then
logs into the back office (CAPTCHA, then the first-login change)."""
from __future__ import annotations

import sqlalchemy as sa

from telecom_pay.aio import wait_deferred
from telecom_pay.daemon import Daemon
from telecom_pay.ledger.tables import audit_log
from telecom_pay.merchants.directory import get_profile, secret_for
from telecom_pay.security import PasswordHasher
from tests.aio import aio_test
from tests.bankdouble import InProcessBank
from tests.merchantkit import (PASSWORD, captcha_answer, csrf_of, field_of, merchant_db,  # noqa: F401
                               merchant_login, merchant_users, migrated_template)
from tests.webkit import FAST_HASHER, Browser, stop_web, web_settings
from twisted.internet import reactor

PAYOUT = "6222025555550009"


def text_of(html: str, element_id: str) -> str:
    return html.split(f'id="{element_id}"')[1].split(">", 1)[1].split("<", 1)[0]


@aio_test
async def test_operators_onboard_and_manage_merchants(merchant_db):
    bank = InProcessBank()
    bank.add_card(PAYOUT, balance=0)
    daemon = Daemon(web_settings({"database_url": merchant_db}), reactor, sections=("web",), bank=bank)
    daemon.startService()
    await wait_deferred(daemon.ready)
    web = daemon.components["web"]
    web.app.users.hasher = PasswordHasher(**FAST_HASHER)
    base = f"http://127.0.0.1:{await web.wait_listening()}"
    svc = daemon.core.service
    try:
        await merchant_users(daemon)
        ops = Browser(base)
        assert (await ops.api_login("ops1", PASSWORD)).status == 200
        page = await ops.get("/ops/merchants")
        assert page.status == 200 and 'data-code="M001"' in page.text and 'data-code="M002"' in page.text
        token = csrf_of(page.text)
        form = {"csrf_token": token, "code": "lt01", "name": "彩票站", "name_en": "Lottery kiosk",
                "category": "lottery", "refund_policy": "automatic", "fee_fixed": "0", "fee_per_mille": "10",
                "fee_min": "0.05", "fee_max": "", "notify_url": "https://kiosk.example/notify",
                "payout_pan": PAYOUT, "payout_expiry": "3012"}
        for bad, status, words in (({"payout_pan": "6222029999999999"}, 422, "did not verify"),
                                   ({"payout_pan": "12"}, 400, "12-19 digits"),
                                   ({"code": "M001"}, 409, "taken"), ({"code": "l"}, 400, "2-16"),
                                   ({"category": "weapons"}, 400, "category"),
                                   ({"fee_per_mille": "1001"}, 400, "per_mille"), ({"fee_min": "abc"}, 400, "min"),
                                   ({"notify_url": "ftp://x"}, 400, "http or https"),
                                   ({"csrf_token": "forged"}, 403, "expired")):
            r = await ops.post("/ops/merchants", form={**form, **bad})
            assert r.status == status and words in r.text, (bad, r.status)
        assert await svc.ledger.read(lambda conn: get_profile(conn, code="LT01")) is None

        r = await ops.post("/ops/merchants", form=form)
        assert r.status == 201, r.text
        profile = await svc.ledger.read(lambda conn: get_profile(conn, code="LT01"))
        assert (profile.name, profile.category, profile.refund_policy, profile.fee_plan, profile.notify_url) == (
            "彩票站", "lottery", "automatic", {"fixed": 0, "min": 5, "per_mille": 10}, "https://kiosk.example/notify")
        assert text_of(r.text, "api-key-id") == profile.api_key_id
        secret = text_of(r.text, "api-secret")
        assert secret == secret_for(svc.settings.pin_key, profile.api_key_id)
        again = await ops.get("/ops/merchants")
        assert 'data-code="LT01"' in again.text and secret not in again.text       # shown once
        assert PAYOUT not in again.text and PAYOUT not in r.text

        detail = await ops.get("/ops/merchants/LT01")
        assert detail.status == 200 and "none yet" in detail.text
        assert (await ops.get("/ops/merchants/NOPE")).status == 404
        assert (await ops.post("/ops/merchants/NOPE/rotate-key", form={"csrf_token": token})).status == 404

        r = await ops.post("/ops/merchants/LT01/rotate-key", form={"csrf_token": token})
        assert r.status == 200
        rotated = await svc.ledger.read(lambda conn: get_profile(conn, code="LT01"))
        assert rotated.api_key_id != profile.api_key_id and text_of(r.text, "api-key-id") == rotated.api_key_id
        assert text_of(r.text, "api-secret") == secret_for(svc.settings.pin_key, rotated.api_key_id) != secret

        r = await ops.post("/ops/merchants/LT01/status", form={"csrf_token": token, "status": "disabled"})
        assert r.status == 200 and text_of(r.text, "merchant-status") == "disabled"
        r = await ops.post("/ops/merchants/LT01/status", form={"csrf_token": token, "status": "active"})
        assert text_of(r.text, "merchant-status") == "active"
        assert (await ops.post("/ops/merchants/LT01/status", form={"csrf_token": token, "status": "gone"})).status == 400

        r = await ops.post("/ops/merchants/LT01/admin", form={"csrf_token": token, "username": "lt01.boss"})
        assert r.status == 201, r.text
        initial = text_of(r.text, "initial-password")
        user = await web.app.users.get("lt01.boss")
        assert (user.role, user.merchant_id, user.must_change_password) == ("merchant_admin", profile.account_id, True)
        assert (await ops.post("/ops/merchants/LT01/admin", form={"csrf_token": token,
                                                                  "username": "lt01.boss"})).status == 409
        assert (await ops.post("/ops/merchants/LT01/admin", form={"csrf_token": token,
                                                                  "username": "X"})).status == 400
        boss = Browser(base)
        p = await boss.get("/merchant/login")
        cid, ans = await captcha_answer(daemon, p.text)
        r = await boss.post("/merchant/login", form={"login_token": field_of(p.text, "login_token"),
                                                     "username": "lt01.boss", "password": initial,
                                                     "captcha_id": cid, "captcha_answer": ans})
        assert r.status == 303 and r.header("location") == "/password"

        async def actions():
            async def read(conn):
                return [(r.actor, r.action) for r in await conn.execute(
                    sa.select(audit_log).where(audit_log.c.action.like("merchant_%")).order_by(audit_log.c.id))]
            return await svc.ledger.read(read)
        assert [a for a in await actions() if a[0] == "ops1"] == [
            ("ops1", "merchant_onboarded"), ("ops1", "merchant_key_rotated"), ("ops1", "merchant_changed"),
            ("ops1", "merchant_changed")]

        # the same over the API
        csrf = (await ops.get("/api/v1/session")).json()["csrf_token"]
        h = {"X-CSRF-Token": csrf}
        listed = (await ops.get("/api/v1/ops/merchants")).json()["merchants"]
        config_codes = sorted(str(m["code"]) for m in svc.settings.merchants)
        assert [m["merchant_code"] for m in listed] == sorted(["LT01", *config_codes])
        body = {"code": "gm02", "name": "游戏", "category": "games", "refund_policy": "reviewed", "fee_per_mille": 8,
                "fee_min": 2, "payout_pan": PAYOUT, "payout_expiry": "3012"}
        assert (await ops.post("/api/v1/ops/merchants", json_body=body)).status == 403        # no CSRF token
        for bad, status in (({"code": "GM02", "payout_pan": "6222029999999999"}, 422), ({"code": "LT01"}, 409),
                            ({"code": "GM02", "name": "a\x00b"}, 400), ({"code": "GM02", "fee_min": 9, "fee_max": 1}, 400),
                            ({"code": "GM02", "notify_url": "gopher://x"}, 400), ({"code": "GM02", "name": "  "}, 400)):
            r = await ops.post("/api/v1/ops/merchants", json_body={**body, **bad}, headers=h)
            assert r.status == status and r.json()["error"], (bad, r.status, r.text)
        r = await ops.post("/api/v1/ops/merchants", json_body=body, headers=h)
        assert r.status == 201, r.text
        got = r.json()
        assert got["merchant"]["merchant_code"] == "GM02" and got["merchant"]["fee_plan"] == {"per_mille": 8, "min": 2}
        assert got["api_secret"] == secret_for(svc.settings.pin_key, got["api_key_id"]) and got["last4"] == "0009"
        r = await ops.post("/api/v1/ops/merchants/admin", json_body={"merchant_code": "gm02", "username": "gm02.boss"},
                           headers=h)
        assert r.status == 201 and r.json()["role"] == "merchant_admin" and r.json()["initial_password"]
        assert (await web.app.users.get("gm02.boss")).merchant_id == (
            await svc.ledger.read(lambda conn: get_profile(conn, code="GM02"))).account_id
        for bad, status in (({"merchant_code": "NOPE"}, 404), ({"username": "gm02.boss"}, 409)):
            r = await ops.post("/api/v1/ops/merchants/admin", json_body={"merchant_code": "GM02",
                                                                        "username": "gm02.two", **bad}, headers=h)
            assert r.status == status, (bad, r.text)

        # only operations admins
        merchant = await merchant_login(daemon, base, "m1admin")
        agent = Browser(base)
        assert (await agent.api_login("agent1", PASSWORD)).status == 200
        for b in (merchant, agent):
            assert (await b.get("/ops/merchants")).status == 403
            assert (await b.get("/ops/merchants/LT01")).status == 403
            assert (await b.post("/ops/merchants", form={**form, "code": "zz99"})).status == 403
            assert (await b.get("/api/v1/ops/merchants")).status == 403
    finally:
        await stop_web(daemon)
