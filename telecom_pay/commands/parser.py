"""Parse one subscriber SMS into a `Command`, or say precisely why not.

Subscribers type on handsets with Chinese IMEs, so the same command arrives
as `ZF M001 12.5`, `ｚｆ　Ｍ００１　１２．５０`, `支付M001 12.5` or `zf m001 12.50。`.
The parser folds all of these to one form (NFKC, upper case, any run of
whitespace or list punctuation as one separator, harmless punctuation around
the message dropped) and then checks each argument with the platform's own
rules (`money.parse_amount`, `msisdn.normalize`). It is pure: no I/O, no
state, and it never raises anything but `ParseError` for bad text.

A `ParseError` carries enough for a helpful reply: whether the message was
empty, not a command at all, or a known command with a bad or missing
argument (`.command`, `.detail`), which `replies.render_parse_error` turns
into the command's usage line.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from telecom_pay.money import AmountError, parse_amount
from telecom_pay.msisdn import MsisdnError, normalize

from . import keywords as kw

MAX_REFERENCE = 32
MAX_PAGE = 999

# Separators between words: whitespace (NFKC already made U+3000 a space),
# the ideographic comma and full stop, semicolons, colons, and commas, except
# a comma that looks like a thousands separator (`1,000` stays one token and
# is refused as an amount, never read as 1 and 000; `M001,12.5` splits).
_SEPARATORS = re.compile(r"[\s、;:。]+|(?<!\d),|,(?!\d{3}(?!\d))")
# A Chinese IME in Chinese-punctuation mode types `。` for `.`: between two
# digits it can only be a decimal point (`12。50`).
_IME_DECIMAL = re.compile(r"(?<=\d)。(?=\d)")
# Punctuation dropped around the whole message: sentence ends, quotes,
# brackets. Never digits, letters, `+` or `-`, which carry meaning.
_EDGE_PUNCTUATION = frozenset(".,;:!?'\"`~()[]{}<>·。、！？，；：“”‘’「」『』【】（）《》〈〉…—")
_CURRENCY_SUFFIXES = frozenset({"元", "YUAN", "RMB", "CNY", "块", "块钱", "元钱"})
_CURRENCY_PREFIXES = frozenset({"¥", "￥", "RMB", "CNY"})
_COLLOQUIAL_YUAN = ("块钱", "元钱", "块")

_PIN_RE = re.compile(r"[0-9]{6}")
_DIGITS_RE = re.compile(r"[0-9]+")
_MERCHANT_RE = re.compile(r"[A-Z0-9]{2,16}")
_PAGE_RE = re.compile(r"[0-9]{1,3}")
_TAG_RE = re.compile(r"[0-9]{4}")        # an SP payment request's tag (telecom_pay/merchants/payments.py)


@dataclass(frozen=True, kw_only=True)
class Command:
    """One recognised command with its checked arguments.

    Amounts are int minor units, `msisdn` is E.164 digits, `merchant_code`
    is upper case. PINs and the raw text are kept out of `repr()` so a
    logged command never shows a PIN.
    """

    name: str
    amount: int | None = None
    merchant_code: str | None = None
    msisdn: str | None = None
    reference: str | None = None
    pin: str | None = field(default=None, repr=False)
    old_pin: str | None = field(default=None, repr=False)
    new_pin: str | None = field(default=None, repr=False)
    page: int = 1
    lang: str | None = None
    topic: str | None = None      # help: the command asked about (`BZ ZF`)
    tag: str | None = None        # the SP payment request a PIN or an N answers (`8812 147258`, `N 8812`)
    raw: str = field(default="", repr=False)


class ParseError(Exception):
    """The text is not a usable command.

    kind: "empty" (nothing but blanks/punctuation), "unknown" (no command
    word), "malformed" (a command word with missing, extra or bad
    arguments). For "malformed", `command` is the recognised command name and
    `detail` names what is wrong: "amount", "msisdn", "merchant_code", "pin",
    "page", "reference", "lang" or "too_many_args"; `missing` says the
    argument was absent rather than bad. `value` is the offending text (never
    set for PINs, so the error can be logged).
    """

    def __init__(self, kind: str, *, command: str | None = None, detail: str | None = None,
                 value: str | None = None, missing: bool = False, raw: str = "") -> None:
        self.kind = kind
        self.command = command
        self.detail = detail
        self.value = value
        self.missing = missing
        self.raw = raw
        super().__init__(self._describe())

    def _describe(self) -> str:
        if self.kind == "empty":
            return "empty message"
        if self.kind == "unknown":
            return f"unknown command {_shorten(self.value)!r}" if self.value else "unknown command"
        what = (self.detail or "argument").replace("_", " ")
        if self.detail == "too_many_args":
            text = f"too many arguments for {self.command}"
            return text + (f": {_shorten(self.value)!r}" if self.value else "")
        if self.missing:
            return f"{self.command}: missing {what}"
        if self.value is None:
            return f"{self.command}: invalid {what}"
        return f"{self.command}: invalid {what} {_shorten(self.value)!r}"


def _shorten(text: str | None, limit: int = 24) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fold(text: str) -> str:
    """NFKC-fold and clean one message: full-width to ASCII, ideographic space
    to space, zero-width and other format characters removed, control
    characters turned into spaces, surrounding whitespace dropped."""
    t = unicodedata.normalize("NFKC", text)
    out = []
    for ch in t:
        cat = unicodedata.category(ch)
        if cat == "Cf":
            continue
        out.append(" " if cat in ("Cc", "Zl", "Zp") else ch)
    return "".join(out).strip()


def parse(text: str) -> Command:
    """Parse one message. Raises ParseError (and nothing else) on bad text."""
    if not isinstance(text, str):
        raise ParseError("empty", raw="")
    raw = text
    folded = fold(text)
    asked = folded.startswith(("?", "¿"))          # `?`, `? ZF`: help
    body = _strip_edges(_IME_DECIMAL.sub(".", folded))
    tokens = _glue_currency([t for t in _SEPARATORS.split(body) if t])
    if asked:
        return _help(tokens, raw)
    if not tokens:
        if "?" in folded:
            return Command(name=kw.HELP, raw=raw)
        raise ParseError("empty", raw=raw)

    head, args = tokens[0], tokens[1:]
    word = head.upper()
    name = kw.lookup(word)
    if name is None and word in kw.LANG_WORDS:
        if args:
            raise ParseError("malformed", command=kw.LANG, detail="too_many_args",
                             value=" ".join(args), raw=raw)
        return Command(name=kw.LANG, lang=kw.LANG_WORDS[word], raw=raw)
    if name is None:
        split = _split_glued(head)
        if split is not None:
            word, name, first_arg = split
            args = [first_arg, *args]
    if name is None:
        return _bare_digits(tokens, raw)
    return _BUILDERS[name](name, word, args, raw)


def _strip_edges(text: str) -> str:
    """Drop whitespace and edge punctuation at both ends, in linear time (a
    regex anchored at the end rescans from every position: a long message
    with a run of blanks in the middle would take seconds)."""
    start, end = 0, len(text)
    while start < end and (text[start].isspace() or text[start] in _EDGE_PUNCTUATION):
        start += 1
    while end > start and (text[end - 1].isspace() or text[end - 1] in _EDGE_PUNCTUATION):
        end -= 1
    return text[start:end]


def _glue_currency(tokens: list[str]) -> list[str]:
    """`100 元` -> `100元`, `¥ 100` -> `¥100`, so a currency mark typed as its
    own word does not count as an extra argument."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        up = tok.upper()
        if up in _CURRENCY_PREFIXES and i + 1 < len(tokens) and tokens[i + 1][:1].isdigit():
            out.append(tok + tokens[i + 1])
            i += 2
            continue
        if up in _CURRENCY_SUFFIXES and out and out[-1][-1:].isdigit():
            out[-1] = out[-1] + tok
            i += 1
            continue
        out.append(tok)
        i += 1
    return out


