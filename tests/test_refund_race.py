"""Two daemons (own engines, own writers) on one PostgreSQL database refund
the same payments at once: no payment is refunded more than it was."""
import asyncio

from telecom_pay.outcomes import Outcome
from tests.aio import aio_test
from tests.servicekit import MSISDN, funded, make_service, shutdown


@aio_test
async def test_racing_refunds_never_exceed_the_payment(pg_url):
    no_velocity = {"security.velocity_payments_per_minute": 0}
    one = await make_service(pg_url, overrides=no_velocity)
    two = await make_service(pg_url, overrides=no_velocity)
    pin = await funded(one, amount=20_000)
    refs = []
    for i in range(8):
        r = await one.pay(MSISDN, "M001", 1000, pin, channel="sms", key=f"pay-{i}")
        assert r.outcome is Outcome.OK
        refs.append(r.ref)
    # one payment more, not refunded: the merchant can pay every refund (fees included)
    assert (await one.pay(MSISDN, "M001", 1000, pin, channel="sms", key="pay-kept")).outcome is Outcome.OK
    results = await asyncio.gather(*(svc.refund("M001", ref, actor="merchant:M001")
                                     for ref in refs for svc in (one, two)))
    for i, ref in enumerate(refs):
        pair = [r.outcome for r in results[2 * i:2 * i + 2]]
        assert sorted(o.value for o in pair) == ["invalid_amount", "ok"], (ref, pair)
    assert (await one.balance(MSISDN, channel="t")).balance == 19_000
    assert await one.check_books() == []
    await shutdown(two)
    await shutdown(one)
