"""The JSON API under /api/v1 (login, logout, the password change, users;
the agent console's routes are declared in channels/web/console.py).

Handlers get the web context (`ctx`: the session, the caller's address)
and the parsed body, and return (status, JSON value); refusals are
HttpError. Who may call each is declared in ROUTES.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from channels.web import console
from channels.web.http import Body, Field, HttpError
from channels.web.routes import ApiRoute
from telecom_pay.webusers import OPS_ADMIN, ROLES, STAFF_ROLES, USERNAME_RE, UserError

if TYPE_CHECKING:
    from channels.web.app import WebApp, WebContext

EVERYONE = ROLES

LOGIN_BODY = Body({
    "username": Field("string", max_length=64),
    "password": Field("string", max_length=256),
    "captcha_id": Field("string", required=False, max_length=64,
                        description="after repeated failures: the id from POST /api/v1/captcha"),
    "captcha_answer": Field("string", required=False, max_length=16),
})
PASSWORD_BODY = Body({"current_password": Field("string", max_length=256),
                      "new_password": Field("string", max_length=256)})
USER_BODY = Body({
    "username": Field("string", max_length=32, pattern=USERNAME_RE.pattern,
                      description="3-32 characters: lower-case letters, digits, '.', '_', '-'"),
    "role": Field("string", enum=STAFF_ROLES),
    "agent_code": Field("string", required=False, max_length=16, description="agents: their float account's code"),
})


async def openapi(web: "WebApp", request, ctx, body) -> tuple[int, Any]:
    return 200, web.openapi_document()


async def login(web: "WebApp", request, ctx, body) -> tuple[int, Any]:
    address = web.address(request)
    solved = False
    if body.get("captcha_id") is not None:
        solved = await web.captchas.check(body["captcha_id"], body.get("captcha_answer"))
    result = await web.users.authenticate(body["username"], body["password"], address=address,
                                          captcha_solved=solved)
    if not result.ok:
        raise web.login_refusal(result)
    token, session = await web.sessions.create(result.user)
    web.set_session_cookie(request, token)
    return 200, _session_view(session)


async def whoami(web: "WebApp", request, ctx: "WebContext", body) -> tuple[int, Any]:
    return 200, _session_view(ctx.session)


async def logout(web: "WebApp", request, ctx: "WebContext", body) -> tuple[int, Any]:
    await web.end_session(request, ctx)
    return 200, {"logged_out": True}


async def new_captcha(web: "WebApp", request, ctx, body) -> tuple[int, Any]:
    captcha_id, svg = await web.captchas.new()
    return 201, {"captcha_id": captcha_id, "svg": svg}


async def change_password(web: "WebApp", request, ctx: "WebContext", body) -> tuple[int, Any]:
    try:
        user = await web.users.change_password(ctx.session["username"], body["current_password"],
                                               body["new_password"], address=ctx.address)
    except UserError as exc:
        raise HttpError(400, str(exc))
    ctx.session.update(must_change_password=False, password=user.password_stamp)
    await web.sessions.update(ctx.token, ctx.session)
    return 200, _session_view(ctx.session)


async def list_users(web: "WebApp", request, ctx: "WebContext", body) -> tuple[int, Any]:
    return 200, {"users": [u.public() for u in await web.users.list()]}


async def create_user(web: "WebApp", request, ctx: "WebContext", body) -> tuple[int, Any]:
    user, initial = await web.create_user(ctx, body["username"], body["role"], agent_code=body.get("agent_code"))
    return 201, {**user.public(), "initial_password": initial}


def _session_view(session: dict) -> dict:
    return {"username": session["username"], "role": session["role"],
            "must_change_password": session["must_change_password"], "csrf_token": session["csrf"]}


_SESSION_SCHEMA = {"type": "object", "required": ["username", "role", "must_change_password", "csrf_token"],
                   "properties": {"username": {"type": "string"}, "role": {"type": "string", "enum": list(ROLES)},
                                  "must_change_password": {"type": "boolean"},
                                  "csrf_token": {"type": "string", "description": "send as X-CSRF-Token"}}}

ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/v1/openapi.json", openapi, "This document (OpenAPI 3.1).",
             response_schema={"type": "object"}),
    ApiRoute("POST", "/api/v1/session", login, "Log in: sets the session cookie and returns the CSRF token.",
             body=LOGIN_BODY, responses={401: "wrong username or password, or a CAPTCHA is required",
                                         423: "the account is locked for a while",
                                         429: "too many failures from this address"},
             response_schema=_SESSION_SCHEMA),
    ApiRoute("GET", "/api/v1/session", whoami, "The logged-in user and the session's CSRF token.",
             roles=EVERYONE, before_password_change=True, response_schema=_SESSION_SCHEMA),
    ApiRoute("DELETE", "/api/v1/session", logout, "Log out: the session is deleted.", roles=EVERYONE,
             before_password_change=True),
    ApiRoute("POST", "/api/v1/captcha", new_captcha, "A new CAPTCHA (one use, a few minutes).",
             responses={201: "the CAPTCHA's id and its SVG picture"},
             response_schema={"type": "object", "required": ["captcha_id", "svg"],
                              "properties": {"captcha_id": {"type": "string"}, "svg": {"type": "string"}}}),
    ApiRoute("POST", "/api/v1/password", change_password,
             "Change the own password (due first of all after an operator created the user).",
             roles=EVERYONE, body=PASSWORD_BODY, before_password_change=True, response_schema=_SESSION_SCHEMA),
    ApiRoute("GET", "/api/v1/users", list_users, "The web users (operations admins only).", roles=(OPS_ADMIN,)),
    ApiRoute("POST", "/api/v1/users", create_user,
             "Create a staff user; the answer carries its one-time initial password.", roles=(OPS_ADMIN,),
             body=USER_BODY, responses={201: "created; initial_password is shown only now"}),
) + console.ROUTES
