"""The development PIN and card-token keys published in config/telecom-pay.toml
protect only the embedded default database: any other database refuses them,
in the config loader (so the daemon and every CLI command refuse to start)."""
import subprocess
import sys

import pytest

from telecom_pay import config
from telecom_pay.config import DEFAULT_CONFIG

PG = "postgresql+psycopg://tp@db.example:5432/tp"
REAL_KEY = "5f0c2a7e9b1d4c3a8e6f5f0c2a7e9b1d4c3a8e6f"


@pytest.fixture(autouse=True)
def no_key_env(monkeypatch):
    monkeypatch.delenv("TELECOM_PAY_PIN_KEY", raising=False)
    monkeypatch.delenv("TELECOM_PAY_CARD_TOKEN_KEY", raising=False)


def test_embedded_default_runs_on_development_keys():
    assert config.load(None).pin_key.startswith(b"dev-only")


@pytest.mark.parametrize("url", [PG, "sqlite+aiosqlite:////srv/telecom-pay/ledger.sqlite3"])
def test_development_pin_key_refused_elsewhere(url):
    with pytest.raises(config.ConfigError, match=r"security\.pin_key.*TELECOM_PAY_PIN_KEY"):
        config.load(None, {"database.url": url})


def test_development_card_token_key_refused_elsewhere(monkeypatch):
    monkeypatch.setenv("TELECOM_PAY_PIN_KEY", REAL_KEY)
    with pytest.raises(config.ConfigError, match=r"bank\.card_token_key.*TELECOM_PAY_CARD_TOKEN_KEY"):
        config.load(None, {"database.url": PG})
    monkeypatch.setenv("TELECOM_PAY_CARD_TOKEN_KEY", REAL_KEY)
    assert config.load(None, {"database.url": PG, "ami.secret": "s3cret-of-the-switch"}).pin_key == REAL_KEY.encode()


def test_development_ami_secret_refused_elsewhere(monkeypatch):
    monkeypatch.setenv("TELECOM_PAY_PIN_KEY", REAL_KEY)
    monkeypatch.setenv("TELECOM_PAY_CARD_TOKEN_KEY", REAL_KEY)
    for secret in ("secret", ""):
        with pytest.raises(config.ConfigError, match=r"ami\.secret"):
            config.load(None, {"database.url": PG, "ami.secret": secret})
    assert config.load(None, {"database.url": PG, "ami.enabled": False}).database_url == PG
    assert config.load(None, {"database.url": PG, "ami.secret": "s3cret-of-the-switch"}).database_url == PG


def test_explicit_allowance_for_tests_and_demos():
    s = config.load(None, {"database.url": PG, "security.allow_development_keys": True})
    assert s.database_url == PG


@pytest.mark.parametrize("command", [["run"], ["agent", "balance", "13800138000"], ["db", "check"]])
def test_daemon_and_cli_refuse_to_start(tmp_path, monkeypatch, command):
    """The daemon in a real process; the CLI commands through cli.main in
    this one (tests/test_cli.py's `cli`: a new interpreter costs seconds)."""
    import os
    from tests.test_cli import cli
    cfg = tmp_path / "tp.toml"
    cfg.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8").replace(
        'url = "sqlite+aiosqlite:///var/telecom-pay.sqlite3"', f'url = "{PG}"'), encoding="utf-8")
    if command == ["run"]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELECOM_PAY_")}
        out = subprocess.run([sys.executable, "-m", "telecom_pay.cli", "--config", str(cfg), *command],
                             capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    else:
        for k in [k for k in os.environ if k.startswith("TELECOM_PAY_")]:
            monkeypatch.delenv(k)
        monkeypatch.chdir(tmp_path)
        out = cli(cfg, *command)
    assert out.returncode == 2, out.stderr
    assert "security.pin_key is the development default" in out.stderr
    assert "TELECOM_PAY_PIN_KEY" in out.stderr
