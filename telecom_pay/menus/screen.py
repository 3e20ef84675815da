"""What one step of a menu dialogue shows, channel-neutral.

The menu engine (telecom_pay/menus/engine.py) walks the one tree and answers
every input with a `Screen`; each channel has a renderer that turns it into
its own form: USSD text pages (telecom_pay/menus/ussd.py) or IVR prompts and
a DTMF collection (telecom_pay/menus/ivr.py). A screen is made of `Say`
pieces an IVR can play: recorded prompts (by name, listed with their zh and
en text in config/prompts.toml) and values spoken by the switch (numbers,
digits, money). Prompts carry no placeholders: what varies is its own piece.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from telecom_pay.outcomes import Result

PROMPT, NUMBER, DIGITS, MONEY = "prompt", "number", "digits", "money"


@dataclass(frozen=True)
class Say:
    """One piece: a prompt (`name` in prompts.toml), or a value the switch
    speaks: NUMBER (an integer), DIGITS (one by one: a phone number, a
    reference), MONEY (integer minor units)."""
    kind: str
    name: str | None = None
    value: int | str | None = None
    text: str | None = None    # a prompt's words when the file has no such name (a merchant's name)

    @staticmethod
    def prompt(name: str, text: str | None = None) -> "Say":
        return Say(PROMPT, name=name, text=text)

    @staticmethod
    def number(value: int) -> "Say":
        return Say(NUMBER, value=int(value))

    @staticmethod
    def digits(value: str) -> "Say":
        return Say(DIGITS, value=str(value))

    @staticmethod
    def money(minor_units: int) -> "Say":
        return Say(MONEY, value=int(minor_units))


@dataclass(frozen=True)
class Option:
    """A numbered choice of a menu: the key pressed or typed, and its label."""
    key: str
    label: Say
    target: str = ""           # the node it leads to (the engine's business)


@dataclass(frozen=True)
class Collect:
    """An input step: what is asked for and how long it may be. `secret`
    inputs (a PIN) are never echoed, logged or kept past their step."""
    kind: str                  # amount | merchant_code | msisdn | pin | digits
    min_length: int = 1
    max_length: int = 20
    secret: bool = False


@dataclass(frozen=True)
class Screen:
    """One step of the dialogue.

    `says` is the body (for a menu: its title; then the options follow).
    `text`, when set, is what a text channel shows instead of rendering
    `says` (a result in the exact words of the SMS reply). `lines` is a
    long list (a statement) a text channel pages. `end`: the dialogue is
    over after this screen. `transfer`: hand the caller to a person
    (the IVR transfers; USSD shows the number to call). `result` is the
    service's answer when the step ran an operation.
    """
    node: str
    says: tuple[Say, ...] = ()
    options: tuple[Option, ...] = ()
    collect: Collect | None = None
    text: str | None = None
    lines: tuple[str, ...] = ()
    end: bool = False
    transfer: str | None = None
    result: Result | None = None
    lang: str = "zh"
    page: int = 0              # which page of a long screen a text channel shows
    meta: dict[str, Any] = field(default_factory=dict)