def _split_glued(head: str) -> tuple[str, str, str] | None:
    """`充值100` -> (`充值`, topup, `100`); `CZ100` -> (`CZ`, topup, `100`).
    Latin keywords only split before a digit, so `ZFM001` is not guessed at."""
    up = head.upper()
    if len(up) != len(head):      # `ß` -> `SS`: offsets would not line up
        return None
    for word, name in kw.GLUED_PREFIXES:
        if len(up) > len(word) and up.startswith(word):
            rest = head[len(word):]
            if word.isascii() and not rest[:1].isdigit():
                continue
            return word, name, rest
    return None


def _bare_digits(tokens: list[str], raw: str) -> Command:
    """A message of digits only answers a PIN prompt (`123456`, `123 456`);
    a 4-digit tag then a PIN (`8812 147258`) answers that SP payment request."""
    if len(tokens) == 2 and _TAG_RE.fullmatch(tokens[0]) and _PIN_RE.fullmatch(tokens[1]):
        return Command(name=kw.PIN_REPLY, pin=tokens[1], tag=tokens[0], raw=raw)
    if all(_DIGITS_RE.fullmatch(t) for t in tokens):
        digits = "".join(tokens)
        if len(digits) == 6:
            return Command(name=kw.PIN_REPLY, pin=digits, raw=raw)
        if 4 <= len(digits) <= 8:
            raise ParseError("malformed", command=kw.PIN_REPLY, detail="pin", raw=raw)
    raise ParseError("unknown", value=tokens[0], raw=raw)


