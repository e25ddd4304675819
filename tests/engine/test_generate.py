"""Generation on the real llama.cpp: turns end where the model ends them, streams are exact."""
from __future__ import annotations

import pytest

from chatglm3_cli.engine.llama.context import PROMPT_ALIGN, align_down
from chatglm3_cli.engine.model import Model
from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.engine.sequence import AnswerShaper, Utf8Stream
from chatglm3_cli.errors import PromptTooLongError

GREEDY = SamplingParams(temperature=0)


def test_scripted_answer_exact_and_nothing_after_user(fixtures, scripted_model):
    side = fixtures.sidecar("scripted")
    gen = scripted_model.generate([Message("user", "Who are you?")], GREEDY)
    pieces = list(gen)
    r = gen.result
    assert r.text == side["answer"] == "Hello! I am ChatGLM3 🙂龘"
    assert "".join(pieces) == r.text
    assert side["leak"] not in r.text and "Leaked" not in "".join(pieces)
    assert r.finish_reason == "stop" and r.stop_token == 64795
    assert r.metadata == ""
    assert r.tokens == side["answer_ids"]  # the generated ids, without the stop token


def test_stream_never_splits_utf8(scripted_model):
    gen = scripted_model.generate([Message("user", "x")], GREEDY)
    pieces = list(gen)
    # 🙂 and 龘 arrive as 4 and 3 byte tokens: each must come out whole, never as U+FFFD.
    assert "\ufffd" not in "".join(pieces)
    assert "🙂" in "".join(pieces) and any("龘" in p for p in pieces)
    assert b"".join(p.encode() for p in pieces) == gen.result.text.encode()


def test_tool_call_metadata_and_observation_stop(fixtures):
    side = fixtures.sidecar("scripted-tool")
    with Model(fixtures.path("scripted-tool"), n_ctx=256) as m:
        r = m.chat([Message("user", "search Paris")], GREEDY)
    assert r.metadata == side["metadata"] == "search"
    assert r.text.strip() == side["answer"]
    assert r.finish_reason == "tool_calls" and r.stop_token == 64797
    assert "Leaked" not in r.text


def test_template_model_stops_on_files_eog(fixtures):
    side = fixtures.sidecar("template")
    with Model(fixtures.path("template"), n_ctx=256) as m:
        assert side["eog"] in m.stop_tokens
        r = m.chat([Message("user", "hi")], GREEDY)
    assert r.text == side["answer"]
    assert r.finish_reason == "stop" and r.stop_token == side["eog"]


def test_max_tokens_gives_length(scripted_model):
    r = scripted_model.chat([Message("user", "x")], GREEDY.with_(max_tokens=3))
    assert r.finish_reason == "length" and r.completion_tokens == 3
    assert r.text == "Hello!"  # "\n" (metadata line), "▁Hello", "!"


def test_context_full_gives_length(fixtures):
    with Model(fixtures.path("scripted-loop"), n_ctx=64) as m:
        r = m.chat([Message("user", "x")], GREEDY)
        assert r.finish_reason == "length"
        assert r.prompt_tokens + r.completion_tokens == m.n_ctx  # llama.cpp may round n_ctx up
        assert r.text.startswith("Hello! I am ChatGLM3 Hello!")


def test_prompt_too_long_is_clear(scripted_model):
    with pytest.raises(PromptTooLongError) as e:
        scripted_model.generate([Message("user", "word " * 2000)], GREEDY)
    assert e.value.n_ctx == 512 and e.value.n_prompt > 512
    assert "context holds 512" in e.value.message
    # the model is still usable afterwards
    assert scripted_model.chat([Message("user", "x")], GREEDY).text == "Hello! I am ChatGLM3 🙂龘"


def test_kv_cache_reuses_the_common_prefix(scripted_model):
    scripted_model.reset()
    history = [Message("system", "A long system prompt " * 10), Message("user", "first")]
    r1 = scripted_model.chat(history, GREEDY)
    assert r1.cached_tokens == 0 and r1.timings.prompt_tokens == r1.prompt_tokens
    history += [Message("assistant", r1.text), Message("user", "second")]
    r2 = scripted_model.chat(history, GREEDY)
    assert r2.cached_tokens > 30
    assert r2.timings.prompt_tokens == r2.prompt_tokens - r2.cached_tokens
    assert r2.text == r1.text


def test_same_prompt_twice_reuses_all_but_the_aligned_tail(scripted_model):
    msgs = [Message("user", "again, with some more words to make it longer")]
    scripted_model.chat(msgs, GREEDY)
    r = scripted_model.chat(msgs, GREEDY)
    # the reused part ends at a multiple of PROMPT_ALIGN below the last token (always evaluated)
    assert r.cached_tokens == align_down(r.prompt_tokens - 1) > 0
    assert r.timings.prompt_tokens == r.prompt_tokens - r.cached_tokens <= PROMPT_ALIGN
    assert r.text == "Hello! I am ChatGLM3 🙂龘"


