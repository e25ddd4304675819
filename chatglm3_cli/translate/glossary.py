"""Term pairs that keep names and terms consistent: read from TSV or JSON, put into the
instructions, and checked against each translation (the summary lists terms not used)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..textio import read_text_file


@dataclass(frozen=True)
class Glossary:
    terms: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.terms)

    def block(self) -> str:
        """The glossary as the instructions show it."""
        return "\n".join(f"- {s} → {t}" for s, t in self.terms)

    def occurring(self, text: str) -> list[tuple[str, str]]:
        """The pairs whose source term occurs in text (case-insensitive, whole words for Latin)."""
        return [(s, t) for s, t in self.terms if _contains(text, s)]

    def unused(self, source: str, translation: str) -> list[tuple[str, str]]:
        """Pairs whose term occurs in the source but whose translation is not in the output."""
        return [(s, t) for s, t in self.occurring(source) if not _contains(translation, t)]


def _contains(text: str, term: str) -> bool:
    if not term:
        return False
    if term.isascii() and re.match(r"\w", term[0]) and re.match(r"\w", term[-1]):
        return re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, re.IGNORECASE) is not None
    return term.casefold() in text.casefold()


@dataclass
class _Reader:
    source: str
    pairs: list[tuple[str, str]] = field(default_factory=list)

    def add(self, s: object, t: object, where: str) -> None:
        if not isinstance(s, str) or not isinstance(t, str) or not s.strip() or not t.strip():
            raise InputError(f"{self.source}: {where}: a glossary entry needs a term and its "
                             f"translation, both text",
                             hint="use TSV lines 'term<TAB>translation' or a JSON object {\"term\": \"translation\"}")
        self.pairs.append((s.strip(), t.strip()))


def load_glossary(path: str | Path) -> Glossary:
    """TSV (``term<TAB>translation`` per line; # comments and blank lines skipped) or JSON (an
    object of term: translation, a list of [term, translation], or a list of
    {"source"/"term": ..., "target"/"translation": ...})."""
    text = read_text_file(path)
    r = _Reader(str(path))
    stripped = text.lstrip()
    if Path(path).suffix.lower() == ".json" or stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        except (ValueError, RecursionError) as e:  # a 5,000-digit number; nesting thousands deep
            raise InputError(f"{path}: not a usable JSON glossary ({type(e).__name__}: {str(e)[:120]})") from None
        if isinstance(data, dict):
            for s, t in data.items():
                r.add(s, t, f"entry {s!r}")
        elif isinstance(data, list):
            for k, item in enumerate(data, 1):
                if isinstance(item, list) and len(item) == 2:
                    r.add(item[0], item[1], f"item {k}")
                elif isinstance(item, dict):
                    r.add(item.get("source", item.get("term")),
                          item.get("target", item.get("translation")), f"item {k}")
                else:
                    r.add(None, None, f"item {k}")
        else:
            raise InputError(f"{path}: a JSON glossary is an object or a list")
    else:
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) < 2:
                raise InputError(f"{path}: line {n}: expected 'term<TAB>translation', found {line[:40]!r}",
                                 hint="separate the term and its translation with a tab")
            r.add(cols[0], cols[1], f"line {n}")
    seen: dict[str, str] = {}
    for s, t in r.pairs:
        seen[s] = t  # a later line wins
    return Glossary(tuple(seen.items()))