# --- argument checks --------------------------------------------------------

def _amount(name: str, args: list[str], i: int, raw: str) -> int:
    if i >= len(args):
        raise ParseError("malformed", command=name, detail="amount", missing=True, raw=raw)
    text = args[i]
    for colloquial in _COLLOQUIAL_YUAN:        # `100块`, `100块钱` mean `100元`
        if text.endswith(colloquial) and len(text) > len(colloquial):
            text = text[: -len(colloquial)] + "元"
            break
    try:
        return parse_amount(text)
    except AmountError:
        raise ParseError("malformed", command=name, detail="amount", value=args[i], raw=raw) from None


def _merchant(name: str, args: list[str], i: int, raw: str) -> str:
    if i >= len(args):
        raise ParseError("malformed", command=name, detail="merchant_code", missing=True, raw=raw)
    code = args[i]
    if code.isascii() and _MERCHANT_RE.fullmatch(code.upper()):
        return code.upper()
    raise ParseError("malformed", command=name, detail="merchant_code", value=code, raw=raw)


def _msisdn(text: str) -> str | None:
    try:
        return normalize(text)
    except MsisdnError:
        return None


def _pin(name: str, args: list[str], i: int, raw: str) -> str:
    if i >= len(args):
        raise ParseError("malformed", command=name, detail="pin", missing=True, raw=raw)
    if _PIN_RE.fullmatch(args[i]):
        return args[i]
    raise ParseError("malformed", command=name, detail="pin", raw=raw)


def _no_more(name: str, args: list[str], n: int, raw: str) -> None:
    if len(args) > n:
        raise ParseError("malformed", command=name, detail="too_many_args",
                         value=" ".join(args[n:]), raw=raw)


# --- one builder per command shape ------------------------------------------

def _bare(name: str, word: str, args: list[str], raw: str) -> Command:
    if name == kw.CANCEL and len(args) == 1 and _TAG_RE.fullmatch(args[0]):
        return Command(name=name, tag=args[0], raw=raw)        # `N 8812`: declines that SP request
    _no_more(name, args, 0, raw)
    return Command(name=name, raw=raw)


def _statement(name: str, word: str, args: list[str], raw: str) -> Command:
    _no_more(name, args, 1, raw)
    if not args:
        return Command(name=name, raw=raw)
    page = args[0]
    if not _PAGE_RE.fullmatch(page) or not 1 <= int(page) <= MAX_PAGE:
        raise ParseError("malformed", command=name, detail="page", value=page, raw=raw)
    return Command(name=name, page=int(page), raw=raw)


def _amount_only(name: str, word: str, args: list[str], raw: str) -> Command:
    amount = _amount(name, args, 0, raw)
    _no_more(name, args, 1, raw)
    return Command(name=name, amount=amount, raw=raw)


