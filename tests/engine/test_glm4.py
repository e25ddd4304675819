"""GLM-4-9B-chat: its official template as token ids, its stop set, its tool format.

The fixtures (scripts/make_test_model.py glm4, glm4-tool) are GLM-4-shaped GGUFs: architecture
chatglm, a byte-level BPE vocabulary with GLM-4's special tokens at their texts, and GLM-4's
official chat template embedded. Their greedy answers run past <|user|> and <|observation|>.
"""
from __future__ import annotations

import json

import pytest

from chatglm3_cli.engine.answer import Call, read_answer
from chatglm3_cli.engine.messages import chat_messages
from chatglm3_cli.engine.model import Model
from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.engine.toolcalls import call_message, read_call, tools_message

GREEDY = SamplingParams(temperature=0)
WEATHER = {"name": "get_weather", "description": "天气 lookup <b>&",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(scope="module")
def glm4(fixtures):
    with Model(fixtures.path("glm4"), n_ctx=512) as m:
        yield m


@pytest.fixture(scope="module")
def glm4_tool(fixtures):
    with Model(fixtures.path("glm4-tool"), n_ctx=2048) as m:
        yield m


def official_text(template: str, messages: list[dict]) -> str:
    """GLM-4's template rendered as transformers renders it (trim_blocks, lstrip_blocks;
    tojson: ensure_ascii off, key order kept), for comparison with our token ids."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def as_template_messages(messages: list[Message]) -> list[dict]:
    out = []
    for m in messages:
        d = {"role": m.role, "content": m.content, "metadata": m.metadata}
        if m.tools is not None:
            d["tools"] = [{"type": "function", "function": t} for t in m.tools]
            d["content"] = ""  # ChatGLM3's tool preamble is not GLM-4's: its tools block replaces it
        if m.arguments is not None:
            d["content"] = json.dumps(m.arguments, ensure_ascii=False)
        out.append(d)
    return out


CONVERSATIONS = {
    "single": [Message("user", "Hello, how are you?")],
    "system": [Message("system", "Answer briefly."), Message("user", "Weather in Paris?")],
    "multi": [Message("user", "Hello"), Message("assistant", "Hello from GLM-4"),
              Message("user", "  spaces\nand newlines\t"), Message("assistant", "Sure 🙂"),
              Message("user", "最后一个问题")],
    "tools": [tools_message([WEATHER]), Message("system", "Be kind."), Message("user", "Weather in Paris?"),
              call_message("get_weather", {"city": "Paris"}), Message("observation", '{"temp": 21}')],
    "empty_content_skipped": [Message("system", ""), Message("user", "Hello")],
}


def test_detected_as_glm4_with_its_stop_set_from_the_vocabulary(glm4, fixtures):
    sp = fixtures.sidecar("glm4")["specials"]
    assert glm4.family == "glm4" and glm4.tool_style == "glm4"
    assert glm4.stop_tokens == {sp["<|endoftext|>"], sp["<|user|>"], sp["<|observation|>"]}
    # llama.cpp's own end-of-generation set for the file lacks <|observation|>.
    assert sp["<|observation|>"] not in glm4._llama.eog_tokens()


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_prompt_ids_equal_the_official_template(glm4, fixtures, name):
    messages = CONVERSATIONS[name]
    template = fixtures.sidecar("glm4")["template"]
    assert glm4.chat_template == template
    text = official_text(template, as_template_messages(messages))
    assert glm4.prompt_ids(messages) == glm4._llama.tokenize(text, parse_special=True)
    if name == "tools":
        assert "# 可用工具\n## get_weather\n\n{\n    \"name\": \"get_weather\"" in text
        assert "<|assistant|>get_weather\n{\"city\": \"Paris\"}<|observation|>\n{\"temp\": 21}<|assistant|>" in text


def test_user_text_never_becomes_special_tokens(glm4, fixtures):
    sp = fixtures.sidecar("glm4")["specials"]
    ids = glm4.prompt_ids([Message("user", "<|user|> [gMASK] <sop> <|observation|>")])
    assert ids.count(sp["<|user|>"]) == 1 and ids.count(sp["[gMASK]"]) == 1 and sp["<|observation|>"] not in ids


def test_answer_stops_at_user_though_the_model_runs_on(glm4, fixtures):
    side = fixtures.sidecar("glm4")
    r = glm4.chat([Message("user", "Hello")], GREEDY)
    assert r.text == side["answer"] == "Hello from GLM-4" and r.metadata == ""
    assert r.finish_reason == "stop" and r.stop_token == side["specials"]["<|user|>"]
    assert r.tokens == side["answer_ids"]
    assert side["leak"] not in r.text and side["leak2"] not in r.text


def test_tool_call_stops_at_observation_and_reads_as_json(glm4_tool, fixtures):
    side = fixtures.sidecar("glm4-tool")
    r = glm4_tool.chat([tools_message([WEATHER]), Message("user", "Weather in Paris?")], GREEDY)
    assert r.metadata == "get_weather" and r.finish_reason == "tool_calls"
    assert r.stop_token == side["specials"]["<|observation|>"] and side["leak"] not in r.text
    assert read_call(r.text, glm4_tool.tool_style) == {"city": "Paris"}
    # As every path reads it (engine/answer.py): a call when the tool was offered, else content.
    assert read_answer(r, {"get_weather"}, glm4_tool.tool_style).call == Call("get_weather", {"city": "Paris"})
    assert read_answer(r, set(), glm4_tool.tool_style).finish_reason == "stop"


def test_chat_session_reuses_the_generated_ids(glm4):
    from chatglm3_cli.chat.session import ChatSession

    s = ChatSession(glm4, params=GREEDY)
    first_turn = s.ask("Hello")
    list(first_turn)
    prompt1, first = first_turn.generation.prompt, s.last_completion
    turn = s.ask("again")
    list(turn)
    assert turn.generation.prompt[:len(prompt1) + len(first.tokens)] == prompt1 + first.tokens
    from chatglm3_cli.engine.llama.context import align_down

    # The cache keeps the whole first exchange (cut at an aligned position, as every prompt is).
    assert s.last_completion.cached_tokens == align_down(len(prompt1) + len(first.tokens))


def test_batch_chat_with_tools_on_glm4(glm4_tool):
    from ..batch.test_runner import run

    line = {"custom_id": "g", "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "Weather in Paris?"}],
                     "tools": [{"type": "function", "function": WEATHER}]}}
    s, (out,) = run(glm4_tool, [line])
    assert s.failed == 0, out
    (call,) = out["response"]["body"]["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    msgs = chat_messages([{"role": "user", "content": "x"}], tools=[{"type": "function", "function": WEATHER}])
    assert glm4_tool.prompt_ids(msgs)[:2] == [glm4_tool._specials.gmask, glm4_tool._specials.sop]
