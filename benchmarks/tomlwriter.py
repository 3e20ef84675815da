"""Writes the daemon's generated config as TOML (the standard library only
reads TOML). Covers what the project's config uses: tables, arrays of
tables, strings, integers, floats, booleans and arrays of scalars."""
from __future__ import annotations

import json
import re
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dumps(data: dict[str, Any]) -> str:
    lines: list[str] = []
    _table(lines, [], data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else json.dumps(k, ensure_ascii=False)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _table(lines: list[str], path: list[str], data: dict[str, Any]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not _is_table_array(v)}
    for k, v in scalars.items():
        lines.append(f"{_key(str(k))} = {_value(v)}")
    for k, v in data.items():
        sub = path + [_key(str(k))]
        if isinstance(v, dict):
            lines += ["", f"[{'.'.join(sub)}]"]
            _table(lines, sub, v)
        elif _is_table_array(v):
            for item in v:
                lines += ["", f"[[{'.'.join(sub)}]]"]
                _table(lines, sub, item)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML: {v!r}")
