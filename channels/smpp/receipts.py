"""SMPP delivery receipts: parsing the de-facto text format and matching ids.

SMPP 3.4 (appendix B) only suggests a receipt format; SMSCs differ in field
case, spacing, padding of numbers and -- the classic cause of unmatched
receipts -- the message id: an SMSC may return ``0A1B`` in submit_sm_resp and
``2587`` (the same number in decimal) in the receipt, or pad it with zeros, or
change its case.  This module parses leniently and offers id normalisation so
that a store can match a receipt against the ids it recorded at submit time:

* store ``normalize_message_id(id)`` of every submit_sm_resp message_id;
* look a receipt up with any of ``message_id_candidates(receipt_id)``.

Pure functions, no I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "Receipt", "ReceiptFormatError", "parse_receipt", "receipt_from_tlvs",
    "normalize_message_id", "message_id_candidates", "message_ids_match",
    "MESSAGE_STATES", "FINAL_STATES",
]

#: message_state TLV values (SMPP 3.4, 5.2.28) -> the receipt ``stat`` words.
MESSAGE_STATES = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}

#: States after which the SMSC sends no further receipt for the message.
FINAL_STATES = frozenset({"DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "REJECTD", "UNKNOWN"})

# Spellings seen in the wild, folded to the canonical seven-letter words.
_STATE_ALIASES = {
    "DELIVERED": "DELIVRD",
    "DELIVRD": "DELIVRD",
    "EXPIRED": "EXPIRED",
    "DELETED": "DELETED",
    "UNDELIVERABLE": "UNDELIV",
    "UNDELIV": "UNDELIV",
    "ACCEPTED": "ACCEPTD",
    "ACCEPTD": "ACCEPTD",
    "UNKNOWN": "UNKNOWN",
    "REJECTED": "REJECTD",
    "REJECTD": "REJECTD",
    "ENROUTE": "ENROUTE",
    "FAILED": "UNDELIV",
}

# A key is one of the known field names followed by ':'; the value runs to the
# next known key.  Values may contain spaces ("submit date" is itself a key).
_KEY_RE = re.compile(
    r"(?:(?<=\s)|^)(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err|text)\s*:",
    re.IGNORECASE)


class ReceiptFormatError(ValueError):
    """The text is not a delivery receipt (no ``id:`` and no ``stat:``)."""


@dataclass(frozen=True)
class Receipt:
    """One delivery receipt, fields as the SMSC sent them (strings are stripped).

    ``message_id`` is the raw id text; use :func:`message_id_candidates` to
    match it.  ``state`` is canonical (``DELIVRD``, ``UNDELIV``, ...).
    """
    message_id: str
    state: str
    error: str | None = None
    submitted: int | None = None
    delivered: int | None = None
    submit_date: datetime | None = None
    done_date: datetime | None = None
    text: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def is_delivered(self) -> bool:
        return self.state == "DELIVRD"


def _canonical_state(word: str | None) -> str:
    if not word:
        return "UNKNOWN"
    return _STATE_ALIASES.get(word.strip().upper(), word.strip().upper())


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() else None


def _date_or_none(value: str | None) -> datetime | None:
    """``YYMMDDhhmm`` or ``YYMMDDhhmmss`` (some SMSCs add seconds)."""
    if value is None:
        return None
    digits = value.strip()
    length = len(digits)
    if (length == 10 or length == 12) and digits.isascii() and digits.isdigit():
        # What strptime("%y%m%d%H%M[%S]") makes of ASCII digits, without its
        # regex and locale machinery (a third of a receipt's parsing time):
        # every field is two digits, %y pivots at 69.
        year = int(digits[0:2])
        try:
            return datetime(year + (2000 if year <= 68 else 1900), int(digits[2:4]), int(digits[4:6]),
                            int(digits[6:8]), int(digits[8:10]), int(digits[10:12]) if length == 12 else 0)
        except ValueError:
            return None
    for fmt, length in (("%y%m%d%H%M%S", 12), ("%y%m%d%H%M", 10)):
        if len(digits) == length and digits.isdigit():
            try:
                return datetime.strptime(digits, fmt)
            except ValueError:
                return None
    return None


def _fields(text: str) -> dict[str, str]:
    matches = list(_KEY_RE.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(matches):
        key = m.group(1).lower().replace("_", " ")
        key = key.replace("submitdate", "submit date").replace("donedate", "done date")
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = text[m.end():end]
        if key != "text":
            value = value.strip()
        else:
            value = value.lstrip(" ")
        out.setdefault(key, value)
    return out


def parse_receipt(text: str | bytes) -> Receipt:
    """Parse ``id:... sub:... dlvrd:... submit date:... done date:... stat:... err:... text:...``.

    Tolerates any key case, missing fields, extra spaces, ``submit_date``
    spellings and seconds in the dates.  Raises :class:`ReceiptFormatError`
    when neither an id nor a state can be found.
    """
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("latin-1")
    fields = _fields(text)
    message_id = fields.get("id", "").strip()
    if not message_id and "stat" not in fields:
        raise ReceiptFormatError("not a delivery receipt")
    err = fields.get("err")
    return Receipt(
        message_id=message_id,
        state=_canonical_state(fields.get("stat")),
        error=err.strip() if err is not None and err.strip() else None,
        submitted=_int_or_none(fields.get("sub")),
        delivered=_int_or_none(fields.get("dlvrd")),
        submit_date=_date_or_none(fields.get("submit date")),
        done_date=_date_or_none(fields.get("done date")),
        text=fields.get("text", ""),
    )


def receipt_from_tlvs(receipted_message_id: str | None, message_state: int | None,
                      network_error_code: bytes | str | None = None,
                      text: str | bytes | None = None) -> Receipt:
    """Build a receipt from the SMPP 3.4 TLVs, completed by the text when it parses.

    The TLVs win over the text: they are typed, the text is free-form.
    """
    parsed: Receipt | None = None
    if text:
        try:
            parsed = parse_receipt(text)
        except ReceiptFormatError:
            parsed = None
    message_id = (receipted_message_id or "").strip() or (parsed.message_id if parsed else "")
    if message_state is not None:
        state = MESSAGE_STATES.get(message_state, "UNKNOWN")
    else:
        state = parsed.state if parsed else "UNKNOWN"
    error = parsed.error if parsed else None
    if network_error_code:
        raw = network_error_code.encode("latin-1") if isinstance(network_error_code, str) \
            else bytes(network_error_code)
        if len(raw) == 3:   # type (1 octet) + code (2 octets)
            error = f"{raw[0]}:{int.from_bytes(raw[1:3], 'big')}"
    if not message_id:
        raise ReceiptFormatError("receipt without a message id")
    if parsed is None:
        return Receipt(message_id=message_id, state=state, error=error)
    return Receipt(message_id=message_id, state=state, error=error,
                   submitted=parsed.submitted, delivered=parsed.delivered,
                   submit_date=parsed.submit_date, done_date=parsed.done_date,
                   text=parsed.text)


_HEX = re.compile(r"^[0-9a-f]+$")
_DEC = re.compile(r"^[0-9]+$")


def normalize_message_id(message_id: str) -> str:
    """The storage form of an id: stripped, lower case, without leading zeros
    (an all-zero id stays ``0``)."""
    mid = message_id.strip().lower()
    if _HEX.match(mid):
        mid = mid.lstrip("0") or "0"
    return mid


def message_id_candidates(message_id: str) -> frozenset[str]:
    """Every normalised id that the given id may stand for.

    ``2587`` may be the decimal rendering of the hex id ``a1b`` and ``a1b``
    the hex rendering of ``2587``: both interpretations are returned, so a
    receipt matches whichever form the submit_sm_resp used.
    """
    norm = normalize_message_id(message_id)
    out = {norm}
    if _DEC.match(norm):
        out.add(format(int(norm, 10), "x"))
    if _HEX.match(norm):
        out.add(str(int(norm, 16)))
    return frozenset(out)


def message_ids_match(submitted_id: str, receipt_id: str) -> bool:
    """True when a receipt's id designates the message the SMSC acknowledged."""
    return normalize_message_id(submitted_id) in message_id_candidates(receipt_id) or \
        normalize_message_id(receipt_id) in message_id_candidates(submitted_id)
