"""Reply texts: every Outcome in both languages, the exact shape of the main
ones, and that odd Results still produce a sensible text."""
import pytest
from smpplib.gsm import gsm_encode

from telecom_pay.commands import COMMAND_NAMES, ParseError, parse, render, render_help, render_parse_error, usage
from telecom_pay.commands.replies import FALLBACK, SMS_CHARS, normalize_lang
from telecom_pay.outcomes import BankDecline, Outcome, Result, StatementLine
from tests.test_commands_parser import MALFORMED

LANGS = ("zh", "en")
ACTIONS = ["open", "confirm_open", "balance", "statement", "topup", "withdraw", "pay", "send",
           "airtime", "change_pin", "freeze", "unfreeze", "close", "lang", "cancel", "cash_in",
           "refund", "receive", "confirm", "pin_reset", "bind_card", "unbind_card", "kyc_tier",
           "number_change", "cancel_number", "agent_float", "ownership_transfer"]

FULL_PARAMS = {
    "merchant_name": "福彩中心", "merchant_code": "M001", "counterparty": "138****8000",
    "lines": [], "page": 1, "pages": 1, "pin": "482913", "password": "Xk29pQ7m",
    "ttl_minutes": 5, "limit": 500000, "retry_after": 90, "attempts_left": 2,
    "locked_minutes": 30, "reason": "insufficient_funds", "differs": ["amount"],
    "usage": "pay", "withdrawable": 5000, "lang": "en", "last4": "1234", "card_type": "debit",
    "tier": 2, "msisdn": "8613900139000", "status": "frozen", "weak": True, "refundable": 500,
}


def assert_messages(messages):
    assert isinstance(messages, list) and messages
    for m in messages:
        assert isinstance(m, str) and m.strip(), messages


@pytest.mark.parametrize("lang", LANGS)
def test_every_outcome_has_its_own_fallback_text(lang):
    # A new Outcome without a template fails here.
    assert set(FALLBACK[lang]) == set(Outcome)
    assert len(set(FALLBACK[lang].values())) == len(Outcome), "each outcome says something different"


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_outcome_renders_without_params(outcome, lang):
    assert_messages(render(Result(outcome), lang))


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("outcome", list(Outcome))
@pytest.mark.parametrize("action", ACTIONS + [None, "something_new"])
def test_every_outcome_and_action_renders_with_full_params(outcome, action, lang):
    params = dict(FULL_PARAMS, action=action) if action else dict(FULL_PARAMS)
    result = Result(outcome, ref="T8K2P9QX", amount=1250, fee=50, balance=8750, params=params)
    messages = render(result, lang)
    assert_messages(messages)
    assert all("{" not in m and "}" not in m for m in messages), messages


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("outcome", list(Outcome))
def test_odd_results_never_raise(outcome, lang):
    odd = [
        Result(outcome, params=None),  # type: ignore[arg-type]
        Result(outcome, amount=12.5, balance="87", fee=-1, params={"action": "pay"}),  # type: ignore[arg-type]
        Result(outcome, params={"action": 7, "lines": "x", "limit": "big", "retry_after": -3,
                                "attempts_left": 0, "reason": ["?"], "differs": "amount",
                                "usage": "nope", "pin": 123456, "ttl_minutes": True}),
        Result(outcome, params={"action": "statement", "lines": [None, 3, {"at": 5}]}),
    ]
    for result in odd:
        assert_messages(render(result, lang))
    assert_messages(render(None, lang))  # type: ignore[arg-type]


def test_pay_ok_text():
    result = Result(Outcome.OK, ref="T8K2P9QX", amount=1250, balance=8750,
                    params={"action": "pay", "merchant_name": "福彩中心", "merchant_code": "M001"})
    assert render(result, "zh") == ["T8K2P9QX 已支付 12.50 元给 福彩中心, 余额 87.50 元."]
    result = Result(Outcome.OK, ref="T8K2P9QX", amount=1250, balance=8750,
                    params={"action": "pay", "merchant_name": "Lottery Centre"})
    assert render(result, "en") == ["T8K2P9QX Paid 12.50 to Lottery Centre. Balance 87.50."]


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("action", ["topup", "withdraw", "pay", "send", "receive", "airtime",
                                    "cash_in", "refund"])
