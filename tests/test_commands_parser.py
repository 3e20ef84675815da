"""The SMS command parser: every command in every spelling, every way to get
one wrong, and what the error says about it."""
import pytest

from telecom_pay.commands import Command, ParseError, parse
from telecom_pay.commands.keywords import COMMAND_NAMES, SPELLINGS


def full_width(text: str) -> str:
    """What a Chinese IME in full-width mode sends: `ＫＴ`, ideographic spaces."""
    return "".join("\u3000" if c == " " else chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c
                   for c in text)


def variants(text: str) -> list[str]:
    """Upper, lower, mixed case, full-width, odd whitespace and punctuation."""
    mixed = "".join(c.lower() if i % 2 else c.upper() for i, c in enumerate(text))
    spaced = "\t " + text.replace(" ", " \u3000\n ") + " \r\n"
    return [text, text.upper(), text.lower(), mixed, full_width(text), spaced,
            f"【{text}】", f"{text}。", f'"{text}"', f"\u200b{text}\ufeff"]


NO_ARGS = {
    "open": ["KT", "OPEN", "开通", "开户"],
    "confirm": ["A", "Y", "YES", "确认", "是"],
    "balance": ["YE", "BAL", "BALANCE", "余额", "余额查询"],
    "freeze": ["DJ", "FREEZE", "冻结"],
    "unfreeze": ["JD", "UNFREEZE", "解冻"],
    "close": ["XH", "CLOSE", "销户"],
    "cancel": ["N", "NO", "取消"],
    "statement": ["MX", "STMT", "明细"],
    "help": ["BZ", "HELP", "?", "？", "帮助"],
}


@pytest.mark.parametrize("name,spelling", [(n, s) for n, ss in NO_ARGS.items() for s in ss])
def test_commands_without_arguments(name, spelling):
    for text in variants(spelling):
        cmd = parse(text)
        assert cmd.name == name, text
        assert cmd.raw == text
        assert (cmd.amount, cmd.msisdn, cmd.merchant_code, cmd.pin) == (None, None, None, None)


@pytest.mark.parametrize("name", sorted(NO_ARGS.keys() - {"statement", "help"}))
def test_commands_without_arguments_refuse_extra_words(name):
    for spelling in NO_ARGS[name]:
        with pytest.raises(ParseError) as info:
            parse(f"{spelling} 123")
        assert info.value.kind == "malformed"
        assert info.value.command == name
        assert info.value.detail == "too_many_args"


@pytest.mark.parametrize("spelling", ["CZ", "TOPUP", "充值", "TX", "WITHDRAW", "提现"])
@pytest.mark.parametrize("amount_text,minor", [
    ("100", 10000), ("12.5", 1250), ("12.50", 1250), ("0.01", 1), ("￥12", 1200),
    ("12元", 1200), ("12 元", 1200), ("¥ 12", 1200), ("RMB 12", 1200),
])
def test_amount_commands(spelling, amount_text, minor):
    name = SPELLINGS[spelling]
    for text in variants(f"{spelling} {amount_text}"):
        cmd = parse(text)
        assert (cmd.name, cmd.amount) == (name, minor), text


@pytest.mark.parametrize("text,name,minor", [
    ("充值100", "topup", 10000), ("提现50.5", "withdraw", 5050), ("CZ100", "topup", 10000),
    ("tx7", "withdraw", 700), ("充值：100", "topup", 10000), ("充值,100", "topup", 10000),
    ("ＣＺ１００", "topup", 10000), ("话费50", "airtime", 5000), ("充话费50", "airtime", 5000),
    ("充值100块", "topup", 10000), ("CZ 100 块钱", "topup", 10000), ("提现 12.5元", "withdraw", 1250),
])
def test_keyword_glued_to_argument(text, name, minor):
    cmd = parse(text)
    assert (cmd.name, cmd.amount) == (name, minor)


@pytest.mark.parametrize("spelling", ["ZF", "PAY", "支付"])
def test_pay(spelling):
    for text in variants(f"{spelling} M001 12.50"):
        cmd = parse(text)
        assert (cmd.name, cmd.merchant_code, cmd.amount, cmd.reference) == ("pay", "M001", 1250, None), text
    cmd = parse(f"{spelling} lottery88 3 Order-42/A")
    assert (cmd.merchant_code, cmd.amount, cmd.reference) == ("LOTTERY88", 300, "Order-42/A")
    cmd = parse(f"{spelling} m001 3 table 7")
    assert cmd.reference == "table 7"


def test_pay_chinese_keyword_without_space():
    cmd = parse("支付M001 12.5")
    assert (cmd.name, cmd.merchant_code, cmd.amount) == ("pay", "M001", 1250)
    cmd = parse("ｚｆ\u3000Ｍ００１\u3000１２．５０")
    assert (cmd.name, cmd.merchant_code, cmd.amount) == ("pay", "M001", 1250)


@pytest.mark.parametrize("text", ["支付M001，12.5", "支付，M001，12。5", "ZF M001,12.50", "ZF:M001:12.5",
                                  "支付M001、12.5元。", "ZF M001 12。50"])
