"""The core's port to the bank. bank_bridge/ implements it over ISO 8583;
tests of the core may use `InProcessBank` (tests/bankdouble.py), a real
implementation at this seam.

Two-phase discipline: the service books a *pending* ledger transfer before
calling the port, posts it on APPROVED, voids it on DECLINED. On UNKNOWN
(timeout, link lost) the transfer stays pending: the port owns recovery
(reversal advice until acknowledged) and reports the final answer through
the `InDoubtResolver` it was given, which voids or posts the transfer.

The port remembers every answer (`known_outcome`), so a transfer left
pending by a failure or a crash after the answer is finished on the next
start (`PaymentService.recover_bank_operations`) instead of waiting forever.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from telecom_pay.outcomes import BankDecline


class BankStatus(str, enum.Enum):
    APPROVED = "approved"
    DECLINED = "declined"
    UNKNOWN = "unknown"          # in doubt: recovery is under way


@dataclass(frozen=True)
class CardRef:
    """What the platform keeps of a card: never the full number."""
    token: str
    last4: str
    bin: str
    card_type: str               # "debit" or "credit"
    bank_code: str


@dataclass(frozen=True)
class BankResult:
    status: BankStatus
    decline: BankDecline | None = None
    response_code: str | None = None   # ISO 8583 field 39
    stan: str | None = None
    rrn: str | None = None
    review: bool = False               # UNKNOWN and waiting for an operator's decision


@dataclass(frozen=True)
class CardVerification:
    status: BankStatus
    card: CardRef | None = None
    decline: BankDecline | None = None
    response_code: str | None = None


class InDoubtResolver(Protocol):
    async def resolve_in_doubt(self, operation_key: str, approved: bool) -> None:
        """Finish a pending transfer whose bank outcome was unknown: False
        after a confirmed reversal, either after an operator's decision.
        Called at least once; must be idempotent."""


class BankPort(Protocol):
    async def debit_card(self, *, operation_key: str, card: CardRef, amount: int) -> BankResult:
        """Take `amount` minor units from the card (top-up). `operation_key`
        is the ledger idempotency key: the same key never debits twice."""

    async def credit_card(self, *, operation_key: str, card: CardRef, amount: int) -> BankResult:
        """Pay `amount` to the card (withdrawal, refund, merchant payout)."""

    async def verify_card(self, *, pan: str, expiry: str, holder_msisdn: str) -> CardVerification:
        """Zero-amount account verification before binding a card."""

    async def known_outcome(self, operation_key: str) -> BankResult | None:
        """The recorded answer for a money operation (UNKNOWN while recovery
        or a manual review is open), or None if nothing was ever sent under
        that key."""

    def set_resolver(self, resolver: InDoubtResolver) -> None:
        """The service registers itself to receive in-doubt outcomes."""
