"""Two daemon instances on one database, both logged into the switch: a
call-back is dialled once per attempt, whichever instance claims it, and
its failure is counted and told once, though both hear every outcome."""
from telecom_pay.aio import wait_deferred
from tests.aio import aio_test
from tests.amikit import ami_settings, logged_in, start_ami, start_ami_daemon
from tests.e2ekit import eventually

MSISDN = "8613800138000"


@aio_test
async def test_two_instances_dial_each_attempt_once_and_fail_it_once(pg_url):
    sim, port = await start_ami()
    sim.outcome = "busy"
    policy = {"ami.callback_attempts": 3, "ami.callback_retry_delay": 0.2, "ami.callback_poll": 0.05}
    first = await start_ami_daemon(ami_settings(pg_url, port, **policy))
    second = await start_ami_daemon(ami_settings(pg_url, port, **policy))
    told = []
    for d in (first, second):
        d.core.service.add_notifier(lambda m, r: told.append((m, r.params.get("action"))))
    try:
        await logged_in(first)
        await logged_in(second)
        assert (await first.core.service.request_callback(MSISDN, channel="sms")).ok
        rows = await eventually(lambda: _failed(first))
        assert rows[0]["attempts"] == 3
        assert len(sim.originates) == 3, sim.originates           # one Originate per attempt, not per instance
        assert len({o["action_id"] for o in sim.originates}) == 3
        await eventually(lambda: told)
        assert told == [(MSISDN, "callback_failed")]
        assert sum(d.components["ami"].stats["attempts_failed"] for d in (first, second)) == 3
    finally:
        await wait_deferred(first.stopService())
        await wait_deferred(second.stopService())
        await wait_deferred(sim.stop())


async def _failed(daemon):
    rows = await daemon.core.service.callbacks.rows(msisdn=MSISDN)
    return rows if rows and rows[0]["state"] == "failed" else None
