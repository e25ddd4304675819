"""GBNF grammars that constrain an answer: a fixed list of labels, or JSON valid against a schema.

ChatGLM3 begins every answer with a metadata line (empty for a plain answer, so the first
generated text is "\\n"), and SentencePiece pieces carry a leading space: each grammar accepts
``"\\n" " "?`` before the constrained content.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping

from .bytecache import ByteLRU
from .grammar_limits import MAX_CHOICES, grammar_problem, labels_problem, schema_problem

# The metadata line ChatGLM3 writes first (empty for a plain answer), and SentencePiece's space.
ANSWER_START = '"\\n" " "?'


def gbnf_literal(text: str) -> str:
    out = []
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def labels_grammar(labels: list[str]) -> str:
    """ValueError when there are too many labels or one is too long (grammar_limits)."""
    problem = labels_problem(labels)
    if problem:
        raise ValueError(problem)
    return f"root ::= {ANSWER_START} ({' | '.join(gbnf_literal(label) for label in labels)})\n"


def _canonical(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, ensure_ascii=False)


def schema_grammar(schema: Mapping[str, Any]) -> str:
    """GBNF for JSON valid against the schema (llama-cpp-python's converter); ValueError if the
    converter cannot express the schema."""
    return _schema_grammar(_canonical(schema))


_DATA_KEYS = {"enum", "const", "default", "examples"}
_MAX_INT_CHOICES = MAX_CHOICES  # alternatives the sampler tries at each token: as many as an enum may have


def _for_grammar(node: Any) -> Any:
    """The schema as the converter should see it. llama-cpp-python's converter ignores numeric
    bounds; a small integer range (a 1-5 rating) is spelled out as an enum so that the grammar
    enforces it. Whatever the grammar still cannot express is checked after decoding."""
    if isinstance(node, list):
        return [_for_grammar(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: (v if k in _DATA_KEYS else _for_grammar(v)) for k, v in node.items()}
    if out.get("type") == "integer" and "enum" not in out and "const" not in out:
        lo, hi = out.get("minimum"), out.get("maximum")
        if isinstance(out.get("exclusiveMinimum"), (int, float)):
            lo = out["exclusiveMinimum"] + 1 if lo is None else max(lo, out["exclusiveMinimum"] + 1)
        if isinstance(out.get("exclusiveMaximum"), (int, float)):
            hi = out["exclusiveMaximum"] - 1 if hi is None else min(hi, out["exclusiveMaximum"] - 1)
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
            first, last = math.ceil(lo), math.floor(hi)
            step = out.get("multipleOf")
            step = step if isinstance(step, int) and not isinstance(step, bool) and step > 0 else 1
            if 0 <= last - first < _MAX_INT_CHOICES:
                values = [v for v in range(first, last + 1) if v % step == 0]
                if values:
                    out = {"enum": values}
    return out


# The converter's JSON string characters let raw control characters through (invalid JSON:
# "Invalid control character"); llama.cpp's own json.gbnf excludes them, and so do we.
_STRING_CHARS = {
    'char ::= [^"\\\\] |': 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |',
    "dot ::= [^\\x0A\\x0D]": 'dot ::= [^"\\\\\\x7F\\x00-\\x1F]',
}


def _json_strings_only(rules: str) -> str:
    """The converter's rules with string characters limited to what JSON allows unescaped."""
    lines = rules.split("\n")
    for i, line in enumerate(lines):
        for old, new in _STRING_CHARS.items():
            if line.startswith(old):
                lines[i] = new + line[len(old):]
    return "\n".join(lines)


_schema_grammars = ByteLRU(16 * 1024 * 1024)


def _schema_grammar(canonical: str) -> str:
    cached = _schema_grammars.get(canonical)
    if cached is not None:
        if isinstance(cached, ValueError):
            raise cached
        return cached
    try:
        grammar = _convert(canonical)
    except ValueError as e:
        _schema_grammars.put(canonical, e)
        raise
    _schema_grammars.put(canonical, grammar)
    return grammar


def _convert(canonical: str) -> str:
    from .cpu import prepare_openmp

    schema = json.loads(canonical)
    problem = schema_problem(schema)
    if problem:
        raise ValueError(problem)
    prepare_openmp()  # importing llama_cpp starts the OpenMP runtime
    from llama_cpp.llama_grammar import SchemaConverter  # run time only: it loads llama.cpp

    try:
        conv = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        resolved = conv.resolve_refs(_for_grammar(schema), "schema")
        # A primitive top-level schema ({"type": "integer"}) is answered with the primitive's
        # own rule name: no rule "extract-value" is made then.
        top = conv.visit(resolved, "extract-value")
        rules = _json_strings_only(conv.format_grammar())
    except Exception as e:  # the converter asserts on what it cannot express
        raise ValueError(f"cannot be turned into a grammar: {str(e)[:200]}") from None
    grammar = f"root ::= {ANSWER_START} {top}\n{rules}\n"
    problem = grammar_problem(grammar)
    if problem:
        raise ValueError(problem)
    return grammar


def check_schema(schema: Any) -> str | None:
    """Why a JSON Schema cannot be used, or None. Checked against its meta-schema, then
    against what the grammar converter supports."""
    if not isinstance(schema, dict):
        return "must be a JSON Schema object"
    problem = schema_problem(schema)  # first: bounds also keep the meta-schema check's recursion small
    if problem:
        return problem
    canonical = _canonical(schema)
    cached = _checked.get(canonical)
    if cached is None:
        cached = _check_schema(canonical) or ""
        _checked.put(canonical, cached)
    return cached or None


_checked = ByteLRU(4 * 1024 * 1024)


def _check_schema(canonical: str) -> str | None:
    from jsonschema import exceptions, validators

    schema = json.loads(canonical)
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path)
        return f"is not a valid JSON Schema: {e.message[:200]}" + (f" (at {where[:200]})" if where else "")
    try:
        _schema_grammar(canonical)
    except ValueError as e:
        return str(e)
    return None


