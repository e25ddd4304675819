"""Ollama's API on `chatglm3 serve`, driven by the official `ollama` Python client against a real
server process (plain HTTP where the client hides the wire)."""
from __future__ import annotations

import json

import httpx
import pytest

from .serverproc import KEY, Server
from .test_server import ANSWER, LOOP_CTX, SCHEMA, SEARCH

ollama = pytest.importorskip("ollama")


def client(server, key=KEY):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return ollama.Client(host=server.url, headers=headers, timeout=300, trust_env=False)


def model_id(fixtures, kind):
    return fixtures.path(kind).stem


HELLO = [{"role": "user", "content": "Hello there"}]


def test_chat_streamed_or_not_equals_the_openai_answer(scripted, fixtures):
    c = client(scripted)
    resp = c.chat(model=model_id(fixtures, "scripted"), messages=HELLO, options={"temperature": 0}, stream=False)
    assert resp.message.role == "assistant" and resp.message.content == ANSWER
    assert resp.done and resp.done_reason == "stop"
    assert resp.eval_count == len(fixtures.sidecar("scripted")["answer_ids"])
    assert resp.prompt_eval_count > 0 and resp.total_duration >= resp.eval_duration > 0
    openai_answer = scripted.client().chat.completions.create(model="m", messages=HELLO, temperature=0)
    assert openai_answer.usage.prompt_tokens == resp.prompt_eval_count

    parts = list(c.chat(model="any-name", messages=HELLO, options={"temperature": 0}, stream=True, keep_alive="5m"))
    assert "".join(p.message.content for p in parts) == ANSWER
    assert len([p for p in parts if p.message.content]) > 1  # it streamed, piece by piece
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count == resp.eval_count


def test_generate_streamed_or_not_options_and_system(scripted):
    c = client(scripted)
    resp = c.generate(model="m", prompt="Hello there", options={"temperature": 0, "top_k": 5, "repeat_penalty": 1.1,
                                                              "seed": 7, "num_ctx": 256}, stream=False)
    assert resp.response == ANSWER and resp.done and resp.done_reason == "stop"
    parts = list(c.generate(model="m", prompt="Hello there", system="Be brief.", options={"temperature": 0},
                            stream=True))
    assert "".join(p.response for p in parts) == ANSWER and parts[-1].done
    short = c.generate(model="m", prompt="Hello there", options={"temperature": 0, "num_predict": 3}, stream=False)
    assert short.done_reason == "length" and short.eval_count == 3
    raw = c.generate(model="m", prompt="Hello", raw=True, options={"temperature": 0, "num_predict": 4}, stream=False)
    assert raw.done and raw.eval_count <= 4
    # An empty prompt is how Ollama clients load a model: answered at once.
    assert c.generate(model="m", prompt="").done_reason == "load"
    assert c.generate(model="m", prompt="", keep_alive=0).done_reason == "unload"  # and ours stays loaded
    assert c.chat(model="m", messages=[]).done_reason == "load"


def test_tags_show_ps_and_version(scripted, fixtures):
    c = client(scripted)
    name = model_id(fixtures, "scripted")
    (tag,) = c.list().models
    assert tag.model == name and tag.size == fixtures.path("scripted").stat().st_size
    assert tag.details.format == "gguf" and tag.details.family == "chatglm3"
    shown = c.show(name)
    assert shown.modelinfo["chatglm.context_length"] == 256
    assert "tools" in shown.capabilities and "temperature 0.8" in shown.parameters
    assert shown.template and shown.details.family == "chatglm3"
    assert c.show(f"{name}:latest").details.family == "chatglm3"
    (running,) = c.ps().models
    assert running.model == name and running.context_length == 256
    with httpx.Client(base_url=scripted.url, timeout=60, trust_env=False) as h:
        assert h.get("/api/version").json()["version"]  # open, like /health: clients probe it


