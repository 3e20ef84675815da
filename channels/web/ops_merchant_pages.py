"""The operators' merchant pages (ops_admin): `/ops/merchants` lists the
merchants with their profiles and onboards a new one, `/ops/merchants/<code>`
shows one with its back-office users and disables or enables it, rotates its
API key and creates its first merchant admin.

Onboarding and the key rotation are telecom_pay.merchants.directory's (the
bank verifies the settlement account before anything is written; the
secret is derived, so it is shown here once and never again). A merchant
admin created here gets a one-time password, shown once, like a user from
/admin/users; it then adds its own staff in the back office.

The JSON API beside the pages (declared in ROUTES, joined in app.py):
`GET /api/v1/ops/merchants`, `POST /api/v1/ops/merchants` (onboarding, fees
in fen) and `POST /api/v1/ops/merchants/admin`; the forms and the API share
`onboard_merchant` and `create_admin`, so they cannot differ.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from channels.web.http import Body, Field, HttpError
from channels.web.routes import ApiRoute
from telecom_pay.merchants.directory import MerchantError, get_profile, list_profiles, onboard, rotate_key, \
    update_profile
from telecom_pay.merchants.tables import CATEGORIES, REFUND_POLICIES
from telecom_pay.money import AmountError, parse_amount
from telecom_pay.webusers import MERCHANT_ADMIN, OPS_ADMIN, USERNAME_RE, UserError

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


def _plain(name: str, value: str) -> str:
    """Names, codes and URLs are one printable line: a NUL or a lone
    surrogate is refused here, not by the database with a 500."""
    if not value.isprintable():
        raise HttpError(400, f"{name} contains a control character", field=name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise HttpError(400, f"{name} is not valid text", field=name)
    return value


async def onboard_merchant(web: "WebApp", ctx, *, code: str, name: str, name_en: str, category: str,
                           refund_policy: str, fee_plan: dict | None, notify_url: str | None, payout_pan: str,
                           payout_expiry: str):
    """directory.onboard for a web user; its refusals as statuses: 409 a
    code taken, 422 the bank declined the account, 503 no bank, 400 the rest."""
    for field_name, value in (("code", code), ("name", name), ("name_en", name_en), ("notify_url", notify_url or ""),
                              ("payout_pan", payout_pan), ("payout_expiry", payout_expiry)):
        _plain(field_name, value)
    try:
        return await onboard(web.core.service, code=code, name=name, name_en=name_en, category=category,
                             refund_policy=refund_policy, fee_plan=fee_plan, notify_url=notify_url,
                             payout_pan=payout_pan, payout_expiry=payout_expiry, actor=ctx.username, channel="web")
    except MerchantError as exc:
        text = str(exc)
        status = (409 if "taken" in text else 503 if "unavailable" in text else 422 if "bank did not" in text
                  else 400)
        raise HttpError(status, text)


async def create_admin(web: "WebApp", ctx, code: str, username: str):
    """A merchant's admin user (its one-time password returned, shown once)."""
    try:
        return await web.users.create(username, MERCHANT_ADMIN, actor=ctx.username, actor_role=ctx.role,
                                      address=ctx.address, merchant_code=code)
    except UserError as exc:
        text = str(exc)
        raise HttpError(409 if "taken" in text else 404 if "no merchant" in text else 400, text)


ONBOARD_BODY = Body({
    "code": Field("string", min_length=2, max_length=16, pattern="^[A-Za-z0-9]+$", example="LT07",
                  description="what subscribers type after ZF (2-16 letters or digits)"),
    "name": Field("string", min_length=1, max_length=100, example="彩票站", description="the name in Chinese"),
    "name_en": Field("string", required=False, max_length=100, example="Lottery kiosk"),
    "category": Field("string", enum=CATEGORIES),
    "refund_policy": Field("string", enum=REFUND_POLICIES,
                           description="automatic: refunds at once; reviewed: a merchant admin approves each"),
    "fee_fixed": Field("integer", required=False, minimum=0, maximum=10 ** 9, description="fen a payment"),
    "fee_per_mille": Field("integer", required=False, minimum=0, maximum=1000),
    "fee_min": Field("integer", required=False, minimum=0, maximum=10 ** 9, description="fen"),
    "fee_max": Field("integer", required=False, minimum=0, maximum=10 ** 9, description="fen"),
    "notify_url": Field("string", required=False, max_length=500, example="https://shop.example/notify",
                        description="http or https: where the callbacks go by default"),
    "payout_pan": Field("string", pattern="^[0-9]{12,19}$", example="6222025555550009",
                        description="the settlement card or account number (verified by the bank)"),
    "payout_expiry": Field("string", pattern="^[0-9]{4}$", example="3012", description="YYMM"),
})
ADMIN_BODY = Body({
    "merchant_code": Field("string", min_length=2, max_length=16, pattern="^[A-Za-z0-9]+$", example="M001"),
    "username": Field("string", max_length=32, pattern=USERNAME_RE.pattern, example="m001.boss",
                      description="3-32 characters: lower-case letters, digits, '.', '_', '-'"),
})
_PROFILE = {"type": "object", "required": ["merchant_code", "name", "status", "category", "refund_policy"],
            "properties": {"merchant_code": {"type": "string"}, "name": {"type": "string"},
                           "name_en": {"type": "string"}, "status": {"type": "string"},
                           "category": {"type": "string"}, "refund_policy": {"type": "string"},
                           "fee_plan": {"type": ["object", "null"]}, "api_key_id": {"type": ["string", "null"]},
                           "notify_url": {"type": ["string", "null"]}}}


