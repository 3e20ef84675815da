"""The shared SMPP codec: PDUs (channels.smpp.pdu) and SMS text (channels.smpp.text)."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from channels.smpp import pdu as P
from channels.smpp import text as T
from channels.smpp.pdu import FramingError, PduError, PduReader, decode_pdu, encode_pdu, generic_nack


# --- PDUs ---------------------------------------------------------------------

ROUND_TRIPS = [
    ("bind_transceiver", dict(system_id="telecom-pay", password="secret", system_type="", interface_version=0x34,
                              addr_ton=1, addr_npi=1, address_range="")),
    ("bind_transmitter", dict(system_id="tx", password="pw")),
    ("bind_receiver", dict(system_id="rx", password="pw")),
    ("bind_transceiver_resp", dict(system_id="SMSC", sc_interface_version=0x34)),
    ("bind_transmitter_resp", dict(system_id="SMSC")),
    ("bind_receiver_resp", dict(system_id="SMSC")),
    ("submit_sm", dict(service_type="", source_addr_ton=0, source_addr_npi=1, source_addr="10658888",
                       dest_addr_ton=1, dest_addr_npi=1, destination_addr="8613800000001", esm_class=0x40,
                       registered_delivery=1, data_coding=8, short_message=bytes(range(140)),
                       user_message_reference=513)),
    ("submit_sm_resp", dict(message_id="0a1b2c3d")),
    ("deliver_sm", dict(source_addr="8613800000001", destination_addr="10658888", esm_class=0x04,
                        short_message=b"id:1 sub:001 dlvrd:001 stat:DELIVRD err:000 text:",
                        receipted_message_id="0a1b2c3d", message_state=2)),
    ("deliver_sm_resp", dict(message_id="")),
    ("data_sm", dict(source_addr="1", destination_addr="2", message_payload=b"x" * 300,
                     ussd_service_op=2, its_session_info=0x0100)),
    ("data_sm_resp", dict(message_id="9")),
    ("enquire_link", {}),
    ("enquire_link_resp", {}),
    ("unbind", {}),
    ("unbind_resp", {}),
    ("generic_nack", {}),
    ("query_sm", dict(message_id="42", source_addr="1")),
]


@pytest.mark.parametrize("command,fields", ROUND_TRIPS, ids=[c for c, _ in ROUND_TRIPS])
def test_round_trip_every_pdu_type(command, fields):
    raw = encode_pdu(command, 0x7FFFFFFE, **fields)
    length, command_id, status, sequence = struct.unpack(">LLLL", raw[:16])
    assert (length, command_id, status, sequence) == (len(raw), P.command_id_of(command), 0, 0x7FFFFFFE)
    pdu = decode_pdu(raw)
    assert pdu.command == command
    assert pdu.sequence == 0x7FFFFFFE
    assert pdu.status == 0
    for name, value in fields.items():
        assert getattr(pdu, name) == value, name
    assert encode_pdu(command, 0x7FFFFFFE, **fields) == raw


def test_sequence_and_status_are_set_in_the_header_and_nothing_shared_advances():
    first = decode_pdu(encode_pdu("submit_sm", 5, source_addr="1", destination_addr="2", short_message=b"a"))
    second = decode_pdu(encode_pdu("submit_sm", 5, source_addr="1", destination_addr="2", short_message=b"a"))
    assert first.sequence == second.sequence == 5
    resp = decode_pdu(encode_pdu("submit_sm_resp", 77, status=P.ESME_RTHROTTLED))
    assert (resp.sequence, resp.status) == (77, 0x58)


def test_c_strings_decode_to_str_octet_fields_stay_bytes():
    pdu = decode_pdu(encode_pdu("submit_sm", 1, source_addr=b"10658888", destination_addr="861",
                                short_message=b"\x00\x01hi"))
    assert pdu.source_addr == "10658888" and isinstance(pdu.destination_addr, str)
    assert pdu.short_message == b"\x00\x01hi"


def test_encode_refuses_what_smpplib_would_silently_mangle():
    with pytest.raises(ValueError):
        encode_pdu("submit_sm", 1, no_such_field=1)
    with pytest.raises(ValueError):
        encode_pdu("submit_sm", 1, destination_addr="1" * 21)  # max 20 + NUL
    with pytest.raises(ValueError):
        encode_pdu("submit_sm", 1, esm_class=256)
    with pytest.raises(ValueError):
        encode_pdu("submit_sm", 1, short_message=b"x" * 255)
    with pytest.raises(TypeError):
        encode_pdu("submit_sm", 1, short_message="text")
    with pytest.raises(ValueError):
        encode_pdu("frobnicate", 1)


@pytest.mark.parametrize("command", ["deliver_sm", "submit_sm", "data_sm"])
def test_ussd_tlvs_parse_and_generate(command):
    fields = dict(source_addr="8613800000001", destination_addr="10658888", ussd_service_op=P.USSD_PSSR_IND,
                  its_session_info=0x1201)
    if command != "data_sm":
        fields["short_message"] = b"*188#"
    raw = encode_pdu(command, 3, **fields)
    assert struct.pack(">HHB", 0x0501, 1, 1) in raw
    assert struct.pack(">HHH", 0x1383, 2, 0x1201) in raw
    pdu = decode_pdu(raw)
    assert pdu.ussd_service_op == 1
    assert pdu.its_session_info == 0x1201


def test_unknown_tlvs_are_tolerated_and_kept():
    raw = encode_pdu("deliver_sm", 4, source_addr="1", destination_addr="2", short_message=b"hi")
    extra = struct.pack(">HH", 0x1400, 3) + b"abc" + struct.pack(">HH", 0x0017, 4) + b"\0\0\0\1"  # vendor + qos_time_to_live
    raw = struct.pack(">L", len(raw) + len(extra)) + raw[4:] + extra
    pdu = decode_pdu(raw)
    assert pdu.short_message == b"hi"
    assert pdu.unknown_tlvs == [(0x1400, b"abc"), (0x0017, b"\0\0\0\1")]


def test_generic_nack():
    raw = generic_nack(99, P.ESME_RINVCMDID)
    assert raw == struct.pack(">LLLL", 16, 0x80000000, 3, 99)
    pdu = decode_pdu(raw)
    assert (pdu.command, pdu.sequence, pdu.status) == ("generic_nack", 99, 3)


def test_unknown_command_id_raises_with_status_and_sequence():
    raw = struct.pack(">LLLL", 20, 0x00000099, 0, 1234) + b"abcd"
    with pytest.raises(PduError) as err:
        decode_pdu(raw)
    assert (err.value.command_id, err.value.sequence, err.value.status) == (0x99, 1234, P.ESME_RINVCMDID)
    assert not err.value.is_response


def test_truncated_body_raises_invalid_command_length():
    raw = encode_pdu("submit_sm", 8, source_addr="10658888", destination_addr="8613800000001",
                     short_message=b"hello")
    for cut in (20, 30, len(raw) - 3):
        short = struct.pack(">L", cut) + raw[4:cut]
        with pytest.raises(PduError) as err:
            decode_pdu(short)
        assert err.value.sequence == 8
        assert err.value.status == P.ESME_RINVCMDLEN


def test_header_length_mismatch_and_broken_tlv_stream():
    raw = encode_pdu("enquire_link", 1)
    with pytest.raises(PduError) as err:
        decode_pdu(raw + b"x")
    assert err.value.status == P.ESME_RINVCMDLEN
    base = encode_pdu("deliver_sm", 2, source_addr="1", destination_addr="2", short_message=b"x")
    bad = base + struct.pack(">HH", 0x0501, 9)  # claims 9 octets, has none
    bad = struct.pack(">L", len(bad)) + bad[4:]
    with pytest.raises(PduError) as err:
        decode_pdu(bad)
    assert err.value.status == P.ESME_RINVOPTPARSTREAM and err.value.sequence == 2


def test_error_responses_may_have_no_body():
    raw = struct.pack(">LLLL", 16, 0x80000004, P.ESME_RTHROTTLED, 5)
    pdu = decode_pdu(raw)
    assert (pdu.command, pdu.status, pdu.message_id) == ("submit_sm_resp", 0x58, None)


KNOWN_IDS = [0x80000000, 1, 2, 3, 4, 5, 6, 9, 0x15, 0x102, 0x103, 0x80000001, 0x80000004, 0x80000005,
             0x80000009, 0x80000103, 0x21, 0x77]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KNOWN_IDS), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=120))
def test_decode_never_fails_except_with_pdu_error(command_id, status, sequence, body):
    raw = struct.pack(">LLLL", 16 + len(body), command_id, status, sequence) + body
    try:
        pdu = decode_pdu(raw)
    except PduError as err:
        assert err.sequence == sequence and err.command_id == command_id
        assert err.status in (P.ESME_RINVCMDLEN, P.ESME_RINVCMDID, P.ESME_RINVOPTPARSTREAM, P.ESME_RINVPARLEN)
    else:
        assert pdu.sequence == sequence and pdu.status == status


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=40))
def test_valid_pdu_with_trailing_junk_tlvs_never_crashes(junk):
    base = encode_pdu("deliver_sm", 1, source_addr="1", destination_addr="2", short_message=b"x")
    raw = struct.pack(">L", len(base) + len(junk)) + base[4:] + junk
    try:
        pdu = decode_pdu(raw)
    except PduError as err:
        assert err.status in (P.ESME_RINVOPTPARSTREAM, P.ESME_RINVPARLEN)
    else:
        assert pdu.short_message == b"x"


def test_reader_frames_and_rejects_bad_lengths():
    reader = PduReader()
    assert reader.feed(b"\x00\x00\x00") == []
    with pytest.raises(FramingError):
        reader.feed(b"\x0f")
    with pytest.raises(FramingError):
        PduReader().feed(struct.pack(">L", 64 * 1024 + 1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**31 - 1), min_size=1, max_size=8), st.data())
def test_reader_framing_across_arbitrary_splits(sequences, data):
    pdus = [
        encode_pdu("submit_sm", s, source_addr="1", destination_addr=str(s), short_message=bytes([s % 256]) * (s % 40))
        if s % 2 else encode_pdu("enquire_link", s)
        for s in sequences
    ]
    stream = b"".join(pdus)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=12)))
    reader = PduReader()
    out = []
    prev = 0
    for cut in cuts + [len(stream)]:
        out.extend(reader.feed(stream[prev:cut]))
        prev = cut
    assert out == pdus
    assert reader.buffered == 0
    assert [decode_pdu(p).sequence for p in out] == sequences


# --- text -----------------------------------------------------------------------

def _reassemble(parts):
    """The message the parts make, checking that exactly one comes out."""
    clock = Clock()
    r = T.Reassembler(clock)
    results = []
    for part in parts:
        d = T.decode_short_message(part.short_message, part.data_coding, part.esm_class)
        text = r.add("8613800000001", d.concat, d.text)
        if text is not None:
            results.append(text)
    assert len(results) == 1, results
    assert len(r) == 0
    return results[0]


def test_short_gsm_and_ucs2_are_single_parts():
    [part] = T.split_message("Balance 12.50 {ok} €", ref=1)
    assert part.data_coding == 0 and part.esm_class == 0
    assert part.short_message.count(b"\x1b") == 3
    [part] = T.split_message("余额 12.50 元", ref=1)
    assert part.data_coding == 8 and part.short_message == "余额 12.50 元".encode("utf-16-be")
    assert len(T.split_message("a" * 160, 0)) == 1
    assert len(T.split_message("a" * 161, 0)) == 2
    assert len(T.split_message("汉" * 70, 0)) == 1
    assert len(T.split_message("汉" * 71, 0)) == 2


def test_concatenated_parts_carry_8bit_udh_and_limits():
    parts = T.split_message("x" * 400, ref=0xAB)
    assert [p.short_message[:6] for p in parts] == [bytes([5, 0, 3, 0xAB, 3, i]) for i in (1, 2, 3)]
    assert all(p.esm_class == 0x40 and len(p.short_message) <= 6 + 153 for p in parts)
    parts = T.split_message("汉" * 200, ref=7)
    assert all(p.data_coding == 8 and len(p.short_message) <= 140 for p in parts)


def test_gsm_escape_pair_never_split():
    text = "a" * 152 + "€" + "b" * 10  # the escape pair would straddle septet 153
    parts = T.split_message(text, ref=3)
    assert len(parts) == 2
    assert parts[0].short_message[6:] == b"a" * 152
    assert parts[1].short_message[6:8] == b"\x1b\x65"
    assert _reassemble(parts) == text


def test_surrogate_pair_never_split():
    text = "汉" * 66 + "😀" + "x" * 10  # the pair would straddle octet 134 of the first part
    parts = T.split_message(text, ref=3)
    assert len(parts) == 2
    assert len(parts[0].short_message) == 6 + 132
    assert parts[1].short_message[6:10] == "😀".encode("utf-16-be")
    assert _reassemble(parts) == text


@settings(max_examples=150, deadline=None)
@given(st.integers(140, 320), st.sampled_from("€{}[]~^|\\"), st.integers(1, 4), st.text("ab", max_size=20))
def test_gsm_boundaries_with_escapes_round_trip(prefix, ext, count, tail):
    text = "a" * prefix + ext * count + tail
    parts = T.split_message(text, ref=1)
    assert all(not p.short_message.endswith(b"\x1b") for p in parts)
    assert _reassemble(parts) == text


@settings(max_examples=150, deadline=None)
@given(st.integers(60, 140), st.sampled_from("😀𠀀🎉"), st.integers(1, 3), st.text("汉x", max_size=20))
def test_ucs2_boundaries_with_surrogates_round_trip(prefix, astral, count, tail):
    text = "汉" * prefix + astral * count + tail
    parts = T.split_message(text, ref=1)
    assert all(len(p.short_message) % 2 == 0 for p in parts)
    assert _reassemble(parts) == text


def test_gsm_table_is_right_where_smpplib_is_not():
    assert T.gsm_encode("§") == b"\x5f"
    assert not T.is_gsm("`")
    assert T.gsm_decode(b"\x00\x02\x1b\x28\x1b\x29\x1b") == "@${}"


def test_decode_udh_16bit_and_sar_and_other_codings():
    sm = bytes([6, 8, 4, 0x12, 0x34, 2, 1]) + "你".encode("utf-16-be")
    assert T.decode_short_message(sm, 8, 0x40) == T.Decoded("你", (0x1234, 2, 1))
    assert T.decode_short_message("café".encode("latin-1"), 3, 0).text == "café"
    assert T.decode_short_message(b"\x01\xff", 4, 0).text == "01ff"
    assert T.concat_from_sar(9, 3, 2) == (9, 3, 2)
    assert T.concat_from_sar(9, 3, 4) is None
    assert T.concat_from_sar(None, 3, 1) is None


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 255), st.integers(0, 255))
def test_decode_never_raises_on_garbage(data, data_coding, esm_class):
    decoded = T.decode_short_message(data, data_coding, esm_class)
    assert isinstance(decoded.text, str)


TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from("abcXYZ 0123.,!?@£$\n{}[]~€^|\\"),
        st.sampled_from("余额充值支付汉字"),
        st.sampled_from("😀🎉𠀀"),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=700,
)


@settings(max_examples=120, deadline=None)
@given(TEXT, st.integers(0, 255), st.randoms(use_true_random=False))
def test_split_and_reassemble_round_trip(text, ref, rnd):
    parts = T.split_message(text, ref)
    coding = 0 if T.is_gsm(text) else 8
    for part in parts:
        assert part.data_coding == coding
        body = part.short_message[6:] if len(parts) > 1 else part.short_message
        limit = {(0, True): 160, (0, False): 153, (8, True): 140, (8, False): 134}[coding, len(parts) == 1]
        assert len(body) <= limit
        if coding == 0:
            assert not body.endswith(b"\x1b")  # no escape septet cut from its character
        else:
            units = [body[i:i + 2] for i in range(0, len(body), 2)]
            assert not (units and 0xD8 <= units[-1][0] <= 0xDB)  # no high surrogate left dangling
    shuffled = list(parts) + (list(parts[:1]) if len(parts) > 1 else [])  # a re-delivered part
    rnd.shuffle(shuffled)
    assert _reassemble(shuffled) == text


def test_reassembler_ignores_duplicates_and_expires():
    clock = Clock()
    r = T.Reassembler(clock, timeout=60)
    assert r.add("a", (1, 3, 1), "x") is None
    assert r.add("a", (1, 3, 1), "DUP") is None
    assert r.add("b", (1, 2, 1), "other sender") is None
    assert r.add("a", (1, 3, 3), "z") is None
    clock.advance(30)
    assert r.add("c", (5, 2, 2), "late") is None
    assert r.add("a", (1, 3, 2), "y") == "xyz"
    assert r.add("a", None, "single") == "single"
    assert r.add("a", (1, 3, 2), "y") is None  # late re-delivery of a completed message
    assert len(r) == 3 - 1  # b and c pending; the late part opened nothing
    clock.advance(30)
    assert r.expire() == [("b", 1, 1)]
    clock.advance(30)
    assert r.expire() == [("c", 5, 1)]
    assert len(r) == 0
    assert r.add("a", (1, 2, 1), "new message, same ref") is None  # memory expired with the timeout


def test_reassembler_add_part_keeps_any_values_in_order():
    r = T.Reassembler(Clock())
    assert r.add_part("k", None, "solo") == ["solo"]
    assert r.add_part("k", (9, 2, 2), {"n": 2}) is None
    assert r.add_part("k", (9, 2, 1), {"n": 1}) == [{"n": 1}, {"n": 2}]
