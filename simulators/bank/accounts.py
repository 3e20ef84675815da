"""Card accounts of the simulated issuer. Money in int minor units."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CARD_TYPES = ("debit", "credit")
CARD_STATUSES = ("active", "blocked")


class CardDataError(ValueError):
    pass


@dataclass
class Movement:
    at: str                    # ISO 8601 UTC
    date: str                  # business date YYYY-MM-DD (local)
    kind: str                  # debit | credit | reversal
    amount: int                # signed change of the card balance
    stan: str
    rrn: str
    terminal_id: str
    response_code: str = "00"
    reversed: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Card:
    pan: str
    expiry: str                # YYMM
    card_type: str = "debit"
    balance: int = 0           # debit: funds; credit: may go down to -limit
    limit: int = 0             # credit limit (credit cards)
    status: str = "active"
    tokens: set[str] = field(default_factory=set)
    movements: list[Movement] = field(default_factory=list)

    @property
    def available(self) -> int:
        return self.balance + (self.limit if self.card_type == "credit" else 0)

    @property
    def masked(self) -> str:
        return self.pan[:6] + "*" * (len(self.pan) - 10) + self.pan[-4:]

    def to_json(self, *, movements: bool = True) -> dict[str, Any]:
        data = {"pan": self.pan, "masked_pan": self.masked, "expiry": self.expiry, "type": self.card_type,
                "balance": self.balance, "limit": self.limit, "available": self.available,
                "status": self.status, "bound": bool(self.tokens)}
        if movements:
            data["movements"] = [m.to_json() for m in self.movements]
        return data


def _int(data: dict, name: str, default: int = 0) -> int:
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CardDataError(f"{name} must be an integer (minor units)")
    return value


def card_from_json(data: dict[str, Any]) -> Card:
    if not isinstance(data, dict):
        raise CardDataError("a card is a JSON object")
    pan = str(data.get("pan", ""))
    if not (pan.isdigit() and 12 <= len(pan) <= 19):
        raise CardDataError("pan must be 12 to 19 digits")
    expiry = str(data.get("expiry", ""))
    if not (len(expiry) == 4 and expiry.isdigit() and 1 <= int(expiry[2:]) <= 12):
        raise CardDataError("expiry must be YYMM")
    card_type = data.get("type", data.get("card_type", "debit"))
    if card_type not in CARD_TYPES:
        raise CardDataError(f"type must be one of {CARD_TYPES}")
    status = data.get("status", "active")
    if status not in CARD_STATUSES:
        raise CardDataError(f"status must be one of {CARD_STATUSES}")
    limit = _int(data, "limit")
    if limit < 0:
        raise CardDataError("limit must not be negative")
    return Card(pan=pan, expiry=expiry, card_type=card_type, balance=_int(data, "balance"),
                limit=limit, status=status)


def update_card(card: Card, data: dict[str, Any]) -> None:
    """PATCH semantics: balance, limit, status, expiry."""
    if not isinstance(data, dict):
        raise CardDataError("a card update is a JSON object")
    merged = card_from_json({**card.to_json(movements=False), **data, "pan": card.pan})
    card.balance, card.limit, card.status, card.expiry = merged.balance, merged.limit, merged.status, merged.expiry