def test_closed_stream_keeps_partial_result_and_cache(scripted_model):
    scripted_model.reset()
    gen = scripted_model.generate([Message("user", "stop early")], GREEDY)
    assert next(gen) == "Hello"
    gen.close()
    r = gen.result
    assert r.finish_reason == "interrupted" and r.text == "Hello"
    assert r.tokens == gen.result.tokens[:2] and len(r.tokens) == 2  # "\n", "▁Hello"
    # closed at a yield: the cache is still exact, so the same prompt reuses all but one token
    again = scripted_model.chat([Message("user", "stop early")], GREEDY)
    assert again.cached_tokens == align_down(again.prompt_tokens - 1)


def test_interrupt_inside_llama_call_resets_cache(scripted_model, monkeypatch):
    scripted_model.reset()
    gen = scripted_model.generate([Message("user", "ctrl-c")], GREEDY)
    next(gen)
    ctx = scripted_model._ctx

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ctx, "decode_one", boom)
    with pytest.raises(KeyboardInterrupt):
        next(gen)
    assert scripted_model._cache.tokens == []
    assert gen.result.finish_reason == "interrupted"


def test_greedy_is_deterministic_and_prompt_dependent(tiny_model):
    p = GREEDY.with_(max_tokens=24)
    a = tiny_model.chat([Message("user", "The philosophy of people")], p)
    tiny_model.reset()
    b = tiny_model.chat([Message("user", "The philosophy of people")], p)
    c = tiny_model.chat([Message("user", "今天天气很好")], p)
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens


def test_seeded_sampling_is_reproducible(tiny_model):
    p = SamplingParams(temperature=1.0, top_p=0.95, top_k=40, seed=7, max_tokens=24)
    runs = [tiny_model.chat([Message("user", "hello")], p).tokens for _ in range(2)]
    assert runs[0] == runs[1]
    other = tiny_model.chat([Message("user", "hello")], p.with_(seed=8)).tokens
    assert other != runs[0]


def test_repeat_penalty_changes_sampling(tiny_model):
    base = GREEDY.with_(max_tokens=200)  # long enough for the random model to repeat itself
    plain = tiny_model.chat([Message("user", "repeat")], base).tokens
    pen = tiny_model.chat([Message("user", "repeat")], base.with_(repeat_penalty=1.5)).tokens
    assert len(set(plain)) < len(plain)  # greedy repeats some tokens...
    assert pen != plain and len(set(pen)) > len(set(plain))  # ...the penalty repeats fewer


# --- pure units -----------------------------------------------------------------------------

def test_utf8_stream_holds_partial_characters():
    s = Utf8Stream()
    data = "a🙂b".encode()
    out = [s.feed(data[i:i + 1]) for i in range(len(data))]
    assert out == ["a", "", "", "", "🙂", "b"]
    assert s.finish() == ""
    bad = Utf8Stream()
    assert bad.feed(b"\xf0\x9f") == "" and bad.finish() == "\ufffd"


@pytest.mark.parametrize("pieces,meta,text", [
    (["\n", " Hello", " world", "  ", "\n"], "", "Hello world"),
    (["", "\n\n  ", "x", " ", "y", " "], "", "x y"),
    (["get_", "weather", "\n", "```python\n", "tool_call()\n```"], "get_weather", "```python\ntool_call()\n```"),
    (["no newline at all"], "", "no newline at all"),
])
def test_answer_shaper(pieces, meta, text):
    sh = AnswerShaper(metadata_line=True)
    out = "".join(sh.feed(p) for p in pieces) + sh.finish()
    assert out == text and sh.metadata == meta


def test_sampling_params_validation():
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError):
        SamplingParams(temperature=-1)
    assert SamplingParams().temperature == 0.8 and SamplingParams().top_p == 0.8


def test_a_first_line_longer_than_any_tool_name_streams_as_content():
    """The metadata line is held back only while it could still be a tool name (<= 64 chars,
    OpenAI's limit for function names): a model that never writes "\\n" streams anyway."""
    sh = AnswerShaper(metadata_line=True)
    assert sh.feed("get_current_weather") == ""  # could be a tool name: held
    assert sh.feed("\n{}") == "{}" and sh.metadata == "get_current_weather"
    sh = AnswerShaper(metadata_line=True)
    pieces = ["word " * 6] * 3  # 90 characters, no newline
    out = [sh.feed(p) for p in pieces]
    assert out[:2] == ["", ""] and out[2] and sh.metadata == ""  # past 64 characters: content
    assert "".join(out) + sh.finish() == ("word " * 18).strip()