def _pay(name: str, word: str, args: list[str], raw: str) -> Command:
    merchant = _merchant(name, args, 0, raw)
    amount = _amount(name, args, 1, raw)
    reference = None
    if len(args) > 2:
        # The reference is free text: the rest of the message, one space
        # between words.
        reference = " ".join(args[2:])
        if len(reference) > MAX_REFERENCE or not reference.isprintable():
            raise ParseError("malformed", command=name, detail="reference", value=reference, raw=raw)
    return Command(name=name, merchant_code=merchant, amount=amount, reference=reference, raw=raw)


def _send(name: str, word: str, args: list[str], raw: str) -> Command:
    if not args:
        raise ParseError("malformed", command=name, detail="msisdn", missing=True, raw=raw)
    # The number may have been typed in groups (`138 0013 8000 50`): the
    # amount is the last word, the number everything before it.
    number_words = args[:-1] if len(args) > 1 else args
    msisdn = _msisdn("".join(number_words))
    if msisdn is None:
        if len(args) > 2 and _msisdn(args[0]) is not None:
            raise ParseError("malformed", command=name, detail="too_many_args",
                             value=" ".join(args[2:]), raw=raw)
        raise ParseError("malformed", command=name, detail="msisdn",
                         value=" ".join(number_words), raw=raw)
    if len(args) == 1:
        raise ParseError("malformed", command=name, detail="amount", missing=True, raw=raw)
    amount = _amount(name, args, len(args) - 1, raw)
    return Command(name=name, msisdn=msisdn, amount=amount, raw=raw)


def _airtime(name: str, word: str, args: list[str], raw: str) -> Command:
    amount = _amount(name, args, 0, raw)
    if len(args) == 1:
        return Command(name=name, amount=amount, raw=raw)
    msisdn = _msisdn("".join(args[1:]))
    if msisdn is None:
        if len(args) > 2 and _msisdn(args[1]) is not None:
            raise ParseError("malformed", command=name, detail="too_many_args",
                             value=" ".join(args[2:]), raw=raw)
        raise ParseError("malformed", command=name, detail="msisdn",
                         value=" ".join(args[1:]), raw=raw)
    return Command(name=name, amount=amount, msisdn=msisdn, raw=raw)


def _change_pin(name: str, word: str, args: list[str], raw: str) -> Command:
    if len(args) == 1 and word in kw.PIN_REPLY_SPELLINGS and _PIN_RE.fullmatch(args[0]):
        return Command(name=kw.PIN_REPLY, pin=args[0], raw=raw)
    old = _pin(name, args, 0, raw)
    new = _pin(name, args, 1, raw)
    _no_more(name, args, 2, raw)
    return Command(name=name, old_pin=old, new_pin=new, raw=raw)


def _lang(name: str, word: str, args: list[str], raw: str) -> Command:
    if not args:
        raise ParseError("malformed", command=name, detail="lang", missing=True, raw=raw)
    value = kw.LANG_VALUES.get(args[0].upper())
    if value is None:
        raise ParseError("malformed", command=name, detail="lang", value=args[0], raw=raw)
    _no_more(name, args, 1, raw)
    return Command(name=name, lang=value, raw=raw)


def _help_builder(name: str, word: str, args: list[str], raw: str) -> Command:
    return _help(args, raw)


def _help(args: list[str], raw: str) -> Command:
    """Help never fails: `BZ ZF` asks about one command, anything else is
    the general help."""
    topic = None
    if args:
        topic = kw.lookup(args[0].upper())
        if topic is None:
            split = _split_glued(args[0])
            topic = split[1] if split else None
        if topic == kw.HELP:
            topic = None
    return Command(name=kw.HELP, topic=topic, raw=raw)


_BUILDERS = {
    kw.OPEN: _bare, kw.CONFIRM: _bare, kw.BALANCE: _bare, kw.FREEZE: _bare,
    kw.UNFREEZE: _bare, kw.CLOSE: _bare, kw.CANCEL: _bare, kw.CALLBACK: _bare,
    kw.STATEMENT: _statement,
    kw.TOPUP: _amount_only, kw.WITHDRAW: _amount_only,
    kw.PAY: _pay, kw.SEND: _send, kw.AIRTIME: _airtime,
    kw.CHANGE_PIN: _change_pin, kw.LANG: _lang, kw.HELP: _help_builder,
}
