"""One-time codes sent by SMS (web opening, forgotten password).

A code is six random digits (`secrets`), kept in the session store only
as an HMAC under the server's PIN key, bound to its purpose and number
(a code sent to open an account never resets a password, and a code
for one number never serves another), for a short TTL. Each wrong try
is counted with `incr`, so instances sharing Redis share the count;
after `attempts` tries the code is dead. A right code is `take`n, so of
two concurrent uses only one succeeds.

Sending costs the operator an SMS: sends are bounded per number and per
caller address in a window, before anything else is looked at, so a
flood costs at most the bound whatever numbers it names.
"""
from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from hashlib import sha256

from telecom_pay.sessions import SessionStore

OPEN, RESET = "open", "reset"
PURPOSES = (OPEN, RESET)
CODE_LENGTH = 6


@dataclass(frozen=True)
class OtpSettings:
    ttl: float = 300.0                 # seconds a code can be used
    attempts: int = 5                  # tries before the code is dead
    window: float = 3600.0             # seconds the send counts below cover
    per_number: int = 3                # codes sent to one number in the window
    per_address: int = 10              # codes asked from one address in the window

    @classmethod
    def from_config(cls, cfg: dict) -> "OtpSettings":
        return cls(ttl=float(cfg.get("otp_ttl", 300)), attempts=int(cfg.get("otp_attempts", 5)),
                   window=float(cfg.get("otp_window", 3600)), per_number=int(cfg.get("otp_per_number", 3)),
                   per_address=int(cfg.get("otp_per_address", 10)))


class OneTimeCodes:
    def __init__(self, store: SessionStore, key: bytes, settings: OtpSettings | None = None):
        self.store = store
        self._key = key
        self.settings = settings or OtpSettings()

    def _digest(self, purpose: str, msisdn: str, code: str) -> str:
        return hmac.new(self._key, f"otp:{purpose}:{msisdn}:{code}".encode(), sha256).hexdigest()

    @staticmethod
    def _code_key(purpose: str, msisdn: str) -> str:
        return f"otp:code:{purpose}:{msisdn}"

    @staticmethod
    def _tries_key(purpose: str, msisdn: str) -> str:
        return f"otp:tries:{purpose}:{msisdn}"

    async def may_send(self, msisdn: str, address: str) -> bool:
        """Counts this request against the number and the address; False
        once either is over its bound for the window."""
        s = self.settings
        by_address = await self.store.incr(f"otp:sent:addr:{address[:64]}", s.window)
        by_number = await self.store.incr(f"otp:sent:num:{msisdn}", s.window)
        return by_address <= s.per_address and by_number <= s.per_number

    async def issue(self, purpose: str, msisdn: str) -> str:
        """A new code for (purpose, number), replacing any earlier one; the
        caller sends it and forgets it."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown purpose {purpose!r}")
        code = "".join(secrets.choice("0123456789") for _ in range(CODE_LENGTH))
        await self.store.delete(self._tries_key(purpose, msisdn))
        await self.store.put(self._code_key(purpose, msisdn), {"digest": self._digest(purpose, msisdn, code)},
                             self.settings.ttl)
        return code

    async def check(self, purpose: str, msisdn: str, code: str) -> bool:
        """True once for the right code; a wrong one is counted, and after
        `attempts` tries the code is deleted whatever is typed."""
        key = self._code_key(purpose, msisdn)
        stored = await self.store.get(key)
        if stored is None:
            return False
        tries = await self.store.incr(self._tries_key(purpose, msisdn), self.settings.ttl)
        if tries > self.settings.attempts:
            await self.store.delete(key)
            return False
        typed = code.strip() if isinstance(code, str) else ""
        if not hmac.compare_digest(stored.get("digest", ""), self._digest(purpose, msisdn, typed)):
            if tries >= self.settings.attempts:
                await self.store.delete(key)
            return False
        taken = await self.store.take(key)          # single use: of two concurrent uses one wins
        if taken is None or not hmac.compare_digest(taken.get("digest", ""), stored.get("digest", "")):
            return False
        await self.store.delete(self._tries_key(purpose, msisdn))
        return True
