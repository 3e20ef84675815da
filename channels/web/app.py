"""The web server: Klein on the daemon's reactor, on its own endpoint.

    [web]
    factory = "channels.web.app:make_web"
    endpoint = "tcp:8080:interface=127.0.0.1"

Every API route is declared in channels.web.api.ROUTES (roles, body) and
every page in channels.web.pages; both go through the same session, role,
first-login and CSRF checks here, so no handler can forget one.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from klein import Klein
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.server import Site
from werkzeug.exceptions import MethodNotAllowed, NotFound

from channels.web import (api, audit_pages, bank_pages, pages, risk_pages, selfservice, selfservice_pages,
                          stats_pages)
from channels.web import merchant_api
from channels.web.captcha import Captchas
from channels.web.http import HttpError, client_address, limited_request, send_json, too_large
from channels.web.openapi import document
from channels.web.routes import ApiRoute
from channels.web.sessions import COOKIE, CSRF_HEADER, WebSessions, same_token
from telecom_pay.aio import as_deferred, wait_deferred
from telecom_pay.config import EMBEDDED_DATABASE_URL
from telecom_pay.core import Core
from telecom_pay.security import PasswordHasher
from telecom_pay.webusers import LoginResult, ThrottleSettings, UserError, WebUsers

log = Logger(namespace="telecom_pay.web")
RETRY_AFTER = 30          # seconds a 503 (the bank unavailable) asks a client to wait


@dataclass
class WebContext:
    token: str
    session: dict
    address: str

    @property
    def username(self) -> str:
        return self.session["username"]

    @property
    def role(self) -> str:
        return self.session["role"]

    @property
    def merchant_id(self) -> int | None:
        """Merchant staff: the merchant account they work for (from their row)."""
        return self.session.get("merchant_id")


class WebApp:
    def __init__(self, core: Core, config: dict[str, Any], *, users: WebUsers | None = None):
        self.core = core
        self.config = config
        self.secure_cookies = bool(config.get("secure_cookies", False))
        self.max_body = int(config.get("max_body", 64 * 1024))
        self.trusted_proxies = frozenset(str(a) for a in config.get("trusted_proxies", []))
        self.users = users or WebUsers(core.ledger, core.sessions, PasswordHasher(),
                                       throttle=ThrottleSettings.from_config(config))
        self.sessions = WebSessions(core.sessions, idle_timeout=float(config.get("idle_timeout", 900)))
        self.captchas = Captchas(core.sessions, ttl=float(config.get("captcha_ttl", 180)))
        self.routes: tuple[ApiRoute, ...] = (api.ROUTES + stats_pages.ROUTES + audit_pages.ROUTES + bank_pages.ROUTES
                                             + selfservice.ROUTES + risk_pages.ROUTES
                                             + merchant_api.ROUTES)
        from channels.web import ops_merchant_pages as _ops_merchants     # the operators' merchant API
        self.routes += _ops_merchants.ROUTES
        selfservice.install(self)
        self.klein = Klein()
        for route in self.routes:
            self.klein.route(route.path, methods=[route.method],
                             endpoint=f"api {route.method} {route.path}")(self._api_endpoint(route))
        self.pages = pages.Pages(self)
        self.stats_pages = stats_pages.StatsPages(self)
        self.audit_pages = audit_pages.AuditPages(self)
        self.bank_pages = bank_pages.BankPages(self)
        self.self_pages = selfservice_pages.SelfServicePages(self.pages)
        self.risk_pages = risk_pages.RiskPages(self)
        # the merchant back office and the operators' merchant pages
        from channels.web import merchant_pages, ops_merchant_pages
        self.merchant_pages = merchant_pages.MerchantPages(self)
        self.ops_merchant_pages = ops_merchant_pages.OpsMerchantPages(self)
        self.klein.handle_errors(NotFound)(self._not_found)
        self.klein.handle_errors(MethodNotAllowed)(self._not_allowed)
        self._openapi: dict | None = None

    def resource(self):
        return self.klein.resource()

    def site(self) -> "WebSite":
        site = WebSite(self.resource())
        site.requestFactory = limited_request(self.max_body)
        site.displayTracebacks = False
        return site

    def openapi_document(self) -> dict:
        if self._openapi is None:
            self._openapi = document(self.routes)
        return self._openapi

    # ------------------------------------------------------------ sessions and checks

    async def context(self, request) -> WebContext | None:
        raw = request.getCookie(COOKIE.encode())
        token = raw.decode("ascii", "replace") if raw else None
        session = await self.sessions.get(token)
        if session is None:
            return None
        # the user's row is the truth: a disabled user, or a session opened
        # with a password changed since (elsewhere, perhaps after a theft),
        # is logged out at once; a changed role applies at once
        user = await self.users.get(session["username"])
        if user is None or user.status != "active" or user.password_stamp != session.get("password"):
            await self.sessions.delete(token)
            return None
        if (user.role, user.must_change_password, user.merchant_id) != (
                session["role"], session["must_change_password"], session.get("merchant_id")):
            session.update(role=user.role, must_change_password=user.must_change_password,
                           merchant_id=user.merchant_id)
            await self.sessions.update(token, session)
        return WebContext(token, session, self.address(request))

    def address(self, request) -> str:
        return client_address(request, self.trusted_proxies)

    def set_cookie(self, request, name: str, value: str, *, max_age: int | None = None) -> None:
        parts = [f"{name}={value}", "Path=/", "HttpOnly", "SameSite=Strict"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if self.secure_cookies:
            parts.append("Secure")
        request.responseHeaders.addRawHeader(b"set-cookie", "; ".join(parts).encode("ascii"))

    def set_session_cookie(self, request, token: str) -> None:
        self.set_cookie(request, COOKIE, token)

    async def end_session(self, request, ctx: WebContext) -> None:
        await self.sessions.delete(ctx.token)
        self.set_cookie(request, COOKIE, "", max_age=0)
        await self.users.record_logout(ctx.session, address=ctx.address)

    def login_refusal(self, result: LoginResult) -> HttpError:
        if result.outcome == "throttled":
            return HttpError(429, "too many failed logins from this address; try again later", captcha_required=True)
        if result.outcome == "locked":
            return HttpError(423, "this account is locked after repeated failures; try again later",
                             captcha_required=True)
        if result.outcome == "captcha_required":
            return HttpError(401, "solve the CAPTCHA (POST /api/v1/captcha) and send its answer",
                             captcha_required=True)
        return HttpError(401, "wrong username or password", captcha_required=result.captcha_required)

    async def create_user(self, ctx: WebContext, username: str, role: str, *, agent_code: str | None):
        try:
            return await self.users.create(username, role, actor=ctx.username, actor_role=ctx.role,
                                           address=ctx.address, agent_code=agent_code or None)
        except UserError as exc:
            raise HttpError(409 if "taken" in str(exc) else 400, str(exc))

    # ------------------------------------------------------------ API dispatch

    def _api_endpoint(self, route: ApiRoute):
        def endpoint(request, **kw):
            return as_deferred(self._run_api(route, request, kw))
        endpoint.__name__ = route.operation_id
        return endpoint

    async def _run_api(self, route: ApiRoute, request, kw: dict) -> bytes:
        try:
            if too_large(request):
                raise HttpError(413, f"the body is over {self.max_body} bytes")
            ctx = None
            if route.signed:              # a merchant's signed request: checked before its body is parsed
                ctx = await merchant_api.authenticate(self, request)
            if route.roles is not None:
                ctx = await self.context(request)
                if ctx is None:
                    raise HttpError(401, "log in first (POST /api/v1/session)")
                if ctx.session["must_change_password"] and not route.before_password_change:
                    raise HttpError(403, "change the initial password first (POST /api/v1/password)",
                                    password_change_required=True)
                if ctx.role not in route.roles:
                    raise HttpError(403, f"not allowed for the role {ctx.role}")
                if route.csrf and not same_token(ctx.session["csrf"], _header(request, CSRF_HEADER)):
                    raise HttpError(403, f"missing or wrong CSRF token (header {CSRF_HEADER})")
            body = route.body.parse(request) if route.body is not None else None
            status, out = await route.handler(self, request, ctx, body, **kw)
            return send_json(request, status, out)
        except HttpError as exc:
            if exc.status == 503:             # the bank link is down: the same call may be tried again
                request.setHeader("retry-after", str(RETRY_AFTER))
            return send_json(request, exc.status, exc.body())
        except Exception:
            log.failure("{method} {path} failed", method=route.method, path=route.path)
            return send_json(request, 500, {"error": "internal error"})

    def _not_found(self, request, failure):
        if request.path.startswith(b"/api/"):
            return send_json(request, 404, {"error": "no such endpoint"})
        return self.pages.error(request, 404, "Not found")

    def _not_allowed(self, request, failure):
        allowed = sorted(failure.value.valid_methods or [])
        if allowed:
            request.setHeader("allow", ", ".join(allowed))
        if request.path.startswith(b"/api/"):
            return send_json(request, 405, {"error": f"method not allowed; use {', '.join(allowed)}"})
        return self.pages.error(request, 405, "Method not allowed")


def _header(request, name: str) -> str | None:
    value = request.getHeader(name)
    return value if isinstance(value, str) else None


class WebSite(Site):
    """Keeps its open connections, so a stop closes kept-alive browsers'
    connections instead of leaving them to the reactor's end."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.open_connections: set = set()

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        if proto is not None:
            self.open_connections.add(proto)
            lost = proto.connectionLost

            def connection_lost(reason, proto=proto, lost=lost):
                self.open_connections.discard(proto)
                return lost(reason)
            proto.connectionLost = connection_lost
        return proto

    def close_connections(self) -> None:
        for proto in list(self.open_connections):
            # twisted.web hands out a proxy of the HTTPChannel; the transport is the channel's
            channel = getattr(proto, "_channel", proto)
            if getattr(channel, "transport", None) is not None:
                channel.transport.loseConnection()