def test_money_moved_replies_carry_ref_amount_and_balance(action, lang):
    result = Result(Outcome.OK, ref="R7Q2", amount=100001, balance=4205,
                    params={"action": action, "merchant_name": "Shop", "counterparty": "139****9000"})
    [text] = render(result, lang)
    assert "R7Q2" in text and "1000.01" in text and "42.05" in text
    assert len(text) <= SMS_CHARS[lang]


def test_fee_is_shown_when_charged():
    base = dict(ref="R1", amount=2000, balance=7950, params={"action": "send", "counterparty": "138****8000"})
    assert "手续费 0.50 元" in render(Result(Outcome.OK, fee=50, **base), "zh")[0]
    assert "Fee 0.50" in render(Result(Outcome.OK, fee=50, **base), "en")[0]
    assert "手续费" not in render(Result(Outcome.OK, fee=0, **base), "zh")[0]
    assert "Fee" not in render(Result(Outcome.OK, **base), "en")[0]
    pin = Result(Outcome.PIN_REQUIRED, amount=2000, fee=50, params={"action": "send", "counterparty": "x"})
    assert "0.50" in render(pin, "zh")[0] and "0.50" in render(pin, "en")[0]


def test_send_and_receive_name_the_other_party():
    sent = Result(Outcome.OK, ref="R1", amount=2000, balance=100, params={"action": "send", "counterparty": "138****8000"})
    got = Result(Outcome.OK, ref="R1", amount=2000, balance=100, params={"action": "receive", "counterparty": "139****1111"})
    assert "向 138****8000 转账 20.00 元" in render(sent, "zh")[0]
    assert "Received 20.00 from 139****1111" in render(got, "en")[0]


@pytest.mark.parametrize("lang", LANGS)
def test_confirm_open_sends_welcome_then_credentials(lang):
    result = Result(Outcome.OK, balance=0, params={"action": "confirm_open", "pin": "482913", "password": "Xk29pQ7m"})
    welcome, credentials = render(result, lang)
    assert "482913" not in welcome and "Xk29pQ7m" not in welcome
    assert "482913" in credentials and "Xk29pQ7m" in credentials
    assert "MM 482913" in credentials
    assert len(credentials) <= SMS_CHARS[lang] + 30


def test_confirm_open_without_credentials_is_only_the_welcome():
    assert len(render(Result(Outcome.OK, params={"action": "confirm_open"}), "zh")) == 1


def test_bank_decline_reasons_are_each_named():
    for lang in LANGS:
        texts = set()
        for reason in BankDecline:
            for value in (reason, reason.value):
                result = Result(Outcome.BANK_DECLINED, ref="R9", amount=10000,
                                params={"action": "topup", "reason": value})
                [text] = render(result, lang)
                assert "100.00" in text and "R9" in text
                texts.add(text)
        assert len(texts) == len(BankDecline), texts
    [zh] = render(Result(Outcome.BANK_DECLINED, params={"reason": "expired_card"}), "zh")
    assert "过期" in zh
    [en] = render(Result(Outcome.BANK_DECLINED, params={"reason": "insufficient_funds"}), "en")
    assert "insufficient funds" in en
    [other] = render(Result(Outcome.BANK_DECLINED, params={"reason": "martian"}), "en")
    assert "contact your bank" in other


def line(day, kind, amount, counterparty, state="posted"):
    return StatementLine(ref=f"R{day}", kind=kind, amount=amount, balance_after=None,
                         at=f"2026-03-{day:02d}T08:30:00Z", counterparty=counterparty, state=state)


