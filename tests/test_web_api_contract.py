"""The OpenAPI document against the router (every /api/v1 route
documented, every documented operation served, the statuses it gives
documented), and bad input answered with a clear 4xx JSON error."""
from __future__ import annotations

import json

import pytest
from openapi_spec_validator import validate

from tests.aio import aio_test
from tests.webkit import Browser, add_user, start_web, stop_web, web_settings

PASSWORD = "s3cret-enough-pw"


def served_operations(daemon) -> set[tuple[str, str]]:
    app = daemon.components["web"].app
    ops = set()
    for rule in app.klein.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = rule.rule
            for name in rule.arguments:
                path = path.replace(f"<{name}>", f"{{{name}}}")
            ops |= {(path, m.lower()) for m in rule.methods if m not in ("HEAD", "OPTIONS")}
    return ops


@aio_test
async def test_openapi_document_matches_the_routes(sqlite_url):
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}))
    try:
        b = Browser(base)
        r = await b.get("/api/v1/openapi.json")
        assert r.status == 200 and r.header("content-type").startswith("application/json")
        doc = r.json()
        validate(doc)                                     # a valid OpenAPI 3.1 document
        assert doc["openapi"].startswith("3.1")
        documented = {(path, method) for path, item in doc["paths"].items() for method in item}
        assert documented == served_operations(daemon)
        assert {p for p, _ in documented} >= {"/api/v1/session", "/api/v1/users", "/api/v1/openapi.json"}
        # each documented operation answers (not 404/405), with a status it documents
        for path, method in sorted(documented):
            kwargs = {"json_body": {}} if "requestBody" in doc["paths"][path][method] else {}
            resp = await b.request(method.upper(), path, **kwargs)
            assert resp.status not in (404, 405), (method, path, resp.status)
            assert str(resp.status) in doc["paths"][path][method]["responses"], (method, path, resp.status)
            assert resp.header("content-type").startswith("application/json")
        # logged in, the role-checked ones answer with documented statuses too
        await add_user(daemon, "ops1", "ops_admin", password=PASSWORD)
        token = (await b.api_login("ops1", PASSWORD)).json()["csrf_token"]
        for path, method in sorted(documented):
            op = doc["paths"][path][method]
            if "security" not in op or (path, method) == ("/api/v1/session", "delete"):
                continue
            kwargs = {"json_body": {}} if "requestBody" in op else {}
            resp = await b.request(method.upper(), path, headers={"X-CSRF-Token": token}, **kwargs)
            assert str(resp.status) in op["responses"], (method, path, resp.status, resp.text)
        # CSRF-checked operations declare the header
        assert doc["paths"]["/api/v1/users"]["post"]["parameters"][0]["name"] == "X-CSRF-Token"
        assert "parameters" not in doc["paths"]["/api/v1/users"]["get"]
    finally:
        await stop_web(daemon)


BAD_LOGINS = [
    ({"password": "x"}, 400, "missing field: username"),
    ({"username": "a"}, 400, "missing field: password"),
    ({"username": 5, "password": "x"}, 400, "username must be a string"),
    ({"username": ["a"], "password": "x"}, 400, "username must be a string"),
    ({"username": "a", "password": True}, 400, "password must be a string"),
    ({"username": "a", "password": "x", "admin": True}, 400, "unknown field: admin"),
    ({"username": "a" * 65, "password": "x"}, 400, "username is longer than 64 characters"),
]


@aio_test
async def test_bad_input_is_a_clear_4xx_json_error(sqlite_url):
    daemon, base = await start_web(web_settings({"database_url": sqlite_url}, **{"web.max_body": 4096}))
    try:
        b = Browser(base)
        for body, status, message in BAD_LOGINS:
            r = await b.post("/api/v1/session", json_body=body)
            assert (r.status, r.json()["error"]) == (status, message), body
        cases = [
            (dict(data=b'{"username": "a"', headers={"Content-Type": "application/json"}), 400, "not valid JSON"),
            (dict(data=b'["a", "b"]', headers={"Content-Type": "application/json"}), 400, "must be a JSON object"),
            (dict(data=b'{"username": "\xff"}', headers={"Content-Type": "application/json"}), 400, "not valid JSON"),
            (dict(data=b'{"username": "a", "password": "b"}', headers={"Content-Type": "text/plain"}), 415,
             "must be application/json"),
            (dict(data=b'{"username": "a", "password": "b"}'), 415, "must be application/json"),
            (dict(data=json.dumps({"username": "a", "password": "b" * 10_000}).encode(),
                  headers={"Content-Type": "application/json"}), 413, "over 4096 bytes"),
        ]
        for kwargs, status, message in cases:
            r = await b.post("/api/v1/session", **kwargs)
            assert r.status == status and message in r.json()["error"], (kwargs, r.status, r.text)
            assert r.header("content-type").startswith("application/json")
        huge = await b.post("/api/v1/captcha", data=b"x" * 1_000_000, headers={"Content-Type": "application/json"})
        assert huge.status == 413                        # even where no body is read
        r = await b.get("/api/v1/no-such-thing")
        assert r.status == 404 and r.json() == {"error": "no such endpoint"}
        r = await b.request("PUT", "/api/v1/session")
        assert r.status == 405 and "GET" in r.json()["error"] and "POST" in r.header("allow")
        page = await b.post("/login", data=b"username=" + b"a" * 10_000,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert page.status == 413 and "text/html" in page.header("content-type")
        assert (await b.get("/no-such-page")).status == 404
        assert (await b.get("/static/app.js")).status == 200
        assert (await b.get("/static/")).status == 404                  # no directory listing
        assert (await b.get("/static/../pages.py")).status == 404

        # wrong values for a logged-in call: the role enum, an unknown agent code, a taken name
        await add_user(daemon, "ops1", "ops_admin", password=PASSWORD)
        token = (await b.api_login("ops1", PASSWORD)).json()["csrf_token"]
        h = {"X-CSRF-Token": token}
        for body, status, message in [
            ({"username": "x1y", "role": "root"}, 400, "role must be one of"),
            ({"username": "Bad Name", "role": "ops_admin"}, 400, "username is not in the expected form (3-32 characters"),
            ({"username": "agent3", "role": "agent"}, 400, "an agent needs an agent code"),
            ({"username": "agent3", "role": "agent", "agent_code": "NOPE"}, 400, "no agent has the code NOPE"),
            ({"username": "ops1", "role": "ops_admin"}, 409, "taken"),
            ({"username": "ops9", "role": "ops_admin", "agent_code": "AG001"}, 400, "only agents"),
        ]:
            r = await b.post("/api/v1/users", json_body=body, headers=h)
            assert r.status == status and message in r.json()["error"], (body, r.status, r.text)
    finally:
        await stop_web(daemon)


@pytest.mark.parametrize("length", [0, 1])
def test_body_spec_parse_without_server(length):
    """The body checker alone: an empty body is not JSON."""
    from io import BytesIO

    from channels.web.api import LOGIN_BODY
    from channels.web.http import HttpError

    class Req:
        max_body = 100
        content = BytesIO(b" " * length)

        def getHeader(self, name):
            return "application/json"
    with pytest.raises(HttpError) as exc:
        LOGIN_BODY.parse(Req())
    assert exc.value.status == 400