class WebChannel(Service):
    name = "web"

    def __init__(self, app: WebApp, endpoint: str, reactor, *, dev_users: list[dict] | None = None):
        self.app = app
        self.endpoint = endpoint
        self.reactor = reactor
        self.dev_users = dev_users or []
        self.port = None
        self.site: WebSite | None = None
        self.listen_error: str | None = None

    def startService(self):
        super().startService()
        as_deferred(self._start())
        self.merchant_worker = merchant_api.start_worker(self.app, self.reactor)

    async def _start(self) -> None:
        if self.dev_users:
            try:
                created = await self.app.users.seed(self.dev_users)
                if created:
                    log.warn("DEVELOPMENT DEFAULT web users created: {users}", users=", ".join(created))
            except Exception:
                log.failure("the development web users ([[web.dev_users]]) could not be created")
        try:
            self.site = self.app.site()
            self.port = await wait_deferred(serverFromString(self.reactor, self.endpoint).listen(self.site))
            log.info("web server on {endpoint} (port {port})", endpoint=self.endpoint, port=self.port.getHost().port)
        except Exception as exc:  # noqa: BLE001 - logged, and raised by wait_listening
            self.listen_error = str(exc) or type(exc).__name__
            log.failure("the web server could not start on {endpoint}", endpoint=self.endpoint)

    async def wait_listening(self) -> int:
        """The TCP port bound (tests bind port 0); raises if it cannot be."""
        while self.port is None:
            if self.listen_error is not None:
                raise OSError(f"the web server could not listen on {self.endpoint}: {self.listen_error}")
            await asyncio.sleep(0.01)
        return self.port.getHost().port

    def stopService(self):
        super().stopService()
        d = self.port.stopListening() if self.port is not None else defer.succeed(None)
        if getattr(self, "merchant_worker", None) is not None:
            d.addCallback(lambda _: self.merchant_worker.stop())
        if self.site is not None:
            d.addCallback(lambda _: self.site.close_connections())
        return d


def make_web(core: Core, config: dict[str, Any], reactor) -> WebChannel:
    """Factory named in config: `[web] factory = "channels.web.app:make_web"`.
    `[[web.dev_users]]` are seeded only beside the embedded default database:
    their passwords are in the repository."""
    dev = list(config.get("dev_users", [])) if core.settings.database_url == EMBEDDED_DATABASE_URL else []
    return WebChannel(WebApp(core, config), str(config.get("endpoint", "tcp:8080:interface=127.0.0.1")), reactor,
                      dev_users=dev)
