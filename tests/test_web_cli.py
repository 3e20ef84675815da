"""`telecom-pay users add` (through telecom_pay.cli.main, as the console
script runs it; tests/test_cli.py says why not a new process): a one-time initial password
printed once, which the web accepts only for the first-login change; the
refusals (unknown agent code, a taken name) exit non-zero."""
from __future__ import annotations

import re

from tests.aio import aio_test
from tests.test_cli import cli, write_config
from tests.webkit import Browser, start_web, stop_web, web_settings


def test_users_add_and_list(tmp_path):
    cfg = write_config(tmp_path)
    out = cli(cfg, "users", "add", "agent1", "--role", "agent", "--agent-code", "AG001")
    assert out.returncode == 0, out.stderr
    assert "created agent1 (agent)" in out.stdout
    assert re.search(r"initial password \(shown once; to change at the first login\): \S{12}$", out.stdout.strip())
    assert cli(cfg, "users", "add", "agent1", "--role", "agent", "--agent-code", "AG001").returncode == 1
    bad = cli(cfg, "users", "add", "agent2", "--role", "agent", "--agent-code", "AG404")
    assert bad.returncode == 1 and "no agent has the code AG404" in bad.stderr
    assert cli(cfg, "users", "add", "agent3", "--role", "agent").returncode == 1       # an agent needs a code
    assert cli(cfg, "users", "add", "root", "--role", "root").returncode == 2          # not a role
    assert cli(cfg, "users", "add", "ops1", "--role", "ops_admin").returncode == 0
    listed = cli(cfg, "users", "list")
    assert listed.returncode == 0
    assert listed.stdout.splitlines() == ["agent1\tagent\tAG001\tactive\tmust change password",
                                          "ops1\tops_admin\t-\tactive\tmust change password"]


@aio_test
async def test_the_printed_password_logs_in_for_the_change(tmp_path):
    cfg = write_config(tmp_path)
    out = cli(cfg, "users", "add", "super2", "--role", "agent_supervisor")
    assert out.returncode == 0, out.stderr
    initial = out.stdout.strip().rsplit(" ", 1)[1]
    daemon, base = await start_web(web_settings({"database_url": f"sqlite+aiosqlite:///{tmp_path}/tp.sqlite3"}))
    try:
        b = Browser(base)
        me = await b.api_login("super2", initial)
        assert me.status == 200 and me.json()["role"] == "agent_supervisor" and me.json()["must_change_password"]
        assert (await b.get("/home")).header("location") == "/password"
    finally:
        await stop_web(daemon)
