"""Bad input on every state-changing API route, table-driven over the
served OpenAPI document (so a route added later is covered the day it is
served): missing fields, wrong types, strings over their maxLength,
integers out of their bounds or fractional, unknown fields, a huge body
(413), not JSON, not an object, the wrong content type (415), negative,
zero and fractional-fen amounts, numbers that are not mobile numbers and
well-formed numbers nobody has. Each answer is a 4xx the document lists
for the route, as JSON with a clear `error` (and the `field` to blame
when one field was wrong); never a 5xx.

Each route is called as a user whose role may call it (anonymous for the
public ones), with its CSRF token, so the body is what is refused.
"""
from __future__ import annotations

import json
import re

from jsonschema import Draft202012Validator

from telecom_pay.aio import wait_deferred
from tests.aio import aio_test
from tests.test_web_schemathesis import (EXAMPLE_NUMBER, PASSWORD, USERS, is_signed, merchant_headers, seed,
                                         start_fuzz_web)
from tests.webkit import Browser, add_user, start_web, stop_web, web_settings

MAX_BODY = 4096
#: tried, in order, for a string field with a pattern and no example
CANDIDATES = ("abc", EXAMPLE_NUMBER, "2912", "6222020200112233", "20")
UNKNOWN_NUMBER = "13700137000"          # a mobile number with no account
NOT_A_MOBILE = "12345"
BAD_AMOUNTS = ("-5", "-0.01", "0", "0.00", "1.234", "0.001", "1e3", "abc", "1,5")


def good_value(prop: dict):
    """A value the property's schema accepts, or None when none is known."""
    if "examples" in prop:
        return prop["examples"][0]
    if "enum" in prop:
        return prop["enum"][0]
    kind = prop.get("type")
    if kind == "integer":
        return max(prop.get("minimum", 1), 1)
    if kind == "boolean":
        return False
    if kind == "string":
        for text in CANDIDATES if "pattern" in prop else ("abc",):
            if "pattern" not in prop or re.search(prop["pattern"], text):
                return text[:prop.get("maxLength", 64)]
    return None


def good_body(schema: dict) -> tuple[dict, bool]:
    """The required fields with acceptable values, and whether the whole
    body is known to be good: valid for the schema, and no free-text
    field guessed (a string with neither example, enum nor pattern may
    mean more than its schema says). Only then can a refusal be pinned
    on the one field a case spoils."""
    required = {name: prop for name, prop in schema["properties"].items() if name in schema["required"]}
    body = {name: good_value(prop) for name, prop in required.items()}
    guessed = any(p.get("type") == "string" and not {"examples", "enum", "pattern"} & set(p)
                  for p in required.values())
    return body, not guessed and Draft202012Validator(schema).is_valid(body)


def field_cases(schema: dict) -> list[tuple[str, dict, str | None]]:
    """(what, body, the field the refusal must name) for one body schema."""
    base, valid = good_body(schema)
    blame = (lambda name: name) if valid else (lambda name: None)
    cases = [("an unknown field", {**base, "is_admin": True}, blame("is_admin"))]
    for name, prop in schema["properties"].items():
        if name in schema["required"]:
            cases.append((f"{name} missing", {k: v for k, v in base.items() if k != name}, blame(name)))
        wrong = {"string": 5, "integer": "5", "boolean": "yes"}[prop["type"]]
        cases += [(f"{name} of the wrong type", {**base, name: wrong}, blame(name)),
                  (f"{name} a list", {**base, name: [good_value(prop)]}, blame(name)),
                  (f"{name} an object", {**base, name: {"$gt": ""}}, blame(name))]
        if "maxLength" in prop:
            cases.append((f"{name} too long", {**base, name: "9" * (prop["maxLength"] + 1)}, blame(name)))
        if "minLength" in prop:
            cases.append((f"{name} too short", {**base, name: ""}, blame(name)))
        if prop["type"] == "integer":
            cases += [(f"{name} fractional", {**base, name: 1.5}, blame(name)),
                      (f"{name} huge", {**base, name: 2 ** 80}, blame(name)),
                      (f"{name} negative", {**base, name: -1}, blame(name) if "minimum" in prop else None)]
        if name == "amount":
            cases += [(f"amount {a!r}", {**base, name: a}, blame(name)) for a in BAD_AMOUNTS]
        if name.endswith("msisdn"):
            cases.append((f"{name} not a mobile number", {**base, name: NOT_A_MOBILE}, blame(name)))
    return cases


