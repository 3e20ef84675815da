"""The operators' merchant pages (ops_admin): `/ops/merchants` lists the
merchants with their profiles and onboards a new one, `/ops/merchants/<code>`
shows one with its back-office users and disables or enables it, rotates its
API key and creates its first merchant admin.

Onboarding and the key rotation are telecom_pay.merchants.directory's (the
bank verifies the settlement account before anything is written; the
secret is derived, so it is shown here once and never again). A merchant
admin created here gets a one-time password, shown once, like a user from
/admin/users; it then adds its own staff in the back office.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from channels.web.http import HttpError
from telecom_pay.merchants.directory import MerchantError, get_profile, list_profiles, onboard, rotate_key, \
    update_profile
from telecom_pay.merchants.tables import CATEGORIES, REFUND_POLICIES
from telecom_pay.money import AmountError, parse_amount
from telecom_pay.webusers import MERCHANT_ADMIN, OPS_ADMIN, UserError

if TYPE_CHECKING:
    from channels.web.app import WebApp

OPS = (OPS_ADMIN,)


def _cap(message: str) -> str:
    message = message.rstrip(".")
    return message[:1].upper() + message[1:] + "."


def _fen(text: str, name: str) -> int | None:
    """A fee in yuan as typed ("0", "0.50"), in fen; empty: not set."""
    text = text.strip()
    if not text:
        return None
    if text.strip("0.") == "" and text.replace(".", "").isdigit():
        return 0
    try:
        return parse_amount(text)
    except AmountError:
        raise MerchantError(f"the fee's {name} must be an amount in yuan, like 0.50")


def fee_plan_of(form: dict[str, str]) -> dict | None:
    plan = {}
    for key in ("fixed", "min", "max"):
        value = _fen(form.get(f"fee_{key}", ""), key)
        if value is not None:
            plan[key] = value
    per_mille = form.get("fee_per_mille", "").strip()
    if per_mille:
        if not per_mille.isdigit():
            raise MerchantError("the fee per mille must be a whole number from 0 to 1000")
        plan["per_mille"] = int(per_mille)
    return plan or None


class OpsMerchantPages:
    def __init__(self, web: "WebApp"):
        self.web = web
        self.pages = pages = web.pages
        k = web.klein

        def route(path, fn, method="GET"):
            k.route(path, methods=[method], endpoint=f"page {method} {path}")(
                pages._page(fn, roles=OPS, csrf=method == "POST"))
        route("/ops/merchants", self.merchants)
        route("/ops/merchants", self.onboard, "POST")
        route("/ops/merchants/<code>", self.merchant)
        route("/ops/merchants/<code>/status", self.status, "POST")
        route("/ops/merchants/<code>/rotate-key", self.rotate, "POST")
        route("/ops/merchants/<code>/admin", self.create_admin, "POST")

    @property
    def service(self):
        return self.web.core.service

    async def merchants(self, request, ctx, form, *, status: int = 200, error: str | None = None,
                        onboarded=None) -> bytes:
        profiles = await self.service.ledger.read(list_profiles)
        return self.pages.render(request, "ops_merchants.html", status, ctx=ctx, profiles=profiles, error=error,
                                 onboarded=onboarded, form=form if error else {}, categories=CATEGORIES,
                                 policies=REFUND_POLICIES)

    async def onboard(self, request, ctx, form) -> bytes:
        try:
            done = await onboard(
                self.service, code=form.get("code", ""), name=form.get("name", ""), name_en=form.get("name_en", ""),
                category=form.get("category", ""), refund_policy=form.get("refund_policy", ""),
                fee_plan=fee_plan_of(form), notify_url=form.get("notify_url", "").strip() or None,
                payout_pan=form.get("payout_pan", "").replace(" ", ""), payout_expiry=form.get("payout_expiry", "").strip(),
                actor=ctx.username, channel="web")
        except MerchantError as exc:
            text = str(exc)
            status = 409 if "taken" in text else 503 if "unavailable" in text else 422 if "bank did not" in text \
                else 400
            return await self.merchants(request, ctx, form, status=status, error=_cap(text))
        return await self.merchants(request, ctx, {}, status=201, onboarded=done)

    async def _profile(self, code: str):
        code = code.upper()
        profile = None if len(code) > 16 else await self.service.ledger.read(lambda conn: get_profile(conn, code=code))
        if profile is None:
            raise HttpError(404, "No such merchant.")
        return profile

    async def merchant(self, request, ctx, form, *, code: str, status: int = 200, error: str | None = None,
                       notice: str | None = None, secret: tuple | None = None, created=None,
                       initial: str | None = None) -> bytes:
        profile = await self._profile(code)
        users = await self.web.users.merchant_staff(profile.account_id)
        return self.pages.render(request, "ops_merchant.html", status, ctx=ctx, profile=profile, users=users,
                                 error=error, notice=notice, secret=secret, created=created, initial=initial)

    async def status(self, request, ctx, form, *, code: str) -> bytes:
        profile = await self._profile(code)
        wanted = form.get("status", "")
        if wanted not in ("active", "disabled"):
            return await self.merchant(request, ctx, {}, code=code, status=400, error="Choose active or disabled.")
        await update_profile(self.service, profile.code, actor=ctx.username, channel="web", status=wanted)
        return await self.merchant(request, ctx, {}, code=code, notice=f"{profile.code} is {wanted}.")

    async def rotate(self, request, ctx, form, *, code: str) -> bytes:
        profile = await self._profile(code)
        key_id, secret = await rotate_key(self.service, profile.code, actor=ctx.username, channel="web")
        return await self.merchant(request, ctx, {}, code=code, secret=(key_id, secret),
                                   notice="A new API key: the old one no longer signs.")

    async def create_admin(self, request, ctx, form, *, code: str) -> bytes:
        profile = await self._profile(code)
        try:
            user, initial = await self.web.users.create(form.get("username", "").strip(), MERCHANT_ADMIN,
                                                        actor=ctx.username, actor_role=ctx.role, address=ctx.address,
                                                        merchant_code=profile.code)
        except UserError as exc:
            return await self.merchant(request, ctx, {}, code=code, status=409 if "taken" in str(exc) else 400,
                                       error=_cap(str(exc)))
        return await self.merchant(request, ctx, {}, code=code, status=201, created=user, initial=initial)
