"""What of a subscriber's text may be stored: PIN answers and `MM old new`
are kept masked, decided by the parser (a 6-digit text is masked whenever it
would be handled as a PIN answer), so a PIN is never written in the inbound
table, not even until the message is answered."""
from __future__ import annotations

import re

from telecom_pay.commands import keywords as kw
from telecom_pay.commands.parser import ParseError, parse

PIN_MASK = "******"
CHANGE_PIN_MASK = "MM ****** ******"
_DIGIT = re.compile(r"[0-9０-９]")

# commands whose arguments are PINs, even when they are mistyped
_PIN_BEARING = frozenset({kw.PIN_REPLY, kw.CHANGE_PIN})


def redact(text: str) -> str:
    """The text as it may be stored."""
    try:
        cmd = parse(text)
    except ParseError as err:
        # `MM 12345 654321` or a 5-digit reply: a PIN got mistyped, still a PIN
        return _DIGIT.sub("*", text) if err.command in _PIN_BEARING else text
    if cmd.name == kw.PIN_REPLY:
        return f"{cmd.tag} {PIN_MASK}" if cmd.tag else PIN_MASK
    if cmd.name == kw.CHANGE_PIN:
        return CHANGE_PIN_MASK
    return text


_MENU_SECRET = re.compile(r"^[0-9０-９\s]+$")


def redact_menu_input(text: str) -> str:
    """A menu input (USSD) as it may be stored. Menus ask for the PIN, and
    for the current and new PIN together (12 digits), as bare digits: any
    all-digit input of six digits or more is masked, whatever step it
    answered (the channel does not know the step; a number or an amount
    masked this way costs nothing, a PIN stored would)."""
    if _MENU_SECRET.match(text) and len(_DIGIT.findall(text)) >= 6:
        return _DIGIT.sub("*", text)
    return redact(text)


def is_masked_pin_answer(text: str) -> bool:
    """A stored PIN answer (the message is being answered again after a restart)."""
    return text == PIN_MASK or masked_tag(text) is not None


def masked_tag(text: str) -> str | None:
    """The tag of a stored `tag PIN` answer to an SP payment request (`8812 ******`)."""
    tag, _, rest = text.partition(" ")
    return tag if rest == PIN_MASK and len(tag) == 4 and tag.isdigit() else None
