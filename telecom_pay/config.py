"""Configuration: one TOML file, read once, into typed settings.

Secrets never live in the repo beyond the clearly marked development default
PIN key; production takes it from TELECOM_PAY_PIN_KEY.

A development key is refused for any database but the embedded default: a
key published in the repository protects nothing, so PINs hashed (or card
tokens derived) with it on a real database would be as good as readable.
Tests, the benchmark and demos on their own databases say so explicitly
with `security.allow_development_keys = true`.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from telecom_pay.risk.rules import RiskConfigError, RiskRules, parse_rules

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "telecom-pay.toml"
DEV_PIN_KEY_MARK = "dev-only"
EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///var/telecom-pay.sqlite3"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class TierLimits:
    per_txn: int
    daily: int
    monthly: int


@dataclass(frozen=True)
class FeeRule:
    fixed: int = 0
    per_mille: int = 0
    min: int = 0
    max: int | None = None
    payer: str = "subscriber"

    def fee(self, amount: int) -> int:
        """Fixed plus per-mille (rounded half up, integers only), bounded."""
        value = self.fixed + (amount * self.per_mille + 500) // 1000
        value = max(value, self.min) if (self.fixed or self.per_mille or self.min) else 0
        if self.max is not None:
            value = min(value, self.max)
        return value


@dataclass(frozen=True)
class Settings:
    raw: dict[str, Any]
    path: Path | None = None
    currency: str = "CNY"
    timezone: str = "Asia/Shanghai"
    region: str = "CN"
    default_language: str = "zh"
    service_number: str = "10658888"
    database_url: str = EMBEDDED_DATABASE_URL
    auto_upgrade: bool = True
    sessions_url: str = "memory://"
    sessions_prefix: str = "tp:"
    pin_key: bytes = b""
    pin_max_failures: int = 3
    pin_lock_minutes: int = 30
    confirm_minutes: int = 10
    pending_payment_minutes: int = 5
    velocity_per_minute: int = 5
    self_freezes_per_day: int = 3
    lockout_alert_after: int = 2
    agent_float_max_per_operation: int = 10_000_000
    agent_float_max_per_day: int = 50_000_000
    limits: dict[int, TierLimits] = field(default_factory=dict)
    fees: dict[str, FeeRule] = field(default_factory=dict)
    merchants: list[dict] = field(default_factory=list)
    agents: list[dict] = field(default_factory=list)
    risk: RiskRules = field(default_factory=RiskRules)

    def section(self, name: str) -> dict:
        return self.raw.get(name, {})

    def fee(self, kind: str, amount: int) -> tuple[int, str]:
        rule = self.fees.get(kind)
        return (0, "subscriber") if rule is None else (rule.fee(amount), rule.payer)


def load(path: str | os.PathLike | None = None, overrides: dict | None = None) -> Settings:
    p = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {p}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return from_dict(raw, p)


def from_dict(raw: dict, path: Path | None = None) -> Settings:
    plat, db, ses, sec = (raw.get(k, {}) for k in ("platform", "database", "sessions", "security"))
    key = os.environ.get("TELECOM_PAY_PIN_KEY") or sec.get("pin_key")
    if not key:
        raise ConfigError("security.pin_key or TELECOM_PAY_PIN_KEY is required")
    try:
        limits = {int(tier): TierLimits(**{k: _money(v, f"limits.{tier}.{k}") for k, v in vals.items()})
                  for tier, vals in raw.get("limits", {"1": {"per_txn": 50000, "daily": 100000,
                                                              "monthly": 500000}}).items()}
        fees = {kind: FeeRule(**vals) for kind, vals in raw.get("fees", {}).items()}
    except TypeError as exc:
        raise ConfigError(f"bad limits or fees: {exc}") from exc
    for kind, rule in fees.items():
        if rule.payer not in ("subscriber", "merchant"):
            raise ConfigError(f"fees.{kind}.payer must be subscriber or merchant")
    db_url = db.get("url", Settings.database_url)
    if db_url != EMBEDDED_DATABASE_URL and not sec.get("allow_development_keys", False):
        _refuse_development_keys(raw, key, db_url)
        _refuse_development_ami_secret(raw, db_url)
    return Settings(
        raw=raw, path=path,
        currency=plat.get("currency", "CNY"), timezone=plat.get("timezone", "Asia/Shanghai"),
        region=plat.get("region", "CN"), default_language=plat.get("default_language", "zh"),
        service_number=str(plat.get("service_number", "10658888")),
        database_url=db_url, auto_upgrade=bool(db.get("auto_upgrade", True)),
        sessions_url=ses.get("url", "memory://"), sessions_prefix=ses.get("prefix", "tp:"),
        pin_key=key.encode() if isinstance(key, str) else key,
        pin_max_failures=int(sec.get("pin_max_failures", 3)),
        pin_lock_minutes=int(sec.get("pin_lock_minutes", 30)),
        confirm_minutes=int(sec.get("confirm_minutes", 10)),
        pending_payment_minutes=int(sec.get("pending_payment_minutes", 5)),
        velocity_per_minute=int(sec.get("velocity_payments_per_minute", 5)),
        self_freezes_per_day=int(sec.get("self_freezes_per_day", 3)),
        lockout_alert_after=int(sec.get("lockout_alert_after", 2)),
        agent_float_max_per_operation=_money(sec.get("agent_float_max_per_operation", 10_000_000),
                                             "security.agent_float_max_per_operation"),
        agent_float_max_per_day=_money(sec.get("agent_float_max_per_day", 50_000_000),
                                       "security.agent_float_max_per_day"),
        limits=limits, fees=fees,
        merchants=list(raw.get("merchants", [])), agents=list(raw.get("agents", [])),
        risk=_risk(raw),
    )


def _risk(raw: dict) -> RiskRules:
    try:
        return parse_rules(raw.get("risk"))
    except RiskConfigError as exc:
        raise ConfigError(str(exc)) from exc


def _is_development_key(key) -> bool:
    text = key.decode(errors="replace") if isinstance(key, bytes) else str(key or "")
    return text.startswith(DEV_PIN_KEY_MARK)


def _refuse_development_keys(raw: dict, pin_key, db_url: str) -> None:
    where = db_url.split("://", 1)[0]
    if _is_development_key(pin_key):
        raise ConfigError(
            f"security.pin_key is the development default, and database.url ({where}) is not the embedded "
            "default: set TELECOM_PAY_PIN_KEY to 32+ random bytes (e.g. `openssl rand -hex 32`), or set "
            "security.allow_development_keys = true for a test or demo database")
    bank = raw.get("bank", {})
    card_key = os.environ.get("TELECOM_PAY_CARD_TOKEN_KEY") or bank.get("card_token_key")
    if bank.get("factory") and bank.get("enabled", True) and _is_development_key(card_key):
        raise ConfigError(
            f"bank.card_token_key is the development default, and database.url ({where}) is not the embedded "
            "default: set TELECOM_PAY_CARD_TOKEN_KEY to 32+ random bytes (e.g. `openssl rand -hex 32`), or set "
            "security.allow_development_keys = true for a test or demo database")


#: the AMI simulator's account in config/telecom-pay.toml (a development default)
DEV_AMI_SECRET = "secret"


def _refuse_development_ami_secret(raw: dict, db_url: str) -> None:
    ami = raw.get("ami", {})
    if ami.get("factory") and ami.get("enabled", True) and str(ami.get("secret", "")) in ("", DEV_AMI_SECRET):
        raise ConfigError(
            f"ami.secret is empty or the development default, and database.url ({db_url.split('://', 1)[0]}) is "
            "not the embedded default: set the switch's manager secret (config/asterisk/manager.conf), disable "
            "[ami] (enabled = false), or set security.allow_development_keys = true for a test or demo database")


def _money(v, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ConfigError(f"{where} must be a non-negative integer in minor units")
    return v
