"""The one ISO 8583:1987 dialect spoken between telecom-pay and its banks.

Shared by the bridge (`bank_bridge.link`) and the bank simulator
(`simulators.bank`) so both ends always agree on the wire format. Built on
pyiso8583's `default_ascii` spec: ASCII fields, ASCII hex bitmaps, no header.
pyiso8583 checks lengths and bitmaps but not character classes, so
`decode_message` also checks that numeric fields hold digits.

Private use of fields (this network's agreement with its issuers):
- 48 carries the card agreement token (HMAC of the PAN, see
  `bank_bridge.cards`). Account verification (0100) sends PAN + expiry + token,
  the issuer registers the token; later financial messages identify the card
  by the token only, so the platform never has to keep a PAN.
- 62 in an 0110 answer carries the card type: "DEBIT" or "CREDIT".
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping

import iso8583
import iso8583.specs

SPEC: dict = copy.deepcopy(iso8583.specs.default_ascii)
SPEC["48"] = dict(SPEC["48"], desc="Additional Data - Private: card agreement token")
SPEC["62"] = dict(SPEC["62"], desc="Reserved Private: card type (DEBIT/CREDIT)")

# MTIs
AUTH_REQUEST, AUTH_RESPONSE = "0100", "0110"
FINANCIAL_REQUEST, FINANCIAL_RESPONSE = "0200", "0210"
REVERSAL_ADVICE, REVERSAL_ADVICE_REPEAT, REVERSAL_RESPONSE = "0420", "0421", "0430"
NETWORK_REQUEST, NETWORK_RESPONSE = "0800", "0810"

REQUEST_MTIS = frozenset({AUTH_REQUEST, FINANCIAL_REQUEST, REVERSAL_ADVICE,
                          REVERSAL_ADVICE_REPEAT, NETWORK_REQUEST})
RESPONSE_MTIS = frozenset({AUTH_RESPONSE, FINANCIAL_RESPONSE, REVERSAL_RESPONSE, NETWORK_RESPONSE})
KNOWN_MTIS = REQUEST_MTIS | RESPONSE_MTIS

# Field 3 processing codes
PROC_PURCHASE = "000000"        # debit the card (top-up)
PROC_CREDIT = "200000"          # credit the card (withdrawal, refund, payout)

# Field 70 network management codes
NET_SIGN_ON, NET_SIGN_OFF, NET_ECHO = "001", "002", "301"

# Field 39 response codes used here
RC_APPROVED = "00"
RC_INVALID_TRANSACTION = "12"
RC_INVALID_CARD = "14"
RC_ORIGINAL_NOT_FOUND = "25"             # 0430: no such original, nothing to reverse
RC_FORMAT_ERROR = "30"
RC_INSUFFICIENT_FUNDS = "51"
RC_EXPIRED_CARD = "54"
RC_RESTRICTED = "62"
RC_ISSUER_UNAVAILABLE = "91"
RC_SYSTEM_MALFUNCTION = "96"

CURRENCY_CNY = "156"

# Fields whose content must be digits (type n in ISO 8583:1987).
NUMERIC_FIELDS = frozenset({"2", "3", "4", "7", "11", "12", "13", "14", "32", "49", "70", "90"})


class MessageFormatError(ValueError):
    """A frame that is not a valid message of this dialect.

    `mti`, `stan` and `terminal_id` are whatever could be recovered before the
    error, so the receiver can answer a request with response code 30."""

    def __init__(self, reason: str, *, mti: str | None = None, stan: str | None = None,
                 terminal_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.mti = mti
        self.stan = stan
        self.terminal_id = terminal_id


def _recover(partial: Mapping[str, str], key: str) -> str | None:
    value = partial.get(key)
    if isinstance(value, str) and value.isdigit():
        return value
    return None


def decode_message(raw: bytes) -> dict[str, str]:
    """Decode one frame's payload into {"t": mti, "2": ..., ...}.

    Raises MessageFormatError for anything malformed: bad MTI, bad bitmap,
    truncated or overlong field, trailing bytes, non-digits in numeric fields."""
    try:
        decoded, _ = iso8583.decode(bytes(raw), SPEC)
    except iso8583.DecodeError as exc:
        partial = exc.doc_dec
        mti = _recover(partial, "t")
        raise MessageFormatError(str(exc), mti=mti, stan=_recover(partial, "11"),
                                 terminal_id=partial.get("41")) from None
    except (ValueError, TypeError, KeyError, IndexError) as exc:   # defensive: never crash a link
        raise MessageFormatError(f"undecodable message: {exc!r}") from None
    mti = decoded.get("t", "")
    stan = decoded.get("11")
    terminal = decoded.get("41")
    if not (mti.isdigit() and mti in KNOWN_MTIS):
        raise MessageFormatError(f"unknown MTI {mti!r}", mti=mti if mti.isdigit() else None,
                                 stan=stan if stan and stan.isdigit() else None, terminal_id=terminal)
    for field_no in NUMERIC_FIELDS:
        value = decoded.get(field_no)
        if value is not None and not value.isdigit():
            raise MessageFormatError(f"field {field_no} is not numeric", mti=mti,
                                     stan=stan if stan and stan.isdigit() else None,
                                     terminal_id=terminal)
    if stan is None or not stan.isdigit():
        raise MessageFormatError("field 11 (STAN) missing", mti=mti, terminal_id=terminal)
    return {k: v for k, v in decoded.items() if k not in ("p", "1", "h")}


def encode_message(message: Mapping[str, str]) -> bytes:
    """Encode {"t": mti, field: value, ...}; raises iso8583.EncodeError on a
    programming error (wrong length of a fixed field and the like)."""
    doc = {k: v for k, v in message.items() if k not in ("p", "1")}
    raw, _ = iso8583.encode(doc, SPEC)
    return bytes(raw)


def response_mti(request_mti: str) -> str:
    """0100 -> 0110, 0200 -> 0210, 0420/0421 -> 0430, 0800 -> 0810."""
    return request_mti[:2] + str(int(request_mti[2]) + 1) + "0"


def match_key(message: Mapping[str, str]) -> tuple[str, str, str]:
    """What pairs a response with its request: message class, STAN, terminal."""
    return (message["t"][:2], message.get("11", ""), message.get("41", ""))


def is_request(mti: str) -> bool:
    return mti in REQUEST_MTIS


def format_error_response(error: MessageFormatError) -> dict[str, str] | None:
    """The 'format error' (39=30) answer to a malformed request, or None if
    the request cannot be identified (then it is dropped)."""
    if error.mti is None or error.stan is None or error.mti not in REQUEST_MTIS:
        return None
    answer = {"t": response_mti(error.mti), "11": error.stan, "39": RC_FORMAT_ERROR}
    if error.terminal_id and len(error.terminal_id) == 8:
        answer["41"] = error.terminal_id
    return answer


def mask_pan(pan: str) -> str:
    """622202******1234: the only form of a PAN that may reach a log."""
    if len(pan) < 10:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


@dataclass(frozen=True)
class OriginalData:
    """Field 90: what a reversal refers to."""
    mti: str
    stan: str
    transmitted_at: str          # field 7 of the original, MMDDhhmmss
    acquirer_id: str

    def encode(self) -> str:
        return f"{self.mti}{self.stan}{self.transmitted_at}{self.acquirer_id.zfill(11)[-11:]}{'0' * 11}"

    @classmethod
    def parse(cls, value: str) -> "OriginalData":
        if len(value) != 42 or not value.isdigit():
            raise MessageFormatError("field 90 must be 42 digits")
        return cls(mti=value[0:4], stan=value[4:10], transmitted_at=value[10:20],
                   acquirer_id=value[20:31].lstrip("0") or "0")
