"""Property tests: any text parses to a Command or a ParseError and gets a
reply; well-formed commands built from random parts parse back to those
parts; any Result renders."""
import os
import re

from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from telecom_pay.commands import COMMAND_NAMES, Command, ParseError, parse, render, render_help, render_parse_error
from telecom_pay.commands.keywords import LANG_WORDS, SPELLINGS
from telecom_pay.money import format_amount
from telecom_pay.msisdn import is_msisdn, normalize
from telecom_pay.outcomes import BankDecline, Outcome, Result, StatementLine

# FUZZ_EXAMPLES=5000 for a longer hunt; the default keeps the file fast.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_command(cmd: Command, text: str) -> None:
    """What every parsed Command promises its caller."""
    assert cmd.name in COMMAND_NAMES
    assert cmd.raw == text
    if cmd.amount is not None:
        assert isinstance(cmd.amount, int) and cmd.amount > 0
    if cmd.msisdn is not None:
        assert cmd.msisdn.isdigit()
    if cmd.merchant_code is not None:
        assert re.fullmatch(r"[A-Z0-9]{2,16}", cmd.merchant_code)
    for pin in (cmd.pin, cmd.old_pin, cmd.new_pin):
        assert pin is None or (len(pin) == 6 and pin.isascii() and pin.isdigit())
    assert isinstance(cmd.page, int) and cmd.page >= 1
    assert cmd.lang in (None, "zh", "en")
    if cmd.reference is not None:
        assert 0 < len(cmd.reference) <= 32 and cmd.reference.isprintable()
    needs = {"topup": ("amount",), "withdraw": ("amount",), "pay": ("merchant_code", "amount"),
             "send": ("msisdn", "amount"), "airtime": ("amount",), "pin_reply": ("pin",),
             "change_pin": ("old_pin", "new_pin"), "lang": ("lang",)}
    for attr in needs.get(cmd.name, ()):
        assert getattr(cmd, attr) is not None, (cmd.name, attr)


def check_any_text(text: str) -> None:
    try:
        cmd = parse(text)
    except ParseError as err:
        assert err.kind in ("empty", "unknown", "malformed")
        assert (err.command is not None) == (err.kind == "malformed")
        assert str(err)
        for lang in ("zh", "en"):
            replies = render_parse_error(err, lang)
            assert replies and all(isinstance(r, str) and r.strip() for r in replies)
    else:
        check_command(cmd, text)
        if cmd.name == "help":
            for lang in ("zh", "en"):
                assert all(m.strip() for m in render_help(lang, cmd.topic))


@FUZZ
@given(st.text())
@example("")
@example("\x00")
@example("?\u3000")
@example("支付" + "9" * 300)
@example("ZZ " + "1" * 400 + " 5")
@example("a" + "." * 17000 + "x")          # once took seconds: keep long inputs linear
@example("a" + "\u3000" * 17000 + "x")
def test_any_text_parses_or_is_refused(text):
    check_any_text(text)


# Text made of the language's own pieces reaches the argument checks far more
# often than arbitrary Unicode does.
WORDS = st.sampled_from(sorted(SPELLINGS) + sorted(LANG_WORDS) + [
    "M001", "m001", "100", "12.5", "12.50", "1.234", "-5", "0", "¥12", "12元", "元", "¥",
    "13800138000", "+8613800138000", "138", "0013", "8000", "123456", "654321", "12345",
    "EN", "ZH", "中文", "？", "。", "，", "1,000", "ＣＺ", "１００", "\u200b", "x" * 40,
])
SEPARATORS = st.sampled_from([" ", "  ", "\u3000", "\t", "\n", ",", "、", ":", "", "。"])


@FUZZ
@given(st.lists(st.tuples(WORDS, SEPARATORS), max_size=6), st.text(max_size=3))
def test_command_like_text_parses_or_is_refused(parts, tail):
    check_any_text("".join(w + s for w, s in parts) + tail)


# --- round trips ---------------------------------------------------------

def full_width(text: str) -> str:
    return "".join("\u3000" if c == " " else chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c
                   for c in text)


def spell(draw, spellings):
    """A keyword as a subscriber might type it."""
    word = draw(st.sampled_from(spellings))
    return draw(st.sampled_from([word, word.lower(), word.capitalize()]))


