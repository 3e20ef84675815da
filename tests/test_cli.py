"""The newcomer's path through the CLI, before any channel exists:
KT -> A -> YE, agent cash-in, ZF + PIN -> YE -> MX.

Most commands run through `cli()`: telecom_pay.cli.main in this process,
which is what the console script calls. A new interpreter costs seconds of
CPU on imports alone, and the suite runs dozens of commands; the entry point
itself, as a real process, is still run by `cli_process()`: the newcomer's
first step (stdin a pipe), the config after the command, and the card
operations (they start the bank bridge on a reactor of their own)."""
import io
import re
import subprocess
import sys
import threading
import traceback
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from telecom_pay.config import DEFAULT_CONFIG
from tests.aio import aio_test
from tests.servicekit import MSISDN, make_service, shutdown


def write_config(tmp_path: Path) -> Path:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    text = text.replace('url = "sqlite+aiosqlite:///var/telecom-pay.sqlite3"',
                        f'url = "sqlite+aiosqlite:///{tmp_path}/tp.sqlite3"')
    text = text.replace("[security]\n", "[security]\nallow_development_keys = true\n", 1)
    path = tmp_path / "tp.toml"
    path.write_text(text, encoding="utf-8")
    return path


PIN = re.compile(r"(?<!\d)(\d{6})(?!\d)")


