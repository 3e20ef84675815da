"""Schemathesis against the live server's own OpenAPI document: every
operation the document lists, for every role that can log in and once
without a session, with data that fits the document (positive) and data
that breaks it (negative). Nothing may answer 5xx, and every answer must
be a status and content type the document declares for that operation.

The harness reads the operations from the served document, so a route
added anywhere (a new module's `ROUTES`) is fuzzed as soon as it is
served; and it fails when the document lists fewer operations than the
router, or when an operation ran no case (a fuzz run that tests nothing
cannot fail).

Reproducible and bounded: hypothesis derandomized (a fixed seed per
operation), no example database, no deadline, `MAX_EXAMPLES` per
operation, mode and role; a fresh SQLite database per run. The bank is
the in-process double, so no operation may answer 503 (bank unavailable).
"""
from __future__ import annotations

import threading
from collections import Counter

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_schema_conformance, status_code_conformance)
from schemathesis.checks import not_a_server_error

from channels.web.sessions import COOKIE, CSRF_HEADER
from telecom_pay.aio import wait_deferred
from tests.aio import aio_test
from tests.bankdouble import InProcessBank
from tests.browserkit import in_a_thread
from tests.test_web_api_contract import served_operations
from tests.webkit import FAST_HASHER, add_user, web_settings

MAX_EXAMPLES = 12
REFUSED_EXAMPLES = 2
TIMES = {}
STATUSES = Counter()
PASSWORD = "s3cret-enough-pw"
#: one web user per role that can log in; the agent and supervisor act as the seeded agent AG001
USERS = (
    ("fuzz-ops", "ops_admin", {}),
    ("fuzz-agent", "agent", {"agent_code": "AG001"}),
    ("fuzz-super", "agent_supervisor", {"agent_code": "AG001"}),
    ("fuzz-sub", "subscriber", {"msisdn": "8613900139000"}),
)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


async def start_fuzz_web(database_url: str):
    """The web section with the real service and the bank double. The
    login throttle is set out of reach: the fuzzer's failed logins would
    otherwise put every later login behind a CAPTCHA (throttling has its
    own tests)."""
    from twisted.internet import reactor

    from telecom_pay.daemon import Daemon
    from telecom_pay.security import PasswordHasher
    settings_ = web_settings({"database_url": database_url}, **{
        "web.captcha_after": 10 ** 6, "web.lock_after": 10 ** 6, "web.address_limit": 10 ** 6})
    daemon = Daemon(settings_, reactor, sections=("web",), bank=InProcessBank())
    daemon.startService()
    await wait_deferred(daemon.ready)
    web = daemon.components["web"]
    web.app.users.hasher = PasswordHasher(**FAST_HASHER)
    return daemon, f"http://127.0.0.1:{await web.wait_listening()}"


def login(base: str, username: str | None) -> tuple[dict, dict]:
    """The session cookie and the CSRF header to send (none without a user)."""
    if username is None:
        return {}, {}
    r = requests.post(f"{base}/api/v1/session", json={"username": username, "password": PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text
    return {COOKIE: r.cookies[COOKIE]}, {CSRF_HEADER: r.json()["csrf_token"]}


def fuzz(base: str, schema, username: str | None, role: str | None, roles_of: dict, counts: Counter,
         failures: list) -> None:
    """Every operation of the document, positive and negative, as `username`
    (None: no session). An operation the role may not call is refused
    before its body is read, so a few cases show that; the ones it may
    call get `MAX_EXAMPLES`. Each operation gets its own login, so the
    logout operation ends only its own session."""
    for result in schema.get_all_operations():
        operation = result.ok()
        roles = roles_of[(operation.path, operation.method.lower())]
        allowed = roles is None or role in roles
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            cookies, headers = login(base, username)
            key = (operation.method.upper(), operation.path, mode.value, username or "(anonymous)")

            @settings(max_examples=MAX_EXAMPLES if allowed else REFUSED_EXAMPLES, deadline=None,
                      derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode, headers=headers or None,
                                               cookies=cookies or None))
            def run(case):
                response = case.call(base_url=base, timeout=30)
                counts[key] += 1
                STATUSES[key[:2] + (response.status_code,)] += 1
                try:
                    case.validate_response(response, checks=CHECKS)
                except (AssertionError, BaseExceptionGroup) as exc:
                    failures.append((key, response.status_code, response.text[:300], str(exc)[:600]))
            import time; t0 = time.monotonic()
            try:
                run()
            except Unsatisfiable:
                # nothing in it to break: no body, no query (the CSRF header is fixed)
                if mode is GenerationMode.POSITIVE or operation.body or operation.query:
                    raise
                counts[key] = -1
            TIMES[key] = time.monotonic() - t0


@aio_test
async def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(tmp_path):
    daemon, base = await start_fuzz_web(f"sqlite+aiosqlite:///{tmp_path / 'fuzz.sqlite3'}")
    try:
        for username, role, extra in USERS:
            await add_user(daemon, username, role, password=PASSWORD, **extra)
        doc = (await wait_deferred(__import__("treq").get(f"{base}/api/v1/openapi.json")))
        documented = {(path, method) for path, item in (await wait_deferred(doc.json()))["paths"].items()
                      for method in item}
        served = served_operations(daemon)
        assert served <= documented, f"served but not documented: {sorted(served - documented)}"

        roles_of = {(r.openapi_path, r.method.lower()): r.roles for r in daemon.components["web"].app.routes}
        counts: Counter = Counter()
        failures: list = []

        def run_all():
            schema = schemathesis.openapi.from_dict(requests.get(f"{base}/api/v1/openapi.json", timeout=30).json())
            for username, role, _ in USERS:
                fuzz(base, schema, username, role, roles_of, counts, failures)
            fuzz(base, schema, None, None, roles_of, counts, failures)
        await _off_the_reactor(run_all)

        open("/tmp/counts.txt", "w").write("\n".join(f"{TIMES.get(k, 0):.2f} {k} {v}" for k, v in sorted(counts.items())))
        open("/tmp/statuses.txt", "w").write("\n".join(f"{k} {v}" for k, v in sorted(STATUSES.items())))
        assert not failures, "\n".join(map(str, failures[:40])) + f"\n({len(failures)} failures)"
        for path, method in documented:
            for mode in ("positive", "negative"):
                for who in [u for u, _, _ in USERS] + ["(anonymous)"]:
                    ran = counts[(method.upper(), path, mode, who)]
                    assert ran > 0 or (ran == -1 and mode == "negative"), (method, path, mode, who, ran, sorted(k[:2] for k in counts))
    finally:
        await wait_deferred(daemon.stopService())


async def _off_the_reactor(fn):
    """requests blocks: run it in a thread while the reactor serves."""
    import asyncio
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, fn)
