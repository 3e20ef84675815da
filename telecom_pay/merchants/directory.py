"""Who the merchants are: their profiles, API keys and fee plans, from config
or from an operator's onboarding (`telecom-pay merchants add`, /ops/merchants).

Onboarding asks the bank to verify the settlement account before anything
is written, then creates the ledger account, the profile, the card binding
and the audit row in one transaction: a merchant exists complete or not at
all. The API secret is derived from the server key and shown once.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from telecom_pay import accounts as acct
from telecom_pay.bank_port import BankStatus
from telecom_pay.config import FeeRule
from telecom_pay.ledger.chart import insert_account
from telecom_pay.ledger.tables import ACTIVE, MERCHANT, accounts

from . import signing
from .tables import CATEGORIES, REFUND_POLICIES, REVIEWED, merchant_profiles

CODE_RE = re.compile(r"^[A-Z0-9]{2,16}$")           # what ZF accepts (commands/parser.py)
_FEE_KEYS = ("fixed", "per_mille", "min", "max")


class MerchantError(ValueError):
    """A refused onboarding or change; the message is safe to show."""


@dataclass(frozen=True)
class MerchantProfile:
    account_id: int
    code: str
    name: str
    name_en: str
    status: str
    category: str
    refund_policy: str
    fee_plan: dict | None
    api_key_id: str | None
    notify_url: str | None
    source: str

    def fee_rule(self) -> FeeRule | None:
        return None if self.fee_plan is None else FeeRule(payer="merchant", **self.fee_plan)

    def public(self) -> dict[str, Any]:
        return {"merchant_code": self.code, "name": self.name, "name_en": self.name_en, "status": self.status,
                "category": self.category, "refund_policy": self.refund_policy, "fee_plan": self.fee_plan,
                "api_key_id": self.api_key_id, "notify_url": self.notify_url}


@dataclass(frozen=True)
class Onboarded:
    profile: MerchantProfile
    secret: str | None           # shown once; None when the merchant has no API key
    last4: str | None


def secret_for(server_key: bytes, key_id: str) -> str:
    return signing.derive_secret(server_key, key_id)


def check_code(code: Any) -> str:
    code = str(code or "").strip().upper()
    if not CODE_RE.match(code):
        raise MerchantError("the merchant code must be 2-16 letters or digits")
    return code


def check_fee_plan(plan: Any) -> dict | None:
    """A fee plan (fen and per mille, the merchant pays): None for the
    platform's [fees.payment]."""
    if plan in (None, {}, ""):
        return None
    if not isinstance(plan, dict) or set(plan) - set(_FEE_KEYS):
        raise MerchantError(f"a fee plan takes only {', '.join(_FEE_KEYS)}")
    out = {}
    for k in _FEE_KEYS:
        v = plan.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (k == "per_mille" and v > 1000):
            raise MerchantError(f"fee plan {k} must be a whole number >= 0" + (" and <= 1000" if k == "per_mille" else ""))
        out[k] = v
    if out.get("max") is not None and out.get("min", 0) > out["max"]:
        raise MerchantError("fee plan min is above max")
    return out


def check_notify_url(url: Any) -> str | None:
    if url in (None, ""):
        return None
    url = str(url).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 500:
        raise MerchantError("the notify URL must be an http or https URL of at most 500 characters")
    return url


def _check(category: Any, refund_policy: Any) -> tuple[str, str]:
    if category not in CATEGORIES:
        raise MerchantError(f"the category must be one of {', '.join(CATEGORIES)}")
    if refund_policy not in REFUND_POLICIES:
        raise MerchantError(f"the refund policy must be one of {', '.join(REFUND_POLICIES)}")
    return category, refund_policy


_PROFILE_Q = (sa.select(accounts.c.id, accounts.c.code, accounts.c.name, accounts.c.status,
                        merchant_profiles.c.name_en, merchant_profiles.c.category,
                        merchant_profiles.c.refund_policy, merchant_profiles.c.fee_plan,
                        merchant_profiles.c.api_key_id, merchant_profiles.c.notify_url, merchant_profiles.c.source)
              .select_from(accounts.join(merchant_profiles, merchant_profiles.c.account_id == accounts.c.id))
              .where(accounts.c.kind == MERCHANT))