def amount_text(draw, minor: int) -> str:
    major, cents = divmod(minor, 100)
    forms = [format_amount(minor), f"¥{format_amount(minor)}", f"{format_amount(minor)}元"]
    if cents == 0:
        forms.append(str(major))
    elif cents % 10 == 0:
        forms.append(f"{major}.{cents // 10}")
    return draw(st.sampled_from(forms))


def layout(draw, words: list[str]) -> str:
    """Join with random separators, maybe go full-width, maybe add a full stop."""
    seps = [draw(st.sampled_from([" ", "  ", "\u3000", "\t", " \n "])) for _ in words[1:]]
    text = words[0] + "".join(s + w for s, w in zip(seps, words[1:]))
    if draw(st.booleans()):
        text = full_width(text)
    return text + draw(st.sampled_from(["", "。", ".", "!", " "]))


AMOUNTS = st.integers(min_value=1, max_value=10**11)
MERCHANTS = st.from_regex(r"[A-Za-z0-9]{2,16}", fullmatch=True)
REFERENCES = st.lists(st.from_regex(r"[A-Za-z0-9_#/-]{1,8}", fullmatch=True), min_size=1, max_size=3).map(" ".join)
MOBILES = st.builds(lambda p, rest: p + rest,
                    st.sampled_from(["130", "131", "135", "138", "139", "150", "158", "186", "188"]),
                    st.from_regex(r"[0-9]{8}", fullmatch=True))


@FUZZ
@given(st.data(), AMOUNTS, MERCHANTS, st.one_of(st.none(), REFERENCES))
def test_pay_round_trip(data, minor, merchant, reference):
    # `ZF M001 12 RMB`: a currency word after the amount belongs to the amount
    assume(reference is None or reference.split()[0].upper() not in ("RMB", "CNY", "YUAN"))
    draw = data.draw
    words = [spell(draw, ["ZF", "PAY", "支付"]), merchant, amount_text(draw, minor)]
    if reference is not None:
        words.append(reference)
    text = layout(draw, words)
    cmd = parse(text)
    assert (cmd.name, cmd.merchant_code, cmd.amount) == ("pay", merchant.upper(), minor)
    assert cmd.reference == reference


@FUZZ
@given(st.data(), AMOUNTS, st.sampled_from(["CZ", "TOPUP", "充值", "TX", "WITHDRAW", "提现"]))
def test_amount_round_trip(data, minor, spelling):
    draw = data.draw
    glued = spelling in ("充值", "提现") and draw(st.booleans())
    amount = amount_text(draw, minor)
    text = layout(draw, [spelling + amount] if glued else [spell(draw, [spelling]), amount])
    cmd = parse(text)
    assert (cmd.name, cmd.amount) == (SPELLINGS[spelling], minor)


@FUZZ
@given(st.data(), AMOUNTS, MOBILES)
def test_send_round_trip(data, minor, mobile):
    assume(is_msisdn(mobile))
    draw = data.draw
    number = draw(st.sampled_from([mobile, "+86" + mobile, "0086" + mobile,
                                   f"{mobile[:3]} {mobile[3:7]} {mobile[7:]}"]))
    text = layout(draw, [spell(draw, ["ZZ", "SEND", "转账"]), number, amount_text(draw, minor)])
    cmd = parse(text)
    assert (cmd.name, cmd.msisdn, cmd.amount) == ("send", normalize(mobile), minor)


@FUZZ
@given(st.data(), AMOUNTS, st.one_of(st.none(), MOBILES))
def test_airtime_round_trip(data, minor, mobile):
    assume(mobile is None or is_msisdn(mobile))
    draw = data.draw
    words = [spell(draw, ["HF", "AIRTIME", "话费"]), amount_text(draw, minor)]
    if mobile:
        words.append(mobile)
    cmd = parse(layout(draw, words))
    assert (cmd.name, cmd.amount, cmd.msisdn) == ("airtime", minor, normalize(mobile) if mobile else None)


@FUZZ
@given(st.data(), st.from_regex(r"[0-9]{6}", fullmatch=True), st.from_regex(r"[0-9]{6}", fullmatch=True))
def test_pin_round_trip(data, old, new):
    draw = data.draw
    cmd = parse(layout(draw, [spell(draw, ["MM", "PIN", "密码"]), old, new]))
    assert (cmd.name, cmd.old_pin, cmd.new_pin) == ("change_pin", old, new)
    cmd = parse(layout(draw, [old]))
    assert (cmd.name, cmd.pin) == ("pin_reply", old)


