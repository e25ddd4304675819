"""The tool loop on scripted ChatGLM3 models: a function call and an interpreter cell.

The scripted models answer every prompt the same way (the greedy continuation of
<|assistant|>): scripted-tool calls search(city="Paris"), scripted-code writes an interpreter
cell exec(open('cell.py').read()), so the test decides what the cell does by writing cell.py
into the kernel's working directory. Both call again after every observation: the chain limit
always ends the loop.
"""
from __future__ import annotations

import json

import pytest

from chatglm3_cli.chat.session import ChatSession
from chatglm3_cli.engine.model import Model
from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.engine.toolcalls import TOOLS_SYSTEM_PROMPT
from chatglm3_cli.tools.chain import REFUSED, Approvals, Toolbox, run_chain
from chatglm3_cli.tools.functions import FunctionTool, function_spec
from chatglm3_cli.tools.interpreter import INTERPRETER_SYSTEM_PROMPT, Interpreter

from ..engine.test_prompt import _spm, official_build_chat_input
from .test_interpreter import PNG_CELL

GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def tool_model(fixtures):
    with Model(fixtures.path("scripted-tool"), n_ctx=1024) as m:
        yield m


@pytest.fixture(scope="module")
def code_model(fixtures):
    with Model(fixtures.path("scripted-code"), n_ctx=1024) as m:
        yield m


def _search_toolbox(calls, *, fail=False):
    def search(city: str) -> str:
        """Search the web for a city."""
        calls.append(city)
        if fail:
            raise RuntimeError(f"the search engine is down for {city}")
        return json.dumps({"city": city, "temperature": 21})

    return Toolbox([FunctionTool(function_spec(search), search)])


def _chain(session, toolbox, approvals, text="Weather in Paris?", max_calls=1):
    turns = []

    def stream(turn):
        turns.append(turn)
        for _ in turn:
            pass

    result = run_chain(session, session.ask(text), toolbox, approvals, stream=stream, max_calls=max_calls)
    return result, turns


def test_approved_call_runs_and_the_observation_turn_is_the_official_prompt(tool_model, fixtures):
    calls: list[str] = []
    tb = _search_toolbox(calls)
    s = ChatSession(tool_model, params=GREEDY, tools=tb.specs())
    result, turns = _chain(s, tb, Approvals(lambda c: "yes"), max_calls=1)
    assert calls == ["Paris"]
    (outcome,) = result.outcomes
    assert outcome.status == "ok" and outcome.observation == '{"city": "Paris", "temperature": 21}'
    assert result.limit_reached and result.pending.name == "search"  # the scripted model calls again
    # The prompt of the observation turn equals the official build_chat_input for the history.
    history = [Message("system", TOOLS_SYSTEM_PROMPT, tools=tb.specs()), Message("user", "Weather in Paris?"),
               Message("assistant", turns[0].result.text.strip(), metadata="search"),
               Message("observation", outcome.observation)]
    ref = official_build_chat_input(_spm(fixtures.path("vocab-tools")), history)
    assert turns[1].generation.prompt == ref
    assert [m.role for m in s.messages] == ["user", "assistant", "observation", "assistant"]


def test_refused_call_executes_nothing(tool_model):
    calls: list[str] = []
    tb = _search_toolbox(calls)
    s = ChatSession(tool_model, params=GREEDY, tools=tb.specs())
    asked = []
    result, turns = _chain(s, tb, Approvals(lambda c: asked.append(c.describe()) or "no"), max_calls=2)
    assert calls == [] and asked == ["search(city='Paris')"] * 2
    assert [o.status for o in result.outcomes] == ["refused", "refused"]
    assert s.messages[2] == Message("observation", REFUSED)


def test_without_anyone_to_ask_nothing_runs(tool_model):
    calls: list[str] = []
    tb = _search_toolbox(calls)
    s = ChatSession(tool_model, params=GREEDY, tools=tb.specs())
    result, _ = _chain(s, tb, Approvals(), max_calls=1)
    assert calls == [] and result.outcomes[0].status == "refused"


def test_approve_all_and_the_chain_limit(tool_model):
    calls: list[str] = []
    tb = _search_toolbox(calls)
    s = ChatSession(tool_model, params=GREEDY, tools=tb.specs())
    result, turns = _chain(s, tb, Approvals(approve_all=True), max_calls=3)
    assert calls == ["Paris"] * 3 and len(turns) == 4 and result.limit_reached


def test_a_tool_that_raises_sends_its_error_back(tool_model):
    calls: list[str] = []
    tb = _search_toolbox(calls, fail=True)
    s = ChatSession(tool_model, params=GREEDY, tools=tb.specs())
    result, turns = _chain(s, tb, Approvals(approve_all=True), max_calls=1)
    assert result.outcomes[0].status == "error"
    assert s.messages[2].content == "Error: RuntimeError: the search engine is down for Paris"
    assert turns[1].generation.prompt[-1] == 64796  # and the model answers the observation


@pytest.fixture
def code_session(code_model, tmp_path):
    it = Interpreter(tmp_path, timeout=5)
    tb = Toolbox(interpreter=it)
    s = ChatSession(code_model, params=GREEDY, system=tb.system_prompt(None))
    yield s, tb, tmp_path
    tb.close()


def test_interpreter_cell_runs_after_approval(code_session, fixtures):
    s, tb, work = code_session
    assert s.system == INTERPRETER_SYSTEM_PROMPT
    (work / "cell.py").write_text("open('ran.txt', 'w').write('yes')\nprint(6 * 7)\n")
    asked = []
    result, turns = _chain(s, tb, Approvals(lambda c: asked.append(c.code) or "yes"), text="6*7?")
    assert asked == [fixtures.sidecar("scripted-code")["code"] + "\n"]
    assert turns[0].result.metadata == "interpreter"
    assert (work / "ran.txt").read_text() == "yes"
    assert result.outcomes[0].observation == "42" and s.messages[2] == Message("observation", "42")


def test_refused_cell_executes_nothing(code_session):
    s, tb, work = code_session
    (work / "cell.py").write_text("open('ran.txt', 'w').write('yes')\n")
    result, _ = _chain(s, tb, Approvals(lambda c: "no"), max_calls=2)
    assert [o.status for o in result.outcomes] == ["refused", "refused"]
    assert not (work / "ran.txt").exists() and not tb.interpreter.started  # no kernel was even started


def test_cell_that_times_out(code_session):
    s, tb, work = code_session
    (work / "cell.py").write_text("import time\nprint('working', flush=True)\ntime.sleep(120)\n")
    result, _ = _chain(s, tb, Approvals(approve_all=True))
    (outcome,) = result.outcomes
    assert outcome.status == "error" and outcome.observation.startswith("working\n")
    assert outcome.observation.endswith("Timed out")


def test_cell_with_an_image(code_session):
    s, tb, work = code_session
    (work / "cell.py").write_text(PNG_CELL)
    result, _ = _chain(s, tb, Approvals(approve_all=True))
    (outcome,) = result.outcomes
    assert outcome.observation == "[Image]" and outcome.images[0].read_bytes().startswith(b"\x89PNG")
    assert outcome.to_dict()["images"] == [str(work / "image-1.png")]
