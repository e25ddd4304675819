"""`chatglm3 serve` as users meet it: a real server process on 127.0.0.1, driven by the official
`openai` client (and plain HTTP where the client hides the wire)."""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import pytest

from chatglm3_cli.engine.llama.context import align_down

from .serverproc import KEY, Server, child_env

openai = pytest.importorskip("openai")

ANSWER = "Hello! I am ChatGLM3 🙂龘"
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
# Bounded values only: a free-form string lets a random model run to max_tokens.
SCHEMA = {"type": "object",
          "properties": {"mood": {"enum": ["happy", "sad"]}, "loud": {"type": "boolean"},
                         "stars": {"type": "integer", "minimum": 1, "maximum": 5}},
          "required": ["mood", "loud", "stars"], "additionalProperties": False}


def run_cli(model, tmp, *args):
    """`chatglm3 run` itself, as a user would call it."""
    return subprocess.run([sys.executable, "-m", "chatglm3_cli", "run", "-m", str(model), *args],
                          capture_output=True, text=True, env=child_env(tmp), timeout=300, stdin=subprocess.DEVNULL)


def ollama_show(server):
    """Ollama's /api/show for the server's one model (named as /api/tags names it)."""
    (tag,) = server.http().get("/api/tags").json()["models"]
    return server.http().post("/api/show", json={"model": tag["model"]})


def stream_text(stream):
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


# answers --------------------------------------------------------------------------------------

