"""The parallel decoder: same answers as one sequence, shared prefixes evaluated once."""
from __future__ import annotations

import pytest

from chatglm3_cli.engine.decoder import DecodeRequest, ParallelDecoder
from chatglm3_cli.engine.llama.context import align_down
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


def _job_requests():
    """Prompts shaped like a real job: task instructions shared by many records, various lengths."""
    from chatglm3_cli.batch.tasks import build_messages

    records = []
    for i, t in enumerate(TEXTS * 3):
        text = f"{t} {i}" if i % 3 else t * (1 + i % 4)
        records.append(("translate", {"text": text, "to": ["French", "Chinese"][i % 2]}))
        if i % 2:
            records.append(("summarize", {"text": text, "length": 10 + i}))
        if i % 5 == 0:
            records.append(("generate", {"prompt": text}))
    return [DecodeRequest(f"r{k}", messages=build_messages(task, rec), params=GREEDY)
            for k, (task, rec) in enumerate(records)]


def _differing(model, reqs, n_values):
    model.reset()
    want = {r.key: model.chat(list(r.messages), GREEDY).tokens for r in reqs}
    assert len({tuple(v) for v in want.values()}) > len(reqs) // 2  # answers depend on the prompt
    out = {}
    for n in n_values:
        with ParallelDecoder(model, n_parallel=n, n_ctx=512) as d:
            got = {r.key: r.completion.tokens for r in d.run(reqs)}
            assert d.stats.evaluated_prompt_tokens < d.stats.prompt_tokens  # prefixes were shared
        out[n] = sorted(k for k in want if got[k] != want[k])
    return out


def test_every_record_equals_the_single_sequence_engine(tiny_model):
    """Greedy answers must not depend on --parallel, on which records share a prefix or a decode
    call, nor differ from `chatglm3 run` (Model.chat)."""
    reqs = _job_requests()
    assert len(reqs) > 40
    for n, diff in _differing(tiny_model, reqs, (1, 3, 4, 8)).items():
        assert not diff, f"--parallel {n}: {len(diff)} of {len(reqs)} records differ: {diff[:5]}"


def test_parallel_answers_on_a_q4_k_m_file(q4km_model):
    """On the default download's quantization. With llama.cpp's CPU flash attention on, 24 of
    these 51 records differed from Model.chat even at --parallel 1 (15 at 4); the engine turns
    it off, and --parallel 1 is then exact. What remains at 3+ sequences: the repacked Q4_K
    kernels multiply four rows at a time differently from one row, and Q8_K activations can
    turn that rounding into a flipped near-tie on these random weights (measured: 3, 6, 6 of 51
    at --parallel 3, 4, 8), so for those this is a bound, not 0."""
    reqs = _job_requests()
    diff = _differing(q4km_model, reqs, (1, 4))
    assert diff[1] == [], f"--parallel 1: {len(diff[1])} of {len(reqs)} records differ"
    assert len(diff[4]) <= len(reqs) // 4, f"--parallel 4: {len(diff[4])} of {len(reqs)} records differ"


def _logits(ctx, row):
    from chatglm3_cli.engine.llama import runtime

    n = ctx.model.n_vocab
    return runtime.llama().llama_get_logits_ith(ctx.ptr, row)[:n]


def test_logits_barely_depend_on_how_a_prompt_is_cut(tiny_model):
    """The property the decoder relies on: a prompt's last logits are (up to float rounding) the
    same evaluated in one call, cut after a shared prefix, mixed into one call with other
    sequences' tokens, or as a one-token step beside other sequences. With flash attention on,
    the same cuts moved these logits by up to 0.047."""
    from chatglm3_cli.engine.llama import context

    m = tiny_model
    prompt = m.prompt_ids([Message("system", SYSTEM), Message("user", "The philosophy of people " * 6)])
    other = m.prompt_ids([Message("user", "something else entirely")])
    n = len(prompt)
    ctx = context.LlamaContext(m._llama, n_ctx=2048, n_seq_max=3, kv_unified=True)
    try:
        def run(calls):
            ctx.clear()
            for entries in calls:
                ctx.decode_entries(entries)
            return _logits(ctx, [i for i, e in enumerate(calls[-1]) if e[2] == 0 and e[3]][0])

        def seq(lo, hi):
            return [(prompt[i], i, 0, i == n - 1) for i in range(lo, hi)]

        def oth(lo, hi):
            return [(other[i], i, 1, False) for i in range(lo, hi)]

        want = run([seq(0, n)])
        cuts = {
            "prefix then rest": [seq(0, 40), seq(40, n)],
            "then one token": [seq(0, n - 1), seq(n - 1, n)],
            "token by token": [seq(i, i + 1) for i in range(n)],
            "mixed with another prompt": [oth(0, len(other)) + seq(0, n)],
            "rest beside another prompt": [seq(0, 40), oth(0, 5) + seq(40, n) + oth(5, len(other))],
            "one-token step beside others": [oth(0, len(other) - 1) + seq(0, n - 1),
                                             oth(len(other) - 1, len(other)) + seq(n - 1, n)],
        }
        spread = max(abs(x) for x in want) - min(want)
        for name, calls in cuts.items():
            got = run(calls)
            worst = max(abs(a - b) for a, b in zip(got, want))
            assert worst <= 1e-4 * spread, f"{name}: logits moved by {worst:.3g}"
    finally:
        ctx.close()


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
    common = 3 + 150 + 1  # [gMASK] sop <|system|> + prefix + <|user|>
    shared = align_down(common)  # prompts are cut at aligned positions only (128 of the 154)
    unique = sum(len(s) + 1 for s in suffixes)
    assert stats.prompt_tokens == 16 * common + unique
    # the shared tokens once, not 16 times
    assert stats.evaluated_prompt_tokens == shared + 16 * (common - shared) + unique
    assert all(results[str(i)].cached_tokens == shared for i in range(16))
    assert all(0 < results[str(i)].timings.first_token_ms <= results[str(i)].timings.prompt_ms + 1e-6
               for i in range(16))
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


