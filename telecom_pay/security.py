"""PINs, passwords, lockout, limits, velocity.

PINs are short, so a plain hash would fall to a 10^6 brute force of a stolen
table: they are keyed (HMAC-SHA-256 with a server key kept outside the
database) and bound to the account id. Web passwords use argon2id.
"""
from __future__ import annotations

import asyncio
import hmac
import secrets
import string
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from hashlib import sha256

from argon2 import PasswordHasher as _Argon2
from argon2.exceptions import InvalidHashError, VerificationError

from telecom_pay.config import TierLimits
from telecom_pay.outcomes import Outcome

PIN_LENGTH = 6
_PASSWORD_ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "0OoIl1")


class PinHasher:
    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ValueError("the PIN key must be at least 16 bytes")
        self._key = key

    def hash(self, account_id: int, pin: str) -> str:
        return "h1$" + hmac.new(self._key, f"{account_id}:{pin}".encode(), sha256).hexdigest()

    def verify(self, account_id: int, pin: str, stored: str | None) -> bool:
        if not stored:
            return False
        return hmac.compare_digest(self.hash(account_id, pin), stored)


class PasswordHasher:
    """argon2id is slow on purpose (tens of milliseconds and 64 MiB with the
    default parameters): run on the reactor thread it would stall every
    channel. It runs on its own thread (argon2-cffi releases the GIL),
    one hash at a time by default: argon2's lanes already use the cores, and
    more at once would starve the reactor of CPU. `runs` counts them, for
    the operator's statistics and the flood test."""

    def __init__(self, *, threads: int = 1, **argon2_params):
        self._ph = _Argon2(**argon2_params)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        self.runs = 0

    async def hash(self, password: str) -> str:
        return await self._in_pool(self._ph.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        if not stored:
            return False
        return await self._in_pool(self._verify, stored, password)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._ph.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _in_pool(self, fn, *args):
        self.runs += 1
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)


def is_pin_format(pin: str | None) -> bool:
    return isinstance(pin, str) and len(pin) == PIN_LENGTH and pin.isascii() and pin.isdigit()


def is_weak_pin(pin: str) -> bool:
    """All one digit, or a run up or down (123456, 987654)."""
    if len(set(pin)) == 1:
        return True
    steps = {(int(b) - int(a)) % 10 for a, b in zip(pin, pin[1:])}
    return steps in ({1}, {9})


def generate_pin() -> str:
    while True:
        pin = "".join(secrets.choice(string.digits) for _ in range(PIN_LENGTH))
        if not is_weak_pin(pin):
            return pin


def generate_password(length: int = 8) -> str:
    while True:
        pw = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))
        if any(c.isdigit() for c in pw) and any(c.isalpha() for c in pw):
            return pw


@dataclass(frozen=True)
class LimitRefusal:
    outcome: Outcome
    limit: int


def check_limits(limits: TierLimits, amount: int, day_total: int, month_total: int) -> LimitRefusal | None:
    """Totals are what the account already spent today / this month."""
    if amount > limits.per_txn:
        return LimitRefusal(Outcome.LIMIT_PER_TXN, limits.per_txn)
    if day_total + amount > limits.daily:
        return LimitRefusal(Outcome.LIMIT_DAILY, limits.daily)
    if month_total + amount > limits.monthly:
        return LimitRefusal(Outcome.LIMIT_MONTHLY, limits.monthly)
    return None