def test_pay_with_chinese_punctuation(text):
    cmd = parse(text)
    assert (cmd.name, cmd.merchant_code, cmd.amount, cmd.reference) == ("pay", "M001", 1250, None)


@pytest.mark.parametrize("text", ["ZF M001 1,000", "ZF M001 1，000", "ZF M001,1,000", "CZ 1,000.50"])
def test_thousands_separators_are_refused_not_split(text):
    with pytest.raises(ParseError) as info:
        parse(text)
    assert info.value.detail == "amount"


def test_pay_reference_keeps_case_and_limit():
    assert parse("ZF M001 1 AbC").reference == "AbC"
    assert parse("ZF M001 1 " + "x" * 32).reference == "x" * 32
    with pytest.raises(ParseError) as info:
        parse("ZF M001 1 " + "x" * 33)
    assert (info.value.command, info.value.detail) == ("pay", "reference")


@pytest.mark.parametrize("spelling", ["ZZ", "SEND", "转账"])
@pytest.mark.parametrize("number", ["13800138000", "+8613800138000", "008613800138000",
                                    "8613800138000", "138 0013 8000", "１３８００１３８０００"])
def test_send(spelling, number):
    cmd = parse(f"{spelling} {number} 20")
    assert (cmd.name, cmd.msisdn, cmd.amount) == ("send", "8613800138000", 2000)


def test_send_glued_and_full_width():
    assert parse("转账13800138000 20").msisdn == "8613800138000"
    cmd = parse(full_width("zz 13800138000 20.5"))
    assert (cmd.name, cmd.msisdn, cmd.amount) == ("send", "8613800138000", 2050)


@pytest.mark.parametrize("spelling", ["HF", "AIRTIME", "话费"])
def test_airtime(spelling):
    cmd = parse(f"{spelling} 50")
    assert (cmd.name, cmd.amount, cmd.msisdn) == ("airtime", 5000, None)
    cmd = parse(f"{spelling} 50 13900139000")
    assert (cmd.name, cmd.amount, cmd.msisdn) == ("airtime", 5000, "8613900139000")
    cmd = parse(f"{spelling} 50 139 0013 9000")
    assert cmd.msisdn == "8613900139000"


@pytest.mark.parametrize("spelling", ["MM", "PIN", "密码"])
def test_change_pin(spelling):
    for text in variants(f"{spelling} 123456 654321"):
        cmd = parse(text)
        assert (cmd.name, cmd.old_pin, cmd.new_pin) == ("change_pin", "123456", "654321"), text
    assert parse("密码123456 654321").new_pin == "654321"


def test_pins_stay_out_of_repr():
    cmd = parse("MM 123456 654321")
    assert "123456" not in repr(cmd) and "654321" not in repr(cmd)
    assert "135790" not in repr(parse("135790"))


@pytest.mark.parametrize("text", ["123456", " 123456 ", "１２３４５６", "123 456", "123456。"])
def test_pin_reply(text):
    cmd = parse(text)
    assert (cmd.name, cmd.pin) == ("pin_reply", "123456")


@pytest.mark.parametrize("text", ["PIN 123456", "密码 123456", "pin123456"])
def test_pin_word_with_one_pin_is_a_pin_reply(text):
    cmd = parse(text)
    assert (cmd.name, cmd.pin) == ("pin_reply", "123456")


@pytest.mark.parametrize("spelling", ["MX", "STMT", "明细"])
def test_statement_pages(spelling):
    assert parse(spelling).page == 1
    assert parse(f"{spelling} 3").page == 3
    assert parse(f"{spelling}3").page == 3
    for bad in ("0", "1000", "x", "-1", "1.5"):
        with pytest.raises(ParseError) as info:
            parse(f"{spelling} {bad}")
        assert (info.value.kind, info.value.command, info.value.detail) == ("malformed", "statement", "page")


@pytest.mark.parametrize("text,lang", [
    ("LANG EN", "en"), ("lang zh", "zh"), ("LANG 中文", "zh"), ("lang english", "en"),
    ("中文", "zh"), ("ENGLISH", "en"), ("English", "en"), ("英文", "en"), ("语言 EN", "en"),
    ("ＬＡＮＧ　ＥＮ", "en"), ("语言英文", "en"),
])
def test_lang(text, lang):
    cmd = parse(text)
    assert (cmd.name, cmd.lang) == ("lang", lang)


@pytest.mark.parametrize("text,detail,missing", [
    ("LANG", "lang", True), ("LANG FR", "lang", False), ("LANG EN ZH", "too_many_args", False),
    ("中文 ZH", "too_many_args", False),
])
def test_lang_malformed(text, detail, missing):
    with pytest.raises(ParseError) as info:
        parse(text)
    assert (info.value.command, info.value.detail, info.value.missing) == ("lang", detail, missing)


