"""Card numbers stay out of storage and logs: the platform keeps a keyed
token (HMAC-SHA-256 of the PAN), the last 4 digits and the BIN; logs show
`622202******1234` at most."""
from __future__ import annotations

import hashlib
import hmac

from bank_bridge.spec import mask_pan

__all__ = ["card_token", "mask_pan", "validate_pan", "validate_expiry", "InvalidCardData"]


class InvalidCardData(ValueError):
    pass


def card_token(pan: str, key: bytes) -> str:
    """64 hex characters; the same PAN gives the same token under one key."""
    if not key:
        raise ValueError("a card token key is required")
    return hmac.new(key, pan.encode("ascii"), hashlib.sha256).hexdigest()


def validate_pan(pan: str) -> str:
    pan = pan.replace(" ", "")
    if not (pan.isdigit() and 12 <= len(pan) <= 19):
        raise InvalidCardData("a card number has 12 to 19 digits")
    return pan


def validate_expiry(expiry: str) -> str:
    """Field 14 format YYMM."""
    if not (len(expiry) == 4 and expiry.isdigit() and 1 <= int(expiry[2:]) <= 12):
        raise InvalidCardData("expiry must be YYMM")
    return expiry
