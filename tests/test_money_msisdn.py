import pytest
from hypothesis import given, strategies as st

from telecom_pay.money import AmountError, format_amount, parse_amount
from telecom_pay.msisdn import MsisdnError, mask, normalize


@pytest.mark.parametrize("text,minor", [
    ("12", 1200), ("12.5", 1250), ("12.50", 1250), ("￥12", 1200), ("¥0.01", 1),
    ("１２.５０", 1250), ("12元", 1200), (" 7 ", 700),
])
def test_parse_amount(text, minor):
    assert parse_amount(text) == minor


@pytest.mark.parametrize("text", ["", "0", "0.00", "-5", "1.234", "1e3", "12.", ".5", "abc", "1,000", "nan"])
def test_parse_amount_refuses(text):
    with pytest.raises(AmountError):
        parse_amount(text)


@given(st.integers(min_value=1, max_value=10**12))
def test_amount_round_trip(minor):
    assert parse_amount(format_amount(minor)) == minor
    assert isinstance(parse_amount(format_amount(minor)), int)


def test_format_negative():
    assert format_amount(-1250) == "-12.50"
    with pytest.raises(TypeError):
        format_amount(12.5)


@pytest.mark.parametrize("text", ["13800138000", "+8613800138000", "008613800138000",
                                  "8613800138000", "138 0013 8000", "１３８００１３８０００"])
def test_normalize(text):
    assert normalize(text) == "8613800138000"


@pytest.mark.parametrize("text", ["12345", "abc", "", "010-12345678", "+1 202 555 0"])
def test_normalize_refuses(text):
    with pytest.raises(MsisdnError):
        normalize(text)


def test_mask_hides_middle():
    assert mask("8613800138000") == "86138****8000"