@pytest.mark.parametrize("text,topic", [
    ("BZ ZF", "pay"), ("help pay", "pay"), ("? CZ", "topup"),
    ("帮助 转账", "send"), ("帮助支付", "pay"), ("BZ", None), ("BZ whatever", None), ("HELP HELP", None),
])
def test_help_topic(text, topic):
    cmd = parse(text)
    assert (cmd.name, cmd.topic) == ("help", topic)


MALFORMED = [
    # missing arguments
    ("CZ", "topup", "amount", True),
    ("TX", "withdraw", "amount", True),
    ("ZF", "pay", "merchant_code", True),
    ("ZF M001", "pay", "amount", True),
    ("ZZ", "send", "msisdn", True),
    ("ZZ 13800138000", "send", "amount", True),
    ("HF", "airtime", "amount", True),
    ("MM", "change_pin", "pin", True),
    ("MM 123456", "change_pin", "pin", True),
    # bad amounts
    ("CZ 1.234", "topup", "amount", False),
    ("CZ -5", "topup", "amount", False),
    ("CZ 0", "topup", "amount", False),
    ("CZ 0.00", "topup", "amount", False),
    ("TX abc", "withdraw", "amount", False),
    ("TX 1,000", "withdraw", "amount", False),
    ("TX 1e3", "withdraw", "amount", False),
    ("充值一百", "topup", "amount", False),
    ("ZF M001 1.234", "pay", "amount", False),
    ("ZF M001 -5", "pay", "amount", False),
    ("ZZ 13800138000 0", "send", "amount", False),
    ("HF 0", "airtime", "amount", False),
    # bad merchant codes
    ("ZF M 12", "pay", "merchant_code", False),
    ("ZF M0-01 12", "pay", "merchant_code", False),
    ("ZF ABCDEFGHIJKLMNOPQ 12", "pay", "merchant_code", False),
    ("ZF 商户 12", "pay", "merchant_code", False),
    ("ZF 12.5", "pay", "merchant_code", False),
    # bad numbers
    ("ZZ 12345 20", "send", "msisdn", False),
    ("ZZ 010-12345678 20", "send", "msisdn", False),
    ("ZZ abc 20", "send", "msisdn", False),
    ("ZZ 20", "send", "msisdn", False),
    ("HF 50 12345", "airtime", "msisdn", False),
    # bad PINs
    ("MM 12345 654321", "change_pin", "pin", False),
    ("MM 123456 6543210", "change_pin", "pin", False),
    ("MM abcdef 654321", "change_pin", "pin", False),
    ("12345", "pin_reply", "pin", False),
    ("1234567", "pin_reply", "pin", False),
    # too many arguments
    ("CZ 100 200", "topup", "too_many_args", False),
    ("ZZ 13800138000 20 30", "send", "too_many_args", False),
    ("HF 50 13900139000 1", "airtime", "too_many_args", False),
    ("MM 123456 654321 111111", "change_pin", "too_many_args", False),
    ("MX 1 2", "statement", "too_many_args", False),
    ("KT now", "open", "too_many_args", False),
]


@pytest.mark.parametrize("text,command,detail,missing", MALFORMED)
def test_malformed(text, command, detail, missing):
    for variant in (text, text.lower(), full_width(text)):
        with pytest.raises(ParseError) as info:
            parse(variant)
        err = info.value
        assert (err.kind, err.command, err.detail, err.missing) == ("malformed", command, detail, missing), variant
        assert err.raw == variant
        assert command in str(err)


def test_error_text_never_shows_a_pin():
    for text in ("MM 12345 654321", "MM 123456 65432", "1234567"):
        with pytest.raises(ParseError) as info:
            parse(text)
        assert "12345" not in str(info.value) and "65432" not in str(info.value)
        assert info.value.value is None


@pytest.mark.parametrize("text", ["hello", "ZFM001 12", "13800138000", "12.50", "KTT",
                                  "你好", "支", "¥5 CZ", "A1", "*188#"])
def test_unknown(text):
    with pytest.raises(ParseError) as info:
        parse(text)
    assert (info.value.kind, info.value.command) == ("unknown", None)
    assert "unknown" in str(info.value)


@pytest.mark.parametrize("text", ["", "   ", "\u3000\t\n", "。", "...", "\u200b", "“”"])
def test_empty(text):
    with pytest.raises(ParseError) as info:
        parse(text)
    assert (info.value.kind, info.value.command, info.value.detail) == ("empty", None, None)
    assert str(info.value) == "empty message"


def test_not_text_is_an_error_not_a_crash():
    with pytest.raises(ParseError):
        parse(None)  # type: ignore[arg-type]


def test_command_is_frozen_and_named():
    cmd = parse("YE")
    assert isinstance(cmd, Command)
    with pytest.raises(AttributeError):
        cmd.name = "pay"  # type: ignore[misc]
    assert set(SPELLINGS.values()) | {"pin_reply"} == COMMAND_NAMES


def test_every_spelling_is_recognised():
    for spelling, name in SPELLINGS.items():
        try:
            cmd = parse(spelling)
        except ParseError as err:
            assert (err.kind, err.command) == ("malformed", name), spelling
        else:
            assert cmd.name == name, spelling
