"""The web pages as a person in Chromium meets them: the development
users `make run` seeds (read from the embedded default config, so a changed
password there cannot leave the browser tests logging in with an old one),
and logging in through the login form."""
from __future__ import annotations

import re
import tomllib

from telecom_pay.config import DEFAULT_CONFIG

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