async def api_list(web: "WebApp", request, ctx, body):
    return 200, {"merchants": [p.public() for p in await web.core.service.ledger.read(list_profiles)]}


async def api_onboard(web: "WebApp", request, ctx, body):
    plan = {k: body[f"fee_{k}"] for k in ("fixed", "per_mille", "min", "max") if f"fee_{k}" in body}
    done = await onboard_merchant(web, ctx, code=body["code"], name=body["name"], name_en=body.get("name_en", ""),
                                  category=body["category"], refund_policy=body["refund_policy"],
                                  fee_plan=plan or None, notify_url=body.get("notify_url") or None,
                                  payout_pan=body["payout_pan"], payout_expiry=body["payout_expiry"])
    return 201, {"merchant": done.profile.public(), "api_key_id": done.profile.api_key_id,
                 "api_secret": done.secret, "last4": done.last4}


async def api_create_admin(web: "WebApp", request, ctx, body):
    user, initial = await create_admin(web, ctx, body["merchant_code"], body["username"])
    return 201, {"username": user.username, "role": user.role, "merchant_code": body["merchant_code"].upper(),
                 "initial_password": initial}


ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/v1/ops/merchants", api_list, "The merchants and their profiles (operations admins only).",
             roles=OPS, response_schema={"type": "object", "required": ["merchants"],
                                         "properties": {"merchants": {"type": "array", "items": _PROFILE}}}),
    ApiRoute("POST", "/api/v1/ops/merchants", api_onboard,
             "Onboard a merchant: the bank verifies its settlement account first, then the account, profile, "
             "card and audit row are written together. The API secret is in this answer only.",
             roles=OPS, body=ONBOARD_BODY,
             responses={201: "onboarded; api_secret is shown only now",
                        400: "bad input (a bad code, fee plan min above max, a notify URL not http or https)",
                        409: "the merchant code is taken", 422: "the bank did not verify the settlement account",
                        503: "the bank is unavailable: the account cannot be verified now"},
             response_schema={"type": "object", "required": ["merchant", "api_key_id", "api_secret"],
                              "properties": {"merchant": _PROFILE, "api_key_id": {"type": "string"},
                                             "api_secret": {"type": "string"},
                                             "last4": {"type": ["string", "null"]}}}),
    ApiRoute("POST", "/api/v1/ops/merchants/admin", api_create_admin,
             "Create a merchant's admin user for the back office; the answer carries its one-time password.",
             roles=OPS, body=ADMIN_BODY,
             responses={201: "created; initial_password is shown only now", 404: "no merchant has this code",
                        409: "the username is taken"},
             response_schema={"type": "object", "required": ["username", "role", "merchant_code",
                                                             "initial_password"],
                              "properties": {"username": {"type": "string"}, "role": {"type": "string"},
                                             "merchant_code": {"type": "string"},
                                             "initial_password": {"type": "string"}}}),
)


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
            try:
                plan = fee_plan_of(form)
            except MerchantError as exc:
                raise HttpError(400, str(exc))
            done = await onboard_merchant(
                self.web, ctx, code=form.get("code", ""), name=form.get("name", ""), name_en=form.get("name_en", ""),
                category=form.get("category", ""), refund_policy=form.get("refund_policy", ""), fee_plan=plan,
                notify_url=form.get("notify_url", "").strip() or None,
                payout_pan=form.get("payout_pan", "").replace(" ", ""), payout_expiry=form.get("payout_expiry", "").strip())
        except HttpError as exc:
            return await self.merchants(request, ctx, form, status=exc.status, error=_cap(exc.message))
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
            user, initial = await create_admin(self.web, ctx, profile.code, form.get("username", "").strip())
        except HttpError as exc:
            return await self.merchant(request, ctx, {}, code=code, status=exc.status, error=_cap(exc.message))
        return await self.merchant(request, ctx, {}, code=code, status=201, created=user, initial=initial)
