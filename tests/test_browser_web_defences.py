"""The web's defences hold in a real browser (headless Chromium against
`telecom-pay demo`): an agent is kept out of the operator pages and API, a
form posted with a forged or missing CSRF token changes nothing, repeated
wrong passwords bring the CAPTCHA and then the lock, and an idle session
ends so the next click lands on the login page.

The demo runs with a short idle timeout and low throttling thresholds; it
keeps its sessions in the test Redis under a prefix of its own, because the
CAPTCHA's answer lives there (the test reads it as the person reading the
picture would). It is told that 127.0.0.1 is a trusted proxy, so the
throttling test's browser comes from an address of its own
(X-Forwarded-For) and the other tests' logins never meet its CAPTCHA."""
from __future__ import annotations

import json
import os
import uuid

import pytest

from tests.browserkit import chromium, in_a_thread, require_chromium, shot
from tests.demokit import running_demo
from tests.pagekit import DEV_USERS, log_in, look_up

# one demo per module: its tests stay on one xdist worker (make test runs --dist loadgroup)
pytestmark = pytest.mark.xdist_group("test_browser_web_defences")

IDLE_TIMEOUT = 5          # seconds
CAPTCHA_AFTER, LOCK_AFTER = 2, 4
REDIS_URL = os.environ.get("TELECOM_PAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    require_chromium()
    import redis
    prefix = f"tp-browser-{uuid.uuid4().hex[:10]}:"
    with running_demo(tmp_path_factory.mktemp("defences-demo"), overrides={
        "sessions": {"url": REDIS_URL, "prefix": prefix},
        "web": {"idle_timeout": IDLE_TIMEOUT, "captcha_after": CAPTCHA_AFTER, "lock_after": LOCK_AFTER,
                "trusted_proxies": ["127.0.0.1"]}}) as demo:
        r = redis.Redis.from_url(REDIS_URL)
        demo.captcha_answer = lambda captcha_id: json.loads(r.get(f"{prefix}web:captcha:{captcha_id}"))["answer"]
        yield demo
    keys = list(r.scan_iter(match=prefix + "*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


def test_an_agent_gets_403_from_the_operator_pages_and_api(demo):
    def drive():
        with chromium() as browser:
            page = log_in(browser.new_page(), demo.web_url, "agent1")
            assert page.locator("a[href='/ops/stats']").count() == 0      # not offered either
            for path in ("/ops/stats", "/ops/stats.csv", "/ops/audit", "/ops/bank", "/admin/users"):
                response = page.goto(f"{demo.web_url}{path}")
                assert response.status == 403, (path, response.status)
                assert page.locator("h1").inner_text() == "403"
                assert "not for your role" in page.locator("p.error").inner_text()
                assert "agent1" in page.locator("header .who").inner_text()        # still who, and Log out
            shot(page, "defences-agent-403")
            seen = {}
            for path in ("/api/v1/stats", "/api/v1/users", "/api/v1/ops/audit", "/api/v1/ops/bank/in-doubt"):
                r = page.request.get(f"{demo.web_url}{path}")
                seen[path] = (r.status, r.json())
            r = page.request.post(f"{demo.web_url}/api/v1/users", data={"username": "sneaky", "role": "ops_admin"},
                                  headers={"X-CSRF-Token": page.request.get(
                                      f"{demo.web_url}/api/v1/session").json()["csrf_token"]})
            seen["POST /api/v1/users"] = (r.status, r.json())
            return seen
    seen = in_a_thread(drive)
    for what, (status, body) in seen.items():
        assert status == 403 and "not allowed for the role agent" in body["error"], (what, status, body)


def test_a_form_with_a_forged_or_missing_csrf_token_changes_nothing(demo):
    form = "main form[action='/admin/users']"

    def fill(page, username):
        page.goto(f"{demo.web_url}/admin/users")
        page.fill(f"{form} input[name=username]", username)
        page.select_option(f"{form} select[name=role]", "agent")
        page.fill(f"{form} input[name=agent_code]", "AG001")

    def drive():
        with chromium() as browser:
            page = log_in(browser.new_page(), demo.web_url, "admin")
            refused = []
            for name, tamper in (("forged1", "el => el.value = 'forged-' + el.value.slice(7)"),
                                 ("missing1", "el => el.remove()")):
                fill(page, name)
                page.locator(f"{form} input[name=csrf_token]").evaluate(tamper)
                with page.expect_navigation() as nav:
                    page.click(f"{form} button[type=submit]")
                refused.append((nav.value.status, page.locator("p.error").inner_text()))
                shot(page, f"defences-csrf-{name}")
            # the API with the session's cookie but without its X-CSRF-Token header
            bare = page.request.post(f"{demo.web_url}/api/v1/users", data={"username": "nocsrf1", "role": "agent"})
            refused.append((bare.status, bare.json()["error"]))
            page.goto(f"{demo.web_url}/admin/users")
            listed = page.locator("main table").inner_text()
            api = page.request.get(f"{demo.web_url}/api/v1/users").json()
            # the same form with the page's own token is taken: the refusals were the token's doing
            fill(page, "honest1")
            with page.expect_navigation() as nav:
                page.click(f"{form} button[type=submit]")
            return refused, listed, api, nav.value.status, page.locator("main table").inner_text()
    refused, listed, api, honest_status, after = in_a_thread(drive)
    for status, message in refused[:2]:
        assert status == 403 and "did not come from this site" in message, refused
    assert refused[2] == (403, "missing or wrong CSRF token (header X-CSRF-Token)"), refused
    names = [u["username"] for u in api["users"]]
    assert "admin" in listed and "admin" in names, (listed, names)
    for name in ("forged1", "missing1", "nocsrf1"):
        assert name not in listed and name not in names, (name, listed, names)
    assert honest_status == 201 and "honest1" in after


def test_wrong_passwords_bring_the_captcha_then_the_lock(demo):
    user, password = "super2", DEV_USERS["super2"]["password"]

    def attempt(page, typed, *, captcha=None):
        page.fill("#login input[name=username]", user)
        page.fill("#login input[name=password]", typed)
        if captcha is not None:
            page.fill("#login input[name=captcha_answer]", captcha)
        with page.expect_navigation() as nav:
            page.click("#login button[type=submit]")
        return nav.value.status, page.locator("p.error").inner_text()

    def solve(page):
        return demo.captcha_answer(page.locator("#login input[name=captcha_id]").input_value())

    def drive():
        with chromium() as browser:
            context = browser.new_context(extra_http_headers={"X-Forwarded-For": "203.0.113.77"})
            page = context.new_page()
            page.goto(f"{demo.web_url}/login")
            seen = []
            for _ in range(CAPTCHA_AFTER):
                assert page.locator("[data-captcha]").count() == 0
                seen.append(attempt(page, "not-the-password"))
            assert page.locator("[data-captcha] svg").count() == 1         # the CAPTCHA is on the page now
            shot(page, "defences-login-captcha")
            right = solve(page)
            seen.append(attempt(page, password, captcha="00000" if right != "00000" else "11111"))
            for _ in range(LOCK_AFTER - CAPTCHA_AFTER):
                seen.append(attempt(page, "not-the-password", captcha=solve(page)))
            seen.append(attempt(page, password, captcha=solve(page)))     # the right password, now too late
            shot(page, "defences-login-locked")
            return seen, page.url
    seen, url = in_a_thread(drive)
    statuses = [s for s, _ in seen]
    assert statuses == [401] * CAPTCHA_AFTER + [401] + [401] * (LOCK_AFTER - CAPTCHA_AFTER) + [423], seen
    assert "Type the digits of the picture" in seen[CAPTCHA_AFTER][1]      # a wrong answer: not even tried
    assert "locked" in seen[-1][1] and url.endswith("/login"), seen


def test_an_idle_session_ends_and_the_next_click_lands_on_login(demo):
    """The one wait the suite cannot avoid: the idle timeout is time passing.
    Clicks within it keep the session alive past its length from the login
    (an idle timeout, not an absolute one); a pause longer than it ends it."""
    def find(page):
        look_up(page, demo.web_url, "13800138000")
        return page.url

    def drive():
        with chromium() as browser:
            page = log_in(browser.new_page(), demo.web_url, "super1")
            page.goto(f"{demo.web_url}/agent")
            urls = []
            for _ in range(2):
                page.wait_for_timeout(IDLE_TIMEOUT * 600)                  # 0.6 of the timeout, twice
                urls.append(find(page))
                page.goto(f"{demo.web_url}/agent")
            page.wait_for_timeout(IDLE_TIMEOUT * 1000 + 1500)
            urls.append(find(page))
            shot(page, "defences-idle-login")
            return urls, page.locator("#login").count()
    urls, login_forms = in_a_thread(drive)
    assert urls[:2] == [f"{demo.web_url}/agent/lookup"] * 2, urls
    assert urls[2] == f"{demo.web_url}/login" and login_forms == 1, urls
