"""JSON and YAML locale files (i18next, Rails, Flutter ARB, vue-i18n...): every string value is
translated; keys, order, comments, numbers, quoting style and layout are copied byte-for-byte,
and so is the syntax inside a value: ICU arguments, plural and select blocks (``{count, plural,
one {# item} other {# items}}``), i18next's ``{{name}}`` and ``$t(key)``, Rails's ``%{name}``,
printf's ``%s``, and tags like ``<0>``, which become placeholders. ARB metadata (keys that start
with ``@``) is kept; ``@@locale`` and a Rails file's top-level locale key become the target's.

JSON is checked with ``json``, which has no source positions: the string literals are then
located in the text (a JSON string cannot hold an unescaped quote, so each literal is exact) and
matched to keys and values by the brackets around them. YAML is read with ruamel.yaml, whose
node marks give each value's place in the source; a translated value is written in its source
style (plain, single- or double-quoted) when it can be, else double-quoted.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable

from .base import COMMON_PROTECT, Document, DocumentFormatError, Unit, has_words, protect

_PROTECT = re.compile("|".join([
    COMMON_PROTECT,
    r"\{\{[^{}]*\}\}",  # i18next {{name}}
    r"\$t\([^()]*\)",  # i18next nesting
    r"%\{[^{}]*\}",  # Rails %{name}
    r"%(?:\d+\$)?[-+ #0]*\d*(?:\.\d+)?[sdif@]",  # printf
    r"\{\s*[\w.]+\s*,\s*(?:plural|select|selectordinal)\s*,\s*(?:offset:\d+\s*)?=?\w+\s*\{",  # ICU block start
    r"\}\s*=?\w+\s*\{",  # the next branch of an ICU block
    r"\{\s*[\w.]+\s*(?:,[^{}]*)?\}",  # an ICU argument {count}, {n, number}
    r"[{}]",  # what closes a branch or a block
    r"</?[\w.-]+\s*/?>",  # <0>, <bold>, <br/>
]))
_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]', re.DOTALL)
_LOCALE_KEY = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")


_ICU_ARGUMENT = re.compile(r"\{\s*[\w.]+\s*(?:,[^{}]*)?\}")
_ICU_STRUCTURE = re.compile(r"[{}]|\}\s*=?\w+\s*\{|\{\s*[\w.]+\s*,\s*(?:plural|select|selectordinal)\s*,")


def _skeleton(text: str, values: dict[str, str]) -> list[str]:
    """The ICU structure of a value: its block starts, branches and closing braces in order, with
    "T" where text stands between them (a simple argument such as {count} is text)."""
    out: list[str] = []
    for k, part in enumerate(re.split(r"(\{\{\d+\}\})", text)):
        value = values.get(part) if k % 2 else None
        if value is not None and _ICU_STRUCTURE.match(value) and not _ICU_ARGUMENT.fullmatch(value):
            out.append(value)
        elif part.strip() and (not out or out[-1] != "T"):
            out.append("T")
    return out


def _unit(units: list[Unit], value: str, start: int, end: int, line: int,
          quote: Callable[[str], str]) -> None:
    protected, values = protect(value, _PROTECT)
    if not has_words(protected):
        return
    check = None
    want = _skeleton(protected, values)
    if any(s != "T" for s in want):  # a plural or select block: text must stay inside its branches

        def check(answer: str) -> str | None:
            got = _skeleton(answer, values)
            return None if got == want else "the answer moves text out of its plural or select branch"

    units.append(Unit(index=len(units), kind="value", text=protected, start=start, end=end,
                      placeholders=values, line=line, quote=quote, bilingual="inline", check=check))


def _json_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def parse_json(text: str, source: str, *, target: str = "") -> Document:
    try:
        json.loads(text)
    except ValueError as e:
        raise DocumentFormatError(f"{source}: not valid JSON ({e})") from None
    units: list[Unit] = []
    fixed: list[tuple[int, int, str]] = []
    # containers: [kind, key of the value being read, inside an ARB "@" key's value]
    stack: list[list[Any]] = []
    pending_key: str | None = None
    for m in _LITERAL.finditer(text):
        tok = m.group(0)
        top = stack[-1] if stack else None
        if tok in "{[":
            meta = bool(top and (top[2] or (top[0] == "{" and (top[1] or "").startswith("@"))))
            stack.append([tok, None, meta])
            continue
        if tok in "}]":
            stack.pop()
            continue
        if tok == ",":
            if top and top[0] == "{":
                top[1] = None
            continue
        if tok == ":":
            if top is not None:
                top[1] = pending_key
            continue
        # a string literal: a key (followed by ':') or a value
        if top and top[0] == "{" and top[1] is None:
            pending_key = json.loads(tok)
            continue
        key = top[1] if top else None
        if top and (top[2] or (top[0] == "{" and (key or "").startswith("@"))):
            if key == "@@locale" and target and len(stack) == 1:
                fixed.append((m.start() + 1, m.end() - 1, target))
            continue
        line = text.count("\n", 0, m.start()) + 1
        _unit(units, json.loads(tok), m.start() + 1, m.end() - 1, line, _json_quote)
    doc = Document("json", text, units)
    doc.fixed = fixed
    return doc


# what a plain YAML scalar cannot start with, hold or end with, and words it would read as
_PLAIN_UNSAFE = re.compile(r"""^[\s\-?:,\[\]{}#&*!|>'"%@`]|:\s|\s#|[\s:]$|\n"""
                           r"|^(?:true|false|yes|no|on|off|null|~|[-+.\d].*)$", re.IGNORECASE)


def _yaml_quote(style: str | None) -> Callable[[str], str]:
    def quote(text: str) -> str:
        if style is None and text and not _PLAIN_UNSAFE.search(text):
            return text
        if style == "'" and "\n" not in text:
            return "'" + text.replace("'", "''") + "'"
        return json.dumps(text, ensure_ascii=False)  # a YAML double-quoted scalar
    return quote


def parse_yaml(text: str, source: str, *, target: str = "") -> Document:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

    try:
        root = YAML(typ="rt").compose(text)
    except YAMLError as e:
        raise DocumentFormatError(f"{source}: not valid YAML ({' '.join(str(e).split())[:160]})") from None
    units: list[Unit] = []
    fixed: list[tuple[int, int, str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, MappingNode):
            for _key, v in node.value:
                walk(v)
        elif isinstance(node, SequenceNode):
            for v in node.value:
                walk(v)
        elif isinstance(node, ScalarNode) and str(node.tag).endswith(":str") and isinstance(node.value, str):
            a, b = node.start_mark.index, node.end_mark.index
            style = node.style if node.style in (None, "'", '"') else "|"
            _unit(units, node.value, a, b, node.start_mark.line + 1, _yaml_quote(style))

    walk(root)
    # Rails: the one top-level key is the locale ("en:"), which becomes the target's
    if isinstance(root, MappingNode) and len(root.value) == 1 and target:
        key = root.value[0][0]
        if isinstance(key, ScalarNode) and _LOCALE_KEY.match(str(key.value)) and key.style is None:
            fixed.append((key.start_mark.index, key.end_mark.index, target))
    doc = Document("yaml", text, sorted(units, key=lambda u: u.start))
    for n, u in enumerate(doc.units):
        u.index = n
    doc.fixed = fixed
    return doc