def test_answers_equal_chatglm3_run_streamed_or_not(scripted, fixtures, tmp_path):
    want = run_cli(fixtures.path("scripted"), tmp_path, "-t", "0", "Hello there")
    assert want.returncode == 0, want.stderr
    assert want.stdout == ANSWER + "\n"
    client = scripted.client()
    msgs = [{"role": "user", "content": "Hello there"}]
    resp = client.chat.completions.create(model="any", messages=msgs, temperature=0)
    choice = resp.choices[0]
    assert choice.message.content == ANSWER and choice.message.role == "assistant"
    assert choice.finish_reason == "stop" and resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-") and resp.model
    assert resp.usage.completion_tokens == len(fixtures.sidecar("scripted")["answer_ids"])
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens

    text, chunks = stream_text(client.chat.completions.create(
        model="any", messages=msgs, temperature=0, stream=True, stream_options={"include_usage": True}))
    assert text == ANSWER
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == resp.usage.completion_tokens
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_content_parts_system_prompt_and_stop_strings(scripted):
    client = scripted.client()
    resp = client.chat.completions.create(model="m", temperature=0, messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]}])
    assert resp.choices[0].message.content == ANSWER
    resp = client.chat.completions.create(model="m", temperature=0, stop=["I am"],
                                          messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "Hello! " and resp.choices[0].finish_reason == "stop"
    text, chunks = stream_text(client.chat.completions.create(
        model="m", temperature=0, stop="ChatGLM", stream=True, messages=[{"role": "user", "content": "hi"}]))
    assert text == "Hello! I am " and chunks[-1].choices[0].finish_reason == "stop"
    resp = client.chat.completions.create(model="m", temperature=0, max_tokens=3,
                                          messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].finish_reason == "length" and resp.usage.completion_tokens == 3


def test_raw_completions(scripted):
    client = scripted.client()
    resp = client.completions.create(model="m", prompt="Once upon a time", max_tokens=8, temperature=0)
    assert resp.object == "text_completion" and resp.choices[0].finish_reason in ("stop", "length")
    streamed = list(client.completions.create(model="m", prompt="Once upon a time", max_tokens=8,
                                              temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == resp.choices[0].text
    assert resp.usage.completion_tokens <= 8


def test_models_health_and_metrics(scripted):
    client = scripted.client()
    (card,) = client.models.list().data
    assert card.object == "model" and card.id
    assert client.models.retrieve(card.id).id == card.id
    with scripted.http() as h:
        assert h.get("/health").json()["status"] == "ok"
        page = h.get("/metrics")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    m = scripted.metrics()
    assert m["chatglm3_sequences_max"] == 2 and m["chatglm3_requests_total"] >= 1
    assert "chatglm3_queue_length" in m and "chatglm3_generation_tokens_per_second" in m


# errors ---------------------------------------------------------------------------------------

def _error(exc_info, status):
    err = exc_info.value
    assert err.status_code == status
    body = err.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_errors_have_openai_shapes(scripted):
    client = scripted.client()
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError) as e:
        scripted.client(api_key="wrong").chat.completions.create(model="m", messages=hi)
    assert _error(e, 401)["code"] == "invalid_api_key"
    cases = [
        ({"temperature": "hot"}, "temperature"),
        ({"n": 2}, "n"),
        ({"max_tokens": 10**6}, "max_tokens"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         "messages[0].content[0]"),
        ({"stop": 3}, "stop"),
        ({"tool_choice": "required", "tools": [SEARCH]}, "tool_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
         "response_format.json_schema.schema"),
        ({"messages": [{"role": "user", "content": "word " * 400}]}, "messages"),  # longer than --ctx 256
    ]
    for extra, param in cases:
        kw = {"model": "m", "messages": hi, **extra}
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(**kw)
        err = _error(e, 400)
        assert err["param"] == param and err["type"] == "invalid_request_error", err
    assert err["code"] == "context_length_exceeded"
    with scripted.http() as h:
        for path, body, status in [("/v1/chat/completions", b"{not json", 400),
                                   ("/v1/chat/completions", b"[1, 2]", 400),
                                   ("/v1/chat/completions", b"x" * (5 * 1024 * 1024), 413),
                                   ("/v1/nothing", b"{}", 404)]:
            r = h.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert h.get("/v1/chat/completions").status_code == 405
        assert h.get("/health", headers={"Authorization": ""}).status_code == 200  # open for probes
    with httpx.Client(base_url=scripted.url, timeout=300, trust_env=False) as h:  # no key
        assert h.get("/metrics").status_code == 401 and h.get("/v1/models").status_code == 401
    # Every failure above left the server serving.
    assert client.chat.completions.create(model="m", messages=hi, temperature=0).choices[0].message.content == ANSWER


# tools and JSON -------------------------------------------------------------------------------

def test_tool_calls_streamed_or_not(fixtures, tmp_path):
    server = Server(fixtures.path("scripted-tool"), tmp_path, "--parallel", "2", "--ctx", "512")
    try:
        client = server.client()
        msgs = [{"role": "user", "content": "Weather in Paris?"}]
        resp = client.chat.completions.create(model="m", messages=msgs, tools=[SEARCH], temperature=0)
        choice = resp.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (call,) = choice.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_") and call.function.name == "search"
        assert json.loads(call.function.arguments) == {"city": "Paris"}

        chunks = list(client.chat.completions.create(model="m", messages=msgs, tools=[SEARCH], temperature=0,
                                                     stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        assert not "".join(d.content or "" for d in deltas)
        calls = [tc for d in deltas for tc in (d.tool_calls or [])]
        assert calls[0].id.startswith("call_") and calls[0].function.name == "search"
        assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"city": "Paris"}
        assert chunks[-1].choices[0].finish_reason == "tool_calls"

        # The call and its result go back in; without tools, the same answer is plain text.
        follow = msgs + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                         {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
        again = client.chat.completions.create(model="m", messages=follow, tools=[SEARCH], temperature=0)
        assert again.choices[0].finish_reason == "tool_calls"
        plain = client.chat.completions.create(model="m", messages=msgs, tool_choice="none", tools=[SEARCH],
                                               temperature=0)
        assert plain.choices[0].message.tool_calls is None and "tool_call" in plain.choices[0].message.content
    finally:
        assert server.stop() == 0


def test_template_tool_calls_streamed_or_not_match_run(fixtures, tmp_path):
    """A GGUF whose chat template reads ``tools`` (Qwen2.5's): the call its answer writes as
    <tool_call> text comes back as OpenAI tool_calls, streamed (no call text as content) or
    not, the same call `run --json` and batch read; Ollama lists the "tools" capability."""
    want = fixtures.sidecar("template-tools")["call"]
    spec = tmp_path / "tools.json"
    spec.write_text(json.dumps([SEARCH]))
    r = run_cli(fixtures.path("template-tools"), tmp_path, "--tool-json", str(spec), "--json", "-t", "0", "Weather?")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["pending_call"] == {"name": want["name"], "arguments": want["arguments"]}
    server = Server(fixtures.path("template-tools"), tmp_path, "--parallel", "2", "--ctx", "1024")
    try:
        client = server.client()
        msgs = [{"role": "user", "content": "Weather in Paris?"}]
        resp = client.chat.completions.create(model="m", messages=msgs, tools=[SEARCH], temperature=0)
        choice = resp.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (call,) = choice.message.tool_calls
        assert call.function.name == want["name"] and json.loads(call.function.arguments) == want["arguments"]

        chunks = list(client.chat.completions.create(model="m", messages=msgs, tools=[SEARCH], temperature=0,
                                                     stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        assert not "".join(d.content or "" for d in deltas)
        calls = [tc for d in deltas for tc in (d.tool_calls or [])]
        assert calls[0].id.startswith("call_") and calls[0].function.name == want["name"]
        assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == want["arguments"]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"

        # The call and its result go back in through the template; without tools the same
        # text is the content, streamed whole.
        follow = msgs + [{"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                         {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
        again = client.chat.completions.create(model="m", messages=follow, tools=[SEARCH], temperature=0)
        assert again.choices[0].finish_reason == "tool_calls"
        text, _ = stream_text(client.chat.completions.create(model="m", messages=msgs, temperature=0, stream=True))
        assert text == fixtures.sidecar("template-tools")["answer"]
        # A call to a tool that was not offered: held back while streaming, then sent as content.
        weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
        text, chunks = stream_text(client.chat.completions.create(model="m", messages=msgs, tools=[weather],
                                                                  temperature=0, stream=True))
        assert text == fixtures.sidecar("template-tools")["answer"]
        assert chunks[-1].choices[0].finish_reason == "stop"
        show = ollama_show(server)
        assert show.status_code == 200 and "tools" in show.json()["capabilities"]
    finally:
        assert server.stop() == 0


def test_tools_for_a_model_without_a_tool_format_are_a_400(fixtures, tmp_path):
    """The ChatML fixture has no tool-calling format: refused, never answered without the tools."""
    server = Server(fixtures.path("template"), tmp_path, "--parallel", "1", "--ctx", "256")
    try:
        r = server.http().post("/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "Weather?"}], "tools": [SEARCH]})
        assert r.status_code == 400, r.text
        assert "has no tool-calling format" in r.json()["error"]["message"]
        show = ollama_show(server)
        assert show.status_code == 200 and "tools" not in show.json()["capabilities"]
        ok = server.http().post("/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        assert ok.status_code == 200, ok.text
    finally:
        assert server.stop() == 0


@pytest.fixture(scope="module")
def tiny(fixtures, tmp_path_factory):
    server = Server(fixtures.path("tiny"), tmp_path_factory.mktemp("tiny"), "--parallel", "4", "--ctx", "512")
    yield server
    assert server.stop() == 0, "".join(server.stderr)


def test_json_schema_answers_parse_and_validate(tiny):
    client = tiny.client()
    fmt = {"type": "json_schema", "json_schema": {"name": "review", "schema": SCHEMA, "strict": True}}
    for i in range(3):
        resp = client.chat.completions.create(model="m", temperature=0, max_tokens=64, response_format=fmt,
                                              messages=[{"role": "user", "content": f"review {i}"}])
        jsonschema.validate(json.loads(resp.choices[0].message.content), SCHEMA)
    # A free-form object: a random model need not close it within max_tokens, so every answer
    # is checked for what the grammar guarantees (an object when it stopped, the start of one
    # when cut off, never a raw control character), and some must have stopped.
    stopped = 0
    for seed in range(8):
        resp = client.chat.completions.create(model="m", temperature=1.0, seed=seed, max_tokens=96,
                                              response_format={"type": "json_object"},
                                              messages=[{"role": "user", "content": f"an object {seed}"}])
        choice = resp.choices[0]
        text = choice.message.content
        assert not any(ord(c) < 0x20 and c not in " \t\n\r" for c in text), repr(text)
        assert text.lstrip().startswith("{"), repr(text)
        if choice.finish_reason == "stop":
            stopped += 1
            assert isinstance(json.loads(text), dict), repr(text)
        else:
            assert choice.finish_reason == "length", (choice.finish_reason, repr(text))
    assert stopped >= 1


# concurrency ----------------------------------------------------------------------------------

PROMPTS = ["The philosophy of people", "Hello world", "今天天气很好", "A sophisticated tokenizer",
           "Numbers 1 2 3", "Line one\nLine two", "Emoji 🙂 here", "short", "学而时习之", "x",
           "What is the capital of France?", "Write a poem", "Translate: good morning", "2+2=?",
           "Tell me a joke", "Summarize this sentence."]


def _ids(choice):
    return (choice.model_extra or {}).get("token_ids")


def test_16_concurrent_clients_each_get_the_answer_they_get_alone(tiny):
    """Half chat, half raw completions, half of each streamed. The random model's tokens are
    mostly padding without text, so the answers are compared as token ids too (vLLM's
    return_token_ids extension)."""
    client = tiny.client()
    system = {"role": "system", "content": "You are a helpful assistant."}
    ids = {"return_token_ids": True}

    def ask(i, concurrent=False):
        stream = concurrent and i % 4 >= 2
        if i % 2 == 0:
            kw = dict(model="m", temperature=0, max_tokens=12, extra_body=ids,
                      messages=[system, {"role": "user", "content": PROMPTS[i]}])
            if stream:
                text, chunks = stream_text(client.chat.completions.create(stream=True, **kw))
                return text, chunks[-1].choices[0].finish_reason, _ids(chunks[-1].choices[0])
            r = client.chat.completions.create(**kw)
            return r.choices[0].message.content, r.choices[0].finish_reason, _ids(r.choices[0])
        kw = dict(model="m", temperature=0, max_tokens=12, prompt=PROMPTS[i], extra_body=ids)
        if stream:
            chunks = list(client.completions.create(stream=True, **kw))
            return "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason, _ids(chunks[-1].choices[0])
        r = client.completions.create(**kw)
        return r.choices[0].text, r.choices[0].finish_reason, _ids(r.choices[0])

    alone = [ask(i) for i in range(16)]
    assert all(len(a[2]) == 12 for a in alone)
    assert len({tuple(a[2]) for a in alone}) == 16  # answers depend on the prompt
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda i: ask(i, concurrent=True), range(16)))
    assert together == alone
    m = tiny.metrics()
    assert m["chatglm3_sequences_active"] == 0 and m["chatglm3_prompt_tokens_cached_total"] > 0


def test_a_growing_conversation_pays_only_for_the_new_turn(tiny):
    client = tiny.client()
    conv = [{"role": "user", "content": "Tell me about the philosophy of people " * 4}]
    first = client.chat.completions.create(model="m", temperature=0, max_tokens=10, messages=conv)
    conv += [{"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "And then?"}]
    second = client.chat.completions.create(model="m", temperature=0, max_tokens=10, messages=conv)
    # reused up to the last multiple of PROMPT_ALIGN (prompts are cut at aligned positions only)
    assert second.usage.prompt_tokens_details.cached_tokens >= align_down(first.usage.prompt_tokens - 1)


def test_interleaved_conversations_each_pay_only_for_their_new_turn(tiny):
    # Two clients take turns; the other's finished turn does not evict one's conversation.
    client = tiny.client()
    convs = [[{"role": "system", "content": system},
              {"role": "user", "content": f"Tell me about {topic} " * 4}]
             for system, topic in (("Be terse.", "the philosophy of people"), ("Be kind.", "tokenizers"))]
    firsts = [client.chat.completions.create(model="m", temperature=0, max_tokens=10, messages=c) for c in convs]
    assert tiny.metrics()["chatglm3_prefixes_kept"] >= 2
    for conv, first in zip(convs, firsts):
        conv += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "And then?"}]
        second = client.chat.completions.create(model="m", temperature=0, max_tokens=10, messages=conv)
        assert second.usage.prompt_tokens_details.cached_tokens >= align_down(first.usage.prompt_tokens - 1)
    assert tiny.metrics()["chatglm3_prefix_tokens_kept"] > 0


# load, disconnects, shutdown ------------------------------------------------------------------

@pytest.fixture(scope="module")
def looping(fixtures, tmp_path_factory):
    """A model that never ends its turn, one sequence, one queue place."""
    server = Server(fixtures.path("scripted-loop"), tmp_path_factory.mktemp("loop"), "--parallel", "1",
                    "--queue", "1", "--ctx", str(LOOP_CTX))
    yield server
    assert server.stop() == 0, "".join(server.stderr)


# Long enough that the answer never ends while a test holds it open, on any machine.
LOOP_CTX = 16384


def _long_stream(server):
    stream = server.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "talk"}], stream=True, max_tokens=LOOP_CTX - 64,
        temperature=0)
    it = iter(stream)
    for _ in range(3):
        next(it)
    return stream


def test_a_client_that_disconnects_frees_its_sequence(looping):
    before = looping.metrics().get('chatglm3_requests_finished_total{reason="cancelled"}', 0)
    stream = _long_stream(looping)
    assert looping.metrics()["chatglm3_sequences_active"] == 1
    stream.close()
    looping.wait_metrics(lambda m: m["chatglm3_sequences_active"] == 0
                         and m.get('chatglm3_requests_finished_total{reason="cancelled"}', 0) == before + 1)


def test_a_full_queue_answers_429_with_retry_after_never_hangs(looping):
    running = _long_stream(looping)  # holds the only sequence
    client = looping.client()
    with ThreadPoolExecutor(1) as pool:
        queued = pool.submit(lambda: client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "wait"}], max_tokens=5, temperature=0))
        looping.wait_metrics(lambda m: m["chatglm3_queue_length"] == 1)
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "no room"}])
        err = _error(e, 429)
        assert err["code"] == "rate_limit_exceeded" and int(e.value.response.headers["retry-after"]) >= 1
        running.close()  # frees the sequence: the queued request runs
        assert queued.result(timeout=300).choices[0].finish_reason == "length"
    m = looping.metrics()
    assert m["chatglm3_requests_rejected_total"] >= 1 and m['chatglm3_http_responses_total{status="429"}'] >= 1


