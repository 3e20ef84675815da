"""Request signing for the SP payment API and its callbacks (README.md here).

One implementation for both directions: merchants sign their API requests
with their secret, the platform signs its callbacks with the same secret,
and the sample shop signs exactly as an integrator would. HMAC-SHA-256 over
the method, the request target, the timestamp, the nonce and the body's
SHA-256, so neither the body nor the path can be swapped under a valid
signature, and a stale or replayed request is refused even when signed.

The checks are in the order that leaks least: the headers' shape, the key,
the signature (constant time), then the clock window, and only then the
nonce is recorded, so a forger can neither burn a merchant's nonces nor
learn anything beyond "bad signature".
"""
from __future__ import annotations

import hmac
import re
import secrets
import time
from dataclasses import dataclass
from hashlib import sha256
from typing import Awaitable, Callable, Mapping

KEY_HEADER = "X-TP-Key"
TIMESTAMP_HEADER = "X-TP-Timestamp"
NONCE_HEADER = "X-TP-Nonce"
SIGNATURE_HEADER = "X-TP-Signature"
EVENT_HEADER = "X-TP-Event"

NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
KEY_ID_RE = re.compile(r"^mk_[A-Za-z0-9]{8,40}$")
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE_RE = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_WINDOW = 300          # seconds either side of the server's clock


class SignatureRefused(Exception):
    """`code` is the API's `error` (README.md): safe to show the caller."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def canonical(method: str, target: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return "\n".join((method.upper(), target, timestamp, nonce, sha256(body or b"").hexdigest())).encode()


def signature(secret: str | bytes, method: str, target: str, timestamp: str, nonce: str, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, canonical(method, target, timestamp, nonce, body), sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def sign_headers(key_id: str, secret: str | bytes, method: str, target: str, body: bytes, *,
                 now: float | None = None, nonce: str | None = None) -> dict[str, str]:
    """The four headers of a signed request (or callback)."""
    ts = str(int(time.time() if now is None else now))
    nonce = nonce or new_nonce()
    return {KEY_HEADER: key_id, TIMESTAMP_HEADER: ts, NONCE_HEADER: nonce,
            SIGNATURE_HEADER: signature(secret, method, target, ts, nonce, body)}


def derive_secret(server_key: bytes, key_id: str) -> str:
    """A merchant's API secret: derived, never stored (a stolen database
    holds none). Shown once at onboarding; the platform recomputes it."""
    return "ms_" + hmac.new(server_key, f"merchant-api:{key_id}".encode(), sha256).hexdigest()


def new_key_id() -> str:
    return "mk_" + secrets.token_hex(10)


@dataclass(frozen=True)
class Verified:
    key_id: str
    timestamp: int
    nonce: str


def _header(headers: Mapping[str, str], name: str) -> str:
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return ""


async def verify(headers: Mapping[str, str], method: str, target: str, body: bytes, *,
                 secret_for: Callable[[str], Awaitable[str | None]],
                 remember_nonce: Callable[[str, str, float], Awaitable[bool]],
                 now: float, window: int = DEFAULT_WINDOW) -> Verified:
    """Raises SignatureRefused, or returns who signed. `secret_for(key_id)`:
    the key's secret, None if unknown; `remember_nonce(key_id, nonce, ttl)`:
    True if the nonce was new (recorded atomically, e.g. SET NX)."""
    key_id = _header(headers, KEY_HEADER).strip()
    ts = _header(headers, TIMESTAMP_HEADER).strip()
    nonce = _header(headers, NONCE_HEADER).strip()
    sig = _header(headers, SIGNATURE_HEADER).strip().lower()
    if not (KEY_ID_RE.match(key_id) and _TIMESTAMP_RE.match(ts) and NONCE_RE.match(nonce)
            and _SIGNATURE_RE.match(sig)):
        raise SignatureRefused("missing_signature",
                               f"signed requests need {KEY_HEADER}, {TIMESTAMP_HEADER}, {NONCE_HEADER} "
                               f"(16-64 of A-Z a-z 0-9 _ -) and {SIGNATURE_HEADER} (64 hex digits)")
    secret = await secret_for(key_id)
    if secret is None:
        raise SignatureRefused("unknown_key", "unknown API key")
    if not hmac.compare_digest(signature(secret, method, target, ts, nonce, body), sig):
        raise SignatureRefused("bad_signature", "the signature does not match the request")
    if abs(now - int(ts)) > window:
        raise SignatureRefused("stale_timestamp", f"the timestamp is more than {window} s from the server's clock")
    if not await remember_nonce(key_id, nonce, 2.0 * window):
        raise SignatureRefused("nonce_reused", "this nonce was already used")
    return Verified(key_id, int(ts), nonce)
