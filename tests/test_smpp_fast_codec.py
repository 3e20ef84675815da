"""The fast SMPP codec against the smpplib reference path it replaces.

`channels.smpp.pdu` encodes and decodes the hot PDUs with struct; the
smpplib path stays callable as ``_encode_pdu_smpplib`` / ``_decode_pdu_smpplib``.
These properties hold the fast path to it: the same bytes out of the encoder,
the same attribute values out of the decoder, and the same error (class,
status, sequence, message) for every input either refuses. Field tables here
come from smpplib's classes, not from the fast path's own tables, so a field
the fast path forgot shows up as a difference.
"""
from __future__ import annotations

import re
import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from smpplib import consts as smpp_consts
from smpplib import smpp as smpplib_smpp
from smpplib.ptypes import flag, ostr

from channels.smpp import pdu as P

FAST_COMMANDS = ["deliver_sm", "submit_sm", "deliver_sm_resp", "submit_sm_resp",
                 "enquire_link", "enquire_link_resp", "generic_nack"]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_class(command):
    return type(smpplib_smpp.make_pdu(command, client=P._NO_SEQUENCE, allow_unknown_opt_params=True))


def is_optional(cls, name):
    return name in smpp_consts.OPTIONAL_PARAMS and name not in getattr(cls, "mandatory_fields", ())


def outcome(fn, *args, **kwargs):
    """What a call did: its result, or the error it raised (class, status, text)."""
    try:
        return ("ok", fn(*args, **kwargs))
    except P.PduError as exc:
        return ("PduError", exc.command_id, exc.sequence, exc.status, str(exc))
    except Exception as exc:  # the encoder's ValueError/TypeError
        return (type(exc).__name__, str(exc))


def attributes(pdu):
    """Every attribute a caller may read off a decoded PDU."""
    names = set(type(pdu).params) | {"command", "sequence", "status", "length", "unknown_tlvs"}
    return {name: getattr(pdu, name, AttributeError) for name in sorted(names)}


def decode_outcome(fn, raw):
    result = outcome(fn, raw)
    if result[0] == "ok":
        pdu = result[1]
        return ("ok", type(pdu).__mro__[1] if type(pdu).__name__.startswith("Fast") else type(pdu),
                attributes(pdu), pdu.is_request(), pdu.is_response())
    return result


def assert_same_decode(raw):
    fast = decode_outcome(P.decode_pdu, raw)
    reference = decode_outcome(P._decode_pdu_smpplib, raw)
    assert fast == reference
    return fast


# --- strategies -------------------------------------------------------------

LATIN1_NO_NUL = st.characters(min_codepoint=1, max_codepoint=255)
ASCII_NO_NUL = st.characters(min_codepoint=1, max_codepoint=127)


def value_for(cls, name):
    """A valid value for one field (as callers pass them: str or bytes for C-strings)."""
    param = cls.params[name]
    optional = is_optional(cls, name)
    if param.type is int:
        return st.integers(0, (1 << (8 * param.size)) - 1)
    if param.type is str:
        chars = ASCII_NO_NUL if optional else LATIN1_NO_NUL
        text = st.text(chars, max_size=min(param.max - 1, 30)) | st.text(chars, min_size=param.max - 1,
                                                                         max_size=param.max - 1)
        return text | text.map(lambda s: s.encode("latin-1"))
    if param.type is ostr:
        return st.binary(max_size=254 if name == "short_message" else 300)
    raise AssertionError(param.type)


@st.composite
def valid_fields(draw, command):
    cls = reference_class(command)
    names = [n for n in cls.params_order if cls.params[n].type is not flag]
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names))) if names else []
    fields = {}
    for name in chosen:
        fields[name] = draw(st.none() | value_for(cls, name)) if draw(st.integers(0, 9)) == 0 \
            else draw(value_for(cls, name))
    # both short_message and message_payload is an error; keep it rare
    if fields.get("short_message") and fields.get("message_payload") and draw(st.integers(0, 4)):
        del fields["message_payload"]
    return fields


BAD_VALUES = st.one_of(
    st.integers(-5, -1), st.integers(256, 1 << 33), st.booleans(), st.floats(allow_nan=False),
    st.text(max_size=3), st.text(min_size=60, max_size=70, alphabet="x"), st.just("a\x00b"), st.just("汉"),
    st.just("é"), st.binary(max_size=3), st.binary(min_size=255, max_size=256), st.just(bytearray(b"ab")),
    st.just(b"a\x00"), st.just(b"\xe9"), st.just([1]),
)


