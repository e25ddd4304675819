"""ChatGLM3 tool calls: reading the model's tool_call(...) safely, writing it back for history."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.engine.toolcalls import (
    TOOLS_SYSTEM_PROMPT,
    call_message,
    format_call,
    function_specs,
    parse_call,
    tools_message,
)

FENCED = '```python\ntool_call(city="Paris", days=3, metric=true, units=None, tags=["a)", "b"])\n```'


def test_reads_the_official_fenced_form():
    assert parse_call(FENCED) == {"city": "Paris", "days": 3, "metric": True, "units": None,
                                  "tags": ["a)", "b"]}


@pytest.mark.parametrize("text, want", [
    ('tool_call(city="Paris")', {"city": "Paris"}),
    (" \n tool_call(symbol='AAPL')\n", {"symbol": "AAPL"}),
    ("tool_call()", {}),
    ('tool_call(q={"a": [1, 2.5, false], "b": null})', {"q": {"a": [1, 2.5, False], "b": None}}),
    ('Let me look.\n```python\ntool_call(x="(")\n```', {"x": "("}),
])
def test_reads_calls(text, want):
    assert parse_call(text) == want


@pytest.mark.parametrize("text", [
    "no call here",
    'tool_call(__import__("os").system("true"))',  # positional, and not a literal
    'tool_call(x=__import__("os").system("true"))',  # never evaluated
    "tool_call(x=open('/etc/passwd'))",
    "tool_call(**kwargs)",  # only a literal dict may be unpacked
    "tool_call(x={1, 2})",  # a set is not JSON
    "tool_call(x=",  # cut off
])
def test_rejects_anything_but_literal_keyword_arguments(text):
    assert parse_call(text) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(), lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(), kids, max_size=3),
    max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_-]{0,8}", fullmatch=True) | st.text(max_size=5), json_values, max_size=4))
def test_format_and_parse_round_trip(arguments):
    assert parse_call(format_call(arguments)) == arguments


def test_openai_tools_are_unwrapped_for_the_system_prompt():
    spec = {"name": "get_weather", "description": "Weather", "parameters": {"type": "object"}}
    assert function_specs([{"type": "function", "function": spec}, spec]) == [spec, spec]
    m = tools_message([{"type": "function", "function": spec}])
    assert m == Message("system", TOOLS_SYSTEM_PROMPT, tools=[spec])
    with pytest.raises(ValueError, match="name"):
        function_specs([{"type": "function", "function": {"description": "no name"}}])


def test_call_message_is_an_assistant_turn_with_the_tool_as_metadata():
    m = call_message("get_weather", {"city": "Paris"})
    assert m.role == "assistant" and m.metadata == "get_weather"
    assert parse_call(m.content) == {"city": "Paris"}
