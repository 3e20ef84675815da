"""MSISDN normalisation to E.164 (digits, no '+'), via phonenumbers.

Subscribers type local forms (`13800138000`, `138 0013 8000`, `+86 138...`,
`0086138...`); the whole platform keys on one canonical form.
"""
from __future__ import annotations

import unicodedata

import phonenumbers

DEFAULT_REGION = "CN"


class MsisdnError(ValueError):
    """Not a valid mobile number."""


def normalize(text: str, region: str = DEFAULT_REGION) -> str:
    """Return the E.164 digits (without '+') of a mobile number."""
    if not isinstance(text, str):
        raise MsisdnError("number must be text")
    t = unicodedata.normalize("NFKC", text).strip()
    t = t.replace(" ", "").replace("-", "")
    if t.startswith("00"):
        t = "+" + t[2:]
    elif t.isdigit() and region == "CN" and len(t) == 13 and t.startswith("86"):
        t = "+" + t
    try:
        num = phonenumbers.parse(t, region)
    except phonenumbers.NumberParseException as exc:
        raise MsisdnError(f"not a phone number: {text!r}") from exc
    if not phonenumbers.is_valid_number(num):
        raise MsisdnError(f"not a valid phone number: {text!r}")
    ntype = phonenumbers.number_type(num)
    if ntype not in (phonenumbers.PhoneNumberType.MOBILE,
                     phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE):
        raise MsisdnError(f"not a mobile number: {text!r}")
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)[1:]


def is_msisdn(text: str, region: str = DEFAULT_REGION) -> bool:
    try:
        normalize(text, region)
        return True
    except MsisdnError:
        return False


def mask(msisdn: str) -> str:
    """For logs: keep the ends, hide the middle (8613800138000 -> 86138****8000)."""
    if len(msisdn) <= 7:
        return "*" * len(msisdn)
    return msisdn[:5] + "*" * (len(msisdn) - 9) + msisdn[-4:]


def local_form(msisdn: str, region: str = DEFAULT_REGION) -> str:
    """E.164 digits -> the national form subscribers recognise (13800138000)."""
    num = phonenumbers.parse("+" + msisdn, None)
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL).replace(" ", "")
