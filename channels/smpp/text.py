"""SMS text coding for SMPP: GSM 03.38 / UCS2, concatenation, reassembly.

Shared by the ESME channel and the SMSC simulator. SMPP carries GSM 03.38
unpacked (one septet per octet), so ``short_message`` octets are septet
values; the 140-octet user data limit of the air interface is expressed here
as 160 septets (153 per part after a 6-octet UDH) and 140 UCS2 octets
(70 characters, 67 per part).

The GSM tables are our own rather than smpplib.gsm's: smpplib maps the
backtick to 0x5F (which is ``§``) and cannot encode ``§``, and its
``make_parts`` may cut an escape pair (or, in UCS2, a surrogate pair) in
half. Splitting here works on whole characters, so neither can happen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Part",
    "Decoded",
    "MessageTooLong",
    "split_message",
    "encode_text",
    "decode_short_message",
    "decode_message",
    "concat_from_sar",
    "gsm_encode",
    "gsm_decode",
    "is_gsm",
    "Reassembler",
]

DATA_CODING_GSM = 0x00
DATA_CODING_ASCII = 0x01
DATA_CODING_LATIN1 = 0x03
DATA_CODING_UCS2 = 0x08
ESM_CLASS_UDHI = 0x40

GSM_SINGLE_SEPTETS = 160
GSM_PART_SEPTETS = 153
UCS2_SINGLE_OCTETS = 140
UCS2_PART_OCTETS = 134
MAX_PARTS = 255

# GSM 03.38 default alphabet, index = septet value.
GSM_DEFAULT_ALPHABET = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
assert len(GSM_DEFAULT_ALPHABET) == 128
GSM_ESCAPE = 0x1B
# Extension table (after an escape septet).
GSM_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_GSM_ENCODE: dict[str, bytes] = {}
for _septet, _char in enumerate(GSM_DEFAULT_ALPHABET):
    if _septet != GSM_ESCAPE:
        _GSM_ENCODE[_char] = bytes([_septet])
for _septet, _char in GSM_EXTENSION.items():
    _GSM_ENCODE[_char] = bytes([GSM_ESCAPE, _septet])
del _septet, _char

REPLACEMENT = "\ufffd"


class MessageTooLong(ValueError):
    """The text needs more than 255 parts."""


@dataclass(frozen=True)
class Part:
    """One SMS as submit_sm / deliver_sm carries it."""

    short_message: bytes
    data_coding: int
    esm_class: int


@dataclass(frozen=True)
class Decoded:
    """Text of one SMS, and its place in a concatenated message if any.

    ``concat`` is ``(ref, total, seq)`` with seq counted from 1.
    """

    text: str
    concat: tuple[int, int, int] | None = None


# Whole-string forms of the tables: set and translate calls run in C, where
# a loop per character costs about a microsecond per ten characters.
_GSM_CHARS = frozenset(_GSM_ENCODE)
#: text -> septets as Latin-1 code points (every septet is below 0x80)
_GSM_TO_SEPTETS = {ord(c): septets.decode("latin-1") for c, septets in _GSM_ENCODE.items()}
#: septet -> character, for bodies without escapes
_SEPTETS_TO_GSM = {i: c for i, c in enumerate(GSM_DEFAULT_ALPHABET) if i != GSM_ESCAPE}


def is_gsm(text: str) -> bool:
    """True when every character is in the GSM default alphabet or its extension."""
    return _GSM_CHARS.issuperset(text)


def gsm_encode(text: str) -> bytes:
    """Encode to unpacked GSM 03.38 septets; raises ValueError for other characters."""
    if not _GSM_CHARS.issuperset(text):
        bad = next(c for c in text if c not in _GSM_CHARS)
        raise ValueError(f"character {bad!r} is not in the GSM 03.38 alphabet")
    return text.translate(_GSM_TO_SEPTETS).encode("latin-1")


def gsm_decode(data: bytes) -> str:
    """Decode unpacked GSM 03.38 septets; never raises.

    An escape followed by an unassigned extension code shows the default
    alphabet character (as 03.38 prescribes); a dangling escape is dropped;
    octets above 0x7F become U+FFFD.
    """
    if data.isascii() and GSM_ESCAPE not in data:
        return data.decode("latin-1").translate(_SEPTETS_TO_GSM)
    out: list[str] = []
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        i += 1
        if b > 0x7F:
            out.append(REPLACEMENT)
        elif b == GSM_ESCAPE:
            if i >= n:
                break
            nxt = data[i]
            i += 1
            if nxt > 0x7F:
                out.append(REPLACEMENT)
            elif nxt in GSM_EXTENSION:
                out.append(GSM_EXTENSION[nxt])
            elif nxt == GSM_ESCAPE:
                out.append(" ")
            else:
                out.append(GSM_DEFAULT_ALPHABET[nxt])
        else:
            out.append(GSM_DEFAULT_ALPHABET[b])
    return "".join(out)


def _chunks(units: list[bytes], limit: int) -> list[bytes]:
    """Pack whole units (a character's octets) into chunks of at most ``limit``."""
    chunks: list[bytes] = []
    current = bytearray()
    for unit in units:
        if len(current) + len(unit) > limit:
            chunks.append(bytes(current))
            current = bytearray()
        current += unit
    chunks.append(bytes(current))
    return chunks


def encode_text(text: str) -> Part:
    """Encode ``text`` as one unsplit short message (GSM if it fits, else UCS2).

    For USSD and for callers that use message_payload; no length limit applied.
    """
    if is_gsm(text):
        return Part(gsm_encode(text), DATA_CODING_GSM, 0)
    return Part(text.encode("utf-16-be"), DATA_CODING_UCS2, 0)


def split_message(text: str, ref: int) -> list[Part]:
    """Encode ``text`` as one SMS or as concatenated parts with an 8-bit reference UDH.

    GSM 03.38 when every character fits, else UCS2 (UTF-16-BE). A single part
    holds 160 GSM septets or 70 UCS2 units; parts hold 153 / 67. Escape pairs
    and surrogate pairs are never split. Raises MessageTooLong beyond 255 parts.
    """
    if not 0 <= ref <= 0xFF:
        raise ValueError(f"concatenation reference {ref} is not 8-bit")
    if is_gsm(text):
        whole = gsm_encode(text)
        if len(whole) <= GSM_SINGLE_SEPTETS:     # the common case: no units needed
            return [Part(whole, DATA_CODING_GSM, 0)]
        units = [_GSM_ENCODE[c] for c in text]
        coding, per_part = DATA_CODING_GSM, GSM_PART_SEPTETS
    else:
        whole = text.encode("utf-16-be")
        if len(whole) <= UCS2_SINGLE_OCTETS:
            return [Part(whole, DATA_CODING_UCS2, 0)]
        units = [c.encode("utf-16-be") for c in text]
        coding, per_part = DATA_CODING_UCS2, UCS2_PART_OCTETS
    chunks = _chunks(units, per_part)
    total = len(chunks)
    if total > MAX_PARTS:
        raise MessageTooLong(f"text needs {total} parts, at most {MAX_PARTS} allowed")
    return [
        Part(bytes([0x05, 0x00, 0x03, ref, total, seq]) + chunk, coding, ESM_CLASS_UDHI)
        for seq, chunk in enumerate(chunks, start=1)
    ]


def _parse_udh(short_message: bytes) -> tuple[tuple[int, int, int] | None, bytes] | None:
    """Split a UDH off ``short_message``; None when the header is malformed."""
    if not short_message:
        return None
    udhl = short_message[0]
    if 1 + udhl > len(short_message):
        return None
    header = short_message[1:1 + udhl]
    payload = short_message[1 + udhl:]
    concat = None
    pos = 0
    while pos + 2 <= len(header):
        iei, iel = header[pos], header[pos + 1]
        data = header[pos + 2:pos + 2 + iel]
        pos += 2 + iel
        if len(data) != iel:
            return None
        if iei == 0x00 and iel == 3:
            ref, total, seq = data
        elif iei == 0x08 and iel == 4:
            ref, total, seq = int.from_bytes(data[:2], "big"), data[2], data[3]
        else:
            continue
        if total >= 1 and 1 <= seq <= total:
            concat = (ref, total, seq)
    return concat, payload


_SMPP_CODINGS = {
    0x00: "gsm",
    0x01: "ascii",
    0x02: "binary",
    0x03: "latin-1",
    0x04: "binary",
    0x05: "shift_jis",
    0x06: "iso8859-5",
    0x07: "iso8859-8",
    0x08: "utf-16-be",
    0x0A: "iso2022_jp",
    0x0D: "euc_jis_2004",
    0x0E: "euc_kr",
}


def _alphabet(data_coding: int) -> str:
    """Map an SMPP data_coding to a Python codec name or 'gsm' / 'binary'."""
    dc = data_coding & 0xFF
    named = _SMPP_CODINGS.get(dc)
    if named is not None:
        return named
    group = dc >> 4
    if group <= 0x3:  # general data coding (possibly compressed/with class)
        return {0: "gsm", 1: "binary", 2: "utf-16-be", 3: "gsm"}[(dc >> 2) & 0x3]
    if group in (0xC, 0xD):  # message waiting, GSM
        return "gsm"
    if group == 0xE:  # message waiting, UCS2
        return "utf-16-be"
    if group == 0xF:
        return "binary" if dc & 0x04 else "gsm"
    return "latin-1"


def _decode_payload(payload: bytes, data_coding: int) -> str:
    alphabet = _alphabet(data_coding)
    if alphabet == "gsm":
        return gsm_decode(payload)
    if alphabet == "binary":
        return payload.hex()
    try:
        return payload.decode(alphabet, errors="replace")
    except LookupError:  # pragma: no cover - codec missing from this Python
        return payload.decode("latin-1")


def decode_short_message(short_message: bytes, data_coding: int, esm_class: int) -> Decoded:
    """Decode one SMS body; never raises.

    Handles a UDH (esm_class 0x40) with 8-bit (IEI 0x00) or 16-bit (IEI 0x08)
    concatenation references; GSM 03.38, UCS2, ASCII, Latin-1 and the other
    SMPP character sets; 8-bit binary is rendered as hex. A malformed UDH is
    ignored and the whole body decoded as text.
    """
    data = bytes(short_message or b"")
    concat = None
    if (esm_class or 0) & ESM_CLASS_UDHI:
        parsed = _parse_udh(data)
        if parsed is not None:
            concat, data = parsed
    return Decoded(_decode_payload(data, data_coding or 0), concat)


def concat_from_sar(
    sar_msg_ref_num: int | None, sar_total_segments: int | None, sar_segment_seqnum: int | None
) -> tuple[int, int, int] | None:
    """The ``(ref, total, seq)`` of SAR TLVs, or None when absent or inconsistent."""
    if sar_msg_ref_num is None or sar_total_segments is None or sar_segment_seqnum is None:
        return None
    if sar_total_segments < 1 or not 1 <= sar_segment_seqnum <= sar_total_segments:
        return None
    return (sar_msg_ref_num, sar_total_segments, sar_segment_seqnum)


def decode_message(pdu) -> Decoded:
    """Decode the text of a decoded submit_sm / deliver_sm / data_sm.

    Uses ``message_payload`` when ``short_message`` is empty, and the SAR TLVs
    when there is no UDH concatenation header.
    """
    body = getattr(pdu, "short_message", None) or getattr(pdu, "message_payload", None) or b""
    decoded = decode_short_message(body, getattr(pdu, "data_coding", 0) or 0, getattr(pdu, "esm_class", 0) or 0)
    if decoded.concat is None:
        sar = concat_from_sar(
            getattr(pdu, "sar_msg_ref_num", None),
            getattr(pdu, "sar_total_segments", None),
            getattr(pdu, "sar_segment_seqnum", None),
        )
        if sar is not None:
            return Decoded(decoded.text, sar)
    return decoded


class _Clock(Protocol):
    def seconds(self) -> float: ...


class Reassembler:
    """Joins concatenated SMS parts into messages.

    Parts are kept per ``(key, ref, total)``; ``key`` is whatever identifies
    the sender (its MSISDN, say). Duplicates are ignored; parts may arrive in
    any order. Incomplete messages older than ``timeout`` seconds (from their
    first part, on ``clock``, an IReactorTime) are dropped by `expire`.
    A message once completed is remembered for ``timeout`` seconds so that a
    part the SMSC re-delivers late (its ack was lost) is ignored instead of
    opening a new message that could only expire.
    """

    def __init__(self, clock: _Clock, timeout: float = 60.0):
        self._clock = clock
        self._timeout = timeout
        self._pending: dict[tuple, tuple[float, dict[int, Any]]] = {}
        self._completed: dict[tuple, float] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, key, concat: tuple[int, int, int] | None, text: str) -> str | None:
        """Add one part; return the whole text once every part is in, else None."""
        parts = self.add_part(key, concat, text)
        return None if parts is None else "".join(parts)

    def add_part(self, key, concat: tuple[int, int, int] | None, value) -> list | None:
        """Like `add` for any per-part value: returns all values in part order once complete."""
        if concat is None:
            return [value]
        ref, total, seq = concat
        if total <= 1:
            return [value]
        if not 1 <= seq <= total:
            raise ValueError(f"part {seq} of {total} out of range")
        slot = (key, ref, total)
        now = self._clock.seconds()
        done_at = self._completed.get(slot)
        if done_at is not None:
            if now - done_at < self._timeout:
                return None  # a late re-delivery of a message already returned
            del self._completed[slot]
        started, parts = self._pending.setdefault(slot, (now, {}))
        parts.setdefault(seq, value)
        if len(parts) < total:
            return None
        del self._pending[slot]
        self._completed[slot] = now
        return [parts[i] for i in range(1, total + 1)]

    def expire(self) -> list[tuple]:
        """Drop incomplete messages older than the timeout.

        Returns ``(key, ref, parts_received)`` for each one dropped.
        """
        now = self._clock.seconds()
        for slot, done_at in list(self._completed.items()):
            if now - done_at >= self._timeout:
                del self._completed[slot]
        dropped = []
        for slot, (started, parts) in list(self._pending.items()):
            if now - started >= self._timeout:
                del self._pending[slot]
                dropped.append((slot[0], slot[1], len(parts)))
        return dropped
