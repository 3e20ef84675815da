"""One test per named crash point (telecom_pay/crashpoints.py): the daemon
runs as its own process against the SMSC and bank simulators, is driven to
the point, dies there by SIGKILL, is started again without the point, and
every promise of tests/reliability/promises.py must hold afterwards."""
from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from telecom_pay.ledger.tables import operations, transfers
from tests.aio import aio_test
from tests.reliability import promises
from tests.reliability.rig import Rig
from tests.reliability.scenes import prepare, reply, say, send_unacked

MSISDN = "13800138000"
DEBIT = "6222020000001234"


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def rigs():
    """Whatever a test does or how it ends, no daemon it started survives."""
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.kill()
        rig.deployment.close()


async def up(rigs, kind: str, **kw) -> Rig:
    rig = await Rig.up(kind, **kw)
    rigs.append(rig)
    return rig


async def promises_kept(rig: Rig, **posted: int | set[int]) -> None:
    """The promises for MSISDN, whose posted operations by kind are `posted`."""
    owed = await promises.settle(rig)
    broken = await promises.check(rig, [MSISDN], posted={MSISDN: posted})
    assert not broken, ("broken promises:\n  " + "\n  ".join(broken) + "\nstill owed: " + ", ".join(owed)
                        + "\n" + rig.logs())


async def pay_after_crash(rig: Rig, crash_at: str, sub, *, merchant: str = "M001", amount: str = "10") -> None:
    """ZF then PIN against a daemon armed at `crash_at`: it dies on the way
    (the PIN's MO is never waited for: its acknowledgement may never come)."""
    proc = await rig.start(crash_at=crash_at)
    await say(sub.handset, f"ZF {merchant} {amount}")
    await send_unacked(sub.handset, sub.pin)
    await rig.crashed(proc)


@aio_test
async def test_after_mo_recorded_the_message_is_answered_once(rigs, kind):
    rig = await up(rigs, kind)
    try:
        sub = await prepare(rig, MSISDN, DEBIT, topups=(20_000,))
        await pay_after_crash(rig, "after_mo_recorded:2", sub)        # dies holding the PIN's record
        await rig.start()
        await reply(sub.handset)                                      # the recorded PIN is answered
        await say(sub.handset, "YE")
        await promises_kept(rig, topup=1, payment={0, 1}, withdrawal=0)
    finally:
        await rig.close()


@aio_test
async def test_after_ledger_commit_the_receipt_still_comes(rigs, kind):
    rig = await up(rigs, kind)
    try:
        sub = await prepare(rig, MSISDN, DEBIT, topups=(20_000,))
        await pay_after_crash(rig, "after_ledger_commit", sub)        # the payment committed, nobody told
        await rig.start()
        await promises_kept(rig, topup=1, payment=1)
    finally:
        await rig.close()


@aio_test
async def test_after_outbox_commit_the_queued_receipt_is_sent(rigs, kind):
    rig = await up(rigs, kind)
    try:
        sub = await prepare(rig, MSISDN, DEBIT, topups=(20_000,))
        await pay_after_crash(rig, "after_outbox_commit:2", sub)      # 1: the PIN prompt, 2: the receipt
        await rig.start()
        assert "10.00" in await reply(sub.handset, expect="10.00")
        await promises_kept(rig, topup=1, payment=1)
    finally:
        await rig.close()


@aio_test
async def test_after_submit_sm_resp_the_receipt_is_not_lost(rigs, kind):
    rig = await up(rigs, kind)
    try:
        sub = await prepare(rig, MSISDN, DEBIT, topups=(20_000,))
        await pay_after_crash(rig, "after_submit_sm_resp:2", sub)
        await rig.start()
        await promises_kept(rig, topup=1, payment=1)
    finally:
        await rig.close()


@aio_test
async def test_after_0200_sent_the_withdrawal_is_reversed(rigs, kind):
    rig = await up(rigs, kind)
    try:
        sub = await prepare(rig, MSISDN, DEBIT, topups=(20_000,))
        proc = await rig.start(crash_at="after_0200_sent")
        await say(sub.handset, "TX 50")
        await send_unacked(sub.handset, sub.pin)                      # the bank credits the card, then we die
        await rig.crashed(proc)
        assert rig.bank.card(DEBIT).balance == 100_000 - 20_000 + 5_000
        await rig.start()
        await promises_kept(rig, topup=1, withdrawal=0)
    finally:
        await rig.close()


@aio_test
async def test_after_0210_received_the_topup_is_posted(rigs, kind):
    rig = await up(rigs, kind)
    try:
        sub = await prepare(rig, MSISDN, DEBIT)
        proc = await rig.start(crash_at="after_0210_received")
        await say(sub.handset, "CZ 100")
        await send_unacked(sub.handset, sub.pin)                      # approved and recorded, not posted
        await rig.crashed(proc)
        await rig.start()
        await promises_kept(rig, topup=1)
    finally:
        await rig.close()


