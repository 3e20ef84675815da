"""HF is a payment to the airtime SP (a merchant standing for the carrier's
top-up system): the money reaches its account, and the order to top the
number up is owed as a signed callback in the same transaction, once."""
import json
import urllib.error
import urllib.request

import pytest
import sqlalchemy as sa

from simulators.topup.server import TopUps, listen
from telecom_pay.merchants import signing
from telecom_pay.merchants.directory import get_profile
from telecom_pay.merchants.tables import merchant_notifications
from tests.aio import aio_test
from tests.servicekit import MSISDN, OTHER, funded, make_service, shutdown


async def _events(svc):
    rows = await svc.ledger.read(lambda c: c.execute(sa.select(merchant_notifications).order_by(
        merchant_notifications.c.id)))
    return rows.all()


@aio_test
async def test_airtime_pays_the_sp_and_owes_its_top_up_once(database_url):
    svc = await make_service(database_url, overrides={"security.velocity_payments_per_minute": 0})
    try:
        sp = await svc.ledger.read(lambda c: get_profile(c, code="HF01"))
        assert sp.category == "airtime" and sp.notify_url.endswith("/topups")
        pin = await funded(svc, amount=10_000)
        r = await svc.airtime(MSISDN, 3000, pin, channel="sms", key="hf-1", for_msisdn=OTHER)
        assert r.ok, r
        again = await svc.airtime(MSISDN, 3000, pin, channel="sms", key="hf-1", for_msisdn=OTHER)
        assert again.ok and again.ref == r.ref
        assert (await svc.ledger.balance(sp.account_id)).balance == 3000
        [ev] = await _events(svc)
        body = json.loads(ev.body)
        assert (ev.merchant_id, ev.event_type, ev.subject_id, ev.url) == (sp.account_id, "airtime.ordered", r.ref,
                                                                          sp.notify_url)
        assert body["data"] == {"ref": r.ref, "msisdn": OTHER, "amount": 3000, "created_at": body["data"]["created_at"]}
        # refused: nothing owed
        assert not (await svc.airtime(MSISDN, 1_000_000, pin, channel="sms", key="hf-2")).ok
        assert len(await _events(svc)) == 1
    finally:
        await shutdown(svc)


@aio_test
async def test_held_airtime_is_ordered_only_when_released(sqlite_url):
    svc = await make_service(sqlite_url, overrides={"security.velocity_payments_per_minute": 0,
                                                    "risk.large_amount": {"action": "hold", "amount": 2000}})
    try:
        pin = await funded(svc, amount=10_000)
        r = await svc.airtime(MSISDN, 2500, pin, channel="sms", key="hf-held")
        assert r.outcome.value == "risk_held", r
        assert await _events(svc) == []
        [case] = (await svc.risk_cases())["open"]
        from telecom_pay.service.risk_review import Reviewer
        await svc.decide_risk_case(case["case_id"], "release", reason="known customer",
                                   by=Reviewer("admin", "ops_admin", "127.0.0.1", channel="web"))
        [ev] = await _events(svc)
        assert ev.event_type == "airtime.ordered" and json.loads(ev.body)["data"]["amount"] == 2500
    finally:
        await shutdown(svc)


def _post(url, body: bytes, headers: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@aio_test
async def test_the_carrier_top_up_simulator_checks_signatures_and_applies_each_event_once():
    import asyncio
    from twisted.internet import reactor
    topups = TopUps("mk_devcarrier0001", "ms_secret")
    port = await listen(reactor, "tcp:0:interface=127.0.0.1", topups)
    url = f"http://127.0.0.1:{port.getHost().port}"
    loop = asyncio.get_running_loop()
    try:
        event = json.dumps({"event_id": "evt_1", "type": "airtime.ordered", "created_at": "x",
                            "data": {"ref": "R1", "msisdn": "8613900139000", "amount": 3000}}).encode()

        def send(body, secret="ms_secret"):
            return _post(f"{url}/topups", body, signing.sign_headers("mk_devcarrier0001", secret, "POST", "/topups",
                                                                     body))
        assert (await loop.run_in_executor(None, send, event)) == (200, {"topup_id": "T000001"})
        assert (await loop.run_in_executor(None, send, event)) == (200, {"duplicate": True})
        status, out = await loop.run_in_executor(None, send, event, "ms_wrong")
        assert status == 401 and out["code"] == "bad_signature"
        assert (await loop.run_in_executor(None, _post, f"{url}/control/fail", b'{"count": 1}', {}))[0] == 200
        later = event.replace(b"evt_1", b"evt_2")
        assert (await loop.run_in_executor(None, send, later))[0] == 500
        assert (await loop.run_in_executor(None, send, later))[0] == 200
        assert [t["event_id"] for t in topups.made] == ["evt_1", "evt_2"] and topups.refused == 1
    finally:
        from telecom_pay.aio import wait_deferred
        await wait_deferred(port.stopListening())