def raw_cases(schema: dict) -> list[tuple[str, dict, int]]:
    """(what, request keywords, status) for the body as a whole."""
    body, _ = good_body(schema)
    text = json.dumps(body).encode()
    return [
        ("not JSON", dict(data=b'{"msisdn": ', headers={"Content-Type": "application/json"}), 400),
        ("not UTF-8", dict(data=b'{"a": "\xff"}', headers={"Content-Type": "application/json"}), 400),
        ("a JSON array", dict(data=b"[1, 2]", headers={"Content-Type": "application/json"}), 400),
        ("JSON null", dict(data=b"null", headers={"Content-Type": "application/json"}), 400),
        ("empty", dict(data=b"", headers={"Content-Type": "application/json"}), 400),
        ("text/plain", dict(data=text, headers={"Content-Type": "text/plain"}), 415),
        ("a form", dict(data=b"msisdn=1", headers={"Content-Type": "application/x-www-form-urlencoded"}), 415),
        ("no content type", dict(data=text), 415),
        ("over max_body", dict(data=b'{"a": "' + b"9" * MAX_BODY + b'"}',
                               headers={"Content-Type": "application/json"}), 413),
    ]


def routes_with_bodies(doc: dict):
    for path, item in sorted(doc["paths"].items()):
        for method, op in sorted(item.items()):
            if method in ("post", "put", "patch", "delete"):
                schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
                yield path, method, op, schema


def concrete(path: str, op: dict) -> str:
    """The path with each {parameter} its documented example."""
    for p in op.get("parameters", []):
        if p["in"] == "path":
            path = path.replace("{" + p["name"] + "}", str(p["schema"]["examples"][0]))
    return path


class SigningBrowser(Browser):
    """A merchant's client for the SP payment API: every request signed
    over the exact bytes it sends, so what is refused is the body (an
    unsigned one is refused with 401 before its body is read)."""

    async def request(self, method, path, *, json_body=None, data=None, headers=None, **kw):
        headers = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        headers.update(merchant_headers(method, path, data))
        return await super().request(method, path, data=data, headers=headers, **kw)


async def caller_for(daemon, base: str, roles, op: dict | None = None) -> tuple[Browser, dict]:
    """A logged-in browser of a role the route serves (anonymous for a
    public route; the seeded merchant's signing client for a signed one)."""
    if op is not None and is_signed(op):
        return SigningBrowser(base), {}
    b = Browser(base)
    if roles is None:
        return b, {}
    username = next(u for u, role, _ in USERS if role in roles)
    r = await b.api_login(username, PASSWORD)
    assert r.status == 200, r.text
    return b, {"X-CSRF-Token": r.json()["csrf_token"]}


def assert_refused(r, op: dict, what: str, status: int | None = None, field: str | None = None) -> None:
    where = (what, r.status, r.text[:300])
    assert 400 <= r.status < 500, where
    if status is not None:
        assert r.status == status, where
    assert str(r.status) in op["responses"], ("undocumented status",) + where
    assert r.header("content-type").startswith("application/json"), where
    error = r.json()
    assert isinstance(error.get("error"), str) and error["error"], where
    if field is not None:
        assert error.get("field") == field, where


