"""What of a subscriber's text is stored: the parser decides what is a PIN."""
import pytest

from telecom_pay.commands.redaction import redact


@pytest.mark.parametrize("text,stored", [
    ("123456", "******"), ("123 456", "******"), ("１２３４５６", "******"), ("PIN 123456", "******"),
    ("密码 123456", "******"), ("MM 123456 654321", "MM ****** ******"), ("mm 123456 654321。", "MM ****** ******"),
    ("修改密码 123456 654321", "MM ****** ******"),
    ("12345", "*****"), ("MM 12345 654321", "MM ***** ******"),       # mistyped PINs are PINs too
    ("YE", "YE"), ("ZF M001 12.50", "ZF M001 12.50"), ("ZZ 13900139000 10", "ZZ 13900139000 10"),
    ("CZ 100", "CZ 100"), ("MM", "MM"), ("", ""),
])
def test_pin_bearing_texts_are_masked(text, stored):
    assert redact(text) == stored


def test_menu_inputs_that_may_be_pins_are_masked():
    from telecom_pay.commands.redaction import redact_menu_input
    assert redact_menu_input("258147") == "******"
    assert redact_menu_input("258147 369258") == "****** ******"
    assert redact_menu_input("258147369258") == "************"
    assert redact_menu_input("１２３４５６") == "******"
    # menu keys, amounts and typed commands are kept
    assert redact_menu_input("1") == "1"
    assert redact_menu_input("00") == "00"
    assert redact_menu_input("12.50") == "12.50"
    assert redact_menu_input("ZF M001 10") == "ZF M001 10"
    assert redact_menu_input("MM 111111 222222") == "MM ****** ******"
