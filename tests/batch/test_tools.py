"""Tool calls in batch jobs: OpenAI "tools" in, "tool_calls" out, on the scripted tool-calling model."""
from __future__ import annotations

import json

import pytest

from chatglm3_cli.batch.jobs import parse_jobs
from chatglm3_cli.engine.messages import chat_messages
from chatglm3_cli.engine.model import Model
from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.engine.toolcalls import TOOLS_SYSTEM_PROMPT, parse_call

from .test_runner import jsonl, run

SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def openai_line(cid, body):
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}


@pytest.fixture(scope="module")
def tool_model(fixtures):
    with Model(fixtures.path("scripted-tool"), n_ctx=512) as m:
        yield m


def test_openai_line_with_tools_answers_with_tool_calls(tool_model):
    line = openai_line("t1", {"messages": [{"role": "user", "content": "Weather in Paris?"}],
                              "tools": [SEARCH, WEATHER]})
    s, (out,) = run(tool_model, [line])
    assert s.failed == 0 and out["error"] is None and out["custom_id"] == "t1"
    choice = out["response"]["body"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    msg = choice["message"]
    assert msg["role"] == "assistant" and msg["content"] is None
    (call,) = msg["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "search"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_task_record_with_tools_outputs_the_call(tool_model):
    rec = {"id": "c", "task": "chat", "messages": [{"role": "user", "content": "Weather?"}], "tools": [SEARCH]}
    s, (out,) = run(tool_model, [rec])
    assert out["error"] is None and out["finish_reason"] == "tool_calls"
    assert out["output"] == {"name": "search", "arguments": {"city": "Paris"}}


def test_a_call_to_a_tool_that_was_not_offered_is_content(tool_model):
    # As on every path (engine/answer.py, README "Answers in several parts"): the call's text is
    # the answer, and the record succeeds with finish_reason "stop".
    rec = {"id": "c", "task": "chat", "messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER]}
    s, (out,) = run(tool_model, [rec])
    assert s.failed == 0 and out["error"] is None and out["finish_reason"] == "stop"
    assert "tool_call(" in out["output"] and "Paris" in out["output"]
    # Without tools at all: the same.
    s, (out2,) = run(tool_model, [{"id": "n", "task": "chat", "messages": [{"role": "user", "content": "x"}]}])
    assert s.failed == 0 and out2["output"] == out["output"] and out2["finish_reason"] == "stop"


def test_template_model_with_tools_support_outputs_the_call_and_one_without_is_a_record_error(fixtures):
    """A GGUF whose chat template reads ``tools``: the <tool_call> its answer writes is the
    record's call (the same call serve and run read); a template without tools support: the
    record is an error, the others still answered."""
    want = fixtures.sidecar("template-tools")["call"]
    rec = {"id": "c", "task": "chat", "messages": [{"role": "user", "content": "Weather?"}], "tools": [SEARCH]}
    with Model(fixtures.path("template-tools"), n_ctx=1024) as m:
        s, (out,) = run(m, [rec])
        s2, (line,) = run(m, [openai_line("o", {"messages": rec["messages"], "tools": [SEARCH]})])
    assert s.failed == s2.failed == 0 and out["error"] is None and out["finish_reason"] == "tool_calls"
    assert out["output"] == {"name": want["name"], "arguments": want["arguments"]}
    (call,) = line["response"]["body"]["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == want["arguments"]
    with Model(fixtures.path("template"), n_ctx=256) as plain:
        s, outs = run(plain, [rec, {"id": "p", "task": "chat", "messages": [{"role": "user", "content": "hi"}],
                                    "max_tokens": 4}])
    by_id = {o["id"]: o for o in outs}
    assert s.failed == 1 and "no tool-calling format" in by_id["c"]["error"]["message"]
    assert by_id["p"]["error"] is None


def test_an_answer_with_several_calls_keeps_them_all():
    """A template model may write several <tool_call> blocks: a task record's output lists them
    in "calls" (the first also as its name/arguments), an OpenAI line has every tool call."""
    from chatglm3_cli.batch.runner import result_line
    from chatglm3_cli.engine.answer import read_answer
    from chatglm3_cli.engine.completion import Completion, Timings

    text = "".join(f'<tool_call>\n{{"name": "search", "arguments": {{"city": "{c}"}}}}\n</tool_call>\n'
                   for c in ("Paris", "Rome"))
    comp = Completion(text=text, metadata="", finish_reason="stop", prompt_tokens=3, cached_tokens=0,
                      completion_tokens=9, timings=Timings())
    answer = read_answer(comp, {"search"}, "template")
    rec = {"id": "c", "task": "chat", "messages": [{"role": "user", "content": "?"}], "tools": [SEARCH]}
    line = openai_line("o", {"messages": rec["messages"], "tools": [SEARCH]})
    task_job, openai_job = parse_jobs((json.dumps(rec) + "\n" + json.dumps(line) + "\n").encode(), "j").jobs
    out = task_job.parse(answer.content, answer.call, answer.calls)
    assert out == {"name": "search", "arguments": {"city": "Paris"},
                   "calls": [{"name": "search", "arguments": {"city": "Paris"}},
                             {"name": "search", "arguments": {"city": "Rome"}}]}
    done = Completion(text="", metadata="", finish_reason="tool_calls", prompt_tokens=3, cached_tokens=0,
                      completion_tokens=9, timings=Timings())
    got = result_line(openai_job, model_name="m", comp=done, error=None,
                      output=openai_job.parse(answer.content, answer.call, answer.calls))
    calls = got["response"]["body"]["choices"][0]["message"]["tool_calls"]
    assert [json.loads(c["function"]["arguments"])["city"] for c in calls] == ["Paris", "Rome"]


def test_tool_choice_none_drops_the_tools_and_required_is_refused():
    lines = [
        openai_line("none", {"messages": [{"role": "user", "content": "x"}], "tools": [SEARCH], "tool_choice": "none"}),
        openai_line("req", {"messages": [{"role": "user", "content": "x"}], "tools": [SEARCH], "tool_choice": "required"}),
        openai_line("bad", {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}),
        {"id": "t", "task": "chat", "messages": [{"role": "user", "content": "x"}], "tools": "search"},
    ]
    jf = parse_jobs(jsonl(lines), "jobs.jsonl")
    (job,) = jf.jobs
    assert job.id == "none" and "tools" not in job.record
    assert job.messages() == [Message("user", "x")]
    problems = {p.id: p.message for p in jf.problems}
    assert 'tool_choice" "required" is not supported' in problems["req"]
    assert '"body.tools" each tool needs a "name"' in problems["bad"]
    assert '"tools" must be an array' in problems["t"]


def test_history_with_tool_calls_becomes_call_observation_pairs():
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "b", "content": '{"temp": 20}'},
        {"role": "tool", "tool_call_id": "a", "content": '{"temp": 15}'},
    ]
    out = chat_messages(msgs, tools=[WEATHER])
    assert out[0] == Message("system", TOOLS_SYSTEM_PROMPT, tools=[WEATHER["function"]])
    assert [(m.role, m.metadata) for m in out[1:]] == [
        ("system", ""), ("user", ""), ("assistant", "get_weather"), ("observation", ""),
        ("assistant", "get_weather"), ("observation", "")]
    # Each observation follows the call it answers (matched by tool_call_id).
    assert parse_call(out[3].content) == {"city": "Rome"} and out[4].content == '{"temp": 20}'
    assert parse_call(out[5].content) == {"city": "Paris"} and out[6].content == '{"temp": 15}'


def test_malformed_tool_call_history_is_a_validation_error():
    line = openai_line("h", {"messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
        {"role": "tool", "tool_call_id": "a", "content": "r"}]})
    jf = parse_jobs(jsonl([line]), "jobs.jsonl")
    (p,) = jf.problems
    assert "not JSON" in p.message and p.line == 1
