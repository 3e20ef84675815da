"""The subscriber's pages: /open and /forgot (before a login, each in two
steps: the number, then the SMS code), and /me with the statement (and
its CSV), payments, the bank card and the settings.

The forms run the operations of channels/web/selfservice.py, as the API
does. The forms before a login carry their own token, kept in a cookie
(`tp_self`) as the login form does, so another site cannot post them.
Each payment form carries a fresh random idempotency key: submitting the
same form twice pays once.
"""
from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from channels.web import selfservice as ss
from channels.web.console import message_of
from channels.web.http import HttpError, from_form
from channels.web.pages import Redirect
from channels.web.sessions import same_token
from telecom_pay.otp import OPEN, RESET

if TYPE_CHECKING:
    from channels.web.app import WebContext
    from channels.web.pages import Pages

FORM_COOKIE = "tp_self"
SELF = ss.SELF


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


class SelfServicePages:
    def __init__(self, pages: "Pages"):
        self.pages = pages
        self.web = pages.web
        k, page = self.web.klein, pages._page
        k.route("/open", methods=["GET"], endpoint="page self open")(page(self.open_form, login=False))
        k.route("/open/code", methods=["POST"], endpoint="page self open code")(page(self.open_code, login=False))
        k.route("/open", methods=["POST"], endpoint="page self open post")(page(self.open, login=False))
        k.route("/forgot", methods=["GET"], endpoint="page self forgot")(page(self.forgot_form, login=False))
        k.route("/forgot/code", methods=["POST"], endpoint="page self forgot code")(
            page(self.forgot_code, login=False))
        k.route("/forgot", methods=["POST"], endpoint="page self forgot post")(page(self.forgot, login=False))
        k.route("/me", methods=["GET"], endpoint="page self home")(page(self.home, roles=SELF))
        k.route("/me/statement", methods=["GET"], endpoint="page self statement")(page(self.statement, roles=SELF))
        k.route("/me/statement.csv", methods=["GET"], endpoint="page self statement csv")(
            page(self.statement_csv, roles=SELF))
        for name in ("pay", "card", "settings"):
            k.route(f"/me/{name}", methods=["GET"], endpoint=f"page self {name}")(
                page(getattr(self, name), roles=SELF))
        k.route("/me/operation", methods=["POST"], endpoint="page self operation")(
            page(self.operation, roles=SELF, csrf=True))

    # ------------------------------------------------------------ before a login

    def _form_token(self, request) -> str:
        token = secrets.token_urlsafe(24)
        self.web.set_cookie(request, FORM_COOKIE, token)
        return token

    def _check_form(self, request, form) -> None:
        cookie = request.getCookie(FORM_COOKIE.encode())
        if not same_token(cookie.decode("ascii", "replace") if cookie else None, form.get("form_token")):
            raise HttpError(403, "The form has expired or did not come from this site; reload the page.")

    def _public(self, request, template: str, status: int = 200, **values) -> bytes:
        return self.pages.render(request, template, status, ctx=None, form_token=self._form_token(request),
                                 **values)

    async def open_form(self, request, ctx, form, *, status: int = 200, error: str | None = None) -> bytes:
        if ctx is not None:
            raise Redirect("/home")
        return self._public(request, "self_open.html", status, step="number", error=error,
                            msisdn=form.get("msisdn", ""))

    async def _code(self, request, form, purpose: str, number_step, code_step) -> bytes:
        """Step 1 of /open and /forgot: the code is sent (or not: the page
        reads the same), then the code's form."""
        self._check_form(request, form)
        try:
            notice = await ss.request_code(self.web, request, purpose, from_form(ss.CODE_BODY, form)["msisdn"])
        except HttpError as exc:
            return await number_step(request, None, form, status=exc.status, error=_capital(exc.message))
        return code_step(request, form, notice=notice)

    async def open_code(self, request, ctx, form) -> bytes:
        return await self._code(request, form, OPEN, self.open_form, self._open_step)

    def _open_step(self, request, form, *, status: int = 200, notice: str | None = None,
                   error: str | None = None) -> bytes:
        return self._public(request, "self_open.html", status, step="code", notice=notice, error=error,
                            msisdn=form.get("msisdn", ""), agreement=ss.AGREEMENT_TEXT,
                            agreement_version=ss.AGREEMENT_VERSION)

    async def open(self, request, ctx, form) -> bytes:
        self._check_form(request, form)
        if form.get("password", "") != form.get("password_again", ""):
            return self._open_step(request, form, status=400, error="The two passwords differ.")
        if not form.get("accept_agreement"):
            return self._open_step(request, form, status=400, error="Accept the agreement to open an account.")
        try:
            msisdn, _ = await ss.open_on_web(self.web, request, from_form(ss.OPEN_BODY, form))
        except HttpError as exc:
            return self._open_step(request, form, status=exc.status, error=_capital(exc.message))
        token, _ = await self.web.sessions.create(await self.web.users.get(msisdn))
        self.web.set_session_cookie(request, token)
        self.web.set_cookie(request, FORM_COOKIE, "", max_age=0)
        raise Redirect("/me?opened=1")

    async def forgot_form(self, request, ctx, form, *, status: int = 200, error: str | None = None) -> bytes:
        return self._public(request, "self_forgot.html", status, step="number", error=error,
                            msisdn=form.get("msisdn", ""))

    async def forgot_code(self, request, ctx, form) -> bytes:
        return await self._code(request, form, RESET, self.forgot_form, self._forgot_step)

    def _forgot_step(self, request, form, *, status: int = 200, notice: str | None = None,
                     error: str | None = None) -> bytes:
        return self._public(request, "self_forgot.html", status, step="code", notice=notice, error=error,
                            msisdn=form.get("msisdn", ""))

    async def forgot(self, request, ctx, form) -> bytes:
        self._check_form(request, form)
        if form.get("new_password", "") != form.get("new_password_again", ""):
            return self._forgot_step(request, form, status=400, error="The two passwords differ.")
        try:
            await ss.reset_password(self.web, request, from_form(ss.RESET_BODY, form))
        except HttpError as exc:
            return self._forgot_step(request, form, status=exc.status, error=_capital(exc.message))
        if ctx is not None:
            await self.web.end_session(request, ctx)
        return self._public(request, "self_forgot.html", step="done")

    # ------------------------------------------------------------ logged in

    async def _render(self, request, ctx: "WebContext", template: str, *, status: int = 200,
                      error: str | None = None, notice: str | None = None, **values) -> bytes:
        me = await ss.overview(self.web, await ss.own_number(self.web, ctx))
        return self.pages.render(request, template, status, ctx=ctx, me=me, error=error, notice=notice,
                                 ops=ss.BY_NAME, **values)

    async def home(self, request, ctx: "WebContext", form, **kw) -> bytes:
        if request.args.get(b"opened") and "notice" not in kw:
            kw["notice"] = "Your wallet is open. Your payment PIN comes by SMS: change it under Settings first."
        statement = await ss.statement_page(self.web, await ss.own_number(self.web, ctx), 1, per_page=5)
        return await self._render(request, ctx, "self_home.html", recent=statement["lines"], **kw)

    async def statement(self, request, ctx: "WebContext", form) -> bytes:
        try:
            page = int(request.args.get(b"page", [b"1"])[0].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            page = 1
        page = min(max(page, 1), 100_000)
        return await self._render(request, ctx, "self_statement.html",
                                  statement=await ss.statement_page(self.web, await ss.own_number(self.web, ctx),
                                                                    page))

    async def statement_csv(self, request, ctx: "WebContext", form) -> bytes:
        msisdn = await ss.own_number(self.web, ctx)
        body = await ss.statement_csv(self.web, msisdn)
        request.setHeader("content-type", "text/csv; charset=utf-8")
        request.setHeader("content-disposition", f'attachment; filename="statement-{msisdn}.csv"')
        request.setHeader("cache-control", "no-store")
        request.setHeader("x-content-type-options", "nosniff")
        return body

    async def pay(self, request, ctx: "WebContext", form, **kw) -> bytes:
        merchants = [{"code": m["code"], "name": m.get("name_en") or m.get("name", m["code"])}
                     for m in self.web.core.settings.merchants]
        return await self._render(request, ctx, "self_pay.html", merchants=merchants,
                                  pay_key=secrets.token_urlsafe(16), send_key=secrets.token_urlsafe(16), **kw)

    async def card(self, request, ctx: "WebContext", form, **kw) -> bytes:
        return await self._render(request, ctx, "self_card.html", **kw)

    async def settings(self, request, ctx: "WebContext", form, **kw) -> bytes:
        return await self._render(request, ctx, "self_settings.html", **kw)

    async def operation(self, request, ctx: "WebContext", form) -> bytes:
        op = ss.BY_NAME.get(form.get("op", ""))
        if op is None:
            raise HttpError(400, "No such operation.")
        back = getattr(self, op.page)
        try:
            body = from_form(op.body, form) if op.body is not None else {}
            result = await ss.perform(self.web, ctx, op, body)
        except HttpError as exc:
            return await back(request, ctx, {}, status=exc.status, error=_capital(exc.message))
        text = message_of(result)
        if not result.ok:
            return await back(request, ctx, {}, status=ss.self_status(result), error=text)
        return await back(request, ctx, {}, notice=f"{op.title}: {text}")
