"""A merchant sees only its own: every back-office route the app registers
(read from WebApp.klein's url_map, so a route added later without a case
here fails this test) is called by merchant M001's admin with merchant
M002's order, refund, batch, notification and user: each answers 404, or
shows nothing of M002 and changes nothing of it. Then the role rules on
the same routes: read-only users change nothing, staff decide nothing,
platform staff get no back-office page and merchant users no staff page."""
from __future__ import annotations

import re

import sqlalchemy as sa

from telecom_pay.ledger.tables import operations
from telecom_pay.merchants.directory import get_profile
from telecom_pay.merchants.tables import merchant_notifications, merchant_refunds, notification_attempts
from telecom_pay.messaging import outbox
from tests.aio import aio_test
from tests.merchantkit import (build_world, csrf_of, merchant_db, merchant_login,  # noqa: F401
                               merchant_users, migrated_template)
from tests.webkit import Browser, add_user, start_web, stop_web, web_settings

async def money_and_callbacks(daemon) -> dict:
    """What the refunds and notifications modules write, of both merchants:
    a refused request leaves all of it as it was."""
    r, n, a, o = merchant_refunds, merchant_notifications, notification_attempts, operations

    async def read(conn):
        return {"refunds": (await conn.execute(sa.select(r.c.public_id, r.c.status, r.c.amount, r.c.decided_by)
                                               .order_by(r.c.id))).all(),
                "notifications": (await conn.execute(sa.select(n.c.event_id, n.c.status, n.c.attempts,
                                                               n.c.claimed_until).order_by(n.c.id))).all(),
                "attempts": (await conn.execute(sa.select(sa.func.count()).select_from(a))).scalar_one(),
                "operations": (await conn.execute(sa.select(sa.func.count()).select_from(o))).scalar_one(),
                "outbox": (await conn.execute(sa.select(sa.func.count()).select_from(outbox))).scalar_one()}
    return await daemon.core.ledger.read(read)


READ_ONLY_POSTS = {"/merchant/reconciliation", "/merchant/reconciliation.csv"}   # an upload is a read
ADMIN_POSTS = {"/merchant/refunds/decide", "/merchant/settings/notify-url", "/merchant/staff",
               "/merchant/staff/change"}


def merchant_routes(daemon) -> set[tuple[str, str]]:
    app = daemon.components["web"].app
    return {(method, rule.rule) for rule in app.klein.url_map.iter_rules()
            for method in (rule.methods or ()) if method in ("GET", "POST")
            and (rule.rule == "/merchant" or rule.rule.startswith("/merchant/")) and rule.rule != "/merchant/login"}


def concrete(rule: str, ids: dict) -> str:
    return (rule.replace("<order_id>", ids["zf"]).replace("<int:batch_id>", str(ids["batch"]))
            .replace("<event_id>", ids["event"]))


