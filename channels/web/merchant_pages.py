"""The merchant back office (roles merchant_admin, merchant_staff,
merchant_readonly): `/merchant/login` (a CAPTCHA every time), orders with
their refunds and callbacks, refund review, settlement statements, the
merchant's own reconciliation, the notification log and the account's
settings and staff.

A merchant user acts for the merchant on its own `web_users` row
(`WebContext.merchant_id`, re-read with the row on every request), never
one a request names: every read goes through telecom_pay.merchants.backoffice,
whose queries filter on that merchant, so another merchant's order, batch,
refund, notification or user is a 404 exactly like one that does not exist.

Who may change what: read-only users read (orders, statements,
reconciliation); staff also request refunds and resend callbacks; the admin
also decides refunds, changes the notify URL and manages the merchant's
users. Everything else is a 403 from the page's `roles`.

The refunds and the callbacks' sender are their own modules
(telecom_pay.merchants.refunds, .notifications); the pages call them and
show what they answer.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from channels.web.http import HttpError, read_form
from channels.web.pages import Redirect
from channels.web.sessions import LOGIN_COOKIE, same_token
from telecom_pay.merchants import backoffice as bo
from telecom_pay.merchants import notifications, reconcile, refunds
from telecom_pay.merchants.directory import MerchantError, get_profile, update_profile
from telecom_pay.merchants.tables import R_REVIEW
from telecom_pay.money import AmountError, format_amount, parse_amount
from telecom_pay.webusers import (ACTIVE, DISABLED, MERCHANT_ADMIN, MERCHANT_READONLY, MERCHANT_ROLES, MERCHANT_STAFF,
                                  UserError)

if TYPE_CHECKING:
    from channels.web.app import WebApp, WebContext

MERCHANT = MERCHANT_ROLES
WRITERS = (MERCHANT_ADMIN, MERCHANT_STAFF)            # request refunds, resend callbacks
ADMIN = (MERCHANT_ADMIN,)                             # decide refunds, settings, staff
CSV_MAX_PAGES = 100                                   # 100 pages of 200: 20 000 orders a file
MAX_REASON = 200


def _cap(message: str) -> str:
    message = message.rstrip(".")
    return message[:1].upper() + message[1:] + "."


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _refund_key(form: dict[str, str]) -> str:
    key = form.get("refund_key", "").strip()
    if not (8 <= len(key) <= 64) or not all(c.isascii() and (c.isalnum() or c in "-_") for c in key):
        raise HttpError(400, "The form has no valid refund key; reload the order's page.")
    return key


class MerchantPages:
    def __init__(self, web: "WebApp"):
        self.web = web
        pages = self.pages = web.pages
        tz = web.core.service.tz if hasattr(web.core, "service") else None
        pages.env.filters["local_time"] = lambda text: self._local(text)
        self._tz = tz
        k = web.klein

        def route(path, fn, method="GET", roles=MERCHANT, **kw):
            k.route(path, methods=[method], endpoint=f"page {method} {path}")(
                pages._page(fn if method == "POST" else _with_query(fn), roles=roles, csrf=method == "POST",
                            login_page="/merchant/login", **kw))
        k.route("/merchant/login", methods=["GET"], endpoint="page merchant login")(
            pages._page(self.login_form, login=False))
        k.route("/merchant/login", methods=["POST"], endpoint="page merchant login post")(
            pages._page(self.login, login=False))
        route("/merchant", self.home)
        route("/merchant/orders", self.orders)
        route("/merchant/orders.csv", self.orders_csv)
        route("/merchant/orders/<order_id>", self.order)
        route("/merchant/orders/<order_id>/refund", self.request_refund, "POST", WRITERS)
        route("/merchant/refunds", self.refunds)
        route("/merchant/refunds/decide", self.decide_refund, "POST", ADMIN)
        route("/merchant/settlement", self.settlement)
        route("/merchant/settlement/<int:batch_id>", self.statement)
        route("/merchant/settlement/<int:batch_id>/statement.csv", self.statement_csv)
        route("/merchant/reconciliation", self.reconciliation)
        # an upload is a read, not a change: read-only users reconcile too
        route("/merchant/reconciliation", self.reconcile, "POST")
        route("/merchant/reconciliation.csv", self.reconcile_csv, "POST")
        route("/merchant/notifications", self.notifications)
        route("/merchant/notifications/<event_id>", self.notification)
        route("/merchant/notifications/<event_id>/resend", self.resend, "POST", WRITERS)
        route("/merchant/settings", self.settings)
        route("/merchant/settings/notify-url", self.notify_url, "POST", ADMIN)
        route("/merchant/staff", self.add_staff, "POST", ADMIN)
        route("/merchant/staff/change", self.change_staff, "POST", ADMIN)

    # ------------------------------------------------------------ plumbing

    @property
    def service(self):
        return self.web.core.service

    def _local(self, text: str | None) -> str:
        if not text:
            return ""
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return at.astimezone(self._tz).strftime("%Y-%m-%d %H:%M:%S") if self._tz else at.strftime("%Y-%m-%d %H:%M:%S")

    def _mid(self, ctx: "WebContext") -> int:
        if ctx.merchant_id is None:
            raise HttpError(403, "Your user is not attached to a merchant.")
        return ctx.merchant_id

    async def _read(self, fn, *args, **kw):
        return await self.service.ledger.read(lambda conn: fn(conn, *args, **kw))

    async def _profile(self, ctx: "WebContext"):
        mid = self._mid(ctx)
        profile = await self.service.ledger.read(lambda conn: get_profile(conn, account_id=mid))
        if profile is None:
            raise HttpError(403, "Your merchant has no profile on this platform.")
        return profile

    def render(self, request, template: str, ctx, status: int = 200, **values) -> bytes:
        return self.pages.render(request, template, status, ctx=ctx, admin=ctx.role == MERCHANT_ADMIN,
                                 writer=ctx.role in WRITERS, zone=str(self._tz or "local"), **values)

    def download(self, request, body: bytes, filename: str) -> bytes:
        request.setHeader("content-type", "text/csv; charset=utf-8")
        request.setHeader("content-disposition", f'attachment; filename="{filename}"')
        request.setHeader("cache-control", "no-store")
        request.setHeader("x-content-type-options", "nosniff")
        return body

    # ------------------------------------------------------------ login

    async def login_form(self, request, ctx, form, *, status: int = 200, error: str | None = None,
                         username: str = "") -> bytes:
        if ctx is not None and error is None:
            raise Redirect("/merchant" if ctx.role in MERCHANT else "/home")
        token = secrets.token_urlsafe(24)
        self.web.set_cookie(request, LOGIN_COOKIE, token)
        captcha_id, svg = await self.web.captchas.new()
        return self.pages.render(request, "merchant_login.html", status, login_token=token, error=error,
                                 username=username, captcha_id=captcha_id, captcha_svg=svg)

    async def login(self, request, ctx, form) -> bytes:
        """The login the other pages use (throttling, lock, first-login
        change), with the CAPTCHA checked first on every attempt: an
        unsolved one tries no password."""
        cookie = request.getCookie(LOGIN_COOKIE.encode())
        if not same_token(cookie.decode("ascii", "replace") if cookie else None, form.get("login_token")):
            raise HttpError(403, "The login form has expired or did not come from this site; reload the page.")
        username, password = form.get("username", "").strip()[:64], form.get("password", "")[:256]
        if not username or not password:
            return await self.login_form(request, None, form, status=400, error="Enter the username and password.",
                                         username=username)
        if not await self.web.captchas.check(form.get("captcha_id"), form.get("captcha_answer")):
            return await self.login_form(request, None, form, status=401, username=username,
                                         error="The digits of the picture were wrong; type the new ones.")
        result = await self.web.users.authenticate(username, password, address=self.web.address(request),
                                                   captcha_solved=True)
        if not result.ok:
            refusal = self.web.login_refusal(result)
            message = "Wrong username or password." if result.outcome == "wrong" else _cap(refusal.message)
            return await self.login_form(request, None, form, status=refusal.status, error=message,
                                         username=username)
        token, session = await self.web.sessions.create(result.user)
        self.web.set_session_cookie(request, token)
        self.web.set_cookie(request, LOGIN_COOKIE, "", max_age=0)
        if session["must_change_password"]:
            raise Redirect("/password")
        raise Redirect("/merchant" if result.user.role in MERCHANT else "/home")

    # ------------------------------------------------------------ home

    async def home(self, request, ctx, form) -> bytes:
        profile = await self._profile(ctx)
        mid = profile.account_id
        today = bo.day_of(self.service.clock(), self._tz)
        recent = await self._read(bo.list_orders, mid, bo.OrderQuery(date_from=today, date_to=today), self._tz,
                                  per_page=bo.MAX_PER_PAGE)
        confirmed = [o for o in recent["orders"] if o["status"] == "confirmed"]
        pending = await self._read(bo.list_refunds, mid, status=R_REVIEW)
        failed = await self._read(bo.list_notifications, mid, status="failed", per_page=bo.MAX_PER_PAGE)
        return self.render(request, "merchant_home.html", ctx, profile=profile, today=today.isoformat(),
                           today_count=len(confirmed), today_more=recent["more"],
                           today_gross=sum(o["amount"] for o in confirmed), pending_refunds=len(pending),
                           failed_notifications=len(failed["notifications"]))

    # ------------------------------------------------------------ orders

    def _query(self, form) -> "bo.OrderQuery":
        try:
            return bo.OrderQuery.from_form(form)
        except bo.QueryError as exc:
            raise HttpError(400, _cap(str(exc)))

    @staticmethod
    def _page_number(form, name: str = "page") -> int:
        text = form.get(name, "1").strip() or "1"
        if not text.isdigit() or not 1 <= int(text) <= bo.MAX_PAGE:
            raise HttpError(400, f"The page must be a number from 1 to {bo.MAX_PAGE}.")
        return int(text)

    async def orders(self, request, ctx, form) -> bytes:
        profile = await self._profile(ctx)
        try:
            q = self._query(form)
            page = self._page_number(form)
            per_text = form.get("per_page", "").strip() or "50"
            per_page = int(per_text) if per_text.isdigit() and len(per_text) < 6 else 0
            if not 1 <= per_page <= bo.MAX_PER_PAGE:
                raise HttpError(400, f"Per page must be a number from 1 to {bo.MAX_PER_PAGE}.")
        except HttpError as exc:
            return self.render(request, "merchant_orders.html", ctx, exc.status, profile=profile, error=exc.message,
                               form=form, listing=None, statuses=bo.PAYMENT_STATES, types=bo.ORDER_TYPES)
        listing = await self._read(bo.list_orders, profile.account_id, q, self._tz, page=page, per_page=per_page)
        base = q.as_form()
        if per_page != 50:
            base["per_page"] = str(per_page)
        link = lambda n: "/merchant/orders?" + urlencode({**base, "page": n})   # noqa: E731
        return self.render(request, "merchant_orders.html", ctx, profile=profile, form=form, listing=listing,
                           statuses=bo.PAYMENT_STATES, types=bo.ORDER_TYPES,
                           prev_link=link(page - 1) if page > 1 else None,
                           next_link=link(page + 1) if listing["more"] and page < bo.MAX_PAGE else None,
                           csv_link="/merchant/orders.csv" + ("?" + urlencode(q.as_form()) if q.as_form() else ""))

    async def orders_csv(self, request, ctx, form) -> bytes:
        import csv
        import io
        profile = await self._profile(ctx)
        q = self._query(form)
        cap = CSV_MAX_PAGES * bo.MAX_PER_PAGE
        if await self._read(bo.count_orders, profile.account_id, q, self._tz, cap=cap) > cap:
            raise HttpError(400, f"More than {cap} orders match: narrow the dates for the download.")
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\r\n")
        w.writerow(["created_at", "business_date", "id", "type", "order_no", "ref", "amount_yuan", "fee_yuan",
                    "refunded_yuan", "status", "decline_reason", "msisdn", "description"])
        page, more = 1, True
        while more and page <= CSV_MAX_PAGES:
            chunk = await self._read(bo.list_orders, profile.account_id, q, self._tz, page=page,
                                     per_page=bo.MAX_PER_PAGE)
            for o in chunk["orders"]:
                local = self._local(o["created_at"])
                w.writerow([o["created_at"], local[:10], o["id"], o["type"], _csv_cell(o["order_no"]), o["ref"] or "",
                            format_amount(o["amount"]), format_amount(o["fee"]), format_amount(o["refunded"]),
                            o["status"], o["decline_reason"] or "", o["msisdn"], _csv_cell(o["description"])])
            more, page = chunk["more"], page + 1
        span = "-".join(d.isoformat() for d in (q.date_from, q.date_to) if d) or "all"
        return self.download(request, out.getvalue().encode("utf-8"), f"orders-{profile.code}-{span}.csv")

    async def _order(self, ctx, order_id: str) -> dict:
        mid = self._mid(ctx)
        if len(order_id) > 64:
            raise HttpError(404, "No such order.")
        order = await self._read(bo.get_order, mid, order_id)
        if order is None:
            raise HttpError(404, "No such order.")
        return order

    async def order(self, request, ctx, form, *, order_id: str, status: int = 200, error: str | None = None,
                    notice: str | None = None, refund_form: dict | None = None) -> bytes:
        profile = await self._profile(ctx)
        order = await self._order(ctx, order_id)
        return self.render(request, "merchant_order.html", ctx, status, profile=profile, order=order, error=error,
                           notice=notice, refund_key="web-" + secrets.token_urlsafe(18),
                           refund_form=refund_form or {})

    async def request_refund(self, request, ctx, form, *, order_id: str) -> bytes:
        """A refund request from the order's page; the form's hidden key makes a
        double submit one request (the module answers the first one again)."""
        order = await self._order(ctx, order_id)
        try:
            key = _refund_key(form)
            try:
                amount = parse_amount(form.get("amount", ""))
            except AmountError:
                raise HttpError(400, "The amount must be in yuan, like 12.50, and above zero.")
            reason = form.get("reason", "").strip()
            if not reason or len(reason) > MAX_REASON:
                raise HttpError(400, f"Give a reason of at most {MAX_REASON} characters.")
            target = {"sp_payment_id": order["id"]} if order["type"] == "api" else {"payment_ref": order["ref"]}
            try:
                refund, created = await refunds.request_refund(
                    self.service, merchant_id=self._mid(ctx), amount=amount, refund_key=key, reason=reason,
                    requested_by=ctx.username, via="web", **target)
            except refunds.RefundError as exc:
                if exc.code == "exceeds_refundable":       # the module counts fen; the page speaks yuan
                    raise HttpError(exc.status, f"At most {format_amount(exc.extra['refundable'])} yuan of this "
                                                "payment can still be refunded.")
                raise HttpError(exc.status, _cap(exc.message))
        except HttpError as exc:
            return await self.order(request, ctx, {}, order_id=order_id, status=exc.status, error=exc.message,
                                    refund_form=form)
        state = refund["status"]
        told = {"succeeded": "refunded", "pending_review": "waiting for a merchant admin's review",
                "rejected": "rejected"}.get(state, state)
        return await self.order(request, ctx, {}, order_id=order_id, status=201 if created else 200, notice=(
            f"Refund {refund['id']} of {format_amount(refund['amount'])}: {told}."
            + ("" if created else " (This form was sent already: it is the same request.)")))

    # ------------------------------------------------------------ refund review

    async def refunds(self, request, ctx, form, *, status: int = 200, error: str | None = None,
                      notice: str | None = None) -> bytes:
        profile = await self._profile(ctx)
        mid = profile.account_id
        pending = await self._read(bo.list_refunds, mid, status=R_REVIEW)
        recent = [r for r in await self._read(bo.list_refunds, mid, limit=50) if r["status"] != R_REVIEW]
        return self.render(request, "merchant_refunds.html", ctx, status, profile=profile, pending=pending,
                           recent=recent, error=error, notice=notice)

    async def decide_refund(self, request, ctx, form) -> bytes:
        mid = self._mid(ctx)
        refund_id = form.get("refund_id", "").strip()
        decision = form.get("decision", "")
        reason = form.get("reason", "").strip()
        try:
            if decision not in ("approve", "reject"):
                raise HttpError(400, "Choose approve or reject.")
            if not reason or len(reason) > MAX_REASON:
                raise HttpError(400, f"Give a reason of at most {MAX_REASON} characters.")
            if len(refund_id) > 32 or await self._read(bo.get_refund, mid, refund_id) is None:
                raise HttpError(404, "No such refund request.")
            try:
                refund = await refunds.decide_refund(self.service, merchant_id=mid, refund_id=refund_id,
                                                     approve=decision == "approve", reason=reason,
                                                     decided_by=ctx.username, decider_role=ctx.role)
            except refunds.RefundError as exc:
                raise HttpError(exc.status, _cap(exc.message))
        except HttpError as exc:
            return await self.refunds(request, ctx, {}, status=exc.status, error=exc.message)
        return await self.refunds(request, ctx, {}, notice=f"Refund {refund_id}: {refund['status']}.")

    # ------------------------------------------------------------ settlement

    async def settlement(self, request, ctx, form) -> bytes:
        profile = await self._profile(ctx)
        batches = await self._read(bo.list_batches, profile.account_id)
        return self.render(request, "merchant_settlement.html", ctx, profile=profile, batches=batches)

    async def _batch(self, ctx, batch_id: int) -> dict:
        batch = await self._read(bo.get_batch, self._mid(ctx), batch_id)
        if batch is None:
            raise HttpError(404, "No such settlement batch.")
        return batch

    async def statement(self, request, ctx, form, *, batch_id: int) -> bytes:
        profile = await self._profile(ctx)
        return self.render(request, "merchant_statement.html", ctx, profile=profile,
                           batch=await self._batch(ctx, batch_id))

    async def statement_csv(self, request, ctx, form, *, batch_id: int) -> bytes:
        import csv
        import io
        profile = await self._profile(ctx)
        b = await self._batch(ctx, batch_id)
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\r\n")
        w.writerow(["merchant", "business_date", "payments", "gross_yuan", "refunds_yuan", "fees_yuan",
                    "fee_refunds_yuan", "carried_in_yuan", "net_yuan", "state", "payout_ref"])
        w.writerow([profile.code, b["business_date"], b["payments"], format_amount(b["gross"]),
                    format_amount(b["refunds"]), format_amount(b["fees"]), format_amount(b["fee_refunds"]),
                    format_amount(b["carried_in"]), format_amount(b["net"]), b["state"], b["payout_ref"] or ""])
        w.writerow([])
        w.writerow(["ref", "kind", "order_no", "at", "amount_yuan", "fee_yuan"])
        for line in b["lines"]:
            w.writerow([line["ref"], line["kind"], _csv_cell(line["order_no"]), line["at"],
                        format_amount(line["amount"]), format_amount(line["fee"])])
        return self.download(request, out.getvalue().encode("utf-8"),
                             f"statement-{profile.code}-{b['business_date']}.csv")

    # ------------------------------------------------------------ reconciliation

    async def reconciliation(self, request, ctx, form, *, status: int = 200, error: str | None = None,
                             result=None, text: str = "", day: str = "") -> bytes:
        profile = await self._profile(ctx)
        if not day:
            day = (bo.day_of(self.service.clock(), self._tz) - timedelta(days=1)).isoformat()   # yesterday
        return self.render(request, "merchant_reconciliation.html", ctx, status, profile=profile, error=error,
                           result=result, text=text, day=day, max_kb=reconcile.MAX_BYTES // 1024,
                           max_lines=reconcile.MAX_LINES)

    async def _reconciled(self, ctx, form) -> tuple["reconcile.Result", str]:
        mid = self._mid(ctx)
        try:
            day = bo.parse_day(form.get("day", ""))
        except bo.QueryError as exc:
            raise HttpError(400, _cap(str(exc)))
        upload = form.get("file", "")
        text = upload if upload.strip() else form.get("orders", "")
        try:
            lines = reconcile.parse(text)
        except reconcile.FileError as exc:
            raise HttpError(400, _cap(str(exc)))
        platform = await self._read(reconcile.platform_payments, mid, day, self._tz)
        return reconcile.match(day, lines, platform), "\r\n".join(f"{x.order},{format_amount(x.amount)}"
                                                                 for x in lines)

    async def reconcile(self, request, ctx, form) -> bytes:
        try:
            result, text = await self._reconciled(ctx, form)
        except HttpError as exc:
            return await self.reconciliation(request, ctx, {}, status=exc.status, error=exc.message,
                                             text=form.get("orders", "")[:reconcile.MAX_BYTES],
                                             day=form.get("day", "")[:10])
        return await self.reconciliation(request, ctx, {}, result=result, text=text, day=result.day.isoformat())

    async def reconcile_csv(self, request, ctx, form) -> bytes:
        profile = await self._profile(ctx)
        result, _ = await self._reconciled(ctx, form)
        return self.download(request, reconcile.result_csv(result),
                             f"reconciliation-{profile.code}-{result.day.isoformat()}.csv")

    # ------------------------------------------------------------ notifications

    async def notifications(self, request, ctx, form) -> bytes:
        profile = await self._profile(ctx)
        state = form.get("status", "").strip() or None
        if state is not None and state not in bo.NOTIFICATION_STATES:
            raise HttpError(400, f"The status must be one of {', '.join(bo.NOTIFICATION_STATES)}.")
        page = self._page_number(form)
        listing = await self._read(bo.list_notifications, profile.account_id, status=state, page=page)
        link = lambda n: "/merchant/notifications?" + urlencode({**({"status": state} if state else {}),  # noqa: E731
                                                                "page": n})
        return self.render(request, "merchant_notifications.html", ctx, profile=profile, listing=listing,
                           state=state or "", states=bo.NOTIFICATION_STATES,
                           prev_link=link(page - 1) if page > 1 else None,
                           next_link=link(page + 1) if listing["more"] else None)

    async def _notification(self, ctx, event_id: str) -> dict:
        n = None if len(event_id) > 40 else await self._read(bo.get_notification, self._mid(ctx), event_id)
        if n is None:
            raise HttpError(404, "No such notification.")
        return n

    async def notification(self, request, ctx, form, *, event_id: str, status: int = 200,
                           error: str | None = None, notice: str | None = None) -> bytes:
        profile = await self._profile(ctx)
        return self.render(request, "merchant_notification.html", ctx, status, profile=profile,
                           n=await self._notification(ctx, event_id), error=error, notice=notice)

    async def resend(self, request, ctx, form, *, event_id: str) -> bytes:
        await self._notification(ctx, event_id)            # another merchant's event: 404 before anything
        try:
            await notifications.resend(self.service, merchant_id=self._mid(ctx), event_id=event_id,
                                       actor=ctx.username)
        except notifications.ResendError as exc:          # the sender's refusal: shown, not a 500
            return await self.notification(request, ctx, {}, event_id=event_id, status=exc.status,
                                           error=_cap(exc.message))
        return await self.notification(request, ctx, {}, event_id=event_id,
                                       notice="Sent again; the attempt is in the list below.")

    # ------------------------------------------------------------ settings and staff

    async def settings(self, request, ctx, form, *, status: int = 200, error: str | None = None,
                       notice: str | None = None, created=None, initial: str | None = None) -> bytes:
        profile = await self._profile(ctx)
        staff = await self.web.users.merchant_staff(profile.account_id) if ctx.role == MERCHANT_ADMIN else []
        return self.render(request, "merchant_settings.html", ctx, status, profile=profile, staff=staff,
                           error=error, notice=notice, created=created, initial=initial, roles=MERCHANT_ROLES,
                           form=form)

    async def notify_url(self, request, ctx, form) -> bytes:
        profile = await self._profile(ctx)
        url = form.get("notify_url", "").strip()
        try:
            await update_profile(self.service, profile.code, actor=ctx.username, channel="web", notify_url=url or None)
        except MerchantError as exc:
            return await self.settings(request, ctx, form, status=400, error=_cap(str(exc)))
        return await self.settings(request, ctx, {}, notice="The notify URL is changed." if url
                                   else "The notify URL is removed: callbacks go only where a payment names one.")

    async def add_staff(self, request, ctx, form) -> bytes:
        profile = await self._profile(ctx)
        role = form.get("role", "")
        if role not in MERCHANT_ROLES:
            return await self.settings(request, ctx, form, status=400, error="Choose a role.")
        try:
            user, initial = await self.web.users.create(form.get("username", "").strip(), role, actor=ctx.username,
                                                        actor_role=ctx.role, address=ctx.address,
                                                        merchant_code=profile.code)
        except UserError as exc:
            return await self.settings(request, ctx, form, status=409 if "taken" in str(exc) else 400,
                                       error=_cap(str(exc)))
        return await self.settings(request, ctx, {}, status=201, created=user, initial=initial)

    async def change_staff(self, request, ctx, form) -> bytes:
        mid = self._mid(ctx)
        action = form.get("action", "")
        changes = {"disable": {"status": DISABLED}, "enable": {"status": ACTIVE}}.get(action)
        if changes is None and action == "role":
            changes = {"role": form.get("role", "")}
        username = form.get("username", "").strip()[:64]
        try:
            if changes is None:
                raise UserError("choose disable, enable or a new role")
            user = await self.web.users.change_merchant_user(username, merchant_id=mid, actor=ctx.username,
                                                             actor_role=ctx.role, address=ctx.address, **changes)
        except UserError as exc:
            status = 404 if str(exc) == "no such user" else 400
            return await self.settings(request, ctx, {}, status=status, error=_cap(str(exc)))
        return await self.settings(request, ctx, {}, notice=f"{user.username}: {user.status}, {user.role}.")


def _with_query(fn):
    """A GET page's filters are its query string (a search can be bookmarked)."""
    async def page(request, ctx, form, **kw):
        return await fn(request, ctx, read_form(request), **kw)
    page.__name__ = fn.__name__
    return page


__all__ = ["MerchantPages", "MERCHANT", "WRITERS", "ADMIN", "MERCHANT_READONLY"]
