"""Whole jobs through the real llama.cpp on the generated fixtures (library level)."""
from __future__ import annotations

import contextlib
import io
import json

import pytest

from chatglm3_cli.batch.jobs import parse_jobs
from chatglm3_cli.batch.progress import BatchProgress
from chatglm3_cli.batch.runner import Settings, run_batch
from chatglm3_cli.engine.sampling import SamplingParams

ANSWER = "Hello! I am ChatGLM3 🙂龘"
LABELS = ["positive", "negative", "neutral"]
# Bounded values only: a free-form string lets a model that never closes it run to max_tokens.
SCHEMA = {"type": "object",
          "properties": {"mood": {"enum": ["happy", "sad"]}, "loud": {"type": "boolean"},
                         "stars": {"type": "integer", "minimum": 1, "maximum": 5}},
          "required": ["mood", "loud", "stars"], "additionalProperties": False}

TASKS = [
    {"id": "chat", "task": "chat", "messages": [{"role": "user", "content": "hi"}]},
    {"id": "generate", "task": "generate", "prompt": "Write a haiku"},
    {"id": "translate", "task": "translate", "text": "Hello", "to": "French"},
    {"id": "summarize", "task": "summarize", "text": "A long text.", "length": 20},
    {"id": "qa", "task": "qa", "question": "Who?", "context": "Ann went home."},
    {"id": "rewrite", "task": "rewrite", "text": "hey", "instruction": "formal"},
    {"id": "classify", "task": "classify", "text": "I love it", "labels": LABELS},
    {"custom_id": "openai", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40}},
]