def test_statement_newest_first_compact():
    lines = [line(1, "topup", 10000, "bank card 1234"), line(21, "payment", -1250, "福彩中心"),
             line(5, "p2p_out", -2000, "138****8000", state="pending")]
    [text] = render(Result(Outcome.OK, balance=6750, params={"action": "statement", "lines": lines,
                                                              "page": 1, "pages": 1}), "zh")
    rows = text.split("\n")
    assert rows[1] == "03-21 支付 -12.50 福彩中心"
    assert rows[2].startswith("03-05 转出 -20.00") and "处理中" in rows[2]
    assert rows[3] == "03-01 充值 +100.00 bank card 1234"
    [en] = render(Result(Outcome.OK, params={"action": "statement", "lines": lines}), "en")
    assert "03-21 Pay -12.50 福彩中心" in en


@pytest.mark.parametrize("lang", LANGS)
def test_long_statement_is_split_five_lines_a_message(lang):
    lines = [line(d, "payment", -100 * d, f"Shop {d}") for d in range(1, 13)]
    messages = render(Result(Outcome.OK, params={"action": "statement", "lines": lines,
                                                 "page": 1, "pages": 3}), lang)
    assert len(messages) == 3
    body = [row for m in messages for row in m.split("\n") if row.startswith("03-")]
    assert len(body) == 12
    assert body[0].startswith("03-12") and body[-1].startswith("03-01")
    for m in messages:
        assert sum(row.startswith("03-") for row in m.split("\n")) <= 5
    assert "1/3" in messages[0]
    assert ("MX 2" if lang == "zh" else "STMT 2") in messages[-1]


def test_empty_statement():
    assert render(Result(Outcome.OK, params={"action": "statement", "lines": []}), "zh") == ["暂无交易记录."]
    assert render(Result(Outcome.OK, params={"action": "statement", "lines": []}), "en") == ["No transactions yet."]
    past_the_end = Result(Outcome.OK, params={"action": "statement", "lines": [], "page": 3, "pages": 1})
    assert "STMT" in render(past_the_end, "en")[0] and "MX" in render(past_the_end, "zh")[0]


def test_balance_shows_withdrawable_only_when_it_differs():
    plain = Result(Outcome.OK, balance=8750, params={"action": "balance", "withdrawable": 8750})
    assert render(plain, "zh") == ["余额 87.50 元."]
    assert render(plain, "en") == ["Balance 87.50."]
    split = Result(Outcome.OK, balance=8750, params={"action": "balance", "withdrawable": 5000})
    assert "可提现 50.00 元" in render(split, "zh")[0]
    assert "50.00" in render(split, "en")[0] and "87.50" in render(split, "en")[0]


def test_pending_states():
    ask = Result(Outcome.CONFIRM_REQUIRED, params={"action": "open", "ttl_minutes": 10})
    assert "10 分钟内回复 A" in render(ask, "zh")[0]
    assert "Reply A within 10 min" in render(ask, "en")[0]
    pin = Result(Outcome.PIN_REQUIRED, amount=1250, params={"action": "pay", "merchant_name": "福彩中心"})
    assert render(pin, "zh")[0].startswith("向 福彩中心 支付 12.50 元")
    assert "6-digit PIN" in render(pin, "en")[0]
    progress = Result(Outcome.IN_PROGRESS, ref="R5", amount=10000, params={"action": "topup"})
    assert render(progress, "zh") == ["R5 充值 100.00 元处理中, 结果将短信通知."]


def test_bank_unavailable_names_the_operation():
    result = Result(Outcome.BANK_UNAVAILABLE, amount=5000, params={"action": "withdraw"})
    assert render(result, "zh")[0].startswith("提现 50.00 元未完成")
    assert "withdraw 50.00" in render(result, "en")[0]


