"""ChatSession on the scripted model: exact answers, KV reuse, regen, the context window."""
from __future__ import annotations

import pytest

from chatglm3_cli.chat.session import ChatSession
from chatglm3_cli.engine.llama.context import PROMPT_ALIGN, align_down
from chatglm3_cli.engine.model import Model
from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.errors import PromptTooLongError

ANSWER = "Hello! I am ChatGLM3 🙂龘"
GREEDY = SamplingParams(temperature=0)


@pytest.fixture
def session(scripted_model):
    scripted_model.reset()
    return ChatSession(scripted_model, system="You are a test.", params=GREEDY)


def _say(session, text):
    turn = session.ask(text)
    shown = "".join(turn)
    return turn, shown


def test_multi_turn_exact_answers_nothing_after_user(session):
    for q in ["first question", "second", "third one"]:
        turn, shown = _say(session, q)
        assert shown == ANSWER and "Leaked" not in shown
        assert turn.result.finish_reason == "stop"
    assert [m.role for m in session.messages] == ["user", "assistant"] * 3
    assert all(m.content == ANSWER for m in session.messages if m.role == "assistant")


def test_each_turn_evaluates_only_new_tokens(session, scripted_model):
    t1, _ = _say(session, "first question")
    r1 = t1.result
    assert r1.timings.prompt_tokens == r1.prompt_tokens  # nothing cached yet
    t2, _ = _say(session, "second question")
    r2 = t2.result
    # new: <|user|> + encode("\n") + encode(question) + <|assistant|>; the reused part ends at
    # an aligned position (llama/context.py's PROMPT_ALIGN), so up to PROMPT_ALIGN - 1 more are evaluated
    new = 1 + len(scripted_model.tokenize("\n")) + len(scripted_model.tokenize("second question")) + 1
    cached = r1.prompt_tokens + r1.completion_tokens
    assert r2.cached_tokens == align_down(cached)
    assert r2.timings.prompt_tokens == new + cached - align_down(cached) < new + PROMPT_ALIGN
    t3, _ = _say(session, "third")
    new3 = 1 + 2 + len(scripted_model.tokenize("third")) + 1
    assert new3 <= t3.result.timings.prompt_tokens < new3 + PROMPT_ALIGN


def test_regen_reuses_the_prompt(session):
    _say(session, "question")
    turn = session.regen()
    assert "".join(turn) == ANSWER
    n = turn.result.prompt_tokens
    assert turn.result.timings.prompt_tokens == n - align_down(n - 1)  # all but the aligned tail reused
    assert [m.role for m in session.messages] == ["user", "assistant"]


def test_regen_without_answer(session):
    with pytest.raises(ValueError):
        session.regen()


def test_interrupted_answer_is_kept_and_marked(session):
    turn = session.ask("go")
    it = iter(turn)
    assert next(it) == "Hello"
    turn.close()
    last = session.messages[-1]
    assert last.role == "assistant" and last.interrupted and last.content == "Hello"
    t2, shown = _say(session, "again")
    assert shown == ANSWER
    # the interrupted answer's tokens were kept: only the new turn (+ its last token) is evaluated
    assert t2.result.timings.prompt_tokens <= 2 + 2 + 3 + 1 + PROMPT_ALIGN - 1


def test_clear_keeps_system(session):
    _say(session, "x")
    session.clear()
    assert session.messages == [] and session.system == "You are a test."
    assert session.all_messages()[0].role == "system"


def test_old_turns_leave_the_window_system_kept(fixtures):
    with Model(fixtures.path("scripted"), n_ctx=256) as m:
        s = ChatSession(m, system="SYSTEM PROMPT", params=GREEDY.with_(max_tokens=16))
        dropped_total, notices = 0, []
        for i in range(12):
            turn, shown = _say(s, f"question number {i} " + "padding words " * 6)
            assert shown == ANSWER
            dropped_total += turn.dropped
            notice = s.take_dropped_notice(turn.dropped)
            if notice:
                notices.append(notice)
            assert turn.result.prompt_tokens + 16 <= m.n_ctx
        assert dropped_total > 0 and s.window_start > 0
        assert len(notices) == 1 and "dropped" in notices[0]
        prompt = turn.generation.prompt
        assert prompt[2] == 64794  # the window's prompt still starts with the system message
        assert m.tokenize("SYSTEM PROMPT") == prompt[5:5 + len(m.tokenize("SYSTEM PROMPT"))]
        assert s.context_used <= m.n_ctx


def test_message_longer_than_context(fixtures):
    with Model(fixtures.path("scripted"), n_ctx=256) as m:
        s = ChatSession(m, params=GREEDY)
        with pytest.raises(PromptTooLongError):
            s.ask("word " * 600)
        assert s.messages == []  # the failed message is not kept
