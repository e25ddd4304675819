"""Python functions as tools: JSON Schema specs from signatures, calls with literal arguments.

A tools file is a Python module the user wrote; its public functions become tools. The name is
the function's, the description its docstring (the part before an ``Args:`` section), and the
parameters a JSON Schema built from the type hints and defaults. ChatGLM3's official demo
declares parameters as ``Annotated[type, "description", required]``; that spelling works too.

A call's arguments come from ``engine.toolcalls`` (literals only, never evaluated), are checked
against the schema, and only then passed to the function. Whatever the function returns (or the
exception it raises) becomes the observation text.
"""
from __future__ import annotations

import enum
import importlib.util
import inspect
import json
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import ChatGLM3Error, InputError


class ToolsFileError(InputError):
    """A tools file (Python or JSON) that cannot be used."""


@dataclass
class FunctionTool:
    """One tool: its spec, and the function that runs it (None for a spec-only tool from
    --tool-json, whose calls the user answers by hand)."""

    spec: dict[str, Any]
    function: Callable[..., Any] | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def check(self, arguments: Mapping[str, Any]) -> str | None:
        """Why these arguments do not fit the schema, or None."""
        from jsonschema import validators

        schema = self.spec.get("parameters") or {"type": "object"}
        try:
            validator = validators.validator_for(schema)(schema)
            error = next(iter(sorted(validator.iter_errors(dict(arguments)), key=lambda e: list(e.path))), None)
        except Exception as e:  # a malformed schema from a JSON file: do not block the call on it
            return None if isinstance(e, (TypeError, ValueError, LookupError)) else str(e)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return error.message + (f" (at {where})" if where else "")

    def call(self, arguments: Mapping[str, Any]) -> str:
        """Run the function; the result as text. Exceptions propagate (the caller reports them)."""
        if self.function is None:
            raise ChatGLM3Error(f"tool {self.name!r} has no implementation")
        return result_text(self.function(**dict(arguments)))


def result_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


# schemas ------------------------------------------------------------------------------------

_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null",
           bytes: "string"}


def type_schema(tp: Any) -> dict[str, Any]:
    """JSON Schema of a Python type hint (unknown hints constrain nothing)."""
    if tp is inspect.Parameter.empty or tp is Any:
        return {}
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return type_schema(args[0])
    if tp in _SIMPLE:
        return {"type": _SIMPLE[tp]}
    if origin is typing.Literal:
        out: dict[str, Any] = {"enum": list(args)}
        kinds = {_SIMPLE.get(type(a)) for a in args}
        if len(kinds) == 1 and None not in kinds:
            out["type"] = kinds.pop()
        return out
    if origin in (typing.Union, types.UnionType):
        parts = [type_schema(a) for a in args]
        if any(p == {} for p in parts):
            return {}
        simple = [p["type"] for p in parts if set(p) == {"type"} and isinstance(p["type"], str)]
        if len(simple) == len(parts):
            return {"type": simple}
        return {"anyOf": parts}
    if inspect.isclass(tp) and issubclass(tp, enum.Enum):
        return type_schema(typing.Literal[tuple(m.value for m in tp)])
    if tp in (list, set, frozenset) or origin in (list, set, frozenset, Sequence, typing.Sequence):
        out = {"type": "array"}
        if args:
            out["items"] = type_schema(args[0])
        return out
    if tp is tuple or origin is tuple:
        out = {"type": "array"}
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            out["prefixItems"] = [type_schema(a) for a in args]
            out["minItems"] = out["maxItems"] = len(args)
        elif args:
            out["items"] = type_schema(args[0])
        return out
    if tp is dict or origin in (dict, Mapping, typing.Mapping):
        out = {"type": "object"}
        if len(args) == 2:
            out["additionalProperties"] = type_schema(args[1])
        return out
    return {}


def _doc_parts(doc: str) -> tuple[str, dict[str, str]]:
    """The description and per-parameter texts of a docstring (Google "Args:" or Sphinx ":param")."""
    params: dict[str, str] = {}
    lines = doc.splitlines()
    desc: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)", line)
        if m:
            params[m.group(1)] = m.group(2).strip()
            i += 1
            continue
        if re.match(r"\s*(Args|Arguments|Parameters)\s*:\s*$", line):
            i += 1
            last = None
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                m = re.match(r"\s+(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)", lines[i])
                if m:
                    last = m.group(1)
                    params[last] = m.group(2).strip()
                elif last and lines[i].strip():
                    params[last] += " " + lines[i].strip()
                i += 1
            continue
        if re.match(r"\s*(Returns?|Raises|Yields|:returns?:|:raises)", line):
            break
        desc.append(line)
        i += 1
    return "\n".join(desc).strip(), params