def _profile(row) -> MerchantProfile | None:
    if row is None:
        return None
    return MerchantProfile(row.id, row.code, row.name, row.name_en or row.name, row.status, row.category,
                           row.refund_policy, row.fee_plan, row.api_key_id, row.notify_url, row.source)


async def get_profile(conn, *, code: str | None = None, account_id: int | None = None,
                      key_id: str | None = None) -> MerchantProfile | None:
    q = _PROFILE_Q
    if code is not None:
        q = q.where(accounts.c.code == code.upper())
    if account_id is not None:
        q = q.where(accounts.c.id == account_id)
    if key_id is not None:
        q = q.where(merchant_profiles.c.api_key_id == key_id)
    return _profile((await conn.execute(q)).first())


async def list_profiles(conn) -> list[MerchantProfile]:
    return [_profile(r) for r in (await conn.execute(_PROFILE_Q.order_by(accounts.c.code))).all()]


async def ensure_from_config(conn, account_id: int, entry: dict, now) -> None:
    """A `[[merchants]]` entry's profile: created at the first start, and the
    keys the entry names applied at each start (config is where such a
    merchant is managed). Bad values stop start-up, naming the merchant."""
    code = entry.get("code", "?")
    try:
        category, policy = _check(entry.get("category", "goods"), entry.get("refund_policy", REVIEWED))
        plan = check_fee_plan({k: entry[f"fee_{k}"] for k in _FEE_KEYS if f"fee_{k}" in entry})
        notify = check_notify_url(entry.get("notify_url"))
        key_id = entry.get("api_key_id")
        if key_id is not None and not signing.KEY_ID_RE.match(str(key_id)):
            raise MerchantError("api_key_id must look like mk_ and 8-40 letters or digits")
    except MerchantError as exc:
        from telecom_pay.config import ConfigError
        raise ConfigError(f"merchants.{code}: {exc}") from exc
    values = dict(name_en=entry.get("name_en") or entry.get("name") or code, category=category,
                  refund_policy=policy, fee_plan=plan, api_key_id=key_id, notify_url=notify, updated_at=now)
    have = (await conn.execute(sa.select(merchant_profiles.c.account_id).where(
        merchant_profiles.c.account_id == account_id))).first()
    if have is None:
        await conn.execute(merchant_profiles.insert().values(
            account_id=account_id, source="config", created_by="config", created_at=now,
            key_created_at=now if key_id else None, **values))
    else:
        await conn.execute(merchant_profiles.update().where(
            merchant_profiles.c.account_id == account_id, merchant_profiles.c.source == "config").values(**values))


async def onboard(service, *, code: str, name: str, name_en: str, category: str, refund_policy: str,
                  fee_plan: dict | None, notify_url: str | None, payout_pan: str, payout_expiry: str,
                  actor: str, channel: str, with_api_key: bool = True) -> Onboarded:
    """A new merchant, complete: the bank verifies the settlement account
    first; then one transaction writes the account, its profile, the card
    and the audit row."""
    code = check_code(code)
    name = str(name or "").strip()
    name_en = str(name_en or "").strip() or name
    if not (1 <= len(name) <= 100) or len(name_en) > 100:
        raise MerchantError("the name (zh) must be 1-100 characters, the English name at most 100")
    category, refund_policy = _check(category, refund_policy)
    fee_plan = check_fee_plan(fee_plan)
    notify_url = check_notify_url(notify_url)
    if not re.fullmatch(r"[0-9]{12,19}", str(payout_pan or "")) or not re.fullmatch(r"[0-9]{4}", str(payout_expiry or "")):
        raise MerchantError("the settlement account needs a card or account number (12-19 digits) and an expiry YYMM")
    if await service.ledger.read(lambda conn: acct.find_merchant(conn, code)) is not None:
        raise MerchantError(f"the merchant code {code} is taken")
    if service.bank is None:
        raise MerchantError("the bank is unavailable: the settlement account cannot be verified now")
    v = await service.bank.verify_card(pan=payout_pan, expiry=payout_expiry, holder_msisdn="")
    if v.status is not BankStatus.APPROVED or v.card is None:
        reason = getattr(v.decline, "value", None) or "declined"
        raise MerchantError(f"the bank did not verify the settlement account ({reason})")
    card = v.card
    key_id = signing.new_key_id() if with_api_key else None
    now = service.clock()

    async def job(conn):
        if await acct.find_merchant(conn, code) is not None:
            raise MerchantError(f"the merchant code {code} is taken")
        mid = await insert_account(conn, kind=MERCHANT, code=code, name=name, allow_negative=True)
        await conn.execute(merchant_profiles.insert().values(
            account_id=mid, name_en=name_en, category=category, fee_plan=fee_plan, refund_policy=refund_policy,
            api_key_id=key_id, key_created_at=now if key_id else None, notify_url=notify_url, source="onboard",
            created_by=actor[:64], created_at=now, updated_at=now))
        await acct.bind_card(conn, mid, token=card.token, last4=card.last4, bin=card.bin, card_type=card.card_type,
                             bank_code=card.bank_code, actor=actor[:64], channel=channel)
        await acct.audit(conn, actor=actor[:64], channel=channel, action="merchant_onboarded", account_id=mid,
                         code=code, name=name, name_en=name_en, category=category, refund_policy=refund_policy,
                         fee_plan=fee_plan, notify_url=notify_url, api_key_id=key_id, last4=card.last4)
        return await get_profile(conn, account_id=mid)
    profile = await service.ledger.write(job)
    service.merchant_names[code] = {"zh": name, "en": name_en}
    service.forget_merchant_plan(code)
    return Onboarded(profile, secret_for(service.settings.pin_key, key_id) if key_id else None, card.last4)