@aio_test
async def test_settlement_after_attempt_the_batch_ends(rigs, kind):
    rig = await up(rigs, kind)
    try:
        await prepare(rig, MSISDN, DEBIT, topups=(30_000,), payments=(("M001", 12_000),))
        day = _move_to_yesterday(rig)
        crashed = await rig.cli("settle", "--date", day.isoformat(), "--merchant", "M001",
                                crash_at="settlement_after_attempt")
        assert crashed.returncode == -9, crashed.stdout
        again = await rig.cli("settle", "--date", day.isoformat(), "--merchant", "M001")
        await rig.start()                                             # the daemon: receipts, reversals
        await promises_kept(rig, topup=1, payment=1)
        assert again.returncode == 0 and "-> paid" in again.stdout, again.stdout
        assert rig.bank.card("6222020000000001").balance == 12_000 - 72     # paid once, 6 per mille fee
    finally:
        await rig.close()


def _move_to_yesterday(rig: Rig):
    """Settlement pays T+1: the day's operations are moved to noon of the
    local day before, so `telecom-pay settle` (real clock) may settle it."""
    tz = ZoneInfo(rig.settings.timezone)
    day = datetime.now(tz).date() - timedelta(days=1)
    noon = datetime.combine(day, time(12), tzinfo=tz).astimezone(ZoneInfo("UTC"))
    engine = sa.create_engine(rig.sync_database_url)
    try:
        with engine.begin() as c:
            c.execute(operations.update().values(created_at=noon, resolved_at=noon))
            c.execute(transfers.update().values(created_at=noon, resolved_at=noon))
    finally:
        engine.dispose()
    return day


@aio_test
async def test_a_call_whose_daemon_dies_after_the_pin_committed_still_gets_its_receipt(rigs, kind):
    """The IVR's hang-up rule under a power cut: the payment committed
    (after_ledger_commit), the caller heard nothing and the line went dead;
    after the restart the SMS receipt, queued with the money, still comes,
    and the money moved once."""
    import socket

    from twisted.internet import reactor

    from simulators.asterisk.caller import CallScript, place_call
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rig = await up(rigs, kind, extra={"ivr.endpoint": f"tcp:{port}:interface=127.0.0.1"})
    try:
        sub = await prepare(rig, MSISDN, DEBIT, topups=(20_000,))
        proc = await rig.start(crash_at="after_ledger_commit")
        # 4 pay, 1 the first merchant (M001), 10 yuan, the PIN; the daemon dies at the booking's COMMIT
        script = CallScript(keys=["4", "1", "10#", f"{sub.pin}#", "0"], linger=1.0)
        try:
            call = await place_call(reactor, f"tcp:127.0.0.1:{port}", MSISDN, script, timeout=30)
            heard = [h.value for h in call.heard]
        except Exception as exc:           # the connection died with the daemon
            heard = [type(exc).__name__]
        await rig.crashed(proc)
        assert "done_pay" not in heard, heard            # nothing was said: the process died first
        await rig.start()
        receipt = await reply(sub.handset, expect="10.00", timeout=30)
        assert "福彩中心" in receipt, receipt
        await promises_kept(rig, topup=1, payment=1)
    finally:
        await rig.close()


@aio_test
async def test_a_ussd_payment_whose_daemon_dies_after_the_commit_is_receipted_once(rigs, kind):
    """*188#, 4 pay, 1 M001, 10, the PIN; the daemon dies at the booking's
    COMMIT with the PIN's input recorded and unanswered. After the restart
    the dialogue is gone: the input is closed (not read as an SMS command),
    the receipt queued with the money arrives once, and the money moved once."""
    import asyncio

    from telecom_pay.aio import wait_deferred
    rig = await up(rigs, kind)
    try:
        sub = await prepare(rig, MSISDN, DEBIT, topups=(20_000,))
        proc = await rig.start(crash_at="after_ledger_commit")
        phone = sub.handset
        await wait_deferred(phone.dial_ussd("*188#", timeout=15))
        for key in ("4", "1", "10"):
            await wait_deferred(phone.ussd_reply(key, timeout=15))
        inbox_before = len(phone.inbox)
        d = phone.ussd_reply(sub.pin, timeout=30)
        d.addErrback(lambda f: None)                 # no page comes: the daemon dies first
        await rig.crashed(proc)
        await rig.start()
        receipt = await reply(phone, expect="10.00", timeout=30)
        assert "福彩中心" in receipt, receipt
        await asyncio.sleep(2.0)                     # anything else the restart would send
        later = [m.text for m in phone.inbox[inbox_before:]]
        assert len([t for t in later if "10.00" in t]) == 1, later
        assert not any("无法识别" in t or "指令" in t for t in later), later
        await promises_kept(rig, topup=1, payment=1)
    finally:
        await rig.close()
