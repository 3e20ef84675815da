"""Every page of the web app in real headless Chromium, as a role allowed
to see it (the subscriber's after opening on the web), with a screenshot
of each (tests/artifacts/page-<name>.png),
and the pages only a POST renders (the console's subscriber page after a
look-up, an audit search, a created user's one-time password, the
first-login change, the error pages).

The list of pages below is checked against the GET routes the app
registers (the Klein url_map of WebApp.klein, leaving out /static/ and
/api/), so a page added later without a visit and a screenshot fails this
test. Each visit also fails on a JavaScript error or a Content-Security-
Policy violation in the browser's console."""
from __future__ import annotations

import uuid
from unittest import mock

import pytest

from channels.web.app import WebApp
from telecom_pay import config
from telecom_pay.sessions.memory import MemorySessionStore
from tests.browserkit import ARTIFACTS, chromium, in_a_thread, shot
from tests.conftest import REDIS_SERVER_URL
from tests.pagekit import PIN_RE, demo_fixture, log_in, look_up, merchant_log_in, redis_captcha_answers

# one demo per module: its tests stay on one xdist worker (make test runs --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_browser_pages")

SUBSCRIBER = "13700137000"        # a demo handset without an account: it opens one on the web
SUBSCRIBER_PASSWORD = "jasmine-tea-58"

#: GET page -> who visits it (None: not logged in), the screenshot names and where it lands
PAGES = {
    "/": [(None, "index", "/login")],
    "/login": [(None, "login", "/login")],
    "/password": [("agent1", "password", "/password")],
    "/home": [("agent1", "home-agent", "/home"), ("super1", "home-agent_supervisor", "/home"),
              ("admin", "home-ops_admin", "/home")],
    "/admin/users": [("admin", "admin-users", "/admin/users")],
    "/agent": [("agent1", "agent", "/agent"), ("super1", "agent-supervisor", "/agent")],
    "/ops/stats": [("admin", "ops-stats", "/ops/stats")],
    "/ops/audit": [("admin", "ops-audit", "/ops/audit")],
    "/ops/bank": [("admin", "ops-bank", "/ops/bank")],
    "/ops/risk": [("admin", "ops-risk", "/ops/risk")],
    "/open": [(None, "self-open", "/open")],
    "/forgot": [(None, "self-forgot", "/forgot")],
    "/me": [(SUBSCRIBER, "self-home", "/me")],
    "/me/statement": [(SUBSCRIBER, "self-statement", "/me/statement")],
    "/me/pay": [(SUBSCRIBER, "self-pay", "/me/pay")],
    "/me/card": [(SUBSCRIBER, "self-card", "/me/card")],
    "/me/settings": [(SUBSCRIBER, "self-settings", "/me/settings")],
    # the merchant back office (users m001.*: /merchant/login, CAPTCHA solved) and the operators' merchant pages
    "/merchant/login": [(None, "merchant-login", "/merchant/login")],
    "/merchant": [("m001.admin", "merchant-home", "/merchant"),
                  (None, "merchant-logged-out", "/merchant/login")],      # the back office's own login
    "/merchant/orders": [("m001.admin", "merchant-orders", "/merchant/orders")],
    "/merchant/orders/<order_id>": [("m001.admin", "merchant-order-404", "/merchant/orders/pay_none", 404)],
    "/merchant/refunds": [("m001.admin", "merchant-refunds", "/merchant/refunds"),
                          ("m001.staff", "merchant-refunds-staff", "/merchant/refunds")],
    "/merchant/settlement": [("m001.admin", "merchant-settlement", "/merchant/settlement")],
    "/merchant/settlement/<int:batch_id>": [("m001.admin", "merchant-statement-404", "/merchant/settlement/999999",
                                             404)],
    "/merchant/settlement/<int:batch_id>/statement.csv": [
        ("m001.admin", "merchant-statement-csv-404", "/merchant/settlement/999999/statement.csv", 404)],
    "/merchant/reconciliation": [("m001.staff", "merchant-reconciliation", "/merchant/reconciliation")],
    "/merchant/notifications": [("m001.admin", "merchant-notifications", "/merchant/notifications")],
    "/merchant/notifications/<event_id>": [("m001.admin", "merchant-notification-404",
                                            "/merchant/notifications/evt_none", 404)],
    "/merchant/settings": [("m001.admin", "merchant-settings", "/merchant/settings"),
                           ("m001.staff", "merchant-settings-staff", "/merchant/settings")],
    "/ops/merchants": [("admin", "ops-merchants", "/ops/merchants")],
    "/ops/merchants/<code>": [("admin", "ops-merchant", "/ops/merchants/M001")],
}
#: GET routes that are downloads, not pages: fetched and checked (type, header), no screenshot
DOWNLOADS = {"/ops/stats.csv": ("admin", "text/csv", "date,"),
             "/me/statement.csv": (SUBSCRIBER, "text/csv", "ref,"),
             "/merchant/orders.csv": ("m001.admin", "text/csv", "created_at,")}