def jsonl(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def borrowed(model):
    """A session fixture model that run_batch may 'open' and 'close' without closing it."""
    return lambda: contextlib.nullcontext(model)


def run(model, records, *, out=None, parallel=4, ctx=None, progress=None, **kw):
    jf = parse_jobs(jsonl(records), "jobs.jsonl")
    buf = io.StringIO()
    s = run_batch(jf, output=out, stdout=None if out else buf, model_path=str(model.path),
                  open_model=borrowed(model), progress=progress,
                  settings=Settings(params=SamplingParams(temperature=0), n_parallel=parallel,
                                    n_ctx=ctx, **kw))
    text = out.read_text() if out else buf.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    return s, lines


def by_id(lines):
    return {(line.get("custom_id") or line["id"]): line for line in lines}


def test_every_task_on_the_scripted_model(scripted_model, fixtures):
    # (extract has its own test below: constrained decoding on 65k tokens costs time)
    n_answer = len(fixtures.sidecar("scripted")["answer_ids"])
    s, lines = run(scripted_model, TASKS)
    got = by_id(lines)
    assert sorted(got) == sorted(r.get("id") or r.get("custom_id") for r in TASKS)
    for task in ("chat", "generate", "translate", "summarize", "qa", "rewrite"):
        line = got[task]
        assert line["task"] == task and line["error"] is None
        assert line["output"] == ANSWER and line["finish_reason"] == "stop"
        assert line["usage"]["completion_tokens"] == n_answer and line["timings"]["generated_tokens"] == n_answer
        assert set(line) == {"id", "task", "output", "finish_reason", "usage", "timings", "error"}
    assert got["classify"]["output"] in LABELS
    assert s.total == 8 and (s.succeeded, s.failed) == (8, 0)


def test_classify_output_is_always_one_of_the_labels(scripted_model, tiny_model):
    records = [{"id": f"k{i}", "task": "classify", "text": f"record {i} says this and that", "labels": LABELS}
               for i in range(4)]
    for model in (scripted_model, tiny_model):  # the scripted one wants to say "Hello!"
        s, lines = run(model, records)
        assert s.failed == 0, lines
        assert all(line["output"] in LABELS and line["error"] is None for line in lines)


def test_extract_output_is_always_json_valid_against_the_schema(scripted_model, tiny_model):
    jsonschema = pytest.importorskip("jsonschema")
    records = [{"id": f"e{i}", "task": "extract", "text": f"record {i}", "schema": SCHEMA, "max_tokens": 64}
               for i in range(2)]
    for model in (scripted_model, tiny_model):
        s, lines = run(model, records)
        assert s.failed == 0, lines
        for line in lines:
            jsonschema.validate(line["output"], SCHEMA)


def test_openai_shape_in_and_out(scripted_model, fixtures):
    n_answer = len(fixtures.sidecar("scripted")["answer_ids"])
    s, lines = run(scripted_model, [TASKS[-1]])
    (line,) = lines
    assert set(line) == {"id", "custom_id", "response", "error"}
    assert line["custom_id"] == "openai" and line["id"].startswith("batch_req_") and line["error"] is None
    resp = line["response"]
    assert resp["status_code"] == 200 and resp["request_id"]
    body = resp["body"]
    assert body["object"] == "chat.completion" and body["model"]
    assert body["choices"][0]["message"] == {"role": "assistant", "content": ANSWER}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == n_answer
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + n_answer


def test_openai_json_schema_response_format(tiny_model):
    rec = {"custom_id": "j", "method": "POST", "url": "/v1/chat/completions",
           "body": {"messages": [{"role": "user", "content": "rate it"}], "max_tokens": 64,
                    "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA}}}}
    s, (line,) = run(tiny_model, [rec])
    assert line["error"] is None, line
    content = line["response"]["body"]["choices"][0]["message"]["content"]
    assert isinstance(content, str) and json.loads(content)["mood"] in ("happy", "sad")


def test_a_record_too_long_for_the_context_fails_alone(scripted_model):
    records = [{"id": "long", "task": "generate", "prompt": "word " * 400},
               {"id": "short", "task": "generate", "prompt": "hi"}]
    s, lines = run(scripted_model, records, ctx=128)
    got = by_id(lines)
    assert got["long"]["error"]["type"] == "PromptTooLongError" and got["long"]["output"] is None
    assert got["short"]["output"] == ANSWER and got["short"]["error"] is None
    assert (s.succeeded, s.failed) == (1, 1)


def test_an_answer_that_does_not_parse_is_a_record_error(scripted_model):
    # max_tokens 3 cuts the JSON short: the record fails, with its usage, and the job goes on.
    records = [{"id": "cut", "task": "extract", "text": "x", "schema": SCHEMA, "max_tokens": 3},
               {"id": "fine", "task": "generate", "prompt": "hi"}]
    s, lines = run(scripted_model, records)
    got = by_id(lines)
    assert got["cut"]["error"]["type"] == "OutputFormatError"
    # not just "not valid JSON (Unterminated string...)": why it is not
    assert got["cut"]["error"]["message"].startswith("the answer was cut off at max_tokens (3 tokens)")
    assert got["cut"]["finish_reason"] == "length" and got["cut"]["usage"]["completion_tokens"] == 3
    assert got["fine"]["error"] is None


def test_invalid_records_become_error_lines(scripted_model):
    jf_records = [TASKS[0], {"id": "u", "task": "poem"}]
    s, lines = run(scripted_model, jf_records)
    got = by_id(lines)
    assert got["u"]["error"]["type"] == "InvalidRecordError" and "line 2" in got["u"]["error"]["message"]
    assert got["chat"]["error"] is None and (s.succeeded, s.failed) == (1, 1)


def test_shared_instructions_are_evaluated_once(tiny_model):
    records = [{"id": f"t{i}", "task": "translate", "text": f"sentence number {i}", "to": "German",
                "max_tokens": 2} for i in range(8)]
    s, lines = run(tiny_model, records)
    assert s.failed == 0
    # Each prompt is ~100 tokens of which only the last few differ.
    assert s.prompt_tokens > 8 * 80
    assert s.evaluated_prompt_tokens < s.prompt_tokens / 3


def test_resume_skips_answered_ids_without_loading_the_model(scripted_model, tmp_path):
    out = tmp_path / "r.jsonl"
    records = [{"id": f"g{i}", "task": "generate", "prompt": f"p{i}", "max_tokens": 2} for i in range(3)]
    run(scripted_model, records[:2], out=out)
    s, lines = run(scripted_model, records, out=out)
    # max_tokens 2 cuts every answer: counted apart from the complete ones, on resume too
    assert (s.skipped, s.done_now, s.succeeded, s.cut_off, s.cut_off_now) == (2, 1, 0, 3, 1)
    assert sorted(by_id(lines)) == ["g0", "g1", "g2"] and len(lines) == 3
    jf = parse_jobs(jsonl(records), "jobs.jsonl")

    def no_model():
        raise AssertionError("the model must not be opened when nothing is left to do")

    s = run_batch(jf, output=out, stdout=None, model_path=str(scripted_model.path), open_model=no_model,
                  settings=Settings(params=SamplingParams(temperature=0)))
    assert (s.skipped, s.done_now, s.succeeded, s.cut_off) == (3, 0, 0, 3)
    assert not (tmp_path / ".r.jsonl.lock").exists()  # the lock file goes with the run


class InterruptAfter(BatchProgress):
    def __init__(self, n):
        self.n = n

    def advance(self, ok, key, error, summary):
        if summary.done_now >= self.n:
            raise KeyboardInterrupt


def test_ctrl_c_keeps_complete_lines_and_resumes(scripted_model, tmp_path):
    out = tmp_path / "r.jsonl"
    records = [{"id": f"g{i}", "task": "generate", "prompt": f"p{i}", "max_tokens": 2} for i in range(8)]
    s, lines = run(scripted_model, records, out=out, progress=InterruptAfter(3))
    assert s.interrupted and len(lines) == 3  # every line complete JSON
    s, lines = run(scripted_model, records, out=out)
    assert not s.interrupted and (s.skipped, s.done_now) == (3, 5)
    assert sorted(by_id(lines)) == sorted(r["id"] for r in records) and len(lines) == 8


def test_records_without_max_tokens_get_a_cap_per_task(fixtures):
    """A model that never ends its turn: each record stops at its task's cap, and the summary
    counts the answers cut off apart from the complete ones."""
    from chatglm3_cli.batch import tasks
    from chatglm3_cli.engine.model import Model

    text = "The cat sleeps on the warm roof."
    records = [{"id": "tr", "task": "translate", "text": text, "to": "French"},
               {"id": "qa", "task": "qa", "question": "Where?", "context": text},
               {"id": "own", "task": "translate", "text": text, "to": "French", "max_tokens": 5}]
    with Model(fixtures.path("scripted-loop"), n_ctx=2048) as loop:
        s, lines = run(loop, records, ctx=1024)
        n_text = len(loop.tokenize(text))
        got = by_id(lines)
        assert got["tr"]["finish_reason"] == "length" and got["tr"]["error"] is None
        assert got["tr"]["usage"]["completion_tokens"] == 3 * n_text + 32  # translate's own rule
        assert got["qa"]["usage"]["completion_tokens"] == tasks.default_max_tokens(
            "qa", records[1], lambda t: len(loop.tokenize(t))) == 512
        assert got["own"]["usage"]["completion_tokens"] == 5  # the record's max_tokens wins
        assert (s.succeeded, s.cut_off, s.failed) == (0, 3, 0)
        # the job's --max-tokens replaces the defaults too
        jf = parse_jobs(jsonl(records[:1]), "jobs.jsonl")
        buf = io.StringIO()
        run_batch(jf, output=None, stdout=buf, model_path=str(loop.path), open_model=borrowed(loop),
                  settings=Settings(params=SamplingParams(temperature=0, max_tokens=7)))
        assert json.loads(buf.getvalue())["usage"]["completion_tokens"] == 7


def test_default_caps_leave_room_for_complete_answers():
    from chatglm3_cli.batch.tasks import default_max_tokens
    from chatglm3_cli.engine.sampling import DEFAULT_ANSWER_CAP

    words = lambda t: len(t.split())  # noqa: E731 - a stand-in tokenizer for the arithmetic
    assert default_max_tokens("translate", {"text": "a b c"}, words) == 41
    assert default_max_tokens("summarize", {"text": "a " * 5000, "length": 50}, words) == 214
    assert default_max_tokens("summarize", {"text": "a " * 5000}, words) == DEFAULT_ANSWER_CAP
    assert default_max_tokens("classify", {"text": "x", "labels": ["a", "b c d"]}, words) == 19
    for task in ("generate", "chat"):
        assert default_max_tokens(task, {}, words) == DEFAULT_ANSWER_CAP


def test_the_lock_file_is_removed_and_a_held_lock_refuses_a_second_taker(tmp_path):
    from chatglm3_cli.batch.results import ExclusiveLock

    path = tmp_path / ".r.jsonl.lock"
    a, b = ExclusiveLock(path), ExclusiveLock(path)
    assert a.acquire() and path.exists()
    assert not b.acquire()
    a.release()
    assert not path.exists()
    assert b.acquire()
    b.release()
    assert not path.exists()


def test_a_bug_while_preparing_a_record_is_not_reported_as_bad_input(scripted_model, monkeypatch):
    """A fault of ours (here a KeyError from a broken grammar builder) is an InternalError line
    with status 500 in OpenAI's shape; the records after it still run."""
    from chatglm3_cli.batch import jobs

    real = jobs.Job.grammar

    def broken(self):
        if self.openai or self.record.get("id") == "bug":
            raise KeyError("labels")
        return real(self)

    monkeypatch.setattr(jobs.Job, "grammar", broken)
    records = [{"id": "bug", "task": "generate", "prompt": "hi"}, {"id": "ok", "task": "generate", "prompt": "hi"}]
    s, lines = run(scripted_model, records)
    got = by_id(lines)
    assert got["bug"]["error"]["type"] == "InternalError" and "KeyError" in got["bug"]["error"]["message"]
    assert got["ok"]["output"] == ANSWER
    line = {"custom_id": "bug", "method": "POST", "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "hi"}]}}
    _, lines = run(scripted_model, [line])
    assert lines[0]["response"]["status_code"] == 500, lines[0]  # not 400: the request was fine