@aio_test
async def test_bad_input_on_every_state_changing_route_is_a_documented_4xx(tmp_path):
    daemon, base = await start_fuzz_web(f"sqlite+aiosqlite:///{tmp_path / 'bad.sqlite3'}", max_body=MAX_BODY)
    try:
        await seed(daemon, base)
        doc = (await Browser(base).get("/api/v1/openapi.json")).json()
        roles_of = {(r.openapi_path, r.method.lower()): r.roles for r in daemon.components["web"].app.routes}
        covered = []
        for path, method, op, schema in routes_with_bodies(doc):
            b, headers = await caller_for(daemon, base, roles_of[(path, method)], op)
            target = concrete(path, op)
            if schema is None:                  # no body to read: still no huge upload
                r = await b.request(method.upper(), target, headers={**headers, "Content-Type": "application/json"},
                                    data=b"9" * (MAX_BODY + 1))
                assert_refused(r, op, f"{method} {path}: over max_body", 413)
                covered.append(path)
                continue
            for what, body, field in field_cases(schema):
                r = await b.request(method.upper(), target, headers=headers, json_body=body)
                assert_refused(r, op, f"{method} {path}: {what}", 400, field)
            for what, kwargs, status in raw_cases(schema):
                kwargs["headers"] = {**headers, **kwargs.get("headers", {})}
                r = await b.request(method.upper(), target, **kwargs)
                assert_refused(r, op, f"{method} {path}: {what}", status)
            covered.append(path)
        assert {"/api/v1/session", "/api/v1/users", "/api/v1/agent/cash-in", "/api/v1/payments"} <= set(covered), \
            covered
    finally:
        await wait_deferred(daemon.stopService())


@aio_test
async def test_a_well_formed_number_nobody_has_is_a_documented_answer(tmp_path):
    """Every route naming a subscriber's number, given a mobile number with
    no account: refused (404, or the route's own 4xx) or, for an open,
    done; never a 5xx, never a status the document does not list."""
    daemon, base = await start_fuzz_web(f"sqlite+aiosqlite:///{tmp_path / 'unknown.sqlite3'}")
    try:
        await seed(daemon, base)
        doc = (await Browser(base).get("/api/v1/openapi.json")).json()
        roles_of = {(r.openapi_path, r.method.lower()): r.roles for r in daemon.components["web"].app.routes}
        answers = {}
        for path, method, op, schema in routes_with_bodies(doc):
            if schema is None or "msisdn" not in schema["properties"]:
                continue
            b, headers = await caller_for(daemon, base, roles_of[(path, method)], op)
            body, _ = good_body(schema)
            r = await b.request(method.upper(), concrete(path, op), headers=headers,
                                json_body={**body, "msisdn": UNKNOWN_NUMBER})
            assert r.status < 500 and str(r.status) in op["responses"], (path, r.status, r.text)
            assert r.header("content-type").startswith("application/json")
            answers[path] = r.status
        assert answers["/api/v1/agent/lookup"] == 404 and answers["/api/v1/agent/cash-in"] == 404, answers
        assert len(answers) >= 10, answers
    finally:
        await wait_deferred(daemon.stopService())


@aio_test
async def test_the_bank_link_down_is_a_503_with_retry_after(sqlite_url):
    """Not bad input but the one 5xx the console declares: without a bank
    a card binding cannot be verified; the client is told when to retry
    (the fuzz run has a bank, so there it would be a failure)."""
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}))      # no bank at all
    try:
        svc = daemon.core.service
        assert (await svc.open_account(EXAMPLE_NUMBER, channel="sms")).ok
        assert (await svc.confirm_open(EXAMPLE_NUMBER, channel="sms")).ok
        await add_user(daemon, "fuzz-agent", "agent", password=PASSWORD, agent_code="AG001")
        b, headers = await caller_for(daemon, base, ("agent",))
        doc = (await b.get("/api/v1/openapi.json")).json()
        r = await b.post("/api/v1/agent/card", headers=headers,
                         json_body={"msisdn": EXAMPLE_NUMBER, "pan": "6222020200112233", "expiry": "2912"})
        assert r.status == 503 and r.json()["outcome"] == "bank_unavailable", r.text
        assert int(r.header("retry-after")) > 0 and r.json()["error"]
        assert "Retry-After" in doc["paths"]["/api/v1/agent/card"]["post"]["responses"]["503"]["headers"]
    finally:
        await stop_web(daemon)