def cli_process(cfg: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`telecom-pay --config CFG ARGS` in a new interpreter."""
    return subprocess.run([sys.executable, "-m", "telecom_pay.cli", "--config", str(cfg), *args],
                          input=stdin, capture_output=True, text=True, timeout=120)


def cli(cfg: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """The same command, argv, stdin, stdout, stderr and exit status as
    `cli_process`, run by main() in a thread of its own: main's asyncio.run
    gets a loop of its own and leaves this thread's (the reactor's) alone.
    As the interpreter would: SystemExit's code is the status (a message is
    printed, status 1), an uncaught exception prints its traceback, status 1."""
    from telecom_pay.cli import main
    argv = ["--config", str(cfg), *args]
    out, err, status = io.StringIO(), io.StringIO(), []

    def run() -> None:
        try:
            status.append(main(argv))
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                status.append(exc.code or 0)
            else:
                print(exc.code, file=err)
                status.append(1)
        except BaseException:
            traceback.print_exc(file=err)
            status.append(1)

    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
    try:
        thread = threading.Thread(target=run, name="telecom-pay-cli")
        thread.start()
        thread.join(120)
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    assert not thread.is_alive(), f"telecom-pay {' '.join(args)} still running after 120 s"
    return subprocess.CompletedProcess(["telecom-pay", *argv], status[0], out.getvalue(), err.getvalue())


def test_newcomer_path(tmp_path):
    cfg = write_config(tmp_path)
    out = cli_process(cfg, "console", "--msisdn", "13800138000", stdin="KT\nA\nYE\n")
    assert out.returncode == 0, out.stderr
    pin = re.findall(r"(?<!\d)(\d{6})(?!\d)", out.stdout)[0]
    assert "0.00" in out.stdout
    cash = cli(cfg, "agent", "cash-in", "13800138000", "100")
    assert cash.returncode == 0, cash.stderr
    assert "100.00" in cash.stdout
    refused = cli(cfg, "console", "--msisdn", "13800138000", stdin="ZF M001 12.50\n")
    assert "MM" in refused.stdout                         # the initial PIN pays nothing: change it first
    pay = cli(cfg, "console", "--msisdn", "13800138000", stdin=f"MM {pin} 258147\nZF M001 12.50\n258147\nYE\nMX\n")
    assert pay.returncode == 0, pay.stderr
    assert re.search(r"T[2-9A-Z]{7}", pay.stdout) and "87.50" in pay.stdout
    assert "福彩中心" in pay.stdout
    check = cli(cfg, "db", "check")
    assert check.returncode == 0 and "books sound" in check.stdout


def test_agent_operations_and_errors(tmp_path):
    cfg = write_config(tmp_path)
    opened = cli(cfg, "agent", "open", "13900139000", "--name", "Li Lei", "--id-number", "110101199001011234")
    assert opened.returncode == 0, opened.stderr
    assert "Agreement SMS sent" in opened.stdout and not PIN.search(opened.stdout)
    agreed = cli(cfg, "console", "--msisdn", "13900139000", stdin="A\n")   # the subscriber's A, by SMS
    assert PIN.search(agreed.stdout), agreed.stdout
    assert cli(cfg, "agent", "freeze", "13900139000").returncode == 0
    assert cli(cfg, "agent", "freeze", "13900139000").returncode == 1     # already frozen: refused
    assert cli(cfg, "agent", "unfreeze", "13900139000").returncode == 0
    reset = cli(cfg, "agent", "pin-reset", "13900139000")
    assert reset.returncode == 0 and not PIN.search(reset.stdout)        # the PIN goes to the phone only
    stmt = cli(cfg, "agent", "statement", "13900139000")
    assert stmt.returncode == 0
    bad = cli(cfg, "agent", "cash-in", "13900139000", "12.345")
    assert bad.returncode == 2 and "amount" in bad.stderr
    nobody = cli(cfg, "--config", str(cfg), "agent", "--agent", "NOPE", "cash-in", "13900139000", "5")
    assert nobody.returncode != 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80))
@aio_test
async def test_every_message_gets_a_reply(sqlite_url, text):
    from telecom_pay.commands.conversation import Conversation
    svc = await make_service(sqlite_url)
    conv = Conversation(svc)
    replies = await conv.handle(MSISDN, text)
    assert replies and all(isinstance(r, str) and r.strip() for r in replies)
    await shutdown(svc)


@aio_test
async def test_agent_binds_a_card_through_the_bank(tmp_path):
    """`agent bind-card` starts the bank bridge, which verifies the card (0100)
    with a bank simulator running in this test, then binds it."""
    import asyncio
    from twisted.internet import reactor
    from simulators.bank.simulator import BankSimulator
    from telecom_pay.aio import wait_deferred
    bank = BankSimulator({"bank_code": "simbank"}, reactor)
    iso = await wait_deferred(bank.listen("tcp:0:interface=127.0.0.1"))
    bank.add_card("6222020000001234", "3012", "debit", balance=1000)
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(
        'endpoint = "tcp:host=127.0.0.1:port=8583"', f'endpoint = "tcp:host=127.0.0.1:port={iso.getHost().port}"'),
        encoding="utf-8")

    async def run(*args):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "telecom_pay.cli", "--config", str(cfg), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode, out.decode(), err.decode()

    opened = cli(cfg, "agent", "open", "13800138000", "--name", "Li Lei", "--id-number", "1")
    assert opened.returncode == 0, opened.stderr
    assert cli(cfg, "console", "--msisdn", "13800138000", stdin="A\n").returncode == 0
    code, out, err = await run("agent", "bind-card", "13800138000", "6222020000001234", "3012")
    assert code == 0, err + out
    assert "1234" in out
    code, out, err = await run("agent", "bind-card", "13800138000", "6222020000009999", "3012")
    assert code == 1                                      # unknown to the bank: declined
    code, out, err = await run("agent", "unbind-card", "13800138000")
    assert code == 0, err
    bank.drop_connections()
    await wait_deferred(iso.stopListening())


def test_config_may_follow_the_command(tmp_path):
    cfg = write_config(tmp_path)
    out = subprocess.run([sys.executable, "-m", "telecom_pay.cli", "db", "upgrade", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "tp.sqlite3").exists()           # the file named in that config, not ./var


def test_unknown_agent_code_is_refused_for_every_operation(tmp_path):
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("[bank]\n", "[bank]\nenabled = false\n"),
                   encoding="utf-8")
    assert cli(cfg, "console", "--msisdn", "13800138000", stdin="KT\nA\n").returncode == 0
    n = "13800138000"
    operations = [["open", "13900139000", "--name", "x", "--id-number", "1"], ["cash-in", n, "5"],
                  ["freeze", n], ["unfreeze", n], ["pin-reset", n], ["balance", n], ["statement", n],
                  ["kyc", n, "2"], ["number-change", n, "13700137000"],
                  ["transfer", n, "--name", "x", "--id-number", "1"], ["cancel-number", n],
                  ["bind-card", n, "6222020000001234", "3012"], ["unbind-card", n], ["security-log", n]]
    for op in operations:
        run = cli_process if op[0] in ("bind-card", "unbind-card") else cli   # these start the bank bridge
        out = run(cfg, "agent", "--agent", "NOPE", *op)
        assert out.returncode == 1 and "Not allowed" in out.stdout, (op, out.stdout, out.stderr)
    out = cli(cfg, "operator", "fund-agent", "NOPE", "5", "--operator", "alice")
    assert out.returncode == 1 and "Not allowed" in out.stdout, out.stderr
    assert cli(cfg, "operator", "fund-agent", "AG001", "5", "--operator", "alice").returncode == 0
    assert cli(cfg, "operator", "fund-agent", "AG001", "5").returncode == 2      # who funds is recorded


@aio_test
async def test_agents_see_the_callers_the_ivr_handed_over(tmp_path):
    from telecom_pay.calls import CallLog
    cfg = write_config(tmp_path)
    assert cli(cfg, "agent", "handoffs").stdout.strip() == "no hand-offs yet"
    svc = await make_service(f"sqlite+aiosqlite:///{tmp_path}/tp.sqlite3")
    try:
        log = CallLog(svc.ledger)
        await log.record_handoff(call_id="1796178469.0", msisdn="8613800138000", caller_id="13800138000",
                                 menu_path="main>pay_merchant>pay_amount>pin>result>main>agent", pin_verified=True,
                                 target="telecom-pay-agents,s,1")
        await log.record_handoff(call_id="1796178470.1", msisdn=None, caller_id="", menu_path="guest>agent",
                                 pin_verified=False, target="telecom-pay-agents,s,1")
    finally:
        await shutdown(svc)
    out = cli(cfg, "agent", "handoffs")
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()
    assert "withheld (no caller id) PIN not checked menu=guest>agent" in first          # newest first
    assert "8613800138000 PIN checked menu=main>pay_merchant" in second and "[waiting]" in second
    refused = cli(cfg, "agent", "--agent", "NOBODY", "handoffs")
    assert refused.returncode == 1 and "withheld" not in refused.stdout
