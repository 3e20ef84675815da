"""An in-process bank at the core's BankPort seam: cards with balances,
declines and in-doubt answers, for tests of the core without sockets.
(The real bank is bank_bridge over ISO 8583 to simulators/bank.)"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from telecom_pay.bank_port import BankResult, BankStatus, CardRef, CardVerification
from telecom_pay.outcomes import BankDecline


@dataclass
class Card:
    pan: str
    card_type: str = "debit"
    balance: int = 1_000_000
    decline: BankDecline | None = None


@dataclass
class InProcessBank:
    cards: dict[str, Card] = field(default_factory=dict)
    in_doubt: bool = False            # answer UNKNOWN (as after a timeout)
    resolver: object = None
    movements: list[tuple[str, str, int]] = field(default_factory=list)
    seen: dict[str, BankResult] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)     # answered UNKNOWN, not yet resolved

    def add_card(self, pan: str, **kw) -> Card:
        self.cards[self.token(pan)] = card = Card(pan, **kw)
        return card

    @staticmethod
    def token(pan: str) -> str:
        return hashlib.sha256(pan.encode()).hexdigest()

    def set_resolver(self, resolver) -> None:
        self.resolver = resolver

    async def verify_card(self, *, pan, expiry, holder_msisdn):
        card = self.cards.get(self.token(pan))
        if card is None:
            return CardVerification(BankStatus.DECLINED, decline=BankDecline.INVALID_CARD, response_code="14")
        if card.decline:
            return CardVerification(BankStatus.DECLINED, decline=card.decline)
        return CardVerification(BankStatus.APPROVED, card=CardRef(self.token(pan), pan[-4:], pan[:6],
                                                                  card.card_type, "TESTBANK"))

    async def _move(self, key, card_ref, amount, sign):
        if key in self.seen:
            return self.seen[key]
        if self.in_doubt:
            self.unknown.add(key)
            return BankResult(BankStatus.UNKNOWN)
        card = self.cards[card_ref.token]
        if card.decline:
            r = BankResult(BankStatus.DECLINED, decline=card.decline)
        elif sign < 0 and card.balance < amount:
            r = BankResult(BankStatus.DECLINED, decline=BankDecline.INSUFFICIENT_FUNDS, response_code="51")
        else:
            card.balance += sign * amount
            self.movements.append((key, card.pan, sign * amount))
            r = BankResult(BankStatus.APPROVED, response_code="00")
        self.seen[key] = r
        return r

    async def debit_card(self, *, operation_key, card, amount):
        return await self._move(operation_key, card, amount, -1)

    async def credit_card(self, *, operation_key, card, amount):
        return await self._move(operation_key, card, amount, +1)

    async def known_outcome(self, operation_key):
        if operation_key in self.seen:
            return self.seen[operation_key]
        return BankResult(BankStatus.UNKNOWN) if operation_key in self.unknown else None