@FUZZ
@given(st.data(), st.sampled_from(sorted(w for w, n in SPELLINGS.items()
                                         if n not in ("help", "lang") and w != "?")))
def test_bare_keyword_round_trip(data, spelling):
    """Every keyword alone, typed any which way, names its command (or, for
    a command that needs arguments, is refused as that command)."""
    draw = data.draw
    text = layout(draw, [spell(draw, [spelling])])
    if draw(st.booleans()):
        text = draw(st.sampled_from(["【", "“", "\u200b", "  "])) + text
    try:
        cmd = parse(text)
    except ParseError as err:
        assert (err.kind, err.command) == ("malformed", SPELLINGS[spelling])
    else:
        assert cmd.name == SPELLINGS[spelling]


@FUZZ
@given(st.data(), st.integers(min_value=1, max_value=999))
def test_statement_page_round_trip(data, page):
    draw = data.draw
    cmd = parse(layout(draw, [spell(draw, ["MX", "STMT", "明细"]), str(page)]))
    assert (cmd.name, cmd.page) == ("statement", page)


# --- any Result renders ----------------------------------------------------

def statement_lines():
    return st.lists(st.builds(
        StatementLine,
        ref=st.text(max_size=10),
        kind=st.sampled_from(["topup", "withdrawal", "payment", "p2p_in", "p2p_out", "airtime",
                              "fee", "cash_in", "refund", "odd"]),
        amount=st.integers(min_value=-10**9, max_value=10**9),
        balance_after=st.one_of(st.none(), st.integers()),
        at=st.one_of(st.datetimes().map(lambda d: d.isoformat() + "Z"), st.text(max_size=12)),
        counterparty=st.text(max_size=30),
        state=st.sampled_from(["posted", "pending", "voided"]),
    ), max_size=12)


ANY = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                st.lists(st.text(max_size=5), max_size=3))
PARAMS = st.fixed_dictionaries({}, optional={
    "action": st.one_of(st.sampled_from(["open", "confirm_open", "balance", "statement", "topup",
                                         "withdraw", "pay", "send", "airtime", "change_pin", "freeze",
                                         "unfreeze", "close", "lang", "cancel", "cash_in", "refund",
                                         "receive", "pin_reset", "bind_card", "unbind_card", "kyc_tier",
                                         "number_change", "cancel_number", "agent_float",
                                         "ownership_transfer"]), ANY),
    "merchant_name": st.one_of(st.text(max_size=30), ANY), "merchant_code": ANY,
    "counterparty": st.one_of(st.text(max_size=20), ANY),
    "lines": st.one_of(statement_lines(), ANY), "page": st.one_of(st.integers(0, 5), ANY),
    "pages": st.one_of(st.integers(0, 5), ANY), "pin": ANY, "password": ANY,
    "ttl_minutes": ANY, "limit": ANY, "retry_after": ANY, "attempts_left": ANY,
    "locked_minutes": ANY, "reason": st.one_of(st.sampled_from(list(BankDecline)), ANY),
    "differs": ANY, "usage": st.one_of(st.sampled_from(sorted(COMMAND_NAMES)), ANY),
    "withdrawable": ANY, "lang": ANY, "last4": ANY, "card_type": ANY, "tier": ANY,
    "msisdn": st.one_of(st.from_regex(r"[0-9]{1,16}", fullmatch=True), ANY), "status": ANY,
    "weak": ANY, "refundable": ANY,
})
MONEY = st.one_of(st.none(), st.integers(min_value=-10**12, max_value=10**12))


@FUZZ
@given(st.sampled_from(list(Outcome)), st.one_of(st.none(), st.text(max_size=12)), MONEY, MONEY, MONEY,
       PARAMS, st.sampled_from(["zh", "en", "fr", ""]))
def test_any_result_renders(outcome, ref, amount, fee, balance, params, lang):
    result = Result(outcome, ref=ref, amount=amount, fee=fee, balance=balance, params=params)
    messages = render(result, lang)
    assert isinstance(messages, list) and messages
    assert all(isinstance(m, str) and m.strip() for m in messages)