def function_spec(fn: Callable[..., Any], name: str | None = None) -> dict[str, Any]:
    """The tool spec of a function: {"name", "description", "parameters"}."""
    name = name or fn.__name__
    description, param_docs = _doc_parts(inspect.getdoc(fn) or "")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # forward references that do not resolve: fall back to the raw annotations
        hints = dict(getattr(fn, "__annotations__", {}))
    props: dict[str, Any] = {}
    required: list[str] = []
    for pname, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.POSITIONAL_ONLY:
            raise ToolsFileError(f"tool {name}: parameter {pname!r} is positional-only; "
                                 "the model passes arguments by name")
        hint = hints.get(pname, inspect.Parameter.empty)
        schema = type_schema(hint)
        text = param_docs.get(pname)
        need = p.default is inspect.Parameter.empty
        if typing.get_origin(hint) is typing.Annotated:
            extra = typing.get_args(hint)[1:]
            strings = [e for e in extra if isinstance(e, str)]
            flags = [e for e in extra if isinstance(e, bool)]
            if strings:
                text = strings[0]
            if flags and p.default is inspect.Parameter.empty:
                need = flags[0]  # ChatGLM3's Annotated[type, description, required]
        if text:
            schema["description"] = text
        if p.default is not inspect.Parameter.empty:
            default = p.default.value if isinstance(p.default, enum.Enum) else p.default
            try:
                json.dumps(default)
                schema["default"] = default
            except (TypeError, ValueError):
                pass  # a default JSON cannot spell is left out of the schema
        props[pname] = schema
        if need:
            required.append(pname)
    spec: dict[str, Any] = {"name": name, "description": description,
                            "parameters": {"type": "object", "properties": props, "required": required}}
    return spec


# loading ------------------------------------------------------------------------------------

def load_python_tools(path: str | Path) -> list[FunctionTool]:
    """The public functions defined in a Python file. The file is the user's own code and is
    imported (run) as a module, as any Python script would be."""
    path = Path(path)
    if not path.is_file():
        raise ToolsFileError(f"tools file not found: {path}", hint="--tools takes a Python file")
    mod_name = f"chatglm3_user_tools_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ToolsFileError(f"{path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and typing need the module registered
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ToolsFileError(f"{path}:{e.lineno}: {e.msg}") from e
    except Exception as e:
        raise ToolsFileError(f"{path} failed to import: {type(e).__name__}: {e}") from e
    out = []
    for attr, obj in vars(module).items():
        if attr.startswith("_") or not inspect.isfunction(obj) or obj.__module__ != mod_name:
            continue  # imported helpers and private functions are not tools
        out.append(FunctionTool(function_spec(obj, attr), obj))
    if not out:
        raise ToolsFileError(f"{path} defines no public function",
                             hint="each public function (name not starting with _) becomes a tool")
    return out


def load_json_tools(path: str | Path) -> list[FunctionTool]:
    """OpenAI-style tool specs (a list, or {"tools": [...]}) with no implementation."""
    from ..engine.toolcalls import function_specs

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ToolsFileError(f"tool spec file not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: bad JSON, a 5,000-digit number
        raise ToolsFileError(f"{path}: not a JSON file of tool specs ({str(e)[:200]})") from None
    except RecursionError:
        raise ToolsFileError(f"{path}: JSON nested too deeply to be tool specs") from None
    if isinstance(data, Mapping) and "tools" in data:
        data = data["tools"]
    if isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(t, Mapping) for t in data):
        raise ToolsFileError(f"{path}: expected a list of tool specs")
    try:
        specs = function_specs(data)
    except ValueError as e:
        raise ToolsFileError(f"{path}: {e}") from None
    except RecursionError:
        raise ToolsFileError(f"{path}: a tool spec nested too deeply") from None
    return [FunctionTool(s, None) for s in specs]


def check_unique(tools: Sequence[FunctionTool]) -> None:
    seen: set[str] = set()
    for t in tools:
        if t.name in seen:
            raise ToolsFileError(f"two tools are named {t.name!r}")
        if t.name == "interpreter":
            raise ToolsFileError("a tool may not be named 'interpreter' (ChatGLM3's code interpreter uses it)")
        seen.add(t.name)
