"""A screen as USSD text: one page fits one USSD string, 182 GSM 7-bit
characters (70 when it needs UCS2, as Chinese does: the handset's screen
and the SMPP short_message hold no more). Options are numbered lines;
`0` back and `00` home close every page that expects an answer; a screen
longer than a page is split, and `99` (or `*`) shows the next part."""
from __future__ import annotations

from smpplib import gsm

from telecom_pay.menus.prompts import Prompts, default_prompts
from telecom_pay.menus.screen import DIGITS, MONEY, NUMBER, PROMPT, Say, Screen
from telecom_pay.money import format_amount

GSM_LIMIT, UCS2_LIMIT = 182, 70
MORE_KEYS = ("99", "*")
_NAV = {"zh": "0返回 00主页", "en": "0 Back 00 Home"}
_MORE = {"zh": "99更多", "en": "99 More"}
_CURRENCY = {"zh": "元", "en": " CNY"}


# the GSM 03.38 default alphabet and its extension table, from smpplib's
# table (its "`" marks an unused code point; ESC is not a character)
_GSM = frozenset(gsm.GSM_CHARACTER_TABLE) - {"`", "\x1b"}


def is_gsm(text: str) -> bool:
    return _GSM.issuperset(text)


def page_limit(text: str) -> int:
    return GSM_LIMIT if is_gsm(text) else UCS2_LIMIT


def say_text(say: Say, lang: str, prompts: Prompts) -> str:
    if say.kind == PROMPT:
        if say.name and prompts.has(say.name):
            return prompts.text(say.name, lang)
        return say.text or say.name or ""
    if say.kind == MONEY:
        return format_amount(int(say.value)) + _CURRENCY.get(lang, "")
    if say.kind in (NUMBER, DIGITS):
        return str(say.value)
    return str(say.value or "")


def screen_lines(screen: Screen, prompts: Prompts | None = None) -> list[str]:
    """The body and the options, before paging."""
    prompts = prompts or default_prompts()
    lang = screen.lang
    if screen.text is not None:
        body = [line for line in screen.text.split("\n")]
    else:
        body = []
        line = ""
        for s in screen.says:
            part = say_text(s, lang, prompts)
            if s.kind == PROMPT and line and not line.endswith((":", "：")) and s is screen.says[-1] \
                    and screen.collect is not None:
                body.append(line)          # the question on its own line
                line = part
            else:
                line = f"{line} {part}".strip() if lang == "en" or s.kind != PROMPT else (line + part)
        if line:
            body.append(line)
    body += list(screen.lines)
    sep = " " if lang == "en" else " "
    body += [f"{o.key}{sep}{say_text(o.label, lang, prompts)}" for o in screen.options]
    return body


def pages(screen: Screen, prompts: Prompts | None = None) -> list[str]:
    """Every page of a screen, each within the limit, the footer included."""
    lang = screen.lang
    lines = screen_lines(screen, prompts)
    footer = None if screen.end else _NAV.get(lang, _NAV["en"])
    more = _MORE.get(lang, _MORE["en"])
    whole = "\n".join(lines + ([footer] if footer else []))
    limit = page_limit(whole)
    if len(whole) <= limit:
        return [whole]
    out: list[str] = []
    current: list[str] = []
    tail = [t for t in (more, footer) if t]

    def fits(candidate: list[str], closing: list[str]) -> bool:
        return len("\n".join(candidate + closing)) <= limit

    for line in _wrap(lines, limit - len("\n".join(tail)) - 1):
        if current and not fits(current + [line], tail):
            out.append("\n".join(current + tail))
            current = []
        current.append(line)
    last = [footer] if footer else []
    if current and not fits(current, last):
        out.append("\n".join(current + tail))
        current = []
    if current:
        out.append("\n".join(current + last))
    return out


def render_ussd(screen: Screen, prompts: Prompts | None = None) -> str:
    """The page `screen.page` of a screen (past the last: the last)."""
    all_pages = pages(screen, prompts)
    return all_pages[min(max(screen.page, 0), len(all_pages) - 1)]


def _wrap(lines: list[str], width: int) -> list[str]:
    """A line longer than a page is cut into pieces that fit."""
    width = max(width, 10)
    out: list[str] = []
    for line in lines:
        while len(line) > width:
            out.append(line[:width])
            line = line[width:]
        out.append(line)
    return out
