"""The daemon as its own process, killed with SIGKILL on the message path,
then restarted: every MO the SMSC saw acknowledged is recorded and answered,
and one the daemon never recorded is delivered again and answered."""
import asyncio
import sys

import sqlalchemy as sa

from telecom_pay.aio import wait_deferred
from telecom_pay.config import DEFAULT_CONFIG
from telecom_pay.ledger import schema
from tests.aio import aio_test
from tests.bankdouble import InProcessBank
from tests.e2ekit import eventually, reply, settings_for, start_daemon, start_smsc, stop_daemon


def write_config(tmp_path, database_url: str, smsc_port: int, sessions_url: str, prefix: str):
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    for old, new in [
        ('url = "sqlite+aiosqlite:///var/telecom-pay.sqlite3"', f'url = "{database_url}"'),
        ('url = "memory://"\nprefix = "tp:"', f'url = "{sessions_url}"\nprefix = "{prefix}"'),
        ('endpoint = "tcp:host=127.0.0.1:port=2775"', f'endpoint = "tcp:host=127.0.0.1:port={smsc_port}"'),
        ("[bank]\n", "[bank]\nenabled = false\n"),
        ("[security]\n", "[security]\nallow_development_keys = true\n"),
    ]:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "tp.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def spawn_daemon(cfg, sim) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "telecom_pay.cli", "--config", str(cfg), "run",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL)
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"ready", line
    await eventually(lambda: [b for b in sim.binds if b.state == "bound"], timeout=20)
    return proc


def stall_inbound(admin, on: bool) -> None:
    """While on, recording an inbound message waits (the daemon stands
    between receiving the deliver_sm and its record's commit)."""
    with admin.begin() as c:
        if on:
            c.execute(sa.text("CREATE FUNCTION stall() RETURNS trigger AS "
                              "$$ BEGIN PERFORM pg_sleep(120); RETURN NEW; END $$ LANGUAGE plpgsql"))
            c.execute(sa.text("CREATE TRIGGER stall BEFORE INSERT ON inbound_messages "
                              "FOR EACH ROW EXECUTE FUNCTION stall()"))
        else:
            c.execute(sa.text("DROP TRIGGER stall ON inbound_messages"))


@aio_test
async def test_killed_before_the_mo_is_recorded_the_redelivery_is_answered(tmp_path, pg_url, redis_url,
                                                                             redis_prefix):
    sim, port = await start_smsc(response_timeout=5.0, redelivery_delay=0.2)
    schema.upgrade(pg_url)
    cfg = write_config(tmp_path, pg_url, port, redis_url, redis_prefix)
    admin = sa.create_engine(schema.sync_url(pg_url), isolation_level="AUTOCOMMIT")
    db = sa.engine.make_url(schema.sync_url(pg_url)).database
    proc = await spawn_daemon(cfg, sim)
    daemon = None
    try:
        stall_inbound(admin, True)
        phone = sim.handset("13800138000")
        sent = phone.send("KT")
        sent.addErrback(lambda f: None)

        def recording():
            with admin.connect() as c:
                return c.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
                    " AND state = 'active' AND query ILIKE 'INSERT INTO inbound_messages%'"), {"db": db}).scalar()
        await eventually(recording, timeout=20)
        proc.kill()                                     # SIGKILL: no cleanup of any kind
        await proc.wait()
        with admin.connect() as c:                     # the dead process's transaction goes too
            c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": db})
        stall_inbound(admin, False)
        settings = settings_for(pg_url, port, sessions_url=redis_url, prefix=redis_prefix)
        daemon = await start_daemon(settings, bank=InProcessBank())
        assert "A" in await reply(phone, timeout=20)    # the SMSC's retry is recorded and answered
        await wait_deferred(sent)
        sms = daemon.components["sms"]
        assert sms.stats["mo"] == 1 and await sms.messages.unprocessed("sms") == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if daemon is not None:
            await stop_daemon(daemon)
        await wait_deferred(sim.stop())
        admin.dispose()
