"""The web pages as a person in Chromium meets them: the development
users `make run` seeds (read from the embedded default config, so a changed
password there cannot leave the browser tests logging in with an old one),
and logging in through the login form."""
from __future__ import annotations

import re
import tomllib

import pytest

from telecom_pay.config import DEFAULT_CONFIG
from tests.browserkit import require_chromium
from tests.demokit import running_demo

DEV_USERS = {u["username"]: u for u in tomllib.loads(DEFAULT_CONFIG.read_text(encoding="utf-8"))["web"]["dev_users"]}
PIN_RE = re.compile(r"(?<!\d)(\d{6})(?!\d)")


def log_in(page, base: str, username: str, password: str | None = None, *, expect_home: bool = True):
    """The login form, as typed; by default asserts it landed on /home."""
    page.goto(f"{base}/login")
    page.fill("#login input[name=username]", username)
    page.fill("#login input[name=password]", password if password is not None else DEV_USERS[username]["password"])
    page.click("#login button[type=submit]")
    page.wait_for_load_state()
    if expect_home:
        assert page.url == f"{base}/home", (page.url, page.content())
    return page



def merchant_log_in(page, base: str, username: str, answer_of, password: str | None = None):
    """The merchant login form (/merchant/login), CAPTCHA and all: its
    answer is the server's (`answer_of(captcha_id)`, read from the demo's
    session store in Redis), as no browser test can read the picture.
    Asserts it landed on /merchant."""
    page.goto(f"{base}/merchant/login")
    page.fill("#login input[name=username]", username)
    page.fill("#login input[name=password]", password if password is not None else DEV_USERS[username]["password"])
    page.fill("#login input[name=captcha_answer]", answer_of(page.input_value("#login input[name=captcha_id]")))
    page.click("#login button[type=submit]")
    page.wait_for_load_state()
    assert page.url == f"{base}/merchant", (page.url, page.content())
    return page


def redis_captcha_answers(url: str, prefix: str):
    """`answer_of` for `merchant_log_in`, for a demo whose [sessions] are in Redis."""
    import json

    import redis as redis_sync
    client = redis_sync.Redis.from_url(url)
    return lambda captcha_id: json.loads(client.get(f"{prefix}web:captcha:{captcha_id}"))["answer"]


def look_up(page, base: str, msisdn: str):
    """The console's search form, from the console's page: returns the
    navigation's response (a number without an account is a 404 page)."""
    if page.url != f"{base}/agent":
        page.goto(f"{base}/agent")
    page.fill("#lookup input[name=msisdn]", msisdn)
    with page.expect_navigation() as nav:
        page.click("#lookup button[type=submit]")
    return nav.value


def demo_fixture(name: str, **kw):
    """A module's `demo` fixture: one `telecom-pay demo` for the module's
    browser tests (kw as for `start_demo`)."""
    @pytest.fixture(scope="module")
    def demo(tmp_path_factory):
        require_chromium()
        with running_demo(tmp_path_factory.mktemp(name), **kw) as running:
            yield running
    return demo
