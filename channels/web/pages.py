"""Server-rendered pages (Jinja2): login, the first-login password change,
logout, a home page per role, and the admin page that creates users (the
agent console's pages are in channels/web/console_pages.py).

Pages work without JavaScript; channels/web/static/app.js only adds
conveniences (a new CAPTCHA picture without a reload, copying the initial
password). Every asset is served from channels/web/static by the daemon,
and the Content-Security-Policy allows nothing from elsewhere.
"""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Awaitable, Callable

from jinja2 import Environment, FileSystemLoader, select_autoescape
from twisted.logger import Logger
from twisted.web.pages import notFound
from twisted.web.static import File

from channels.web.http import HttpError, read_form
from channels.web.sessions import LOGIN_COOKIE, same_token
from telecom_pay.aio import as_deferred
from telecom_pay.webusers import MERCHANT_ROLES, OPS_ADMIN, ROLES, STAFF_ROLES, UserError

if TYPE_CHECKING:
    from channels.web.app import WebApp, WebContext

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
log = Logger(namespace="telecom_pay.web")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
ROLE_TITLES = {"agent": "Agent", "agent_supervisor": "Agent supervisor", "ops_admin": "Operations admin",
               "subscriber": "Subscriber", "merchant_admin": "Merchant admin", "merchant_staff": "Merchant staff",
               "merchant_readonly": "Merchant (read-only)"}


class Redirect(Exception):
    def __init__(self, location: str):
        super().__init__(location)
        self.location = location