def cases(other: dict, mine: dict):
    """(method, rule) -> [(path, form, expected status, what must not show)]."""
    leaks = [other["zf"], other["sp"], other["refund"], other["event"], "PAYOUTM002", "ORD-2001", "m2admin",
             "m2staff", "B-1"]
    recon = f"{other['zf']},7.00\r\n{other['sp']},9.00\r\nORD-2001,9.00\r\n"
    return {
        ("GET", "/merchant"): [("/merchant", None, 200, leaks)],
        ("GET", "/merchant/orders"): [("/merchant/orders", None, 200, leaks),
                                      # a search echoes its term: nothing may be listed
                                      (f"/merchant/orders?number={other['zf']}", None, 200, ['<tr data-id="']),
                                      ("/merchant/orders?number=ORD-2001", None, 200, ['<tr data-id="'])],
        ("GET", "/merchant/orders.csv"): [("/merchant/orders.csv", None, 200, leaks),
                                          (f"/merchant/orders.csv?number={other['sp']}", None, 200, leaks)],
        ("GET", "/merchant/orders/<order_id>"): [(f"/merchant/orders/{other['zf']}", None, 404, leaks),
                                                 (f"/merchant/orders/{other['sp']}", None, 404, leaks),
                                                 (f"/merchant/orders/{other['sp_ref']}", None, 404, leaks)],
        ("POST", "/merchant/orders/<order_id>/refund"): [
            (f"/merchant/orders/{other['zf']}/refund", {"refund_key": "web-isolation-1", "amount": "1",
                                                        "reason": "x"}, 404, leaks),
            (f"/merchant/orders/{other['sp']}/refund", {"refund_key": "web-isolation-2", "amount": "1",
                                                        "reason": "x"}, 404, leaks)],
        ("GET", "/merchant/refunds"): [("/merchant/refunds", None, 200, leaks)],
        ("POST", "/merchant/refunds/decide"): [
            ("/merchant/refunds/decide", {"refund_id": other["refund"], "decision": "approve", "reason": "x"}, 404,
             leaks)],
        ("GET", "/merchant/settlement"): [("/merchant/settlement", None, 200, leaks)],
        ("GET", "/merchant/settlement/<int:batch_id>"): [(f"/merchant/settlement/{other['batch']}", None, 404, leaks)],
        ("GET", "/merchant/settlement/<int:batch_id>/statement.csv"): [
            (f"/merchant/settlement/{other['batch']}/statement.csv", None, 404, leaks)],
        ("GET", "/merchant/reconciliation"): [("/merchant/reconciliation", None, 200, leaks)],
        # the other merchant's payments are not the platform's payments of this merchant
        ("POST", "/merchant/reconciliation"): [
            ("/merchant/reconciliation", {"day": "TODAY", "orders": recon}, 200,
             ['<tr class="finding"><td>matched', '<tr class="finding"><td>amount mismatch'])],
        ("POST", "/merchant/reconciliation.csv"): [
            ("/merchant/reconciliation.csv", {"day": "TODAY", "orders": recon}, 200,
             [",matched,", ",amount_mismatch,"])],
        ("GET", "/merchant/notifications"): [("/merchant/notifications", None, 200, leaks)],
        ("GET", "/merchant/notifications/<event_id>"): [(f"/merchant/notifications/{other['event']}", None, 404,
                                                         leaks)],
        ("POST", "/merchant/notifications/<event_id>/resend"): [
            (f"/merchant/notifications/{other['event']}/resend", {}, 404, leaks)],
        ("GET", "/merchant/settings"): [("/merchant/settings", None, 200, leaks)],
        # a merchant named in the form is not the one acted for
        ("POST", "/merchant/settings/notify-url"): [
            ("/merchant/settings/notify-url", {"notify_url": "https://m1.example/cb", "merchant_code": "M002",
                                               "code": "M002"}, 200, leaks)],
        ("POST", "/merchant/staff"): [("/merchant/staff", {"username": "m1extra", "role": "merchant_staff",
                                                           "merchant_code": "M002"}, 201, leaks)],
        ("POST", "/merchant/staff/change"): [
            ("/merchant/staff/change", {"username": "m2staff", "action": "disable"}, 404, []),
            ("/merchant/staff/change", {"username": "m2admin", "action": "role", "role": "merchant_readonly"}, 404,
             [])],
    }


