"""The parallel decoder: same answers as one sequence, shared prefixes evaluated once."""
from __future__ import annotations

import pytest

from chatglm3_cli.engine.decoder import DecodeRequest, ParallelDecoder
from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.errors import GrammarError, PromptTooLongError

GREEDY = SamplingParams(temperature=0, max_tokens=24)
TEXTS = ["The philosophy of people", "Hello world", "今天天气很好", "A sophisticated tokenizer",
         "Numbers 1 2 3", "Line one\nLine two", "Emoji 🙂 here", "short", "学而时习之", "x"]
SYSTEM = ("You are a translator. Translate the user's text into Chinese. Keep the Markdown "
          "structure, keep code and URLs unchanged, answer with the translation only.")


def _requests(system=SYSTEM):
    return [DecodeRequest(str(i), messages=[Message("system", system), Message("user", t)], params=GREEDY)
            for i, t in enumerate(TEXTS)]


@pytest.mark.parametrize("n_parallel", [2, 4])
def test_parallel_equals_sequential_at_temperature_0(tiny_model, n_parallel):
    outputs = {}
    for n in (1, n_parallel):
        with ParallelDecoder(tiny_model, n_parallel=n, n_ctx=512) as d:
            results = list(d.run(_requests()))
        assert sorted(r.key for r in results) == sorted(str(i) for i in range(len(TEXTS)))
        assert all(r.error is None for r in results)
        outputs[n] = {r.key: r.completion.tokens for r in results}
    assert outputs[1] == outputs[n_parallel]
    # and both equal the single-sequence engine
    tiny_model.reset()
    for i, t in enumerate(TEXTS[:4]):
        ref = tiny_model.chat([Message("system", SYSTEM), Message("user", t)], GREEDY)
        assert ref.tokens == outputs[n_parallel][str(i)]
    # outputs depend on the prompt
    assert len({tuple(v) for v in outputs[1].values()}) > len(TEXTS) // 2


def test_shared_prefix_is_evaluated_once(tiny_model):
    prefix = tiny_model.tokenize("instructions " * 150)[:150]
    # each record's own part starts with a distinct token, so exactly the 154 tokens are shared
    suffixes = [[300 + i] + tiny_model.tokenize(f" record {i} says {t}") for i, t in enumerate(TEXTS + TEXTS[:6])]
    assert len(suffixes) == 16
    reqs = [DecodeRequest(str(i), prompt_ids=[64790, 64792, 64794] + prefix + [64795] + s + [64796],
                          params=GREEDY) for i, s in enumerate(suffixes)]
    with ParallelDecoder(tiny_model, n_parallel=4, n_ctx=512) as d:
        results = {r.key: r.completion for r in d.run(reqs)}
        stats = d.stats
    shared = 3 + 150 + 1  # [gMASK] sop <|system|> + prefix + <|user|>
    unique = sum(len(s) + 1 for s in suffixes)
    assert stats.prompt_tokens == 16 * shared + unique
    assert stats.evaluated_prompt_tokens == shared + unique  # the 154 shared tokens once, not 16 times
    assert all(results[str(i)].cached_tokens == shared for i in range(16))
    # sharing changes nothing in the answers
    for i in (0, 7, 15):
        tiny_model.reset()
        ref = tiny_model.generate(prompt_ids=reqs[i].prompt_ids, params=GREEDY).complete()
        assert ref.tokens == results[str(i)].tokens


def test_scripted_answers_in_parallel_stop_at_user(fixtures):
    from chatglm3_cli.engine.model import Model

    with Model(fixtures.path("scripted"), n_ctx=512) as m, ParallelDecoder(m, n_parallel=3, n_ctx=256) as d:
        reqs = [DecodeRequest(str(i), messages=[Message("user", f"q{i}")], params=SamplingParams(temperature=0))
                for i in range(7)]
        results = list(d.run(reqs))
    assert len(results) == 7
    for r in results:
        assert r.completion.text == "Hello! I am ChatGLM3 🙂龘"
        assert r.completion.finish_reason == "stop" and r.completion.stop_token == 64795


def test_grammar_constrains_output_and_bad_records_do_not_stop_the_run(fixtures):
    from chatglm3_cli.engine.model import Model

    labels = ["positive", "negative", "neutral"]
    g = 'root ::= "\\n" " "? (' + " | ".join(f'"{x}"' for x in labels) + ")"
    with Model(fixtures.path("scripted"), n_ctx=512) as m, ParallelDecoder(m, n_parallel=2, n_ctx=256) as d:
        reqs = [DecodeRequest(f"c{i}", messages=[Message("user", "review")], grammar=g,
                              params=SamplingParams(temperature=t, seed=i, max_tokens=32))
                for i, t in enumerate([0, 0.8, 1.5, 0])]
        reqs.insert(1, DecodeRequest("bad-grammar", messages=[Message("user", "x")], grammar="root ::= ("))
        reqs.insert(3, DecodeRequest("too-long", messages=[Message("user", "word " * 400)]))
        results = {r.key: r for r in d.run(reqs)}
    assert len(results) == 6
    assert isinstance(results["bad-grammar"].error, GrammarError)
    assert "expecting ')'" in results["bad-grammar"].error.message
    assert isinstance(results["too-long"].error, PromptTooLongError)
    for i in range(4):
        c = results[f"c{i}"].completion
        assert c.text in labels and c.finish_reason == "stop"


def test_sequence_context_limit(fixtures):
    from chatglm3_cli.engine.model import Model

    with Model(fixtures.path("scripted-loop"), n_ctx=512) as m, ParallelDecoder(m, n_parallel=2, n_ctx=64) as d:
        results = list(d.run([DecodeRequest(str(i), messages=[Message("user", "x")],
                                            params=SamplingParams(temperature=0)) for i in range(3)]))
    for r in results:
        assert r.completion.finish_reason == "length"
        assert r.completion.prompt_tokens + r.completion.completion_tokens == 64