def registered_get_pages() -> set[str]:
    """The app's own url_map. Its constructor only wires routes, so a
    stand-in core (real settings and session store, anything else a mock
    that a page class may keep a reference to) is enough to read them."""
    settings = config.load(None, {})
    core = mock.NonCallableMagicMock(settings=settings, sessions=MemorySessionStore())
    app = WebApp(core, settings.section("web"))
    return {rule.rule for rule in app.klein.url_map.iter_rules()
            if "GET" in (rule.methods or ()) and not rule.rule.startswith(("/static/", "/api/"))}


def test_the_page_list_is_every_get_page_the_app_registers():
    assert set(PAGES) | set(DOWNLOADS) == registered_get_pages()


# the sessions in Redis: the merchant login's CAPTCHA answer is read where the server keeps it
SESSIONS_PREFIX = f"tp-pages:{uuid.uuid4().hex[:10]}:"
demo = demo_fixture("pages-demo", overrides={"sessions": {"url": REDIS_SERVER_URL, "prefix": SESSIONS_PREFIX}})


def test_every_page_renders_and_is_screenshot(demo):
    base = demo.web_url
    taken: list[str] = []

    def page_for(browser, user):
        context = browser.new_context()
        page = context.new_page()
        page.problems = []
        page.on("pageerror", lambda exc: page.problems.append(f"error: {exc}"))
        # the document's own status (a 404 page, say) is asserted where it is expected
        page.on("console", lambda m: m.type in ("error", "warning") and m.location.get("url") != page.url
                and page.problems.append(f"{m.type}: {m.text} {m.location.get('url', '')}"))
        if user == SUBSCRIBER:
            open_on_the_web(page)
        elif user is not None and user.startswith("m001."):
            merchant_log_in(page, base, user, redis_captcha_answers(REDIS_SERVER_URL, SESSIONS_PREFIX))
        elif user is not None:
            log_in(page, base, user)
        return page

    def open_on_the_web(page):
        """A subscriber's session: the web opening (/open), with the code
        the handset gets by SMS; it ends logged in on /me."""
        since = demo.inbox_size(SUBSCRIBER)
        page.goto(f"{base}/open")
        page.fill("#open-number input[name=msisdn]", SUBSCRIBER)
        page.click("#open-number button[type=submit]")
        page.wait_for_load_state()
        code = PIN_RE.search(demo.wait_sms(SUBSCRIBER, since, "验证码")[0]).group(1)
        page.fill("#open-confirm input[name=code]", code)
        page.check("#open-confirm input[name=accept_agreement]")
        page.fill("#open-confirm input[name=password]", SUBSCRIBER_PASSWORD)
        page.fill("#open-confirm input[name=password_again]", SUBSCRIBER_PASSWORD)
        with page.expect_navigation():
            page.click("#open-confirm button[type=submit]")
        assert page.url.startswith(f"{base}/me"), page.url

    def visit(page, path, name, status=200, lands=None):
        response = page.goto(base + path)
        page.wait_for_load_state()
        assert response.status == status, (path, response.status)
        assert page.url == base + (lands or path), (path, page.url)
        assert not page.problems, (path, page.problems)
        shot(page, f"page-{name}")
        taken.append(name)

    def drive():
        with chromium() as browser:
            pages = {}
            for path, visits in PAGES.items():
                for user, name, lands, *status in visits:
                    if user not in pages:
                        pages[user] = page_for(browser, user)
                    # a path with a variable is visited at `lands` (an id no merchant has: its 404 page)
                    visit(pages[user], lands if "<" in path else path, name, *status, lands=lands)
            for path, (user, kind, header) in DOWNLOADS.items():
                r = pages[user].request.get(base + path)
                assert r.status == 200 and r.headers["content-type"].startswith(kind), (path, r.status, r.headers)
                assert r.text().startswith(header), (path, r.text()[:200])

            # pages a POST renders, and the error pages
            agent, supervisor, admin, anonymous = pages["agent1"], pages["super1"], pages["admin"], pages[None]
            for page, number, name, status in ((supervisor, "13800138000", "agent-subscriber", 200),
                                               (agent, "13600136009", "agent-no-account", 404)):
                page.goto(f"{base}/agent")
                got = look_up(page, base, number).status
                assert got == status and not page.problems, (name, got, page.problems)
                shot(page, f"page-{name}")
                taken.append(name)
            assert supervisor.locator("#status").inner_text() == "active"
            assert supervisor.locator("h2", has_text="Held in suspense").count() == 1
            assert "no mobile wallet account" in agent.locator("p.error").inner_text()

            admin.goto(f"{base}/admin/users")
            admin.fill("main form[action='/admin/users'] input[name=username]", "newagent7")
            admin.select_option("main form[action='/admin/users'] select[name=role]", "agent")
            admin.fill("main form[action='/admin/users'] input[name=agent_code]", "AG001")
            admin.click("main form[action='/admin/users'] button[type=submit]")
            initial = admin.locator("#initial-password").inner_text()
            shot(admin, "page-admin-users-created")
            taken.append("admin-users-created")

            admin.goto(f"{base}/ops/audit")
            admin.fill("#audit-search input[name=msisdn]", "13800138000")
            with admin.expect_navigation() as nav:
                admin.click("#audit-search button[type=submit]")
            assert nav.value.status == 200 and not admin.problems, (nav.value.status, admin.problems)
            assert "confirm" in admin.locator("main").inner_text()             # the demo account's opening
            shot(admin, "page-ops-audit-search")
            taken.append("ops-audit-search")

            newcomer = page_for(browser, None)
            log_in(newcomer, base, "newagent7", initial, expect_home=False)
            assert newcomer.url == f"{base}/password", newcomer.url           # the first-login change, first
            assert "one-time password" in newcomer.locator("p.notice").inner_text()
            shot(newcomer, "page-password-first-login")
            taken.append("password-first-login")
            newcomer.goto(f"{base}/agent")
            assert newcomer.url == f"{base}/password"                        # every page leads there until then

            log_in(anonymous, base, "agent1", "not-the-password", expect_home=False)
            assert "Wrong username or password" in anonymous.locator("p.error").inner_text()
            shot(anonymous, "page-login-wrong-password")
            taken.append("login-wrong-password")
            visit(agent, "/ops/stats", "error-403", status=403)
            visit(agent, "/no-such-page", "error-404", status=404)
            visit(agent, "/logout", "error-405", status=405)
            visit(admin, "/ops/stats?from=2026-02-30", "ops-stats-bad-date", status=400)
            assert "date" in admin.locator("p.error").inner_text()
    in_a_thread(drive)
    assert len(taken) == len(set(taken)) == sum(len(v) for v in PAGES.values()) + 10, taken
    assert all((ARTIFACTS / f"page-{name}.png").stat().st_size > 0 for name in taken)
