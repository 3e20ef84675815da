"""SP payment requests over real SMPP sockets (the SMSC simulator and a
simulated handset): the ask arrives by SMS and `tag PIN` pays it; where USSD
push is on the request arrives as its own PIN page and the page pays it."""
from __future__ import annotations

import sqlalchemy as sa

from telecom_pay.aio import wait_deferred
from telecom_pay.commands.redaction import PIN_MASK
from telecom_pay.merchants import directory, payments
from telecom_pay.merchants.tables import sp_payments
from telecom_pay.messaging import inbound_messages as inbound
from tests.aio import aio_test
from tests.servicekit import CHOSEN_PIN, funded
from tests.test_ussd_e2e import MSISDN, PHONE, down, key, up
from tests.e2ekit import REF_RE, reply, say


async def _ask(daemon, order_id: str, amount: int = 1250):
    svc = daemon.core.service
    profile = await svc.ledger.read(lambda conn: directory.get_profile(conn, code="M001"))
    obj, created = await payments.create(svc, profile, order_id=order_id, msisdn=PHONE, amount=amount,
                                         description="双色球")
    assert created
    row = (await svc.ledger.read(lambda c: c.execute(
        sa.select(sp_payments).where(sp_payments.c.public_id == obj["id"])))).first()
    return obj, row


@aio_test
async def test_the_ask_by_sms_and_tag_pin_pays_it(sqlite_url):
    sim, daemon, _ = await up(sqlite_url)
    try:
        svc = daemon.core.service
        await funded(svc, MSISDN, 5000)
        phone = sim.handset(PHONE)
        obj, row = await _ask(daemon, "e2e-1")
        ask = await reply(phone, expect="支付密码")
        assert f'"{row.tag} 支付密码"' in ask and "12.50" in ask and "订单e2e-1" in ask
        paid = await say(phone, f"{row.tag} {CHOSEN_PIN}", expect="12.50")
        assert REF_RE.search(paid)
        done = (await svc.ledger.read(lambda c: c.execute(
            sa.select(sp_payments).where(sp_payments.c.id == row.id)))).first()
        assert done.status == "confirmed" and done.ref in paid
        assert (await svc.balance(MSISDN, channel="t")).balance == 5000 - 1250
        stored = [r.text for r in (await svc.ledger.read(lambda c: c.execute(sa.select(inbound.c.text)))).all()]
        assert f"{row.tag} {PIN_MASK}" in stored and CHOSEN_PIN not in " ".join(stored)
    finally:
        await down(sim, daemon)


@aio_test
async def test_where_push_is_on_the_request_is_pushed_as_its_pin_page(sqlite_url):
    sim, daemon, _ = await up(sqlite_url, push=True)
    try:
        svc = daemon.core.service
        await funded(svc, MSISDN, 5000)
        phone = sim.handset(PHONE)
        shown = phone.wait_for_ussd(10)
        obj, row = await _ask(daemon, "e2e-2", amount=800)
        page = await wait_deferred(shown)                  # no dial: the platform opened the session
        assert "8.00" in page and phone.ussd_session.open
        paid = await key(phone, CHOSEN_PIN)
        assert REF_RE.search(paid), paid
        done = (await svc.ledger.read(lambda c: c.execute(
            sa.select(sp_payments).where(sp_payments.c.id == row.id)))).first()
        assert (done.status, done.confirm_by) == ("confirmed", "ussd")
        assert (await svc.balance(MSISDN, channel="t")).balance == 4200
    finally:
        await down(sim, daemon)
