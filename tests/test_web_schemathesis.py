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
operation), no example database, no deadline, `CASE_BUDGET` cases shared
out over the operations, modes and roles; a fresh SQLite database per run. The bank is
the in-process double, so no operation may answer 503 (bank unavailable).
"""
from __future__ import annotations

import asyncio
from collections import Counter

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_schema_conformance, status_code_conformance)
from schemathesis.checks import not_a_server_error

from jsonschema import Draft202012Validator

from channels.web.console import MSISDN_FIELD
from channels.web.sessions import COOKIE, CSRF_HEADER
from telecom_pay.aio import wait_deferred
from telecom_pay.merchants import directory, signing
from tests.aio import aio_test
from tests.bankdouble import InProcessBank
from tests.selfkit import start_self, web_open
from tests.test_web_api_contract import served_operations
from tests.webkit import Browser, add_user

#: generated cases for the whole run, shared out over the operations and callers (as routes are added each
#: gets fewer, between MIN_EXAMPLES and MAX_EXAMPLES per mode), so the module stays near a minute
CASE_BUDGET = 800
MIN_EXAMPLES, MAX_EXAMPLES = 4, 12
ANONYMOUS = "(anonymous)"
EXAMPLES = "examples"
NOTHING_TO_BREAK = -1          # a negative run of an operation with no body and no query
EXAMPLE_NUMBER = MSISDN_FIELD.example      # the console fields' example number
PASSWORD = "s3cret-enough-pw"
#: one web user per role that can log in; the agent and supervisor act as the seeded agent AG001, the
#: subscriber (who logs in with the number) opens the example number's account on the web
STAFF = (
    ("fuzz-ops", "ops_admin", {}),
    ("fuzz-agent", "agent", {"agent_code": "AG001"}),
    ("fuzz-super", "agent_supervisor", {"agent_code": "AG001"}),
)
USERS = STAFF + ((EXAMPLE_NUMBER, "subscriber", {}),)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
#: the merchant that signs the SP payment API's requests (a config merchant given an API key by `seed`)
MERCHANT_CODE = "M001"
SIGNER: dict[str, str] = {}


def merchant_headers(method: str, target: str, body: bytes | None) -> dict[str, str]:
    """The four X-TP-* headers of a request signed by the seeded merchant."""
    return signing.sign_headers(SIGNER["key_id"], SIGNER["secret"], method, target, body or b"")


def is_signed(op: dict) -> bool:
    return any("merchant_signature" in s for s in op.get("security", []))


def _send_signed(case, base: str) -> requests.Response:
    """A case sent with a valid signature over exactly the bytes sent."""
    kwargs = case.as_transport_kwargs(base_url=base)
    prep = requests.Request(**{k: v for k, v in kwargs.items() if k in (
        "method", "url", "headers", "params", "data", "json", "cookies", "files")}).prepare()
    body = prep.body.encode() if isinstance(prep.body, str) else prep.body
    prep.headers.update(merchant_headers(prep.method, prep.path_url, body))
    with requests.Session() as session:
        return session.send(prep, timeout=30, allow_redirects=False)


def _only_headers_broken(op: dict, case) -> bool:
    """A negative case of a signed operation whose body and path are valid:
    only its X-TP-* headers were spoiled, and signing replaced them."""
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if schema is not None and not Draft202012Validator(schema).is_valid(case.body):
        return False
    for p in op.get("parameters", []):
        if p["in"] in ("path", "query"):
            value = (case.path_parameters if p["in"] == "path" else case.query or {}).get(p["name"])
            if value is None or not Draft202012Validator(p["schema"]).is_valid(value):
                return False
    return True


async def start_fuzz_web(database_url: str, **web):
    """The web section with the real service and the bank double. The
    login throttle is set out of reach: the fuzzer's failed logins would
    otherwise put every later login behind a CAPTCHA (throttling has its
    own tests)."""
    return await start_self({"database_url": database_url}, bank=InProcessBank(), **{
        "web.captcha_after": 10 ** 6, "web.lock_after": 10 ** 6, "web.address_limit": 10 ** 6,
        **{f"web.{k}": v for k, v in web.items()}})


def login(base: str, username: str | None) -> tuple[dict, dict]:
    """The session cookie and the CSRF header to send (none without a user)."""
    if username is None:
        return {}, {}
    r = requests.post(f"{base}/api/v1/session", json={"username": username, "password": PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text
    return {COOKIE: r.cookies[COOKIE]}, {CSRF_HEADER: r.json()["csrf_token"]}


def fuzz(base: str, schema, who: tuple[str, str | None] | None, roles_of: dict, counts: Counter,
         statuses: Counter, failures: list, examples: int = MAX_EXAMPLES, doc: dict | None = None) -> None:
    """Every operation of the document as the user `who` (name, role;
    None: no session). An operation the caller may call gets `examples`
    positive and negative cases, and the document's examples; one it may
    not is refused before its body is read, so one positive case shows
    that. A session the logout operation ended is replaced by a new login.
    The SP payment API's operations (signed, no session) are signed by the
    seeded merchant for the caller without a session; a logged-in caller's
    one case shows that a session does not stand in for a signature."""
    username, role = who or (None, None)
    cookies, headers = login(base, username)
    for result in schema.get_all_operations():
        operation = result.ok()
        roles = roles_of[(operation.path, operation.method.lower())]
        op_doc = (doc or {}).get("paths", {}).get(operation.path, {}).get(operation.method.lower(), {})
        signed = is_signed(op_doc) and who is None
        allowed = (roles is None or role in roles) and not (is_signed(op_doc) and who is not None)
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE, EXAMPLES) if allowed else (GenerationMode.POSITIVE,)
        for mode in modes:
            if cookies and requests.get(f"{base}/api/v1/session", cookies=cookies, timeout=30).status_code != 200:
                cookies, headers = login(base, username)
            fixed = dict(headers=headers or None, cookies=cookies or None)
            key = (operation.method.lower(), operation.path, getattr(mode, "value", mode), username or ANONYMOUS)
            if mode is EXAMPLES:
                # the document's examples (a number with an account): past the checks, into the service
                strategies = operation.get_strategies_from_examples(fill_missing=True, **fixed)
                if not strategies:
                    continue
                strategy = st.one_of(strategies)
            else:
                strategy = operation.as_strategy(generation_mode=mode, **fixed)

            @settings(max_examples=examples if allowed else 1, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=strategy)
            def run(case):
                response = _send_signed(case, base) if signed else case.call(base_url=base, timeout=30)
                counts[key] += 1
                statuses[key[2], response.status_code] += 1
                if signed:
                    counts["signed", key[1], key[0], response.status_code] += 1
                try:
                    # 5xx: a crash, or the bank "unavailable" although the double always answers
                    assert response.status_code < 500, f"server error {response.status_code}"
                    if signed and mode is GenerationMode.NEGATIVE and _only_headers_broken(op_doc, case):
                        # what was negative (the X-TP-* headers) the signature replaced: may succeed
                        case.validate_response(response, checks=CHECKS, excluded_checks=[negative_data_rejection])
                    else:
                        case.validate_response(response, checks=CHECKS)
                except (AssertionError, BaseExceptionGroup) as exc:
                    failures.append(f"{key} -> {response.status_code} {response.text[:200]}\n"
                                    f"    {str(exc)[:400]}\n    {case.as_curl_command()[:400]}")
            try:
                run()
            except Unsatisfiable:
                # nothing in it to break: no body, no query (the session and CSRF token are fixed)
                if mode is GenerationMode.POSITIVE or operation.body or operation.query:
                    raise
                counts[key] = NOTHING_TO_BREAK


async def seed(daemon, base: str) -> None:
    """The web users, and an active account at the documents' example
    number, so the examples get past the checks into the service."""
    for username, role, extra in STAFF:
        await add_user(daemon, username, role, password=PASSWORD, **extra)
    await web_open(daemon, base, EXAMPLE_NUMBER, PASSWORD)
    key_id, secret = await directory.rotate_key(daemon.core.service, MERCHANT_CODE, actor="test", channel="test")
    SIGNER.update(key_id=key_id, secret=secret)


@aio_test
async def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(tmp_path):
    daemon, base = await start_fuzz_web(f"sqlite+aiosqlite:///{tmp_path / 'fuzz.sqlite3'}")
    try:
        await seed(daemon, base)
        doc = (await Browser(base).get("/api/v1/openapi.json")).json()
        documented = {(path, method) for path, item in doc["paths"].items() for method in item}
        served = served_operations(daemon)
        assert served <= documented, f"served but not documented: {sorted(served - documented)}"
        roles_of = {(r.openapi_path, r.method.lower()): r.roles for r in daemon.components["web"].app.routes}
        counts: Counter = Counter()
        statuses: Counter = Counter()           # (mode, status) -> cases
        failures: list[str] = []
        # the subscriber first: the console's examples transfer and close the example number's account
        callers = [(u, role) for u, role, _ in USERS[-1:] + USERS[:-1]] + [None]
        signed_ops = {(path, method) for path, item in doc["paths"].items() for method, op in item.items()
                      if is_signed(op)}
        runs = sum(3 for op, roles in roles_of.items() for who in callers
                   if (roles is None or (who and who[1] in roles)) and not (op in signed_ops and who is not None))
        examples = max(MIN_EXAMPLES, min(MAX_EXAMPLES, CASE_BUDGET // runs))

        def run_all():
            schema = schemathesis.openapi.from_dict(doc)
            listed = {(op.ok().path, op.ok().method.lower()) for op in schema.get_all_operations()}
            assert listed == documented, sorted(documented ^ listed)
            for who in callers:
                fuzz(base, schema, who, roles_of, counts, statuses, failures, examples, doc)
        await in_the_pool(run_all)

        assert not failures, "\n".join(failures[:30]) + f"\n({len(failures)} failures)"
        # the examples got past the checks into the service at least once
        assert any(mode == EXAMPLES and 200 <= status < 300 for mode, status in statuses), statuses
        for path, method in sorted(documented):
            roles = roles_of[(path, method)]
            for who in callers:
                name, role = who or (ANONYMOUS, None)
                assert counts[(method, path, "positive", name)] > 0, ("no case ran", method, path, name)
                if (roles is None or role in roles) and not ((path, method) in signed_ops and who is not None):
                    assert counts[(method, path, "negative", name)] != 0, ("no negative case", method, path, name)
        # the signed operations got past the signature check into their handlers
        for path, method in sorted(signed_ops):
            got = {k[3] for k in counts if k[0] == "signed" and k[1:3] == (path, method)}
            assert got - {401}, ("no signed case got past the signature", path, method, got)
    finally:
        await wait_deferred(daemon.stopService())


async def in_the_pool(fn):
    """requests blocks: run it in a thread while the reactor serves."""
    return await asyncio.get_running_loop().run_in_executor(None, fn)


@aio_test
async def test_the_harness_fails_on_a_status_the_document_does_not_list(tmp_path):
    """The same harness against a document that leaves out the login's 400
    and 401: it must report the server's (true) answers as undocumented."""
    daemon, base = await start_fuzz_web(f"sqlite+aiosqlite:///{tmp_path / 'fuzz.sqlite3'}")
    try:
        doc = (await Browser(base).get("/api/v1/openapi.json")).json()
        login_op = doc["paths"]["/api/v1/session"]["post"]
        for status in ("400", "401"):
            del login_op["responses"][status]
        doc["paths"] = {"/api/v1/session": {"post": login_op}}
        roles_of = {("/api/v1/session", "post"): None}
        counts, statuses, failures = Counter(), Counter(), []
        await in_the_pool(lambda: fuzz(base, schemathesis.openapi.from_dict(doc), None, roles_of, counts, statuses,
                                       failures, MIN_EXAMPLES))
        assert counts[("post", "/api/v1/session", "positive", ANONYMOUS)] > 0
        assert failures and all("/api/v1/session" in f for f in failures), failures
        assert any("-> 401" in f for f in failures) and any("-> 400" in f for f in failures), failures
    finally:
        await wait_deferred(daemon.stopService())
