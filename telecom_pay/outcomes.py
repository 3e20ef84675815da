"""Typed results of PaymentService calls.

Every service call returns a `Result` whose `outcome` is one of `Outcome`;
channels render it (commands/replies.py for SMS/USSD, prompts for IVR, JSON
for web). The core never formats subscriber text itself.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Outcome(str, enum.Enum):
    OK = "ok"                                  # done; money moved if amount set
    CONFIRM_REQUIRED = "confirm_required"      # KT accepted, reply A to confirm
    PIN_REQUIRED = "pin_required"              # payment held, reply with PIN
    IN_PROGRESS = "in_progress"                # bank outcome not yet known
    # account state
    NO_ACCOUNT = "no_account"
    ACCOUNT_EXISTS = "account_exists"
    ACCOUNT_PENDING = "account_pending"
    ACCOUNT_FROZEN = "account_frozen"
    ACCOUNT_CLOSED = "account_closed"
    ALREADY_ACTIVE = "already_active"
    BALANCE_NOT_ZERO = "balance_not_zero"
    # money
    INSUFFICIENT_FUNDS = "insufficient_funds"
    NOT_WITHDRAWABLE = "not_withdrawable"      # consumption-only funds
    INVALID_AMOUNT = "invalid_amount"
    LIMIT_PER_TXN = "limit_per_txn"
    LIMIT_DAILY = "limit_daily"
    LIMIT_MONTHLY = "limit_monthly"
    VELOCITY_HOLD = "velocity_hold"
    RISK_HELD = "risk_held"                    # booked pending: a risk rule holds it for an operator's review
    RISK_REFUSED = "risk_refused"              # an operator refused a held operation: the money is free again
    # PIN
    PIN_WRONG = "pin_wrong"
    PIN_LOCKED = "pin_locked"
    PIN_FORMAT = "pin_format"                  # a PIN must be 6 digits
    PIN_CHANGE_REQUIRED = "pin_change_required"  # an initial or reset PIN: MM first
    FREEZE_LIMIT = "freeze_limit"              # DJ too often today from this number (params["limit"])
    CALLBACK_LIMIT = "callback_limit"          # HJ too often today from this number (params["limit"])
    # counterparties
    UNKNOWN_MERCHANT = "unknown_merchant"
    MERCHANT_INACTIVE = "merchant_inactive"
    UNKNOWN_RECIPIENT = "unknown_recipient"
    SELF_TRANSFER = "self_transfer"
    INVALID_NUMBER = "invalid_number"
    # bank
    NO_CARD = "no_card"
    BANK_DECLINED = "bank_declined"            # params["reason"]: a BankDecline
    BANK_UNAVAILABLE = "bank_unavailable"
    # conversation
    NOTHING_PENDING = "nothing_pending"
    CONFIRMATION_EXPIRED = "confirmation_expired"
    UNKNOWN_COMMAND = "unknown_command"
    MALFORMED = "malformed"                    # params["usage"]: command name
    # operations
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"  # params["differs"]: field names
    NOT_AUTHORIZED = "not_authorized"
    NOT_FOUND = "not_found"

    @property
    def ok(self) -> bool:
        return self in (Outcome.OK, Outcome.CONFIRM_REQUIRED, Outcome.PIN_REQUIRED, Outcome.IN_PROGRESS,
                        Outcome.RISK_HELD)


class BankDecline(str, enum.Enum):
    INSUFFICIENT_FUNDS = "insufficient_funds"  # ISO 8583 "51"
    INVALID_CARD = "invalid_card"              # "14"
    EXPIRED_CARD = "expired_card"              # "54"
    RESTRICTED = "restricted"                  # "62"
    ISSUER_UNAVAILABLE = "issuer_unavailable"  # "91"
    OTHER = "other"


@dataclass(frozen=True)
class StatementLine:
    ref: str
    kind: str            # topup, withdrawal, payment, p2p_in, p2p_out, airtime, fee, cash_in, refund ...
    amount: int          # signed, minor units, from the subscriber's side
    balance_after: int | None
    at: str              # ISO 8601 UTC
    counterparty: str    # merchant name, masked msisdn, "bank card 1234" ...
    state: str = "posted"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    ref: str | None = None          # transaction reference when money moved
    amount: int | None = None       # minor units
    fee: int | None = None
    balance: int | None = None      # spendable balance after the operation
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome.ok
