"""The per-sequence state machine on its own: token ids in, answer out (no model needed: the
token bytes are a table, as a vocabulary would give them)."""
from __future__ import annotations

from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.engine.sequence import DONE, GENERATING, PROMPTING, AnswerFormat, SequenceState

SEG, USER, OBS = 100, 101, 102
PIECES = {1: b"\n", 2: b"Part", 3: b" one", 4: b" two", 5: b"search", 6: b" call()",
          7: "🙂".encode()[:2], 8: "🙂".encode()[2:], SEG: b""}
FMT = AnswerFormat(stop_tokens=frozenset({USER, OBS}), tool_stop=OBS, segment_token=SEG, metadata_line=True,
                   token_bytes=lambda t: PIECES[t])


def run(tokens, *, stops=(), max_tokens=None, n_ctx=100, prompt=(9, 9)):
    seen = []
    seq = SequenceState(FMT, list(prompt), SamplingParams(temperature=0, max_tokens=max_tokens), n_ctx=n_ctx,
                        stops=stops, on_text=lambda text, meta: seen.append((text, meta)) and None)
    assert seq.state == PROMPTING
    seq.prompt_done()
    assert seq.state == GENERATING
    reason = None
    for t in tokens:
        reason = seq.take(t)
        if reason is not None:
            break
    seq.close(None if reason else "interrupted")
    assert seq.state == DONE
    return seq, seen


def test_two_segments_join_by_a_blank_line_and_keep_their_own_tokens():
    seq, seen = run([1, 2, 3, SEG, 1, 2, 4, USER])
    assert seq.finish_reason == "stop" and seq.stop_token == USER
    assert seq.text == "Part one\n\nPart two" == "".join(t for t, _ in seen)
    segs = seq.segments()
    assert [(s.metadata, s.text) for s in segs] == [("", "Part one"), ("", "Part two")]
    assert [s.tokens for s in segs] == [[1, 2, 3], [1, 2, 4]]  # without the <|assistant|> between


def test_text_then_a_call_ends_with_the_tool_stop():
    seq, seen = run([1, 2, 3, SEG, 5, 1, 6, OBS])
    assert seq.finish_reason == "tool_calls"
    assert [(s.metadata, s.text) for s in seq.segments()] == [("", "Part one"), ("search", " call()")]
    assert seen[-1][1] == "search"  # the call's text arrives with its metadata line


def test_a_stop_string_inside_the_second_segment_cuts_it_there():
    seq, _ = run([1, 2, 3, SEG, 1, 2, 4, USER], stops=["two"])
    assert seq.finish_reason == "stop" and seq.stop_token is None
    assert seq.text == "Part one\n\nPart "
    assert [(s.metadata, s.text) for s in seq.segments()] == [("", "Part one"), ("", "Part ")]


def test_a_stop_string_before_the_second_segment_drops_it():
    seq, _ = run([1, 2, 3, SEG, 1, 2, 4, USER], stops=[" one"])
    assert seq.text == "Part" and [s.text for s in seq.segments()] == ["Part"]


def test_limits_end_the_answer_inside_a_segment():
    seq, _ = run([1, 2, 3, SEG, 1, 2, 4, USER], max_tokens=6)
    assert seq.finish_reason == "length" and seq.text == "Part one\n\nPart"
    seq, _ = run([1, 2, 3, SEG, 1, 2, 4, USER], n_ctx=5, prompt=(9, 9))  # prompt + answer <= n_ctx
    assert seq.finish_reason == "length" and len(seq.generated) == 3


def test_a_character_split_over_two_tokens_comes_out_whole():
    seq, seen = run([1, 2, 7, 8, USER])
    assert seq.text == "Part🙂" and all("\ufffd" not in t for t, _ in seen)
