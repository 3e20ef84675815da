"""Delivery receipt parsing and message-id matching (channels.smpp.receipts)."""
from __future__ import annotations

from datetime import datetime

import pytest

from channels.smpp.receipts import (
    ReceiptFormatError, message_id_candidates, message_ids_match, normalize_message_id,
    parse_receipt, receipt_from_tlvs,
)


def test_standard_receipt():
    r = parse_receipt("id:1234567890 sub:001 dlvrd:001 submit date:2611231200 "
                      "done date:2611231205 stat:DELIVRD err:000 text:Your balance is")
    assert r.message_id == "1234567890"
    assert (r.submitted, r.delivered, r.state, r.error) == (1, 1, "DELIVRD", "000")
    assert r.submit_date == datetime(2026, 11, 23, 12, 0)
    assert r.done_date == datetime(2026, 11, 23, 12, 5)
    assert r.text == "Your balance is"
    assert r.final and r.is_delivered


def test_odd_receipts_are_tolerated():
    r = parse_receipt(b"ID:ab12  Sub:1 DLVRD:0 Submit_Date:261123120001 Done_date:2611231201 "
                      b"Stat:undeliverable Err:11")
    assert (r.message_id, r.state, r.error, r.delivered) == ("ab12", "UNDELIV", "11", 0)
    assert r.submit_date == datetime(2026, 11, 23, 12, 0, 1)
    assert parse_receipt("id:9 stat:ENROUTE").final is False
    assert parse_receipt("stat:EXPIRED id:9").state == "EXPIRED"


def test_not_a_receipt():
    with pytest.raises(ReceiptFormatError):
        parse_receipt("hello world")


def test_tlvs_win_over_text():
    r = receipt_from_tlvs("00ff", 2, None, "id:other stat:UNDELIV err:001")
    assert (r.message_id, r.state, r.error) == ("00ff", "DELIVRD", "001")
    r = receipt_from_tlvs(None, None, b"\x03\x00\x15", "id:5 stat:REJECTD")
    assert (r.message_id, r.state, r.error) == ("5", "REJECTD", "3:21")
    with pytest.raises(ReceiptFormatError):
        receipt_from_tlvs(None, 2, None, None)


@pytest.mark.parametrize("submitted, receipted", [
    ("0A1B", "2587"),          # hex at submit, decimal in the receipt
    ("2587", "a1b"),           # and the other way round
    ("000123", "123"),         # leading zeros
    ("ABCDEF", "abcdef"),      # case
    (" 42 ", "42"),
])
def test_message_ids_match(submitted, receipted):
    assert message_ids_match(submitted, receipted)
    assert normalize_message_id(submitted) in message_id_candidates(receipted)


def test_different_ids_do_not_match():
    assert not message_ids_match("1234", "1235")
    assert not message_ids_match("msg-1", "msg-2")
    assert normalize_message_id("0000") == "0"
