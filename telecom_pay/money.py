"""Amounts are integers in minor units (fen, cents). Floats never appear.

Parsing accepts what subscribers type (`12`, `12.5`, `12.50`, `￥12`, `12元`)
and refuses anything ambiguous rather than guessing.
"""
from __future__ import annotations

import re
import unicodedata

MINOR_DIGITS = 2
MINOR_PER_MAJOR = 10 ** MINOR_DIGITS

_CURRENCY_MARKS = ("¥", "￥", "RMB", "CNY", "元", "YUAN")
_AMOUNT_RE = re.compile(r"^(\d{1,12})(?:\.(\d{1,2}))?$")


class AmountError(ValueError):
    """The text is not an amount we accept."""


def parse_amount(text: str) -> int:
    """Parse subscriber-typed amount text into minor units (positive)."""
    if not isinstance(text, str):
        raise AmountError("amount must be text")
    t = unicodedata.normalize("NFKC", text).strip().upper().replace(" ", "")
    for mark in _CURRENCY_MARKS:
        if t.startswith(mark):
            t = t[len(mark):]
        if t.endswith(mark):
            t = t[: -len(mark)]
    m = _AMOUNT_RE.match(t)
    if not m:
        raise AmountError(f"not an amount: {text!r}")
    major, minor = m.group(1), (m.group(2) or "")
    value = int(major) * MINOR_PER_MAJOR + int(minor.ljust(MINOR_DIGITS, "0") or 0)
    if value <= 0:
        raise AmountError("amount must be greater than zero")
    return value


def format_amount(minor: int) -> str:
    """Minor units -> `12.50` (sign kept for negative system balances)."""
    if not isinstance(minor, int) or isinstance(minor, bool):
        raise TypeError("amounts are int minor units")
    sign = "-" if minor < 0 else ""
    q, r = divmod(abs(minor), MINOR_PER_MAJOR)
    return f"{sign}{q}.{r:0{MINOR_DIGITS}d}"

