"""One answer, one outcome on every path (engine/answer.py; README "Answers in several parts").

Each fixture (scripts/make_test_model.py, answer-*) answers "Hi" greedily with one shape: plain
text, a tool call, text then a tool call, two text segments. The same answer is asked through
run --json, a chat session, a batch task record, an OpenAI Batch line and serve (the official
`openai` client, streamed and not), with the tool offered and without, and with max_tokens ending
it inside its last segment; every path must give the same (content, call, finish_reason).
"""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from chatglm3_cli.chat.session import ChatSession
from chatglm3_cli.cli.app import app
from chatglm3_cli.engine.answer import read_answer
from chatglm3_cli.engine.model import Model
from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.engine.sequence import SEGMENT_SEPARATOR

from .batch.test_runner import run
from .serve.serverproc import Server

SHAPES = ["plain", "tool", "text-tool", "two-text"]
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
HI = [{"role": "user", "content": "Hi"}]
Outcome = tuple[str, "tuple[str, dict] | None", str]  # content, (tool, arguments), finish_reason


def expected(side: dict, tools: bool) -> Outcome:
    """The rule, from the fixture's own description: a final segment naming an offered tool
    is the call and the text before it the content; otherwise every segment is content (a
    call's text as the model wrote it after its metadata line)."""
    segs = side["segments"]
    last = segs[-1]
    if tools and last["metadata"] == "search":
        return SEGMENT_SEPARATOR.join(s["content"] for s in segs[:-1]), ("search", last["arguments"]), "tool_calls"
    texts = [(" " + s["content"]) if s["metadata"] else s["content"] for s in segs]
    return SEGMENT_SEPARATOR.join(texts), None, "stop"


@pytest.fixture(scope="module", params=SHAPES)
def shape(request, fixtures):
    path = fixtures.path(f"answer-{request.param}")
    with Model(path, n_ctx=512) as m:
        yield request.param, path, fixtures.sidecar(f"answer-{request.param}"), m


def cut(side: dict) -> int:
    """A max_tokens that ends the answer inside its last segment."""
    return len(side["answer_ids"]) - 2


# the paths ------------------------------------------------------------------------------------

