"""The agent CLI runs in its own process, without the SMS channel: what it
queues in the outbox (the agreement, a reset PIN, a cash-in notice) is sent
by the running daemon's outbox scan, over SMPP to the handset. The agent's
screen never shows a PIN."""
import asyncio
import sys

from telecom_pay.aio import wait_deferred
from telecom_pay.config import DEFAULT_CONFIG
from tests.aio import aio_test
from tests.e2ekit import PIN_RE, reply, say, settings_for, start_daemon, start_smsc, stop_daemon


async def agent_cli(cfg, *args) -> str:
    """A separate process; the daemon keeps running on this test's reactor meanwhile."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "telecom_pay.cli", "--config", str(cfg), "agent", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


@aio_test
async def test_agent_cli_sms_reach_the_phone_through_the_daemon(tmp_path):
    db = f"sqlite+aiosqlite:///{tmp_path / 'shared.sqlite3'}"
    cfg = tmp_path / "tp.toml"
    cfg.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8")
                   .replace('url = "sqlite+aiosqlite:///var/telecom-pay.sqlite3"', f'url = "{db}"')
                   .replace("[security]\n", "[security]\nallow_development_keys = true\n", 1), encoding="utf-8")
    sim, port = await start_smsc()
    daemon = await start_daemon(settings_for(db, port))
    try:
        phone = sim.handset("13900139000")
        shown = await agent_cli(cfg, "open", "13900139000", "--name", "Li Lei", "--id-number", "1101")
        assert "Agreement SMS sent" in shown and not PIN_RE.search(shown)
        assert "A" in await reply(phone, timeout=20)                     # the agreement, by SMS
        initial = PIN_RE.search(await say(phone, "A", expect="MM")).group(1)   # credentials after A
        shown = await agent_cli(cfg, "pin-reset", "13900139000")
        assert not PIN_RE.search(shown)
        reset = PIN_RE.search(await reply(phone, expect="MM", timeout=20)).group(1)
        assert "changed" in await say(phone, f"MM {reset} 258147", expect="changed")
        assert "Wrong PIN" in await say(phone, f"MM {initial} 369258")   # the reset replaced it
        await agent_cli(cfg, "cash-in", "13900139000", "20")
        assert "20.00" in await reply(phone, expect="20.00", timeout=20)
    finally:
        await stop_daemon(daemon)
        await wait_deferred(sim.stop())
