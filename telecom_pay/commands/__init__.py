"""The SMS command language: text in, `Command` out; `Result` in, text out.

`parse(text)` turns one subscriber message into a `Command` (or raises
`ParseError`); `render(result, lang)` turns a service `Result` into reply
messages in zh-CN or English. Both are pure functions: the conversation
layer that calls the PaymentService sits between them.
"""
from .keywords import COMMAND_NAMES
from .parser import Command, ParseError, fold, parse
from .replies import LANGS, normalize_lang, render, render_help, render_parse_error, usage

__all__ = [
    "COMMAND_NAMES", "Command", "LANGS", "ParseError", "fold", "normalize_lang", "parse",
    "render", "render_help", "render_parse_error", "usage",
]
