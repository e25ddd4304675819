"""What a server needs from the parallel decoder: requests that arrive while others run, text as
it is generated, cancelling a sequence, and a finished conversation kept for its next turn."""
from __future__ import annotations

from chatglm3_cli.engine.decoder import WAIT, DecodeRequest, ParallelDecoder
from chatglm3_cli.engine.llama.context import align_down
from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.engine.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=10)
TEXTS = ["The philosophy of people", "Hello world", "今天天气很好", "A sophisticated tokenizer", "short"]


def _req(model, key, text, params=GREEDY, **kw):
    return DecodeRequest(key, prompt_ids=model.prompt_ids([Message("user", text)]), params=params, **kw)


def test_requests_that_arrive_between_steps_join_and_answer_as_alone(tiny_model):
    with ParallelDecoder(tiny_model, n_parallel=2, n_ctx=256) as d:
        alone = {r.key: r.completion.tokens for r in d.run([_req(tiny_model, str(i), t) for i, t in enumerate(TEXTS)])}

    def trickle():  # one request, then nothing for a few steps, then the next...
        for i, t in enumerate(TEXTS):
            yield _req(tiny_model, str(i), t)
            for _ in range(i + 1):
                yield WAIT

    with ParallelDecoder(tiny_model, n_parallel=2, n_ctx=256) as d:
        got = {r.key: r.completion.tokens for r in d.run(trickle(), idle=lambda: None)}
    assert got == alone


def test_text_streams_and_a_cancelled_sequence_is_freed(scripted_model, fixtures):
    answer = fixtures.sidecar("scripted")["answer"]
    pieces: list[str] = []
    flag = {"cancel": False}

    def on_text(piece, metadata):
        pieces.append(piece)
        flag["cancel"] = len(pieces) >= 2  # b goes before the next step
        return False

    whole = SamplingParams(temperature=0)
    reqs = [_req(scripted_model, "a", "hi", whole, on_text=on_text),
            _req(scripted_model, "b", "hi", whole, cancelled=lambda: flag["cancel"])]
    with ParallelDecoder(scripted_model, n_parallel=2, n_ctx=128) as d:
        results = {r.key: r for r in d.run(reqs)}
    assert "".join(pieces) == results["a"].completion.text == answer
    assert results["b"].completion.finish_reason == "cancelled"
    assert results["b"].completion.completion_tokens < len(fixtures.sidecar("scripted")["answer_ids"])


def test_on_text_can_end_the_answer(scripted_model):
    seen = []

    def stop_after_two(piece, metadata):
        seen.append(piece)
        return len(seen) == 2

    with ParallelDecoder(scripted_model, n_parallel=1, n_ctx=128) as d:
        (r,) = d.run([_req(scripted_model, "a", "hi", on_text=stop_after_two)])
    assert r.completion.finish_reason == "stop" and len(seen) == 2


def test_a_kept_conversation_makes_its_next_turn_cheap(tiny_model):
    first = [Message("system", "You are terse."), Message("user", "The philosophy of people " * 5)]
    with ParallelDecoder(tiny_model, n_parallel=2, n_ctx=512) as d:
        (r1,) = d.run([DecodeRequest("1", messages=first, params=GREEDY)], retain=True)
        turn2 = first + [Message("assistant", r1.completion.text), Message("user", "And then?")]
        (r2,) = d.run([DecodeRequest("2", messages=turn2, params=GREEDY)], retain=True)
    # all of turn 1's prompt, up to its last multiple of PROMPT_ALIGN (prompts are cut there only)
    assert r2.completion.cached_tokens >= align_down(r1.completion.prompt_tokens)
    tiny_model.reset()
    assert r2.completion.tokens == tiny_model.chat(turn2, GREEDY).tokens  # and the answer is the same


def _turns(model, system, question, params=GREEDY):
    """A conversation's first turn, and a function making its second from the first answer."""
    first = [Message("system", system), Message("user", question)]
    return first, lambda answer: first + [Message("assistant", answer), Message("user", "And then?")]


def test_interleaved_conversations_each_keep_their_prefix(tiny_model):
    # Two clients take turns: each one's second turn finds its own first turn kept, although the
    # other's conversation finished in between (one kept prefix would have been replaced).
    x1, x2 = _turns(tiny_model, "You are terse.", "The philosophy of people " * 5)
    y1, y2 = _turns(tiny_model, "Answer in French.", "A sophisticated tokenizer " * 5)
    with ParallelDecoder(tiny_model, n_parallel=2, n_ctx=512) as d:
        (rx1,) = d.run([DecodeRequest("x1", messages=x1, params=GREEDY)], retain=True)
        (ry1,) = d.run([DecodeRequest("y1", messages=y1, params=GREEDY)], retain=True)
        assert len(d.prefixes) == 2
        (rx2,) = d.run([DecodeRequest("x2", messages=x2(rx1.completion.text), params=GREEDY)], retain=True)
        (ry2,) = d.run([DecodeRequest("y2", messages=y2(ry1.completion.text), params=GREEDY)], retain=True)
    for r1, r2, msgs in ((rx1, rx2, x2(rx1.completion.text)), (ry1, ry2, y2(ry1.completion.text))):
        assert r2.completion.cached_tokens >= align_down(r1.completion.prompt_tokens)
        tiny_model.reset()
        assert r2.completion.tokens == tiny_model.chat(msgs, GREEDY).tokens


def test_kept_prefixes_have_streams_of_their_own(tiny_model):
    # Kept prefixes live in streams of their own (n_prefixes), least recently used first out;
    # busy sequences never need their cells, and answers do not change while they are kept.
    kept = [_turns(tiny_model, f"System prompt number {i}.", "The philosophy of people " * 4)[0] for i in range(4)]
    busy = [_req(tiny_model, str(i), t) for i, t in enumerate(TEXTS)]
    with ParallelDecoder(tiny_model, n_parallel=2, n_ctx=96, n_prefixes=3) as d:
        alone = {r.key: r.completion.tokens for r in d.run(busy)}
        for i, msgs in enumerate(kept):
            list(d.run([DecodeRequest(f"k{i}", messages=msgs, params=GREEDY)], retain=True))
        # 3 streams for 4 conversations: the oldest went
        assert len(d.prefixes) == 3 and d.prefixes.tokens()[0][:12] == tiny_model.prompt_ids(kept[1])[:12]
        seen = []  # (sequences in flight, prefixes kept) at each step
        d.on_step = lambda stats: seen.append((stats.in_flight, len(d.prefixes)))
        got = {r.key: r.completion.tokens for r in d.run(busy)}
    assert got == alone
    assert seen and all(n == 3 for _, n in seen) and any(busy == 2 for busy, _ in seen)