def test_errors_come_in_ollamas_shape_and_the_server_keeps_serving(scripted):
    with pytest.raises(ollama.ResponseError) as e:
        client(scripted, key=None).chat(model="m", messages=HELLO, stream=False)
    assert e.value.status_code == 401 and "API key" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client(scripted).show("no-such-model")
    assert e.value.status_code == 404 and "no-such-model" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client(scripted).chat(model="m", messages=HELLO, options={"num_predict": 100000}, stream=False)
    assert e.value.status_code == 400 and "at most 256" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client(scripted).generate(model="m", prompt="x", format={"type": "nonsense"}, stream=False)
    assert e.value.status_code == 400 and "JSON Schema" in e.value.error
    with httpx.Client(base_url=scripted.url, timeout=60, trust_env=False,
                      headers={"Authorization": f"Bearer {KEY}"}) as h:
        r = h.post("/api/chat", content=b"{not json")
        assert r.status_code == 400 and set(r.json()) == {"error"}
        r = h.post("/api/chat", json={"messages": HELLO, "options": {"top_k": -1}})
        assert r.status_code == 400 and "top_k" in r.json()["error"]
        r = h.post("/api/generate", json={"prompt": "x", "images": ["aGk="]})
        assert r.status_code == 400 and "images" in r.json()["error"]
    assert client(scripted).chat(model="m", messages=HELLO, options={"temperature": 0},
                                 stream=False).message.content == ANSWER


def test_a_tool_call_streamed_or_not_and_its_result_going_back(fixtures, tmp_path):
    server = Server(fixtures.path("scripted-tool"), tmp_path, "--parallel", "2", "--ctx", "512")
    try:
        c = client(server)
        msgs = [{"role": "user", "content": "Weather in Paris?"}]
        resp = c.chat(model="m", messages=msgs, tools=[SEARCH], options={"temperature": 0}, stream=False)
        (call,) = resp.message.tool_calls
        assert call.function.name == "search" and call.function.arguments == {"city": "Paris"}
        assert not resp.message.content

        parts = list(c.chat(model="m", messages=msgs, tools=[SEARCH], options={"temperature": 0}, stream=True))
        calls = [tc for p in parts for tc in (p.message.tool_calls or [])]
        assert [(tc.function.name, tc.function.arguments) for tc in calls] == [("search", {"city": "Paris"})]
        assert not "".join(p.message.content or "" for p in parts) and parts[-1].done

        # The call and the tool's result go back in, in Ollama's shape (arguments as an object).
        follow = msgs + [{"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "search", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": '{"temp": 21}', "tool_name": "search"}]
        again = c.chat(model="m", messages=follow, tools=[SEARCH], options={"temperature": 0}, stream=False)
        assert again.done and again.prompt_eval_count > resp.prompt_eval_count
    finally:
        assert server.stop() == 0


def test_json_format_and_schema_answers(fixtures, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    server = Server(fixtures.path("tiny"), tmp_path, "--parallel", "2", "--ctx", "512")
    try:
        c = client(server)
        for i in range(2):
            resp = c.chat(model="m", messages=[{"role": "user", "content": f"review {i}"}], format=SCHEMA,
                          options={"temperature": 0, "num_predict": 64}, stream=False)
            jsonschema.validate(json.loads(resp.message.content), SCHEMA)
        gen = c.generate(model="m", prompt="review", format=SCHEMA, options={"temperature": 0, "num_predict": 64},
                         stream=False)
        jsonschema.validate(json.loads(gen.response), SCHEMA)
        free = c.chat(model="m", messages=[{"role": "user", "content": "an object"}], format="json",
                      options={"temperature": 0, "num_predict": 64}, stream=False)
        if free.done_reason == "stop":  # a random model may not close a free-form object
            assert isinstance(json.loads(free.message.content), dict)
    finally:
        assert server.stop() == 0


def test_the_same_queue_a_full_one_answers_429_in_ollamas_shape(fixtures, tmp_path):
    """One sequence, no queue: while an Ollama stream holds it, the next request is refused."""
    server = Server(fixtures.path("scripted-loop"), tmp_path, "--parallel", "1", "--queue", "0",
                    "--ctx", str(LOOP_CTX))
    try:
        c = client(server)
        stream = iter(c.chat(model="m", messages=[{"role": "user", "content": "talk"}],
                             options={"temperature": 0, "num_predict": LOOP_CTX - 64}, stream=True))
        assert next(stream).message.content is not None
        with httpx.Client(base_url=server.url, timeout=60, trust_env=False,
                          headers={"Authorization": f"Bearer {KEY}"}) as h:
            r = h.post("/api/generate", json={"prompt": "hi", "stream": False})
        assert r.status_code == 429 and r.headers["retry-after"] and set(r.json()) == {"error"}
        stream.close()  # hanging up frees the sequence: the next request is served
        server.wait_metrics(lambda m: m["chatglm3_sequences_active"] == 0)
        assert c.generate(model="m", prompt="hi", options={"num_predict": 2}, stream=False).eval_count == 2
    finally:
        assert server.stop() == 0
