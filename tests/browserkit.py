"""Real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright's sync API) for the browser tests, and where their screenshots
go (tests/artifacts/, git-ignored).

Playwright's sync API refuses a thread where an asyncio loop runs (the
test process's Twisted reactor is one), so a test hands its browser work
to `in_a_thread`, which runs it in a thread of its own and re-raises what
it raised."""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).with_name("artifacts")


def in_a_thread(fn, timeout: float = 180.0):
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:          # re-raised in the test
            box["error"] = exc
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if "error" in box:
        raise box["error"]
    if t.is_alive():
        raise TimeoutError(f"the browser did not finish within {timeout:.0f} s")
    return box.get("value")


def require_chromium() -> None:
    """Never a silent skip: make test installs Chromium (scripts/ensure-services.sh)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: scripts/ensure-services.sh installs it (make test)")
    ARTIFACTS.mkdir(exist_ok=True)


@contextlib.contextmanager
def chromium():
    """A launched browser (call inside `in_a_thread`)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def shot(page, name: str) -> Path:
    """A full-page screenshot under tests/artifacts/NAME.png."""
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
