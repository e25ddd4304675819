"""Request validation and stop strings, without a server."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.engine.sequence import StopScanner
from chatglm3_cli.errors import InsecureBindError
from chatglm3_cli.serve import protocol as P
from chatglm3_cli.serve.server import check_exposure, is_loopback

LIMITS = P.Limits(max_tokens=100, default_params=SamplingParams(temperature=0.8, top_p=0.8))


def never(_value):
    return None


def parse(**body):
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return P.parse_chat(body, LIMITS, check_schema=never, check_tools=never)


@given(st.text(alphabet="ab c", max_size=40), st.lists(st.integers(1, 5), max_size=20),
       st.lists(st.text(alphabet="ab c", min_size=1, max_size=4), max_size=3))
def test_stop_scanner_ends_at_the_stop_string_complete_first_however_the_text_is_cut(text, cuts, stops):
    pieces, i = [], 0
    for n in cuts:
        pieces.append(text[i:i + n])
        i += n
    pieces.append(text[i:])
    scanner = StopScanner(stops)
    out = ""
    for p in pieces:
        out += scanner.feed(p)
        if scanner.hit:
            break
    out += scanner.flush()
    hits = [(text.find(s) + len(s), text.find(s)) for s in stops if s in text]
    assert out == (text[:min(hits)[1]] if hits else text)
    assert scanner.hit == bool(hits)


def test_sampling_comes_from_the_server_defaults_unless_the_request_says():
    req = parse()
    assert (req.params.temperature, req.params.top_p, req.params.max_tokens) == (0.8, 0.8, None)
    req = parse(temperature=0, top_p=1, seed=7, max_completion_tokens=9, max_tokens=50)
    assert (req.params.temperature, req.params.top_p, req.params.seed, req.params.max_tokens) == (0, 1, 7, 9)
    assert parse(top_p=0).params.temperature == 0  # only the most likely token
    assert parse(stop="x").stops == ["x"] and parse(stop=["a", ""]).stops == ["a"]


@pytest.mark.parametrize("body,param", [
    ({"temperature": True}, "temperature"),
    ({"temperature": 3}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 101}, "max_tokens"),
    ({"max_completion_tokens": 1.5}, "max_completion_tokens"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"stop": ["a"] * 5}, "stop"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": ["hi"]}, "messages[0]"),
    ({"messages": [{"role": "assistant", "content": "x", "tool_calls": "call"}]}, "messages[0].tool_calls"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema.schema"),
    ({"logprobs": True}, "logprobs"),
    ({"model": 5}, "model"),
])
def test_a_wrong_value_is_a_400_naming_the_field(body, param):
    with pytest.raises(P.APIError) as e:
        parse(**body)
    assert e.value.status == 400 and e.value.param == param
    assert set(e.value.body()["error"]) == {"message", "type", "param", "code"}


def test_unknown_fields_are_ignored_and_tools_follow_tool_choice():
    tools = [{"type": "function", "function": {"name": "f"}}]
    req = parse(frequency_penalty=0.5, user="u", metadata={"a": 1}, tools=tools)
    assert req.tools == tools
    assert parse(tools=tools, tool_choice="none").tools is None
    assert parse(response_format={"type": "json_object"}).schema == {"type": "object"}


def test_completions_default_to_16_tokens_and_take_one_prompt():
    assert P.parse_completion({"prompt": "x"}, LIMITS).params.max_tokens == 16
    assert P.parse_completion({"prompt": ["x"]}, LIMITS).prompt == "x"
    for bad in ({"prompt": ["a", "b"]}, {"prompt": ""}, {}):
        with pytest.raises(P.APIError):
            P.parse_completion(bad, LIMITS)


def test_only_loopback_hosts_may_go_without_a_key():
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert is_loopback(host)
        check_exposure(host, None)
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(InsecureBindError):
            check_exposure(host, None)
        check_exposure(host, "key")
