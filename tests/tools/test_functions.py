"""Python functions to tool specs, and calls with literal arguments (no model needed)."""
from __future__ import annotations

import enum
import json
import textwrap
from typing import Annotated, Literal, Optional

import pytest

from chatglm3_cli.tools.chain import Approvals, Toolbox
from chatglm3_cli.tools.functions import FunctionTool, ToolsFileError, function_spec, load_json_tools, load_python_tools


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def weather(city: str, unit: Literal["c", "f"] = "c", days: Optional[int] = None,
            tags: list[str] | None = None, extra: dict[str, float] = {},  # noqa: B006 (a default the schema must show)
            color: Color = Color.RED) -> dict:
    """Get the weather for a city.

    Args:
        city: The city's name.
        unit: Temperature unit.

    Returns:
        The forecast.
    """
    return {}


def official_style(seed: Annotated[int, "The random seed used by the generator", True],
                   range: Annotated[tuple[int, int], "The range of the generated numbers", True]) -> int:
    """Generates a random number x, s.t. range[0] <= x < range[1]"""
    return 0


def test_spec_from_type_hints_defaults_and_docstring():
    spec = function_spec(weather)
    assert spec["name"] == "weather" and spec["description"] == "Get the weather for a city."
    props = spec["parameters"]["properties"]
    assert props["city"] == {"type": "string", "description": "The city's name."}
    assert props["unit"] == {"enum": ["c", "f"], "type": "string", "description": "Temperature unit.", "default": "c"}
    assert props["days"] == {"type": ["integer", "null"], "default": None}
    assert props["tags"] == {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}], "default": None}
    assert props["extra"] == {"type": "object", "additionalProperties": {"type": "number"}, "default": {}}
    assert props["color"] == {"enum": ["red", "blue"], "type": "string", "default": "red"}
    assert spec["parameters"]["required"] == ["city"]
    json.dumps(spec)  # goes into the system prompt as JSON


def test_chatglm3_demo_annotated_spelling():
    spec = function_spec(official_style)
    props = spec["parameters"]["properties"]
    assert props["seed"] == {"type": "integer", "description": "The random seed used by the generator"}
    assert props["range"]["type"] == "array" and props["range"]["minItems"] == 2
    assert spec["parameters"]["required"] == ["seed", "range"]


def _write(tmp_path, text, name="tools.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_load_python_tools_keeps_public_functions_defined_there(tmp_path):
    p = _write(tmp_path, '''
        import os
        from json import dumps

        def add(a: int, b: int = 2) -> int:
            """Add two numbers."""
            return a + b

        def _helper():
            pass

        VALUE = 3
        ''')
    (tool,) = load_python_tools(p)
    assert tool.name == "add" and tool.call({"a": 1}) == "3"


@pytest.mark.parametrize("text,message", [
    ("def f(:\n", "tools.py:1"),
    ("raise RuntimeError('no')\n", "failed to import: RuntimeError: no"),
    ("X = 1\n", "defines no public function"),
    ("def f(a, /):\n    pass\n", "positional-only"),
])
def test_bad_tools_files_are_input_errors(tmp_path, text, message):
    with pytest.raises(ToolsFileError, match=message.replace("(", r"\(")):
        load_python_tools(_write(tmp_path, text))
    with pytest.raises(ToolsFileError, match="not found"):
        load_python_tools(tmp_path / "missing.py")


def test_json_specs_openai_shape_and_errors(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
                             {"name": "bare"}]))
    tools = load_json_tools(p)
    assert [t.name for t in tools] == ["lookup", "bare"] and all(t.function is None for t in tools)
    p.write_text(json.dumps({"tools": [{"type": "function", "function": {"description": "x"}}]}))
    with pytest.raises(ToolsFileError, match="name"):
        load_json_tools(p)
    p.write_text("{not json")
    with pytest.raises(ToolsFileError, match="not a JSON file"):
        load_json_tools(p)


def _toolbox(calls):
    def record(city: str) -> str:
        """Record a city."""
        calls.append(city)
        return f"recorded {city}"

    def fail(city: str) -> str:
        raise ValueError(f"no weather for {city}")

    return Toolbox([FunctionTool(function_spec(record), record), FunctionTool(function_spec(fail), fail)])


def test_calls_run_only_with_consent_and_only_with_literal_valid_arguments():
    calls: list[str] = []
    tb = _toolbox(calls)
    asked = []
    call = tb.read("record", '```python\ntool_call(city="Paris")\n```')
    assert call.arguments == {"city": "Paris"} and call.problem is None

    refused = tb.run(call, Approvals(lambda c: asked.append(c.name) or "no"))
    assert refused.status == "refused" and calls == [] and asked == ["record"]
    assert tb.run(call, Approvals()).status == "refused" and calls == []  # no one to ask: no

    ok = tb.run(call, Approvals(lambda c: "yes"))
    assert ok.status == "ok" and ok.observation == "recorded Paris" and calls == ["Paris"]

    always = Approvals(lambda c: asked.append(c.name) or "always")
    tb.run(call, always)
    tb.run(call, always)
    assert asked == ["record", "record"] and calls == ["Paris"] * 3  # asked once for "always"

    # Code in the arguments is never evaluated, and wrong types never reach the function.
    evil = tb.read("record", 'tool_call(city=__import__("os").system("touch /tmp/x"))')
    assert evil.problem and tb.run(evil, Approvals(approve_all=True)).status == "invalid"
    wrong = tb.read("record", "tool_call(city=3)")
    assert "not of type 'string'" in wrong.problem
    assert tb.run(wrong, Approvals(approve_all=True)).status == "invalid"
    unknown = tb.read("nope", 'tool_call(city="x")')
    assert tb.run(unknown, Approvals(approve_all=True)).observation == "Error: there is no tool named 'nope'"
    assert calls == ["Paris"] * 3


def test_a_tool_that_raises_answers_with_the_exception_text():
    tb = _toolbox([])
    out = tb.run(tb.read("fail", 'tool_call(city="Oslo")'), Approvals(approve_all=True))
    assert out.status == "error" and out.observation == "Error: ValueError: no weather for Oslo"


def test_glm4_json_calls_are_read_too():
    calls: list[str] = []
    tb = _toolbox(calls)
    tb.style = "glm4"
    assert tb.read("record", '{"city": "Rome"}').arguments == {"city": "Rome"}


def test_long_results_are_truncated_as_the_official_demo_does():
    def big() -> str:
        return "x" * 5000

    tb = Toolbox([FunctionTool(function_spec(big), big)])
    out = tb.run(tb.read("big", "tool_call()"), Approvals(approve_all=True))
    assert out.observation == "x" * 1024 + " [TRUNCATED]"
