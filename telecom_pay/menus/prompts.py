"""The words of the menus: every prompt name with its zh and en text, from
config/prompts.toml, so a deployment can record each one (or have
`telecom-pay prompts build` synthesise them) and the IVR plays it by name.
Text channels show the same text, so both channels say the same thing."""
from __future__ import annotations

import tomllib
from pathlib import Path

DEFAULT_PROMPTS = Path(__file__).resolve().parent.parent.parent / "config" / "prompts.toml"
LANGUAGES = ("zh", "en")


class PromptError(ValueError):
    """The prompts file is unusable: a prompt without both languages, a bad name."""


class Prompts:
    def __init__(self, table: dict[str, dict[str, str]]):
        self._table = table

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Prompts":
        p = Path(path) if path else DEFAULT_PROMPTS
        with open(p, "rb") as f:
            raw = tomllib.load(f)
        table: dict[str, dict[str, str]] = {}
        for name, texts in raw.items():
            if not isinstance(texts, dict) or not name.replace("_", "").isalnum() or not name.isascii():
                raise PromptError(f"{p}: [{name}] must be a table named with letters, digits and _")
            missing = [lang for lang in LANGUAGES if not isinstance(texts.get(lang), str) or not texts[lang]]
            if missing:
                raise PromptError(f"{p}: [{name}] has no {' and '.join(missing)} text")
            table[name] = {lang: texts[lang] for lang in LANGUAGES}
        return cls(table)

    def names(self) -> list[str]:
        return sorted(self._table)

    def has(self, name: str) -> bool:
        return name in self._table

    def text(self, name: str, lang: str) -> str:
        """The prompt's words; a name the file lacks is a defect of the tree
        (a test checks every name the tree uses), shown as itself."""
        texts = self._table.get(name)
        if texts is None:
            return name
        return texts.get(lang) or texts["zh"]


_default: Prompts | None = None


def default_prompts() -> Prompts:
    global _default
    if _default is None:
        _default = Prompts.load()
    return _default
