"""Bounds on what may become a grammar, checked before any conversion.

A JSON Schema or a label list comes from a client or a batch record: untrusted. Unbounded, it
reaches llama.cpp's grammar parser as ``char{0,1000000}`` (which overflows the parser's stack:
the whole process dies with SIGSEGV), makes the converter build gigabytes (``minLength`` 1e9),
or gives the sampler 100,000 alternatives to try at every token (every other client of the
server waits). Each limit here is far above what a real extraction schema uses and far below
what hurts; ``schema_problem`` walks the schema without recursion, so a schema nested
thousands deep is refused and not a RecursionError.
"""
from __future__ import annotations

import json
import re
from typing import Any

MAX_SCHEMA_CHARS = 64 * 1024        # the schema as canonical JSON
MAX_DEPTH = 32                      # objects and arrays inside one another
MAX_REPEAT = 1000                   # one minLength/maxLength/minItems/... or pattern {m,n}
MAX_TOTAL_REPEAT = 8000             # all of them together: each becomes that many grammar rules
MAX_CHOICES = 256                   # enum values, anyOf/oneOf/allOf members, labels
MAX_PROPERTIES = 256                # properties of one object
MAX_PATTERN_CHARS = 1000
MAX_LABEL_CHARS = 1000
MAX_GRAMMAR_CHARS = 512 * 1024      # the GBNF text handed to llama.cpp
# Parentheses inside one another in the GBNF text. llama.cpp's parser recurses once per level
# on its thread's stack: ~20,000 levels (maxLength 20000) crash the process; at 5,000 it refuses
# the grammar itself. The converter nests one level per optional repetition.
MAX_GRAMMAR_NESTING = 1500

_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties",
           "minContains", "maxContains")
_CHOICES = ("enum", "anyOf", "oneOf", "allOf", "prefixItems", "type")
_DATA_KEYS = {"enum", "const", "default", "examples"}  # values, not schemas: not walked as such
_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def _big(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > MAX_REPEAT


def _pattern_repeats(pattern: str) -> int | str:
    """The repetition counts a regex ``pattern`` asks for, summed; or why it is refused."""
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"has a pattern longer than {MAX_PATTERN_CHARS} characters"
    total = 0
    for m in _REPEAT.finditer(pattern):
        for group in m.groups():
            if group and (len(group) > 6 or int(group) > MAX_REPEAT):
                return f"has a pattern that repeats more than {MAX_REPEAT} times ({m.group(0)[:20]})"
        total += max(int(g) for g in m.groups() if g)
    return total


def schema_problem(schema: Any) -> str | None:
    """Why this schema is too big for a grammar, or None. Walks iteratively (no recursion)."""
    try:
        size = len(json.dumps(schema, ensure_ascii=False))
    except (ValueError, RecursionError, TypeError):
        return f"is nested more than {MAX_DEPTH} levels deep or cannot be read"
    if size > MAX_SCHEMA_CHARS:
        return f"is too large: {size:,} characters (at most {MAX_SCHEMA_CHARS:,})"
    total = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"is nested more than {MAX_DEPTH} levels deep"
        if isinstance(node, list):
            if len(node) > MAX_CHOICES:
                return f"has a list of {len(node):,} items (at most {MAX_CHOICES})"
            stack.extend((x, depth + 1) for x in node)
            continue
        if not isinstance(node, dict):
            continue
        if len(node.get("properties") or {}) > MAX_PROPERTIES:
            return f"has an object with more than {MAX_PROPERTIES} properties"
        for key in _COUNTS:
            value = node.get(key)
            if _big(value):
                return f'asks for "{key}": {value}; at most {MAX_REPEAT} is supported'
            if isinstance(value, int):
                total += value
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            repeats = _pattern_repeats(pattern)
            if isinstance(repeats, str):
                return repeats
            total += repeats
        for key in _CHOICES:
            value = node.get(key)
            if isinstance(value, list) and len(value) > MAX_CHOICES:
                return f'has "{key}" with {len(value):,} items (at most {MAX_CHOICES})'
        if total > MAX_TOTAL_REPEAT:
            return f"asks for more than {MAX_TOTAL_REPEAT} repetitions in all (lengths and item counts)"
        for key, value in node.items():
            if key in _DATA_KEYS:  # data: only its depth matters, and json.dumps bounded it
                continue
            if isinstance(value, (dict, list)):
                stack.append((value, depth + 1))
    return None


def labels_problem(labels: list[str]) -> str | None:
    """Why these classification labels are too many or too long for a grammar, or None."""
    if len(labels) > MAX_CHOICES:
        return f"has {len(labels):,} labels (at most {MAX_CHOICES})"
    longest = max((len(x) for x in labels), default=0)
    if longest > MAX_LABEL_CHARS:
        return f"has a label of {longest:,} characters (at most {MAX_LABEL_CHARS})"
    return None


def grammar_nesting(grammar: str) -> int:
    """How deeply parentheses nest in GBNF text (literals and character classes skipped)."""
    depth = deepest = 0
    i, n = 0, len(grammar)
    while i < n:
        ch = grammar[i]
        if ch in "\"[":
            close = '"' if ch == '"' else "]"
            i += 1
            while i < n and grammar[i] != close:
                i += 2 if grammar[i] == "\\" else 1
        elif ch == "#":  # a comment, to the end of the line
            while i < n and grammar[i] != "\n":
                i += 1
        elif ch == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == ")":
            depth -= 1
        i += 1
    return deepest


def grammar_problem(grammar: str) -> str | None:
    """Why llama.cpp should not be given this grammar to parse, or None."""
    if len(grammar) > MAX_GRAMMAR_CHARS:
        return f"makes a grammar of {len(grammar):,} characters (at most {MAX_GRAMMAR_CHARS:,})"
    nesting = grammar_nesting(grammar)
    if nesting > MAX_GRAMMAR_NESTING:
        return f"makes a grammar nested {nesting:,} levels deep (at most {MAX_GRAMMAR_NESTING:,})"
    return None
