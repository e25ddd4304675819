"""What must not change the answers: how a prompt is cut (aligned chunks), the grammar's fast
path, prompt-lookup speculation, and --parallel, on every kind of weight file we test."""
from __future__ import annotations

import numpy as np
import pytest

from chatglm3_cli.engine.decoder import DecodeRequest, ParallelDecoder
from chatglm3_cli.engine.llama import context, runtime, sampler
from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.engine.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=24)
SYSTEM = ("You are a translator. Translate the user's text into Chinese. Keep the Markdown "
          "structure, keep code and URLs unchanged, answer with the translation only.")
TEXTS = ["The philosophy of people is a sophisticated subject. " * 3, "Hello world, hello world, hello",
         "今天天气很好，我们去公园散步吧。今天天气很好", "```python\nprint('hi')\nprint('hi')\n```",
         "Line one\nLine two\nLine one\nLine two", "short"]
# Random-weight files on which a row's logits do not depend on the other rows of its decode
# call (F32, repacked Q4_0 here), and those on which they can in the last bits: F16 (a flip
# at a near tie was seen at --parallel 4) and Q4_K (logits 0.07-0.26 apart, out of a range
# of ~66, between a 1-row and a 4-row call). On the latter, answers must agree up to the
# first near tie.
EXACT = ["tiny", "tiny-q4_0"]
ALL_RANDOM = EXACT + ["tiny-f16", "tiny-q4km"]
NEAR_TIE = 0.01  # a top-2 logit margin below this share of the logits' range may flip


@pytest.fixture(scope="module")
def models(fixtures):
    from chatglm3_cli.engine.model import Model

    opened: dict[str, Model] = {}

    def get(kind: str) -> Model:
        if kind not in opened:
            opened[kind] = Model(fixtures.path(kind), n_ctx=1024, n_batch=64)
        return opened[kind]

    yield get
    for m in opened.values():
        m.close()


def _last_logits(model) -> np.ndarray:
    ctx = model.chat_context
    ptr = runtime.llama().llama_get_logits_ith(ctx.ptr, -1)
    return np.ctypeslib.as_array(ptr, shape=(model.llama.n_vocab,)).copy()


def _prompt(model, user: str, system: str = SYSTEM) -> list[int]:
    return model.prompt_ids([Message("system", system), Message("user", user)])


@pytest.mark.parametrize("kind", ALL_RANDOM)
def test_a_prompt_after_a_cached_prefix_gives_bit_identical_logits(models, kind):
    """Prompts are cut only at multiples of PROMPT_ALIGN: the same prompt evaluated alone and after
    other prompts that share some of its beginning gives the same logits, to the bit, whatever
    the prefix length (n_batch 64 also cuts these prompts into several chunks)."""
    m = models(kind)
    one = SamplingParams(temperature=0, max_tokens=1)
    target = _prompt(m, TEXTS[0] + TEXTS[3] + TEXTS[1])
    assert len(target) > 2 * 64
    m.reset()
    m.generate(prompt_ids=target, params=one).complete()
    alone = _last_logits(m)
    kept = set()
    for cut in (5, 37, 64, 90, 131, len(target) - 2):
        other = target[:cut] + m.tokenize(" something else entirely")
        m.reset()
        m.generate(prompt_ids=other, params=one).complete()
        r = m.generate(prompt_ids=target, params=one).complete()
        assert r.cached_tokens % context.PROMPT_ALIGN == 0 and r.cached_tokens <= cut
        kept.add(r.cached_tokens)
        after = _last_logits(m)
        assert np.array_equal(alone, after), (
            f"{kind}: after a {r.cached_tokens}-token prefix the logits moved by {np.abs(alone - after).max():.3g}")
    assert len(kept) >= 3  # several prefix lengths were really reused


def _near_tie_at(model, prompt: list[int], answer: list[int], i: int) -> bool:
    """Whether the greedy choice after prompt + answer[:i] was a near tie (so that rounding
    in the last bits may flip it)."""
    one = SamplingParams(temperature=0, max_tokens=1)
    model.reset()
    model.generate(prompt_ids=prompt + answer[:i], params=one).complete()
    logits = _last_logits(model)
    top2 = np.sort(logits)[-2:]
    return (top2[1] - top2[0]) <= NEAR_TIE * (logits.max() - logits.min())