def test_a_failed_request_leaves_its_sequence_clean(fixtures):
    """An invalid grammar on a request that shares the job's prefix: before the fix, the copied
    prefix cells stayed in its sequence, and the next request there (one that shares nothing)
    made llama_decode fail and the whole run stop."""
    from chatglm3_cli.engine.model import Model

    system = Message("system", SYSTEM)
    params = SamplingParams(temperature=0, max_tokens=8)

    def req(i, kind):
        msgs = [system, Message("user", f"review {i}")] if kind != "plain" else [Message("user", f"x{i}")]
        return DecodeRequest(f"r{i}", messages=msgs, params=params,
                             grammar="root ::= (" if kind == "bad" else None)

    kinds = ["shared", "bad", "plain", "shared", "bad", "plain", "shared", "shared"]
    reqs = [req(i, k) for i, k in enumerate(kinds)]
    with Model(fixtures.path("scripted"), n_ctx=512) as m, ParallelDecoder(m, n_parallel=2, n_ctx=256) as d:
        results = {r.key: r for r in d.run(reqs)}
        assert sorted(results) == [f"r{i}" for i in range(8)]
        for i, kind in enumerate(kinds):
            r = results[f"r{i}"]
            if kind == "bad":
                assert isinstance(r.error, GrammarError)
            else:
                assert r.error is None and r.completion.text, (i, r.error)
        assert results["r0"].completion.cached_tokens >= 16  # the shared prefix was used
        # every sequence is empty again: a second run on the same decoder works as well
        again = sorted(d.run(reqs[:3]), key=lambda r: r.key)
        assert [r.error is None for r in again] == [True, False, True]


def test_decode_errors_name_their_own_cause(tiny_model):
    from chatglm3_cli.engine.llama import runtime
    from chatglm3_cli.errors import GenerationError

    with ParallelDecoder(tiny_model, n_parallel=1, n_ctx=64) as d:
        runtime._log_lines.append((runtime._GGML_ERROR, "error: an old failure"))
        with pytest.raises(GenerationError) as e:
            d.ctx.decode_entries([(tiny_model._llama.n_vocab + 7, 0, 0, True)])  # no such token
        assert "old failure" not in e.value.message and "token" in e.value.message


def test_ctrl_c_interrupts_the_prompt_chunks_of_the_batch_decoder(tiny_model):
    """Ctrl-C while llama_decode evaluates prompt chunks: llama.cpp's abort callback is the only
    way in. Here the callback itself plays the SIGINT handler (sets the flag on its first call)."""
    from chatglm3_cli.engine.llama import runtime

    with ParallelDecoder(tiny_model, n_parallel=2, n_ctx=512) as d:
        calls = []

        def pressed(_data):
            calls.append(1)
            d.ctx._abort.requested = True
            return True

        d.ctx._abort.cb = runtime.llama().ggml_abort_callback(pressed)
        reqs = [DecodeRequest(str(i), messages=[Message("user", "long text " * 60)],
                              params=SamplingParams(temperature=0, max_tokens=4)) for i in range(3)]
        with pytest.raises(KeyboardInterrupt):
            list(d.run(reqs))
        assert calls
        # the interrupted sequences were cleared: the decoder still answers
        d.ctx._abort = runtime._AbortFlag()
        results = list(d.run(reqs[:2]))
        assert all(r.error is None for r in results)