@pytest.mark.parametrize("lang", LANGS)
def test_operator_and_agent_events(lang):
    reset = render(Result(Outcome.OK, params={"action": "pin_reset", "pin": "731904"}), lang)[0]
    assert "731904" in reset and "MM 731904" in reset
    card = render(Result(Outcome.OK, params={"action": "bind_card", "last4": "4321", "card_type": "credit"}), lang)[0]
    assert "4321" in card and ("信用卡" in card if lang == "zh" else "credit card" in card)
    moved = render(Result(Outcome.OK, params={"action": "number_change", "msisdn": "8613900139000"}), lang)[0]
    assert "13900139000" in moved
    cancelled = render(Result(Outcome.OK, balance=5000, params={"action": "cancel_number"}), lang)[0]
    assert "50.00" in cancelled
    tier = render(Result(Outcome.OK, params={"action": "kyc_tier", "tier": 3}), lang)[0]
    assert "3" in tier
    welcome, credentials = render(Result(Outcome.OK, balance=0, params={
        "action": "ownership_transfer", "pin": "550011", "password": "pw9", "held": 100}), lang)
    assert "550011" in credentials and "550011" not in welcome
    closing = render(Result(Outcome.IN_PROGRESS, ref="C1", amount=5000, params={"action": "close"}), lang)[0]
    assert "C1" in closing and "50.00" in closing


def test_refusals_with_reasons():
    assert "处理中" in render(Result(Outcome.BALANCE_NOT_ZERO, params={"reason": "in_flight"}), "zh")[0]
    assert "12.00" in render(Result(Outcome.BALANCE_NOT_ZERO, balance=1200), "en")[0]
    assert "123456" in render(Result(Outcome.PIN_FORMAT, params={"weak": True}), "en")[0]
    assert render(Result(Outcome.PIN_FORMAT, params={"weak": False}), "zh") == ["支付密码须为6位数字."]
    assert "5.00" in render(Result(Outcome.INVALID_AMOUNT, params={"refundable": 500}), "zh")[0]
    assert "JD" in render(Result(Outcome.ACCOUNT_EXISTS, params={"status": "frozen"}), "zh")[0]
    assert render(Result(Outcome.ACCOUNT_EXISTS, params={"status": "active"}), "en") == [
        "You already have a mobile wallet. Send HELP for commands."]


def test_statement_dates_are_local_and_placeholders_translated():
    lines = [StatementLine("R1", "airtime", -5000, None, "2026-03-20T23:30:00+00:00", "airtime"),
             StatementLine("R2", "topup", 5000, None, "2026-03-20T10:30:00Z", "bank card")]
    [zh] = render(Result(Outcome.OK, params={"action": "statement", "lines": lines}), "zh")
    assert zh.split("\n")[1:] == ["03-21 话费 -50.00", "03-20 充值 +50.00 银行卡"]
    from datetime import timezone
    [utc] = render(Result(Outcome.OK, params={"action": "statement", "lines": lines}), "en", tz=timezone.utc)
    assert utc.split("\n")[1:] == ["03-20 Airtime -50.00", "03-20 Topup +50.00 card"]


def test_failure_params_are_shown():
    assert "5000.00" in render(Result(Outcome.LIMIT_DAILY, params={"limit": 500000}), "zh")[0]
    assert "5000.00" in render(Result(Outcome.LIMIT_PER_TXN, params={"limit": 500000}), "en")[0]
    assert "2 分钟" in render(Result(Outcome.VELOCITY_HOLD, params={"retry_after": 90}), "zh")[0]
    assert "30 s" in render(Result(Outcome.VELOCITY_HOLD, params={"retry_after": 30}), "en")[0]
    assert "2 attempts left" in render(Result(Outcome.PIN_WRONG, params={"attempts_left": 2}), "en")[0]
    assert "锁定" in render(Result(Outcome.PIN_WRONG, params={"attempts_left": 1}), "zh")[0]
    assert "30 分钟" in render(Result(Outcome.PIN_LOCKED, params={"locked_minutes": 30}), "zh")[0]
    assert "M042" in render(Result(Outcome.UNKNOWN_MERCHANT, params={"merchant_code": "M042"}), "en")[0]
    assert "12.34" in render(Result(Outcome.INSUFFICIENT_FUNDS, balance=1234), "zh")[0]
    assert "amount, merchant_code" in render(
        Result(Outcome.IDEMPOTENCY_CONFLICT, params={"differs": ["amount", "merchant_code"]}), "en")[0]
    assert "ZF 商户代码 金额" in render(Result(Outcome.MALFORMED, params={"usage": "pay"}), "zh")[0]


