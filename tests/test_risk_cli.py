"""`telecom-pay risk`: list the held case, release it once (a second
release is refused), and the books stay sound."""
from __future__ import annotations

from telecom_pay.outcomes import Outcome
from tests.aio import aio_test
from tests.servicekit import MSISDN, funded, make_service, outbox_texts, shutdown
from tests.test_cli import cli, write_config


@aio_test
async def test_list_release_once_and_the_books_stay_sound(tmp_path):
    cfg = write_config(tmp_path)
    url = f"sqlite+aiosqlite:///{tmp_path}/tp.sqlite3"
    rules = {"risk.large_amount": {"action": "hold", "amount": 5000}}
    svc = await make_service(url, overrides=rules)
    try:
        pin = await funded(svc, amount=10_000)
        held = await svc.pay(MSISDN, "M001", 7000, pin, channel="ussd")
        assert held.outcome is Outcome.RISK_HELD
    finally:
        await shutdown(svc)
    listed = cli(cfg, "risk", "list")
    assert listed.returncode == 0, listed.stderr
    case_id, status, op, amount, rule = listed.stdout.split("\t")[:5]
    assert (status, op, amount, rule) == ("held", f"payment {held.ref}", "70.00", "large_amount"), listed.stdout
    assert cli(cfg, "risk", "release", case_id).returncode == 2                  # a reason is required
    done = cli(cfg, "risk", "release", case_id, "--reason", "verified", "--operator", "ops.zhang")
    assert done.returncode == 0 and "\treleased\t" in done.stdout and "ops.zhang: verified" in done.stdout
    again = cli(cfg, "risk", "refuse", case_id, "--reason", "late")
    assert again.returncode == 1 and "released already" in again.stderr
    assert "no open cases" in cli(cfg, "risk", "list").stdout
    check = cli(cfg, "db", "check")
    assert check.returncode == 0 and "books sound" in check.stdout
    svc = await make_service(url, overrides=rules)
    try:
        assert (await svc.balance(MSISDN, channel="t")).balance == 3000
        assert any("已支付 70.00 元" in t for t in await outbox_texts(svc, MSISDN))
    finally:
        await shutdown(svc)