def _agree(model, kind, prompt, want, got) -> None:
    """Equal on exact kinds; on K-quants equal up to the first near tie."""
    if want == got:
        return
    assert kind not in EXACT, f"{kind}: answers differ: {want} != {got}"
    i = next((k for k, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    assert _near_tie_at(model, prompt, want, i), f"{kind}: answers differ at token {i}, which was no near tie"


class _Oracle:
    """Drafts from known answers (random weights never repeat their input, so prompt lookup
    would draft nothing): right most of the time, wrong at the end of every third draft, so
    that both acceptance and rollback run. Only the drafts are made up; the model's
    verification is real."""

    answers: dict[tuple[int, ...], list[int]] = {}

    def __init__(self, tokens, **_kw) -> None:
        self.tokens = list(tokens)
        self.prompt = tuple(tokens)
        self.calls = 0

    def extend(self, tokens) -> None:
        self.tokens.extend(tokens)

    def draft(self, k: int) -> list[int]:
        ref = self.answers.get(self.prompt, [])
        done = len(self.tokens) - len(self.prompt)
        d = list(ref[done:done + k])
        self.calls += 1
        if d and self.calls % 3 == 0:
            d[-1] = (d[-1] + 1) % 64000
        return d


@pytest.fixture
def oracle(monkeypatch):
    from chatglm3_cli.engine import sequence, speculation

    _Oracle.answers = {}
    monkeypatch.setattr(sequence, "PromptLookup", _Oracle)  # where every loop's drafts come from
    monkeypatch.setattr(speculation, "PromptLookup", _Oracle)
    return _Oracle.answers


@pytest.mark.parametrize("kind", ALL_RANDOM + ["scripted", "scripted-tool", "template"])
def test_speculation_leaves_greedy_answers_unchanged(models, oracle, kind):
    m = models(kind)
    drafted = accepted = 0
    for text in TEXTS:
        prompt = _prompt(m, text)
        out = {}
        for spec in (0, 3):
            m.speculate, m.spec_policy = spec, None  # draft at every chance
            m.reset()
            g = m.generate(prompt_ids=prompt, params=GREEDY)
            out[spec] = g.complete().tokens
            oracle[tuple(prompt)] = out[0] + [2]
            drafted += g.spec.drafted
            accepted += g.spec.accepted
            # the KV cache holds exactly the tokens the engine thinks (no leftover draft cells)
            L = runtime.llama()
            assert L.llama_memory_seq_pos_max(m.chat_context.memory, 0) == len(m._cache.tokens) - 1
        m.speculate = 0
        _agree(m, kind, prompt, out[0], out[3])
    assert accepted > 0 and drafted > accepted  # both paths ran


def test_prompt_lookup_speculation_on_an_answer_that_repeats_itself(fixtures):
    from chatglm3_cli.engine.model import Model

    with Model(fixtures.path("scripted-loop"), n_ctx=512, speculate=True) as m:
        assert m.spec_policy is None and m.speculate == 3
        prompt = m.prompt_ids([Message("user", "hi")])
        g = m.generate(prompt_ids=prompt, params=SamplingParams(temperature=0, max_tokens=60))
        spec = g.complete()
        assert g.spec.accepted > 20 and g.spec.acceptance > 0.5
        m.speculate = 0
        m.reset()
        assert m.generate(prompt_ids=prompt, params=SamplingParams(temperature=0, max_tokens=60)).complete().tokens \
            == spec.tokens
    with Model(fixtures.path("scripted-loop"), n_ctx=512, speculate=False) as m:
        assert m.speculate == 0


def test_speculation_with_sampling_keeps_seeded_answers(models, oracle):
    """A drafted token is kept only when the sampler, drawing as usual, picks it: with a seed
    the answer is the one without speculation."""
    m = models("tiny")
    params = SamplingParams(temperature=0.9, top_p=0.95, seed=7, max_tokens=32)
    accepted = 0
    for text in TEXTS[:3]:
        prompt = _prompt(m, text)
        out = []
        for spec in (0, 3):
            m.speculate, m.spec_policy = spec, None
            m.reset()
            g = m.generate(prompt_ids=prompt, params=params)
            out.append(g.complete().tokens)
            oracle[tuple(prompt)] = out[0]
            accepted += g.spec.accepted
        m.speculate = 0
        assert out[0] == out[1]
    assert accepted > 0


def _job_requests(params=GREEDY):
    reqs = []
    for i, t in enumerate(TEXTS):
        reqs.append(DecodeRequest(f"t{i}", messages=[Message("system", SYSTEM), Message("user", f"{t} {i}")],
                                  params=params))
        reqs.append(DecodeRequest(f"s{i}", messages=[Message("user", f"Summarize: {t}")], params=params))
    return reqs


@pytest.mark.parametrize("kind", ALL_RANDOM)
def test_parallel_answers_equal_one_sequence(models, oracle, kind):
    """--parallel 3, with and without speculation, against Model.chat: exact on F32 and
    Q4_0; on F16 and Q4_K up to the first near tie."""
    m = models(kind)
    reqs = _job_requests()
    m.speculate = 0
    want = {}
    for r in reqs:
        m.reset()
        want[r.key] = m.chat(list(r.messages), GREEDY).tokens
        oracle[tuple(m.prompt_ids(list(r.messages)))] = want[r.key]
    assert len({tuple(v) for v in want.values()}) > len(reqs) // 2
    for n, spec in ((3, 0), (3, 3)):
        with ParallelDecoder(m, n_parallel=n, n_ctx=512, speculate=spec) as d:
            got = {r.key: r.completion.tokens for r in d.run(reqs)}
            if spec:
                assert d.stats.drafted_tokens > d.stats.accepted_tokens > 0
        for r in reqs:
            _agree(m, kind, m.prompt_ids(list(r.messages)), want[r.key], got[r.key])


@pytest.mark.parametrize("kind", ALL_RANDOM)
def test_padding_rows_leave_the_answers_alone(models, kind):
    """Steps padded to four rows (CHATGLM3_PAD_ROWS=1) answer as unpadded ones: exact on F32 and
    Q4_0; on F16 and Q4_K up to the first near tie (the row count picks the kernel there)."""
    m = models(kind)
    reqs = _job_requests()
    m.speculate = 0
    out, padded = {}, {}
    for mode in ("off", "on"):
        m.pad_rows = mode
        with ParallelDecoder(m, n_parallel=3, n_ctx=512) as d:
            out[mode] = {r.key: r.completion.tokens for r in d.run(reqs)}
            padded[mode] = d.stats.padded_steps
    m.pad_rows = "auto"
    assert padded["off"] == 0 and padded["on"] > 10
    for r in reqs:
        _agree(m, kind, m.prompt_ids(list(r.messages)), out["off"][r.key], out["on"][r.key])


def test_parallel_speculation_accepts_drafts_and_keeps_answers(fixtures):
    from chatglm3_cli.engine.model import Model

    with Model(fixtures.path("scripted-loop"), n_ctx=512) as m:
        reqs = [DecodeRequest(str(i), messages=[Message("user", f"q{i}")],
                              params=SamplingParams(temperature=0, max_tokens=40)) for i in range(5)]
        out = {}
        for spec in (0, 3):
            with ParallelDecoder(m, n_parallel=2, n_ctx=256, speculate=spec) as d:
                out[spec] = {r.key: r.completion.tokens for r in d.run(reqs)}
                stats = d.stats
        assert out[0] == out[3]
        assert stats.accepted_tokens > 0 and stats.drafted_tokens >= stats.accepted_tokens
        assert all(len(t) == 40 for t in out[3].values())


# grammars -------------------------------------------------------------------------------------

def _grammar_requests(params):
    from chatglm3_cli.batch.tasks import build_messages, grammar_for

    records = [
        ("classify", {"text": "I loved it", "labels": ["positive", "negative", "neutral"]}),
        ("classify", {"text": "terrible service", "labels": ["spam", "ham"]}),
        ("extract", {"text": "Alice is 30 and lives in Paris.",
                     "schema": {"type": "object", "properties": {"name": {"type": "string"},
                                                                 "age": {"type": "integer"}},
                                "required": ["name", "age"]}}),
        ("extract", {"text": "Order 12: 3 apples",
                     "schema": {"type": "object", "properties": {"items": {"type": "array",
                                                                           "items": {"type": "string"}}}}}),
    ]
    reqs = [DecodeRequest(f"{task}{i}", messages=build_messages(task, rec), grammar=grammar_for(task, rec),
                          params=params) for i, (task, rec) in enumerate(records)]
    reqs.append(DecodeRequest("json", messages=[Message("user", "Give me JSON")], params=params,
                              grammar='root ::= "\\n" " "? "{" [a-z ,:"0-9]* "}"'))
    reqs.append(DecodeRequest("free", messages=[Message("user", "Write words")], params=params,
                              grammar='root ::= "\\n" [a-zA-Z ,.]+'))
    return reqs


@pytest.mark.parametrize("kind", ["tiny", "tiny-q4km", "scripted"])
def test_grammar_fast_path_answers_as_masking_first(models, monkeypatch, kind):
    """Sampling without the grammar first and resampling only on rejection gives, at
    temperature 0, exactly the tokens of masking every token first, from the same logits.

    The same logits need the same decode calls: row padding (auto) is decided from this
    machine's step times, so the two runs could pad differently, and on Q4_K a padded step's
    4-row kernels flip near-ties (measured: the "free" record differs between padding on and
    off, whichever sampling path); that failed once on an AVX2 EPYC. Padding is off here."""
    m = models(kind)
    monkeypatch.setattr(m, "pad_rows", "off")
    reqs = _grammar_requests(SamplingParams(temperature=0, max_tokens=32))
    out = {}
    for first in (True, False):
        monkeypatch.setattr(sampler.Sampler, "grammar_first", first)
        with ParallelDecoder(m, n_parallel=2, n_ctx=512) as d:
            out[first] = {r.key: r.completion.tokens for r in d.run(reqs) if r.completion}
    assert len(out[False]) == len(reqs)
    assert out[True] == out[False]
    assert sum(len(v) for v in out[False].values()) > len(reqs)


def test_grammar_fast_path_with_sampling_stays_in_the_grammar(models):
    m = models("tiny")
    labels = ["positive", "negative", "neutral"]
    g = 'root ::= "\\n" " "? (' + " | ".join(f'"{x}"' for x in labels) + ")"
    reqs = [DecodeRequest(str(i), messages=[Message("user", "review")], grammar=g,
                          params=SamplingParams(temperature=1.2, seed=i, max_tokens=16)) for i in range(6)]
    with ParallelDecoder(m, n_parallel=3, n_ctx=256) as d:
        for r in d.run(reqs):
            assert r.completion.text in labels