class Pages:
    def __init__(self, web: "WebApp"):
        self.web = web
        self.env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.globals["role_title"] = lambda role: ROLE_TITLES.get(role, role)
        k = web.klein
        k.route("/", methods=["GET"], endpoint="page index")(self._page(self.index, login=False))
        k.route("/login", methods=["GET"], endpoint="page login")(self._page(self.login_form, login=False))
        k.route("/login", methods=["POST"], endpoint="page login post")(self._page(self.login, login=False))
        k.route("/password", methods=["GET"], endpoint="page password")(
            self._page(self.password_form, before_password_change=True))
        k.route("/password", methods=["POST"], endpoint="page password post")(
            self._page(self.password, before_password_change=True, csrf=True))
        k.route("/logout", methods=["POST"], endpoint="page logout")(
            self._page(self.logout, before_password_change=True, csrf=True))
        k.route("/home", methods=["GET"], endpoint="page home")(self._page(self.home))
        k.route("/admin/users", methods=["GET"], endpoint="page users")(
            self._page(self.users_form, roles=(OPS_ADMIN,)))
        k.route("/admin/users", methods=["POST"], endpoint="page users post")(
            self._page(self.create_user, roles=(OPS_ADMIN,), csrf=True))
        from channels.web.console_pages import ConsolePages     # it builds on this module
        self.console = ConsolePages(self)
        static = File(str(STATIC))
        static.directoryListing = lambda: notFound()
        k.route("/static/", branch=True, methods=["GET"], endpoint="page static")(lambda request: static)

    # ------------------------------------------------------------ plumbing

    def _page(self, fn: Callable[..., Awaitable[bytes]], *, login: bool = True, roles=ROLES,
              before_password_change: bool = False, csrf: bool = False, login_page: str = "/login"):
        """`login_page`: where a visitor not logged in is sent (the back
        office has its own, with the CAPTCHA every time)."""
        async def run(request, **kw) -> bytes:
            ctx = None
            try:
                ctx = await self.web.context(request)
                if login:
                    if ctx is None:
                        raise Redirect(login_page)
                    if ctx.session["must_change_password"] and not before_password_change:
                        raise Redirect("/password")
                    if ctx.role not in roles:
                        raise HttpError(403, "This page is not for your role.")
                form = read_form(request) if request.method == b"POST" else {}
                if csrf and not same_token(ctx.session["csrf"], form.get("csrf_token")):
                    raise HttpError(403, "The form has expired or did not come from this site; reload the page.")
                return await fn(request, ctx, form, **kw)
            except Redirect as r:
                request.setResponseCode(303)
                request.setHeader("location", r.location)
                return b""
            except HttpError as exc:
                return self.error(request, exc.status, exc.message, ctx=ctx)
            except Exception:
                log.failure("page {path} failed", path=request.path)
                return self.error(request, 500, "Something went wrong.")

        def endpoint(request, **kw):           # kw: the path's variables (/merchant/orders/<order_id>)
            return as_deferred(run(request, **kw))
        endpoint.__name__ = fn.__name__
        return endpoint

    def render(self, request, template: str, code: int = 200, **values) -> bytes:
        request.setResponseCode(code)
        request.setHeader("content-type", "text/html; charset=utf-8")
        request.setHeader("content-security-policy", CSP)
        request.setHeader("x-content-type-options", "nosniff")
        request.setHeader("referrer-policy", "same-origin")
        request.setHeader("cache-control", "no-store")
        return self.env.get_template(template).render(**values).encode("utf-8")

    def error(self, request, status: int, message: str, *, ctx: "WebContext | None" = None) -> bytes:
        """`ctx`: a logged-in user's error page keeps the bar (who, Log out)."""
        return self.render(request, "error.html", status, status=status, message=message, ctx=ctx)

    # ------------------------------------------------------------ pages

    async def index(self, request, ctx, form) -> bytes:
        raise Redirect("/home" if ctx is not None else "/login")

    async def login_form(self, request, ctx, form, *, status: int = 200, error: str | None = None,
                         username: str = "", captcha: bool | None = None) -> bytes:
        if ctx is not None and error is None:
            raise Redirect("/home")
        token = secrets.token_urlsafe(24)
        self.web.set_cookie(request, LOGIN_COOKIE, token)
        if captcha is None:
            captcha = await self.web.users.captcha_required("", self.web.address(request))
        captcha_id, svg = await self.web.captchas.new() if captcha else (None, None)
        return self.render(request, "login.html", status, login_token=token, error=error, username=username,
                           captcha_id=captcha_id, captcha_svg=svg)

    async def login(self, request, ctx, form) -> bytes:
        cookie = request.getCookie(LOGIN_COOKIE.encode())
        if not same_token(cookie.decode("ascii", "replace") if cookie else None, form.get("login_token")):
            raise HttpError(403, "The login form has expired or did not come from this site; reload the page.")
        username, password = form.get("username", "").strip()[:64], form.get("password", "")[:256]
        if not username or not password:
            return await self.login_form(request, None, form, status=400, error="Enter the username and password.",
                                         username=username)
        solved = False
        if form.get("captcha_id"):
            solved = await self.web.captchas.check(form["captcha_id"], form.get("captcha_answer"))
        result = await self.web.users.authenticate(username, password, address=self.web.address(request),
                                                   captcha_solved=solved)
        if not result.ok:
            refusal = self.web.login_refusal(result)
            message = {"captcha_required": "Type the digits of the picture, then log in again.",
                       "wrong": "Wrong username or password."}.get(result.outcome, refusal.message.capitalize() + ".")
            return await self.login_form(request, None, form, status=refusal.status, error=message,
                                         username=username, captcha=result.captcha_required)
        token, session = await self.web.sessions.create(result.user)
        self.web.set_session_cookie(request, token)
        self.web.set_cookie(request, LOGIN_COOKIE, "", max_age=0)
        raise Redirect("/password" if session["must_change_password"] else "/home")

    async def password_form(self, request, ctx: "WebContext", form, *, status: int = 200,
                            error: str | None = None) -> bytes:
        return self.render(request, "password.html", status, ctx=ctx, error=error,
                           first=ctx.session["must_change_password"])

    async def password(self, request, ctx: "WebContext", form) -> bytes:
        new = form.get("new_password", "")
        if new != form.get("new_password_again", ""):
            return await self.password_form(request, ctx, form, status=400, error="The two new passwords differ.")
        try:
            user = await self.web.users.change_password(ctx.username, form.get("current_password", ""), new,
                                                        address=ctx.address)
        except UserError as exc:
            return await self.password_form(request, ctx, form, status=400, error=str(exc).capitalize() + ".")
        ctx.session.update(must_change_password=False, password=user.password_stamp)
        await self.web.sessions.update(ctx.token, ctx.session)
        raise Redirect("/home")

    async def logout(self, request, ctx: "WebContext", form) -> bytes:
        await self.web.end_session(request, ctx)
        # merchant staff log in where the CAPTCHA is always asked
        raise Redirect("/merchant/login" if ctx.role in MERCHANT_ROLES else "/login")

    async def home(self, request, ctx: "WebContext", form) -> bytes:
        if ctx.role == "subscriber":
            raise Redirect("/me")           # channels/web/selfservice_pages.py
        if ctx.role in MERCHANT_ROLES:
            raise Redirect("/merchant")     # channels/web/merchant_pages.py
        user = await self.web.users.get(ctx.username)
        return self.render(request, "home.html", ctx=ctx, user=user)

    async def users_form(self, request, ctx: "WebContext", form, *, status: int = 200, error: str | None = None,
                         created=None, initial: str | None = None) -> bytes:
        return self.render(request, "admin_users.html", status, ctx=ctx, users=await self.web.users.list(),
                           roles=STAFF_ROLES, error=error, created=created, initial=initial, form=form)

    async def create_user(self, request, ctx: "WebContext", form) -> bytes:
        role = form.get("role", "")
        if role not in STAFF_ROLES:
            return await self.users_form(request, ctx, form, status=400, error="Choose a role.")
        try:
            user, initial = await self.web.create_user(ctx, form.get("username", "").strip(), role,
                                                       agent_code=form.get("agent_code", "").strip() or None)
        except HttpError as exc:
            return await self.users_form(request, ctx, form, status=exc.status, error=exc.message.capitalize() + ".")
        return await self.users_form(request, ctx, {}, status=201, created=user, initial=initial)
