"""Merchant profiles and onboarding: complete or not at all, verified by the
bank first; config merchants get profiles; fee plans apply to ZF."""
import pytest

from telecom_pay.merchants import directory, signing
from telecom_pay.merchants.tables import merchant_profiles
from telecom_pay.webusers import UserError, WebUsers
from tests.aio import aio_test
from tests.bankdouble import InProcessBank
from tests.servicekit import MSISDN, funded, make_service, shutdown

PAYOUT = "6222025555550009"


async def _svc(database_url, **kw):
    bank = InProcessBank()
    bank.add_card(PAYOUT, balance=0)
    return await make_service(database_url, bank=bank, **kw)


def _args(**kw):
    base = dict(code="lt01", name="彩票站", name_en="Lottery kiosk", category="lottery", refund_policy="reviewed",
                fee_plan={"per_mille": 10, "min": 5}, notify_url="http://127.0.0.1:9/notify", payout_pan=PAYOUT,
                payout_expiry="3012", actor="cli:test", channel="operator")
    base.update(kw)
    return base


@aio_test
async def test_onboarding_is_complete_and_its_fee_plan_applies(database_url):
    svc = await _svc(database_url)
    try:
        done = await directory.onboard(svc, **_args())
        p = done.profile
        assert (p.code, p.category, p.refund_policy, p.name_en) == ("LT01", "lottery", "reviewed", "Lottery kiosk")
        assert signing.KEY_ID_RE.match(p.api_key_id)
        assert done.secret == directory.secret_for(svc.settings.pin_key, p.api_key_id)
        assert done.last4 == PAYOUT[-4:]
        # nothing secret in the table
        rows = await svc.ledger.read(lambda c: c.execute(merchant_profiles.select()))
        assert done.secret not in repr(rows.all())
        with pytest.raises(directory.MerchantError, match="taken"):
            await directory.onboard(svc, **_args())
        pin = await funded(svc, amount=50_000)
        r = await svc.pay(MSISDN, "LT01", 10_000, pin, channel="t", key="p1")
        assert r.ok, r
        op = await svc.ledger.get_operation("p1")
        assert op.request["details"]["merchant_fee"] == 100       # 10 per mille, not [fees.payment]'s 6
        key2, secret2 = await directory.rotate_key(svc, "LT01", actor="cli:test", channel="operator")
        got = await svc.ledger.read(lambda c: directory.get_profile(c, key_id=key2))
        assert got.code == "LT01" and secret2 != done.secret
        assert await svc.ledger.read(lambda c: directory.get_profile(c, key_id=p.api_key_id)) is None
    finally:
        await shutdown(svc)


@aio_test
async def test_a_declined_settlement_account_onboards_nothing(sqlite_url):
    svc = await _svc(sqlite_url)
    try:
        with pytest.raises(directory.MerchantError, match="did not verify"):
            await directory.onboard(svc, **_args(payout_pan="6222029999999999"))
        assert await svc.ledger.read(lambda c: directory.get_profile(c, code="LT01")) is None
        for bad, match in (({"category": "cars"}, "category"), ({"refund_policy": "never"}, "refund policy"),
                           ({"fee_plan": {"per_mille": -1}}, "fee plan"), ({"notify_url": "ftp://x/y"}, "notify URL"),
                           ({"code": "a"}, "code"), ({"payout_pan": "12"}, "settlement account")):
            with pytest.raises(directory.MerchantError, match=match):
                await directory.onboard(svc, **_args(**bad))
    finally:
        await shutdown(svc)


@aio_test
async def test_config_merchants_get_profiles_and_merchant_staff_belong_to_one(sqlite_url):
    svc = await _svc(sqlite_url, overrides={"merchants": [
        {"code": "M001", "name": "福彩中心", "name_en": "Lottery Centre", "category": "lottery",
         "api_key_id": "mk_devtest00001", "refund_policy": "automatic", "fee_per_mille": 8}]})
    try:
        p = await svc.ledger.read(lambda c: directory.get_profile(c, key_id="mk_devtest00001"))
        assert (p.code, p.category, p.refund_policy, p.fee_plan) == ("M001", "lottery", "automatic", {"per_mille": 8})
        users = WebUsers(svc.ledger, svc.sessions, svc.passwords)
        u, _ = await users.create("m001.admin", "merchant_admin", actor="t", actor_role="t", address=None,
                                  merchant_code="M001")
        assert u.merchant_id == p.account_id
        assert (await users.get("m001.admin")).merchant_id == p.account_id
        with pytest.raises(UserError, match="merchant code"):
            await users.create("m001.staff", "merchant_staff", actor="t", actor_role="t", address=None)
        with pytest.raises(UserError, match="merchant code"):
            await users.create("agentx", "ops_admin", actor="t", actor_role="t", address=None, merchant_code="M001")
        with pytest.raises(UserError, match="no merchant"):
            await users.create("zz.staff", "merchant_staff", actor="t", actor_role="t", address=None,
                               merchant_code="ZZ9")
    finally:
        await shutdown(svc)