def test_lang_reply_is_in_the_new_language():
    assert render(Result(Outcome.OK, params={"action": "lang", "lang": "en"}), "zh") == ["Language set to English."]
    assert render(Result(Outcome.OK, params={"action": "lang", "lang": "zh"}), "en") == ["已切换为中文."]


@pytest.mark.parametrize("text", [text for text, *_ in MALFORMED])
def test_parse_error_replies_show_usage(text):
    with pytest.raises(ParseError) as info:
        parse(text)
    for lang in LANGS:
        [reply] = render_parse_error(info.value, lang)
        assert usage(info.value.command, lang) in reply


def test_parse_error_replies_for_unknown_and_empty():
    for text, zh in (("hello", "未识别的指令. 发送 BZ 查看帮助."), ("  ", None)):
        with pytest.raises(ParseError) as info:
            parse(text)
        assert_messages(render_parse_error(info.value, "zh"))
        assert "HELP" in render_parse_error(info.value, "en")[0]
        if zh:
            assert render_parse_error(info.value, "zh") == [zh]


@pytest.mark.parametrize("lang", LANGS)
def test_help_fits_sms_and_names_every_command(lang):
    messages = render_help(lang)
    assert 2 <= len(messages) <= 3
    for m in messages:
        assert len(m) <= SMS_CHARS[lang], m
    text = " ".join(messages)
    words = {"zh": ["KT", "YE", "MX", "CZ", "TX", "ZF", "ZZ", "HF", "MM", "DJ", "JD", "XH", "LANG"],
             "en": ["OPEN", "BAL", "STMT", "TOPUP", "WITHDRAW", "PAY", "SEND", "AIRTIME", "PIN",
                    "FREEZE", "UNFREEZE", "CLOSE", "LANG"]}[lang]
    for word in words:
        assert word in text


@pytest.mark.parametrize("lang", LANGS)
def test_usage_for_every_command(lang):
    lines = {name: usage(name, lang) for name in COMMAND_NAMES}
    assert all(lines.values())
    assert len(set(lines.values())) == len(COMMAND_NAMES)
    assert render_help(lang, "pay") == [usage("pay", lang)]


def test_language_codes():
    assert normalize_lang("en") == normalize_lang("EN") == normalize_lang("en-GB") == "en"
    assert normalize_lang("zh") == normalize_lang("zh-CN") == normalize_lang(None) == "zh"


def sms_length(text: str, lang: str) -> int:
    """Characters for UCS2 (zh), septets for GSM 03.38 (en: must encode)."""
    return len(text) if lang == "zh" else len(gsm_encode(text))


@pytest.mark.parametrize("lang", LANGS)
def test_fixed_texts_fit_one_sms(lang):
    texts = list(FALLBACK[lang].values()) + render_help(lang) + [usage(n, lang) for n in COMMAND_NAMES]
    for text in texts:
        assert sms_length(text, lang) <= SMS_CHARS[lang], text


@pytest.mark.parametrize("text", [text for text, *_ in MALFORMED] + ["hello", ""])
def test_parse_error_replies_fit_one_sms(text):
    with pytest.raises(ParseError) as info:
        parse(text)
    for lang in LANGS:
        for reply in render_parse_error(info.value, lang):
            assert sms_length(reply, lang) <= SMS_CHARS[lang], reply


def test_english_money_replies_stay_in_the_gsm_alphabet():
    result = Result(Outcome.OK, ref="T8K2P9QX", amount=1250, fee=50, balance=8700,
                    params={"action": "pay", "merchant_name": "Lottery Centre"})
    [text] = render(result, "en")
    assert sms_length(text, "en") <= 160