@st.composite
def any_fields(draw, command):
    """Valid fields with a few bad values and unknown names mixed in."""
    fields = draw(valid_fields(command))
    cls = reference_class(command)
    names = list(cls.params) + ["no_such_field", "message_id", "system_id"]
    for name in draw(st.lists(st.sampled_from(names), unique=True, min_size=1, max_size=3)):
        fields[name] = draw(BAD_VALUES)
    keys = list(fields)
    order = draw(st.permutations(keys)) if keys else []
    return {k: fields[k] for k in order}


# --- encoder ----------------------------------------------------------------

@SETTINGS
@given(st.sampled_from(FAST_COMMANDS).flatmap(lambda c: st.tuples(st.just(c), valid_fields(c))),
       st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_fast_encode_equals_smpplib_encode_byte_for_byte(command_fields, sequence, status):
    command, fields = command_fields
    fast = outcome(P.encode_pdu, command, sequence, status, **fields)
    assert fast == outcome(P._encode_pdu_smpplib, command, sequence, status, **fields)
    if fast[0] == "ok":
        assert_same_decode(fast[1])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FAST_COMMANDS).flatmap(lambda c: st.tuples(st.just(c), any_fields(c))),
       st.integers(-2, 2**32), st.integers(-2, 2**32))
def test_fast_encode_refuses_what_smpplib_path_refuses_with_the_same_error(command_fields, sequence, status):
    command, fields = command_fields
    assert outcome(P.encode_pdu, command, sequence, status, **fields) == \
        outcome(P._encode_pdu_smpplib, command, sequence, status, **fields)


@pytest.mark.parametrize("command", ["deliver_sm", "submit_sm"])
def test_fast_encode_same_errors_on_edge_values(command):
    cases = [
        dict(short_message=b"x", message_payload=b"y"),             # smpplib's prep refuses both
        dict(short_message=b"", message_payload=b"y"),
        dict(short_message="text"),
        dict(short_message=b"x" * 255),
        dict(destination_addr="1" * 21),
        dict(destination_addr="1" * 20),
        dict(source_addr="a\x00b"),
        dict(source_addr=b"a\x00"),
        dict(source_addr=bytearray(b"12")),
        dict(source_addr="\xe9t\xe9"),
        dict(source_addr="汉"),
        dict(short_message=bytearray(b"hi")),
        dict(esm_class=256),
        dict(esm_class=True),
        dict(sm_length=9, short_message=b"abc"),                    # sm_length is always recomputed
        dict(receipted_message_id="é") if command == "deliver_sm" else dict(source_subaddress="é"),
        dict(user_message_reference=65536),
        dict(receipted_message_id="a\x00") if command == "deliver_sm" else dict(dest_subaddress="a\x00"),
        dict(receipted_message_id=b"12\x00") if command == "deliver_sm" else dict(dest_subaddress=b"\xe9"),
        dict(message_payload=b"z" * 0x10000),
    ]
    if command == "submit_sm":
        cases.append(dict(alert_on_message_delivery=True))           # a flag TLV cannot be generated
    for fields in cases:
        fast = outcome(P.encode_pdu, command, 1, **fields)
        assert fast == outcome(P._encode_pdu_smpplib, command, 1, **fields), fields
    for bad in (-1, 2**32, 1.5):
        assert outcome(P.encode_pdu, command, bad) == outcome(P._encode_pdu_smpplib, command, bad)
        assert outcome(P.encode_pdu, command, 1, bad) == outcome(P._encode_pdu_smpplib, command, 1, bad)


def test_non_ascii_c_string_tlvs_are_refused_on_both_paths():
    # smpplib would count characters but write UTF-8 octets: a corrupt TLV.
    for encode in (P.encode_pdu, P._encode_pdu_smpplib):
        with pytest.raises(ValueError, match="ASCII"):
            encode("deliver_sm", 1, receipted_message_id="ab\xe9")
    raw = P.encode_pdu("deliver_sm", 1, source_addr="caf\xe9", receipted_message_id="ab")
    assert P.decode_pdu(raw).source_addr == "caf\xe9"  # mandatory C-strings stay Latin-1