def via_run(path, max_tokens: int | None) -> Outcome:
    args = ["run", "-m", str(path), "Hi", "--json", "-t", "0"]
    if max_tokens:
        args += ["--max-tokens", str(max_tokens)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    return out["response"], None, out["finish_reason"]


def via_chat(m: Model, tools: bool, max_tokens: int | None) -> Outcome:
    session = ChatSession(m, params=SamplingParams(temperature=0, max_tokens=max_tokens),
                          tools=[SEARCH["function"]] if tools else None)
    prompt = m.prompt_ids(session.system_messages() + [*_user()])
    turn = session.ask("Hi")
    streamed = "".join(turn)
    r = turn.result
    assert r is not None and streamed == r.text
    # History: one assistant message per segment, and the next prompt replays the model's own ids.
    answer = session.messages[1:]
    assert [(a.role, a.metadata, a.content) for a in answer] == [("assistant", s.metadata, s.text) for s in r.segments]
    replay = m.prompt_ids(session.all_messages())
    assert replay[:len(prompt)] == prompt and replay[len(prompt):len(prompt) + len(r.tokens)] == r.tokens
    a = read_answer(r, {"search"} if tools else set(), m.tool_style)
    return a.content, (a.call.name, a.call.arguments) if a.call else None, a.finish_reason


def _user():
    from chatglm3_cli.engine.prompt import Message

    return [Message("user", "Hi")]


def via_batch_task(m: Model, tools: bool, max_tokens: int | None) -> Outcome:
    rec: dict = {"id": "r", "task": "chat", "messages": HI}
    if tools:
        rec["tools"] = [SEARCH]
    if max_tokens:
        rec["max_tokens"] = max_tokens
    s, (line,) = run(m, [rec])
    assert line["error"] is None, line
    out = line["output"]
    if isinstance(out, dict):
        return out.get("content", ""), (out["name"], out["arguments"]), line["finish_reason"]
    return out, None, line["finish_reason"]


def via_openai_line(m: Model, tools: bool, max_tokens: int | None) -> Outcome:
    body: dict = {"messages": HI}
    if tools:
        body["tools"] = [SEARCH]
    if max_tokens:
        body["max_tokens"] = max_tokens
    s, (line,) = run(m, [{"custom_id": "r", "method": "POST", "url": "/v1/chat/completions", "body": body}])
    assert line["error"] is None, line
    choice = line["response"]["body"]["choices"][0]
    msg = choice["message"]
    call = None
    if msg.get("tool_calls"):
        (tc,) = msg["tool_calls"]
        call = (tc["function"]["name"], json.loads(tc["function"]["arguments"]))
    return msg["content"] or "", call, choice["finish_reason"]


def via_serve(client, tools: bool, max_tokens: int | None, stream: bool) -> Outcome:
    kw: dict = {"model": "m", "messages": HI, "temperature": 0}
    if tools:
        kw["tools"] = [SEARCH]
    if max_tokens:
        kw["max_tokens"] = max_tokens
    if not stream:
        choice = client.chat.completions.create(**kw).choices[0]
        call = None
        if choice.message.tool_calls:
            (tc,) = choice.message.tool_calls
            call = (tc.function.name, json.loads(tc.function.arguments))
        return choice.message.content or "", call, choice.finish_reason
    chunks = [c for c in client.chat.completions.create(stream=True, **kw) if c.choices]
    deltas = [c.choices[0].delta for c in chunks]
    calls = [tc for d in deltas for tc in (d.tool_calls or [])]
    call = None
    if calls:
        call = (calls[0].function.name, json.loads("".join(tc.function.arguments or "" for tc in calls)))
    return "".join(d.content or "" for d in deltas), call, chunks[-1].choices[0].finish_reason


# the tests ------------------------------------------------------------------------------------

@pytest.mark.parametrize("tools", [True, False], ids=["tools", "no-tools"])
def test_every_library_path_gives_the_same_answer(shape, tools):
    name, path, side, m = shape
    want = expected(side, tools)
    got = {"chat": via_chat(m, tools, None), "batch task": via_batch_task(m, tools, None),
           "openai line": via_openai_line(m, tools, None)}
    if not tools:
        got["run"] = via_run(path, None)
    assert got == {k: want for k in got}


def test_an_answer_cut_inside_its_last_segment_is_the_same_everywhere(shape):
    name, path, side, m = shape
    n = cut(side)
    got = {"run": via_run(path, n), "chat": via_chat(m, False, n), "batch task": via_batch_task(m, False, n),
           "openai line": via_openai_line(m, False, n)}
    full = expected(side, False)[0]
    content = got["run"][0]
    assert got == {k: (content, None, "length") for k in got}
    assert full.startswith(content) and len(content) < len(full)
    if len(side["segments"]) > 1:  # the cut is inside the second segment: the first is whole
        assert SEGMENT_SEPARATOR in content


def test_serve_gives_the_same_answer_streamed_or_not(shape, tmp_path):
    name, path, side, m = shape
    server = Server(path, tmp_path, "--parallel", "2", "--ctx", "256")
    try:
        client = server.client()
        for tools in (True, False):
            want = expected(side, tools)
            assert via_serve(client, tools, None, stream=False) == want, tools
            assert via_serve(client, tools, None, stream=True) == want, tools
        n = cut(side)
        lib = via_batch_task(m, False, n)
        assert via_serve(client, False, n, stream=False) == lib
        assert via_serve(client, False, n, stream=True) == lib
        if name == "two-text":
            # A stop string inside the second segment ends the answer there, as in the library.
            full = expected(side, False)[0]
            want_stop = (full[:full.index("two")], None, "stop")
            r = m.generate(_user(), SamplingParams(temperature=0), stops=["two"]).complete()
            assert (r.text, None, r.finish_reason) == want_stop
            for stream in (False, True):
                kw = {"model": "m", "messages": HI, "temperature": 0, "stop": ["two"]}
                if stream:
                    chunks = [c for c in client.chat.completions.create(stream=True, **kw) if c.choices]
                    got = ("".join(c.choices[0].delta.content or "" for c in chunks), None,
                           chunks[-1].choices[0].finish_reason)
                else:
                    choice = client.chat.completions.create(**kw).choices[0]
                    got = (choice.message.content, None, choice.finish_reason)
                assert got == want_stop
    finally:
        assert server.stop() == 0
