"""A screen as the IVR plays it: recorded prompts by sound name
(`<sounds>/<lang>/<prompt>`, made by `telecom-pay prompts build` or
recorded by the deployment), numbers and digits spoken by the switch, and
the DTMF to collect. Money is spoken as whole units then cents, each with
its recorded unit word. A menu takes one key; an input step takes digits up
to its length or until `#`. `*` repeats (the IVR channel's business).
"""
from __future__ import annotations

from dataclasses import dataclass

from telecom_pay.menus.prompts import Prompts, default_prompts
from telecom_pay.menus.screen import DIGITS, MONEY, NUMBER, PROMPT, Say, Screen
from telecom_pay.money import MINOR_PER_MAJOR

FILE = "file"
DEFAULT_TIMEOUT_MS = 6000
DEFAULT_RETRIES = 3


@dataclass(frozen=True)
class Play:
    kind: str          # file | number | digits
    value: str
    text: str          # what it says (logs, the caller simulator)


@dataclass(frozen=True)
class DtmfSpec:
    min_digits: int
    max_digits: int
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    terminator: str = "#"
    retries: int = DEFAULT_RETRIES
    secret: bool = False


@dataclass(frozen=True)
class IvrTurn:
    plays: tuple[Play, ...]
    collect: DtmfSpec | None
    hangup: bool
    transfer: str | None


def _file(sounds: str, lang: str, name: str, prompts: Prompts, fallback: str | None = None) -> Play:
    text = prompts.text(name, lang) if prompts.has(name) else (fallback or name)
    return Play(FILE, f"{sounds}/{lang}/{name}", text)


def say_plays(say: Say, lang: str, prompts: Prompts, sounds: str) -> list[Play]:
    if say.kind == PROMPT:
        return [_file(sounds, lang, say.name or "", prompts, say.text)]
    if say.kind == NUMBER:
        return [Play(NUMBER, str(int(say.value)), str(int(say.value)))]
    if say.kind == DIGITS:
        digits = "".join(ch for ch in str(say.value) if ch.isdigit())
        return [Play(DIGITS, digits, digits)]
    if say.kind == MONEY:
        major, minor = divmod(abs(int(say.value)), MINOR_PER_MAJOR)
        plays = [Play(NUMBER, str(major), str(major)), _file(sounds, lang, "currency_major", prompts)]
        if minor:
            plays += [Play(NUMBER, str(minor), str(minor)), _file(sounds, lang, "currency_minor", prompts)]
        return plays
    return []


def render_ivr(screen: Screen, prompts: Prompts | None = None, sounds: str = "telecom-pay", *,
               timeout_ms: int = DEFAULT_TIMEOUT_MS, retries: int = DEFAULT_RETRIES) -> IvrTurn:
    prompts = prompts or default_prompts()
    lang = screen.lang
    plays: list[Play] = []
    for s in screen.says:
        plays += say_plays(s, lang, prompts, sounds)
    for o in screen.options:          # "for balance, press 1"
        plays += say_plays(o.label, lang, prompts, sounds)
        plays.append(_file(sounds, lang, "press", prompts))
        plays.append(Play(DIGITS, o.key, o.key))
    collect = None
    if screen.collect is not None:
        c = screen.collect
        collect = DtmfSpec(c.min_length, c.max_length, timeout_ms, "#", retries, c.secret)
    elif screen.options and not screen.end:
        width = max(len(o.key) for o in screen.options)
        collect = DtmfSpec(1, max(width, 2) if any(len(o.key) > 1 for o in screen.options) else 1,
                           timeout_ms, "#", retries, False)
    return IvrTurn(tuple(plays), collect, hangup=screen.end and screen.transfer is None,
                   transfer=screen.transfer)