def test_empty_short_message_without_tlvs_decodes_on_both_paths():
    raw = P.encode_pdu("deliver_sm", 3, source_addr="8613900000001", destination_addr="10658888")
    result = assert_same_decode(raw)
    assert result[0] == "ok"
    attrs = result[2]
    assert (attrs["sm_length"], attrs["short_message"], attrs["sequence"]) == (0, None, 3)


# --- decoder ----------------------------------------------------------------

@SETTINGS
@given(st.sampled_from(FAST_COMMANDS).flatmap(lambda c: st.tuples(st.just(c), valid_fields(c))),
       st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_fast_decode_equals_smpplib_decode_on_every_attribute(command_fields, sequence, status):
    command, fields = command_fields
    try:
        raw = P._encode_pdu_smpplib(command, sequence, status, **fields)
    except ValueError:
        assume(False)
    result = assert_same_decode(raw)
    assert result[0] == "ok"
    attrs = result[2]
    assert (attrs["command"], attrs["sequence"], attrs["status"]) == (command, sequence, status)


ALL_TLV_TAGS = sorted(set(smpp_consts.OPTIONAL_PARAMS.values())) + [0x1400, 0x0000, 0xFFFF]


@st.composite
def tlv_bytes(draw, command):
    """One TLV: mostly a tag the command knows, a length from 0 to 6, sometimes a lying length."""
    cls = reference_class(command)
    own = sorted(smpp_consts.OPTIONAL_PARAMS[n] for n in cls.params if is_optional(cls, n))
    tag = draw(st.sampled_from(own) if own and draw(st.integers(0, 2)) else st.sampled_from(ALL_TLV_TAGS))
    value = draw(st.binary(max_size=6) | st.binary(min_size=1, max_size=6).map(lambda v: v[:-1] + b"\x00"))
    declared = len(value) if draw(st.integers(0, 5)) else draw(st.integers(0, 12))
    return struct.pack(">HH", tag, declared) + value


@st.composite
def mutated_pdu(draw):
    """A valid hot PDU, then cut, patched, lengthened or given odd TLVs."""
    command = draw(st.sampled_from(FAST_COMMANDS))
    fields = draw(valid_fields(command))
    try:
        raw = bytearray(P._encode_pdu_smpplib(command, draw(st.integers(0, 2**32 - 1)), **fields))
    except ValueError:
        raw = bytearray(P._encode_pdu_smpplib(command, 1))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["cut", "flip", "tlvs", "junk", "nul"]))
        if how == "cut" and len(raw) > 16:
            del raw[draw(st.integers(16, len(raw) - 1)):]
        elif how == "flip" and len(raw) > 16:
            raw[draw(st.integers(16, len(raw) - 1))] = draw(st.integers(0, 255))
        elif how == "tlvs":
            raw += b"".join(draw(st.lists(tlv_bytes(command), min_size=1, max_size=3)))
        elif how == "junk":
            raw += draw(st.binary(min_size=1, max_size=6))
        elif how == "nul" and len(raw) > 16:
            # remove one NUL: a C-string runs into the next field
            nuls = [i for i in range(16, len(raw)) if raw[i] == 0]
            if nuls:
                del raw[draw(st.sampled_from(nuls))]
    if draw(st.integers(0, 9)):
        raw[0:4] = struct.pack(">L", len(raw))      # mostly a consistent command_length
    return bytes(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_pdu())
def test_mutated_pdus_decode_or_fail_the_same_on_both_paths(raw):
    assert_same_decode(raw)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([P.command_id_of(c) for c in FAST_COMMANDS]), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1), st.binary(max_size=80))