async def rotate_key(service, code: str, *, actor: str, channel: str) -> tuple[str, str]:
    """A new API key id (the old one stops working at once) and its secret, shown once."""
    code = check_code(code)
    key_id = signing.new_key_id()
    now = service.clock()

    async def job(conn):
        p = await get_profile(conn, code=code)
        if p is None:
            raise MerchantError(f"no merchant has the code {code}")
        await conn.execute(merchant_profiles.update().where(merchant_profiles.c.account_id == p.account_id).values(
            api_key_id=key_id, key_created_at=now, updated_at=now))
        await acct.audit(conn, actor=actor[:64], channel=channel, action="merchant_key_rotated",
                         account_id=p.account_id, code=code, before=p.api_key_id, after=key_id)
    await service.ledger.write(job)
    return key_id, secret_for(service.settings.pin_key, key_id)


async def update_profile(service, code: str, *, actor: str, channel: str, **changes) -> MerchantProfile:
    """An operator's (or the merchant admin's, for notify_url) change to a
    profile: status, names, category, refund policy, fee plan, notify URL."""
    code = check_code(code)
    allowed = {"name", "name_en", "category", "refund_policy", "fee_plan", "notify_url", "status"}
    if set(changes) - allowed:
        raise MerchantError(f"only {', '.join(sorted(allowed))} can be changed")
    now = service.clock()

    async def job(conn):
        p = await get_profile(conn, code=code)
        if p is None:
            raise MerchantError(f"no merchant has the code {code}")
        prof, acc = {}, {}
        if "category" in changes or "refund_policy" in changes:
            _check(changes.get("category", p.category), changes.get("refund_policy", p.refund_policy))
        for k in ("category", "refund_policy", "name_en"):
            if k in changes:
                prof[k] = str(changes[k])
        if "fee_plan" in changes:
            prof["fee_plan"] = check_fee_plan(changes["fee_plan"])
        if "notify_url" in changes:
            prof["notify_url"] = check_notify_url(changes["notify_url"])
        if "name" in changes:
            acc["name"] = str(changes["name"]).strip()[:100]
        if "status" in changes:
            if changes["status"] not in (ACTIVE, "disabled"):
                raise MerchantError("the status must be active or disabled")
            acc["status"] = changes["status"]
        if prof:
            await conn.execute(merchant_profiles.update().where(
                merchant_profiles.c.account_id == p.account_id).values(updated_at=now, **prof))
        if acc:
            await conn.execute(accounts.update().where(accounts.c.id == p.account_id).values(updated_at=now, **acc))
        await acct.audit(conn, actor=actor[:64], channel=channel, action="merchant_changed", account_id=p.account_id,
                         code=code, before={k: getattr(p, k) for k in changes}, after=changes)
        return await get_profile(conn, code=code)
    profile = await service.ledger.write(job)
    service.merchant_names[code] = {"zh": profile.name, "en": profile.name_en}
    service.forget_merchant_plan(code)
    return profile
