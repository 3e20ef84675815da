"""The risk and AML rules (风险控制, 反洗钱) as configured in `[risk]`:
each rule has its thresholds, its window and an action, `hold` (the
operation waits, reserved, for an operator's decision) or `alert` (it goes
through and an operator reviews it afterwards). A rule left out of the
config is off: a deployment turns on what its compliance officer asks for,
and a typo in a rule's name is an error rather than a rule silently off.

Amounts are integer fen, as everywhere. A bad value stops the daemon at
start with the rule and the field named: a risk rule that quietly fell
back to a default would let through what it was configured to stop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HOLD, ALERT = "hold", "alert"
ACTIONS = (HOLD, ALERT)

#: the operations the rules screen: money a subscriber moves out of a wallet
#: (PIN-guarded spends). Top-ups and withdrawals wait on the bank and
#: counter cash-in on an agent, who are screened by their own parties.
SCREENED_KINDS = ("payment", "p2p", "airtime")
#: what the windows count as a wallet's spending (withdrawals move money
#: out too, though they are not held themselves)
COUNTED_KINDS = ("payment", "p2p", "airtime", "withdrawal")


class RiskConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Velocity:
    """More than `max_count` spends within the window: the spend that
    would be number max_count + 1 hits."""
    action: str
    max_count: int
    window_minutes: int
    name = "velocity"


@dataclass(frozen=True)
class LargeAmount:
    """One spend of `amount` or more."""
    action: str
    amount: int
    name = "large_amount"


@dataclass(frozen=True)
class Structuring:
    """Repeated amounts just under a limit (splitting to stay below it): a
    spend in [limit - limit*percent/100, limit) counts, and the one that
    makes `count` of them within the window hits."""
    action: str
    limit: int
    percent: int
    count: int
    window_minutes: int
    name = "structuring"

    @property
    def lower(self) -> int:
        return self.limit - self.limit * self.percent // 100


@dataclass(frozen=True)
class FanIn:
    """Money from many senders into one wallet (a collection account): the
    transfer from sender number `senders` (distinct, within the window,
    this one included) hits."""
    action: str
    senders: int
    window_minutes: int
    name = "fan_in"


@dataclass(frozen=True)
class NewAccount:
    """An account younger than `days` moving more than `amount` within the
    window (this spend included)."""
    action: str
    days: int
    amount: int
    window_minutes: int
    name = "new_account"


_RULES = {"velocity": (Velocity, ("max_count", "window_minutes")),
          "large_amount": (LargeAmount, ("amount",)),
          "structuring": (Structuring, ("limit", "percent", "count", "window_minutes")),
          "fan_in": (FanIn, ("senders", "window_minutes")),
          "new_account": (NewAccount, ("days", "amount", "window_minutes"))}
RULE_NAMES = tuple(_RULES)


@dataclass(frozen=True)
class RiskRules:
    velocity: Velocity | None = None
    large_amount: LargeAmount | None = None
    structuring: Structuring | None = None
    fan_in: FanIn | None = None
    new_account: NewAccount | None = None
    enabled: bool = True
    rules: tuple = field(default=(), compare=False)

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.rules)


def parse_rules(section: Any) -> RiskRules:
    """`[risk]` as RiskRules, or RiskConfigError naming the bad value."""
    if section is None:
        return RiskRules()
    if not isinstance(section, dict):
        raise RiskConfigError("[risk] must be a table")
    enabled = section.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RiskConfigError("risk.enabled must be true or false")
    unknown = sorted(set(section) - set(_RULES) - {"enabled"})
    if unknown:
        raise RiskConfigError(f"risk.{unknown[0]} is not a rule (rules: {', '.join(RULE_NAMES)})")
    parsed: dict[str, Any] = {}
    for name, (cls, numbers) in _RULES.items():
        raw = section.get(name)
        if raw is None:
            continue
        if not isinstance(raw, dict):
            raise RiskConfigError(f"risk.{name} must be a table")
        extra = sorted(set(raw) - set(numbers) - {"action"})
        if extra:
            raise RiskConfigError(f"risk.{name}.{extra[0]} is not a setting of this rule "
                                  f"(settings: action, {', '.join(numbers)})")
        action = raw.get("action")
        if action not in ACTIONS:
            raise RiskConfigError(f"risk.{name}.action must be \"hold\" or \"alert\"")
        values = {"action": action}
        for n in numbers:
            v = raw.get(n)
            if v is None:
                raise RiskConfigError(f"risk.{name}.{n} is required")
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                unit = " (minor units, fen)" if n in ("amount", "limit") else ""
                raise RiskConfigError(f"risk.{name}.{n} must be a positive integer{unit}")
            values[n] = v
        if name == "structuring" and values["percent"] >= 100:
            raise RiskConfigError("risk.structuring.percent must be below 100")
        parsed[name] = cls(**values)
    return RiskRules(**parsed, enabled=enabled, rules=tuple(parsed.values()))