def test_garbage_bodies_decode_or_fail_the_same_on_both_paths(command_id, status, sequence, body):
    raw = struct.pack(">LLLL", 16 + len(body), command_id, status, sequence) + body
    assert_same_decode(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_short_or_headerless_input_fails_the_same_on_both_paths(raw):
    assert_same_decode(raw)


@pytest.mark.parametrize("command", ["deliver_sm", "submit_sm", "deliver_sm_resp"])
def test_every_known_tlv_at_every_short_length_decodes_the_same(command):
    """Each TLV tag smpplib knows, with 0..6 octets (NUL-ended or not), after a valid body."""
    base = P._encode_pdu_smpplib(command, 7, **({} if command.endswith("_resp") else
                                                 {"source_addr": "1", "short_message": b"x"}))
    for tag in ALL_TLV_TAGS:
        for value in (b"", b"\x01", b"\x00", b"\x01\x02", b"ab\x00", b"\xff" * 4, b"abcd\x00", b"\x00\x01" * 3):
            for after in (b"", struct.pack(">HH", 0x1400, 2) + b"\x00\x00"):   # a NUL beyond this TLV
                raw = base + struct.pack(">HH", tag, len(value)) + value + after
                assert_same_decode(struct.pack(">L", len(raw)) + raw[4:])


def test_decoded_object_is_an_smpplib_pdu_with_its_methods():
    raw = P.encode_pdu("deliver_sm", 9, source_addr="8613900000001", destination_addr="10658888",
                       short_message=b"ZF M888 12.34", ussd_service_op=1, its_session_info=0x1201)
    pdu = P.decode_pdu(raw)
    assert isinstance(pdu, reference_class("deliver_sm"))
    assert pdu.is_request() and not pdu.is_response() and not pdu.is_error()
    assert (pdu.sequence, pdu.ussd_service_op, pdu.its_session_info, pdu.message_payload) == (9, 1, 0x1201, None)
    pdu.sequence = 10       # callers may still set fields on it
    assert pdu.sequence == 10
    other = P.decode_pdu(raw)
    assert other.sequence == 9 and other.unknown_tlvs == [] and other.unknown_tlvs is not pdu.unknown_tlvs
    resp = P.decode_pdu(P.encode_pdu("submit_sm_resp", 4, P.ESME_RTHROTTLED))
    assert resp.is_response() and resp.is_error() and resp.message_id == ""


def test_pdus_outside_the_fast_set_still_use_smpplib():
    raw = P.encode_pdu("bind_transceiver", 1, system_id="telecom-pay", password="secret")
    pdu = P.decode_pdu(raw)
    assert type(pdu) is reference_class("bind_transceiver")
    assert raw == P._encode_pdu_smpplib("bind_transceiver", 1, system_id="telecom-pay", password="secret")


# --- text: the whole-string fast paths against the per-character tables ------

from channels.smpp import text as T  # noqa: E402


def reference_gsm_encode(text):
    return b"".join(T._GSM_ENCODE[c] for c in text)


def reference_gsm_decode(data):
    out, i = [], 0
    while i < len(data):
        b = data[i]
        i += 1
        if b > 0x7F:
            out.append(T.REPLACEMENT)
        elif b == T.GSM_ESCAPE:
            if i >= len(data):
                break
            nxt = data[i]
            i += 1
            out.append(T.REPLACEMENT if nxt > 0x7F else T.GSM_EXTENSION.get(nxt)
                       or (" " if nxt == T.GSM_ESCAPE else T.GSM_DEFAULT_ALPHABET[nxt]))
        else:
            out.append(T.GSM_DEFAULT_ALPHABET[b])
    return "".join(out)


GSM_TEXT = st.text(st.sampled_from(sorted(T._GSM_ENCODE)), max_size=200)
MIXED_TEXT = st.text(st.sampled_from(sorted(T._GSM_ENCODE)) | st.sampled_from("汉😀`\x1b\x00ñ€"), max_size=200)


@settings(max_examples=300, deadline=None)
@given(GSM_TEXT | MIXED_TEXT)
def test_gsm_encode_and_is_gsm_equal_the_per_character_tables(text):
    fits = all(c in T._GSM_ENCODE for c in text)
    assert T.is_gsm(text) == fits
    if fits:
        assert T.gsm_encode(text) == reference_gsm_encode(text)
    else:
        bad = next(c for c in text if c not in T._GSM_ENCODE)
        with pytest.raises(ValueError, match=re.escape(f"character {bad!r} is not in")):
            T.gsm_encode(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.binary(max_size=200).map(lambda b: bytes(x & 0x7F for x in b))
       | GSM_TEXT.map(reference_gsm_encode))
def test_gsm_decode_equals_the_septet_by_septet_reading(data):
    assert T.gsm_decode(data) == reference_gsm_decode(data)


NEAR_ONE_PART = (   # texts within a few octets of one part: 160 septets, 140 UCS2 octets
    st.tuples(st.integers(154, 162).flatmap(lambda n: st.text("ab", min_size=n, max_size=n)),
              st.sampled_from(["", "€", "{}", "€a"])).map("".join)
    | st.tuples(st.just("汉"), st.integers(64, 70).flatmap(lambda n: st.text("a汉", min_size=n, max_size=n)),
                st.sampled_from(["", "😀", "a", "😀a"])).map("".join)
)


@settings(max_examples=300, deadline=None)
@given(GSM_TEXT | MIXED_TEXT.filter(lambda t: "\x1b" not in t) | NEAR_ONE_PART, st.integers(0, 255))
def test_single_part_shortcut_equals_the_unit_by_unit_split(text, ref):
    parts = T.split_message(text, ref)
    units = [T._GSM_ENCODE[c] for c in text] if T.is_gsm(text) else [c.encode("utf-16-be") for c in text]
    single = 160 if T.is_gsm(text) else 140
    if sum(len(u) for u in units) <= single:
        assert parts == [T.Part(b"".join(units), 0 if T.is_gsm(text) else 8, 0)]
    else:
        assert len(parts) > 1 and b"".join(p.short_message[6:] for p in parts) == b"".join(units)


# --- receipts: the date fields without strptime -----------------------------

from datetime import datetime  # noqa: E402

from channels.smpp import receipts as R  # noqa: E402


def strptime_date(value):
    """The receipt date rule as strptime states it: the reference."""
    digits = value.strip()
    for fmt, length in (("%y%m%d%H%M%S", 12), ("%y%m%d%H%M", 10)):
        if len(digits) == length and digits.isdigit():
            try:
                return datetime.strptime(digits, fmt)
            except ValueError:
                return None
    return None


TWO = st.integers(0, 99).map(lambda n: f"{n:02d}")
DATE_TEXT = st.one_of(
    st.tuples(TWO, st.integers(0, 13).map(lambda n: f"{n:02d}"), st.integers(0, 32).map(lambda n: f"{n:02d}"),
              st.integers(0, 25).map(lambda n: f"{n:02d}"), st.integers(0, 61).map(lambda n: f"{n:02d}"),
              st.sampled_from(["", "00", "59", "60", "61"]) | TWO).map("".join),
    st.text("0123456789", min_size=9, max_size=13),
    st.text("0123456789٣²", min_size=10, max_size=12),
).flatmap(lambda d: st.sampled_from([d, f" {d} ", d + "x"]))


@settings(max_examples=400, deadline=None)
@given(DATE_TEXT)
def test_receipt_dates_equal_strptime(value):
    assert R._date_or_none(value) == strptime_date(value)


def test_receipt_dates_edge_values_equal_strptime():
    for value in ("0002290000", "6802291200", "6902291200", "2402291200", "2502291200", "26120112", "261201120060",
                  "261201120061", "261301120000", "2612010000", "9912312359", "0001010000", "261201120059"):
        assert R._date_or_none(value) == strptime_date(value), value


# --- framing: reads that end on PDU boundaries skip the buffer -----------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=8), st.data())
def test_reader_gives_the_same_pdus_whether_reads_end_on_boundaries_or_not(sizes, data):
    pdus = [P.encode_pdu("deliver_sm", i + 1, source_addr="1", short_message=b"m" * (n % 200)) for i, n in
            enumerate(sizes)]
    stream = b"".join(pdus)
    bounds = [0]
    for p in pdus:
        bounds.append(bounds[-1] + len(p))
    cuts = sorted(set(data.draw(st.lists(st.sampled_from(bounds) | st.integers(0, len(stream)), max_size=10))))
    reader, out, prev = P.PduReader(), [], 0
    for cut in cuts + [len(stream)]:
        chunk = stream[prev:cut]
        out.extend(reader.feed(chunk if data.draw(st.booleans()) else bytearray(chunk)))
        prev = cut
    assert out == pdus and all(type(p) is bytes for p in out)
    assert reader.buffered == 0


def test_reader_framing_error_after_whole_pdus_in_one_read():
    reader = P.PduReader()
    good = P.encode_pdu("enquire_link", 1)
    assert reader.feed(good + good[:5]) == [good]   # a whole PDU, then part of one
    assert reader.buffered == 5
    with pytest.raises(P.FramingError):
        reader.feed(good[5:] + struct.pack(">L", 8) + b"\x00" * 12)
    fresh = P.PduReader()
    with pytest.raises(P.FramingError):
        fresh.feed(good + struct.pack(">L", 70000) + b"\x00" * 12)
    assert fresh.buffered == len(good) + 16    # kept as received, like a read into the buffer