def test_sigterm_drains_in_flight_requests_and_exits_0(fixtures, tmp_path):
    server = Server(fixtures.path("scripted-loop"), tmp_path, "--parallel", "2", "--ctx", "1024")
    try:
        stream = server.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "talk"}], stream=True, max_tokens=200, temperature=0)
        it = iter(stream)
        first = next(it)
        server.proc.send_signal(__import__("signal").SIGTERM)
        rest = list(it)  # the answer goes on to its end
        chunks = [first] + rest
        assert chunks[-1].choices[0].finish_reason == "length"
        assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("Hello! I am ChatGLM3")
        assert server.proc.wait(120) == 0
        assert any("stopped" in line for line in server.stderr)
    finally:
        server.kill()


def test_a_non_loopback_host_without_a_key_is_refused(fixtures, tmp_path):
    r = subprocess.run([sys.executable, "-m", "chatglm3_cli", "serve", "-m", str(fixtures.path("scripted")),
                        "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True,
                       env=child_env(tmp_path), timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "--api-key" in r.stderr and "listening" not in r.stderr
    assert KEY not in r.stderr


def test_a_port_in_use_fails_at_once_with_its_exit_code(fixtures, tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "chatglm3_cli", "serve", "-m", str(fixtures.path("scripted")),
                            "--port", str(port)], capture_output=True, text=True,
                           env=child_env(tmp_path), timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 15 and f"127.0.0.1:{port}" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_queue_0_serves_free_sequences_and_refuses_the_rest(fixtures, tmp_path):
    server = Server(fixtures.path("scripted-loop"), tmp_path, "--parallel", "1", "--queue", "0", "--ctx", str(LOOP_CTX))
    try:
        client = server.client()
        ok = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}], max_tokens=3)
        assert ok.choices[0].finish_reason == "length"
        running = _long_stream(server)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "b"}], max_tokens=3)
        running.close()
    finally:
        assert server.stop() == 0