@aio_test
async def test_every_merchant_route_keeps_to_the_users_merchant_and_role(merchant_db):
    daemon, base = await start_web(web_settings({"database_url": merchant_db}))
    try:
        await merchant_users(daemon)
        world = await build_world(daemon)
        mine, other = world.ids["M001"], world.ids["M002"]
        routes = merchant_routes(daemon)
        table = cases(other, mine)
        assert routes == set(table), ("routes without an isolation case", routes - set(table),
                                      "cases without a route", set(table) - routes)
        from telecom_pay.business_time import business_day
        today = business_day(daemon.core.service.clock(), daemon.core.service.tz).isoformat()

        admin = await merchant_login(daemon, base, "m1admin")
        token = csrf_of((await admin.get("/merchant/settings")).text)
        untouched = await money_and_callbacks(daemon)
        assert len(untouched["refunds"]) == 2 and len(untouched["notifications"]) == 2
        for (method, rule), calls in sorted(table.items()):
            for path, form, status, absent in calls:
                if method == "GET":
                    r = await admin.get(path)
                else:
                    form = {k: (today if v == "TODAY" else v) for k, v in form.items()}
                    r = await admin.post(path, form={"csrf_token": token, **form})
                assert r.status == status, (method, path, r.status, r.text[-500:])
                for text in absent:
                    assert text not in r.text, (method, path, text)
        assert await money_and_callbacks(daemon) == untouched
        m2 = await daemon.core.ledger.read(lambda conn: get_profile(conn, code="M002"))
        assert m2.notify_url is None
        users = daemon.components["web"].app.users
        assert (await users.get("m1extra")).merchant_id == world.m1
        assert [(u.username, u.status, u.role) for u in await users.merchant_staff(world.m2)] == [
            ("m2admin", "active", "merchant_admin"), ("m2staff", "active", "merchant_staff")]
        # the reconciliation of M002's orders found them all missing on M001's platform side
        r = await admin.post("/merchant/reconciliation", form={"csrf_token": token, "day": today,
                                                                "orders": f"{other['zf']},7.00\r\n"})
        assert re.search(r"0 matched, 0 with another amount,\s+1 missing on the platform", r.text), r.text

        # the role rules, on every route
        posts = {rule for method, rule in routes if method == "POST"}
        assert READ_ONLY_POSTS | ADMIN_POSTS <= posts
        reader = await merchant_login(daemon, base, "m1read")
        staff = await merchant_login(daemon, base, "m1staff")
        for who, refused in ((reader, posts - READ_ONLY_POSTS), (staff, ADMIN_POSTS)):
            csrf = csrf_of((await who.get("/merchant/settings")).text)
            for rule in refused:
                r = await who.post(concrete(rule, mine), form={"csrf_token": csrf, "username": "m1staff",
                                                               "action": "disable", "refund_id": mine["refund"],
                                                               "decision": "approve", "reason": "x",
                                                               "notify_url": "https://evil.example/",
                                                               "refund_key": "web-role-check-1", "amount": "1",
                                                               "role": "merchant_staff"})
                assert r.status == 403, (rule, r.status)
        assert await money_and_callbacks(daemon) == untouched
        assert (await users.get("m1staff")).status == "active"

        await add_user(daemon, "super1", "agent_supervisor", password="merchant-test-pw-9", agent_code="AG001")
        others = []
        for username in ("ops1", "agent1", "super1"):
            b = Browser(base)
            assert (await b.api_login(username, "merchant-test-pw-9")).status == 200
            others.append(b)
        for b in others:
            for method, rule in routes:
                r = await (b.get(concrete(rule, mine)) if method == "GET" else
                           b.post(concrete(rule, mine), form={"csrf_token": "x"}))
                assert r.status == 403, (rule, r.status)
        # a visitor not logged in is sent to the back office's own login (the CAPTCHA every time), not the
        # platform's; a POST changes nothing; the other pages still send to /login
        anonymous = Browser(base)
        before = await money_and_callbacks(daemon)
        for method, rule in routes:
            r = await (anonymous.get(concrete(rule, mine)) if method == "GET" else
                       anonymous.post(concrete(rule, mine), form={"csrf_token": "x", "refund_id": mine["refund"],
                                                                  "decision": "approve", "reason": "x"}))
            assert r.status == 303 and r.header("location") == "/merchant/login", (method, rule)
        assert await money_and_callbacks(daemon) == before
        r = await anonymous.get("/merchant/login")
        assert r.status == 200 and 'name="captcha_answer"' in r.text
        for path in ("/home", "/me", "/ops/stats", "/agent"):
            assert (await anonymous.get(path)).header("location") == "/login", path
        for path in ("/agent", "/ops/stats", "/ops/merchants", "/ops/merchants/M001", "/ops/bank", "/ops/risk",
                     "/ops/audit", "/admin/users", "/me", "/me/statement"):
            assert (await admin.get(path)).status == 403, path
        assert (await admin.get("/api/v1/users")).status == 403
        assert (await admin.get("/api/v1/ops/risk")).status == 403
    finally:
        await stop_web(daemon)
