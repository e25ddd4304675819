"""The chat loop driven through prompt-toolkit's pipe input, on the scripted model."""
from __future__ import annotations

import io
import json

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from chatglm3_cli.chat.history import Conversation, ConversationStore
from chatglm3_cli.chat.session import ChatSession
from chatglm3_cli.cli.render import PlainRenderer
from chatglm3_cli.cli.repl import ChatREPL
from chatglm3_cli.engine.llama.context import align_down
from chatglm3_cli.engine.sampling import SamplingParams

ANSWER = "Hello! I am ChatGLM3 🙂龘"


class Harness:
    def __init__(self, model, tmp_path, renderer=None, store=True, system=None, open_model=None,
                 toolbox=None):
        model.reset()
        self.open_model, self.toolbox = open_model, toolbox
        self.out, self.err = io.StringIO(), io.StringIO()
        self.session = ChatSession(model, system=system, params=SamplingParams(temperature=0))
        self.store = ConversationStore(tmp_path) if store else None
        self.conv = Conversation(id="test-conv", created=0, updated=0) if store else None
        self.renderer = renderer
        self.tmp = tmp_path

    def run(self, keys: str, first: str | None = None) -> int:
        with create_pipe_input() as inp:
            inp.send_text(keys)
            with create_app_session(input=inp, output=DummyOutput()):
                self.repl = ChatREPL(
                    self.session, out=self.out, err=self.err,
                    make_renderer=self.renderer or (lambda: PlainRenderer(self.out)),
                    pt_input=inp, pt_output=DummyOutput(), store=self.store, conversation=self.conv,
                    open_model=self.open_model, toolbox=self.toolbox)
                return self.repl.run(first)

    @property
    def said(self) -> str:
        return self.err.getvalue()


@pytest.fixture
def h(scripted_model, tmp_path):
    return Harness(scripted_model, tmp_path)


def test_answers_over_several_turns_then_ctrl_d(h):
    code = h.run("hello\rsecond\rthird\r\x04")
    assert code == 0
    assert h.out.getvalue() == (ANSWER + "\n") * 3
    assert "Leaked" not in h.out.getvalue()
    assert [m.role for m in h.session.messages] == ["user", "assistant"] * 3


@pytest.mark.parametrize("word", ["/exit", "/bye", "/quit", "exit", "quit", "stop"])
def test_exit_words(h, word):
    assert h.run(f"{word}\r") == 0
    assert h.out.getvalue() == ""


@pytest.mark.parametrize("word", ["exit", "quit", "stop"])
def test_a_plain_exit_word_says_why_the_chat_ends(h, word):
    assert h.run(f"{word}\r") == 0
    assert f"leaving ({word!r} ends the chat" in h.said


def test_a_piped_first_message_is_shown_above_its_answer(h):
    h.run("/exit\r", first="notes line 1\nline 2\n3\n4\n5\n6\n7")
    assert h.said.startswith(">>> notes line 1\n... line 2\n") and "... (2 more lines)" in h.said
    assert h.out.getvalue() == ANSWER + "\n"


def test_an_answer_cut_off_at_max_tokens_says_so(scripted_model, tmp_path):
    h = Harness(scripted_model, tmp_path)
    h.session.params = SamplingParams(temperature=0, max_tokens=2)
    h.run("hello\r/exit\r")
    assert "cut off at 2 tokens (--max-tokens)" in h.said


def test_alt_enter_inserts_newline(h):
    h.run("line one\x1b\rline two\r/exit\r")
    assert h.session.messages[0].content == "line one\nline two"


def test_triple_quote_block(h):
    h.run('"""first\rsecond\rthird"""\r/exit\r')
    assert h.session.messages[0].content == "first\nsecond\nthird"


def test_ctrl_c_on_empty_line_says_how_to_leave(h):
    code = h.run("\x03/exit\r")
    assert code == 0 and "/exit or Ctrl-D" in h.said


def test_ctrl_c_stops_the_answer_not_the_session(scripted_model, tmp_path):
    class InterruptingRenderer(PlainRenderer):
        armed = True

        def feed(self, text):
            super().feed(text)
            if InterruptingRenderer.armed:
                InterruptingRenderer.armed = False
                raise KeyboardInterrupt

    hh = Harness(scripted_model, tmp_path)
    hh.renderer = lambda: InterruptingRenderer(hh.out)
    code = hh.run("first\rsecond\r/exit\r")
    assert code == 0
    assert hh.out.getvalue() == "Hello\n[interrupted]\n" + ANSWER + "\n"
    first_answer = hh.session.messages[1]
    assert first_answer.interrupted and first_answer.content == "Hello"
    assert hh.session.messages[3].content == ANSWER and not hh.session.messages[3].interrupted


def test_set_and_show(h):
    h.run("/set temperature 0.5\r/set top_k 40\r/set max_tokens none\r/set seed 3\r/show\r/exit\r")
    p = h.session.params
    assert (p.temperature, p.top_k, p.max_tokens, p.seed) == (0.5, 40, None, 3)
    assert "temperature=0.5" in h.said and "context: 0 of 512 tokens used" in h.said


@pytest.mark.parametrize("line,needle", [
    ("/set bogus 1", "unknown setting 'bogus'"),
    ("/set top_p abc", "bad value for top_p"),
    ("/set top_p 0", "bad value for top_p"),
    ("/frobnicate", "unknown command /frobnicate"),
    ("/load /nonexistent/file.json", "file not found"),
    ("/read /nonexistent/file.txt", "file not found"),
    ("/regen", "no answer to regenerate"),
])
def test_bad_input_is_a_message_and_the_session_goes_on(h, line, needle):
    code = h.run(f"{line}\rhello\r/exit\r")
    assert code == 0
    assert needle in h.said
    assert h.out.getvalue() == ANSWER + "\n"


def test_read_binary_and_malformed_load(h, tmp_path):
    (tmp_path / "bin.dat").write_bytes(b"\x00\x01\x02binary")
    (tmp_path / "bad.json").write_text("{not json")
    h.run(f"/read {tmp_path / 'bin.dat'}\r/load {tmp_path / 'bad.json'}\rhello\r/exit\r")
    assert "binary" in h.said and "not valid JSON" in h.said
    assert h.session.messages[0].content == "hello"


def test_load_of_deeply_nested_json_is_a_message_not_the_end(h, tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    h.run(f"/load {tmp_path / 'deep.json'}\rhello\r/exit\r")
    assert "nested too deeply" in h.said
    assert h.session.messages[0].content == "hello"


def test_read_attaches_file_to_next_message(h, tmp_path):
    (tmp_path / "notes.txt").write_text("the notes", encoding="utf-8")
    h.run(f"/read {tmp_path / 'notes.txt'}\rsummarize\r/exit\r")
    content = h.session.messages[0].content
    assert "the notes" in content and content.endswith("summarize")


def test_save_load_clear_system(h, tmp_path):
    target = tmp_path / "t.json"
    h.run(f"/system Be brief.\rhello\r/save {target}\r/clear\r/show\r/load {target}\r/exit\r")
    saved = json.loads(target.read_text())
    assert saved["model"] == str(h.session.model.path)  # no label given: the file, which -m takes
    saved = saved["messages"]
    ids = saved[2].pop("token_ids")  # what the model generated: /load resumes from the prompt cache
    assert ids == h.session.messages[1].token_ids and all(isinstance(i, int) for i in ids)
    assert saved == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"},
                     {"role": "assistant", "content": ANSWER}]
    assert "system prompt kept" in h.said
    assert [m.role for m in h.session.messages] == ["user", "assistant"]
    assert h.session.system == "Be brief."


def test_regen_and_stats(h):
    h.run("hello\r/stats on\r/regen\r/exit\r")
    assert h.out.getvalue() == (ANSWER + "\n") * 2
    # /regen reuses the prompt from the KV cache up to its last multiple of PROMPT_ALIGN
    n = len(h.session.model.prompt_ids(h.session.all_messages()[:-1]))
    assert f"[{n - align_down(n - 1)} new prompt tokens ({align_down(n - 1)} cached)" in h.said
    assert [m.role for m in h.session.messages] == ["user", "assistant"]


def test_conversation_saved_as_it_goes(h, tmp_path):
    h.run("hello\rsecond\r/exit\r")
    saved = json.loads((tmp_path / "conversations" / "test-conv.json").read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"] * 2


def test_completion_of_commands_and_paths(tmp_path):
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from chatglm3_cli.cli.repl import _make_completer

    (tmp_path / "notes.txt").write_text("x")
    c = _make_completer()
    words = [x.text for x in c.get_completions(Document("/re"), CompleteEvent())]
    assert "/read" in words and "/regen" in words
    paths = [x.text for x in c.get_completions(Document(f"/read {tmp_path}/no"), CompleteEvent())]
    assert paths == ["tes.txt"]


# --- /load of a conversation made with another model -------------------------------------------

PLAIN = "The sky is blue"  # what the answer-plain fixture answers (the scripted one: ANSWER)


@pytest.fixture
def opener(fixtures):
    """/load's model opener as `chatglm3 chat` makes it (ModelArgs resolution), counting what it
    opens; the models are this test's own (a switch closes the one it replaces), closed after."""
    from chatglm3_cli.cli import console as console_mod
    from chatglm3_cli.cli.chat import model_opener
    from chatglm3_cli.cli.options import ModelArgs

    real = model_opener(ModelArgs(ctx=512), console_mod.current())
    opened = []

    def open_model(ref, running):
        got = real(ref, running)
        if got is not None:
            opened.append(got[0])
        return got

    open_model.opened = opened
    yield open_model
    for m in opened:
        m.close()


def test_load_of_another_models_conversation_switches_to_it(fixtures, opener, tmp_path):
    scripted, plain = str(fixtures.path("scripted")), str(fixtures.path("answer-plain"))
    a = Harness(opener(scripted, "")[0], tmp_path / "a", open_model=opener)
    a.run(f"hello\r/save {tmp_path / 'a.json'}\r/load {tmp_path / 'a.json'}\r/exit\r")
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["model"] == scripted
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    assert len(opener.opened) == 1 and "model:" not in a.said  # its own model: no reload

    b = Harness(opener(plain, "")[0], tmp_path / "b", open_model=opener)
    b_model = b.session.model
    b.run(f"/system Be brief.\r/set temperature 0\r/load {tmp_path / 'a.json'}\rnext\r/exit\r")
    assert f"model: {scripted} (from {tmp_path / 'a.json'})" in b.said
    assert b.out.getvalue() == ANSWER + "\n"  # the scripted model answered, not answer-plain
    assert str(b.session.model.path) == scripted and b.repl.model_ref == scripted
    assert b_model._llama is None  # the model it replaced was closed: its memory is free
    assert [m.content for m in b.session.messages if m.role == "user"] == ["hello", "next"]
    assert b.session.params.temperature == 0
    autosaved = json.loads((tmp_path / "b" / "conversations" / "test-conv.json").read_text())
    assert autosaved["model"] == scripted  # `chat --continue` comes back to it
    # The model's own answer, saved with its token ids, is reused as they are (prompt cache).
    assert b.session.messages[1].token_ids == a.session.messages[1].token_ids


def test_load_naming_a_model_that_cannot_be_opened_changes_nothing(fixtures, opener, tmp_path, monkeypatch):
    h = Harness(opener(str(fixtures.path("answer-plain")), "")[0], tmp_path, open_model=opener)
    h.run("hello\r/exit\r")
    before = [(m.role, m.content) for m in h.session.messages]
    model = h.session.model
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name, ref in [("missing.json", str(tmp_path / "nope.gguf")), ("bad.json", "not a model ref!"),
                      ("offline.json", "chatglm3-6b")]:  # not downloaded, and offline
        (tmp_path / name).write_text(json.dumps({"model": ref, "messages": [{"role": "user", "content": "x"}]}))
        h.err.truncate(0)
        h.err.seek(0)
        h.run(f"/load {tmp_path / name}\r/exit\r")
        lines = h.said.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "kept" in lines[0], h.said
        assert [(m.role, m.content) for m in h.session.messages] == before
        assert h.session.model is model and model._llama is not None
    assert len(opener.opened) == 1


def test_bare_array_and_model_less_files_keep_the_running_model(fixtures, opener, tmp_path):
    h = Harness(opener(str(fixtures.path("scripted")), "")[0], tmp_path, open_model=opener)
    (tmp_path / "bare.json").write_text(json.dumps([{"role": "user", "content": "from elsewhere"}]))
    (tmp_path / "obj.json").write_text(json.dumps({"messages": [{"role": "user", "content": "no model"}]}))
    h.run(f"/load {tmp_path / 'bare.json'}\r/load {tmp_path / 'obj.json'}\ragain\r/exit\r")
    assert "loaded 1 messages from" in h.said and "model:" not in h.said
    assert h.out.getvalue() == ANSWER + "\n"
    assert [m.content for m in h.session.messages if m.role == "user"] == ["no model", "again"]
    assert len(opener.opened) == 1


def test_a_model_ref_that_is_not_one_is_refused(scripted_model, tmp_path):
    h = Harness(scripted_model, tmp_path)
    (tmp_path / "ctl.json").write_text(json.dumps({"model": "x\x1b[2Jy", "messages": []}))
    h.run(f"/load {tmp_path / 'ctl.json'}\r/exit\r")
    assert "control characters" in h.said and "loaded" not in h.said


def test_with_tools_a_model_without_a_tool_format_is_refused(fixtures, opener, tmp_path):
    from chatglm3_cli.cli.tooling import build_toolbox, check_model

    spec = tmp_path / "tools.json"
    spec.write_text(json.dumps([{"type": "function", "function": {"name": "search", "parameters": {}}}]))
    toolbox = build_toolbox(None, [str(spec)], False, workdir=None, cell_timeout=10)
    model = opener(str(fixtures.path("scripted")), "")[0]
    check_model(model, toolbox)
    style = toolbox.style
    h = Harness(model, tmp_path, open_model=opener, toolbox=toolbox)
    (tmp_path / "t.json").write_text(json.dumps({"model": str(fixtures.path("template")), "messages": [
        {"role": "user", "content": "x"}]}))
    h.run(f"/load {tmp_path / 't.json'}\r/exit\r")
    lines = h.said.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: not switching to") and "tool" in lines[0], h.said
    assert h.session.model is model and toolbox.style == style and h.session.messages == []
    assert opener.opened[-1]._llama is None  # the model it opened to check was closed again


def test_load_of_a_named_model_uses_its_settings_and_another_name_for_the_running_file_loads_nothing(
        fixtures, opener, no_template_path, tmp_path):
    from typer.testing import CliRunner

    from chatglm3_cli.cli.app import app

    scripted = str(fixtures.path("scripted"))
    for args in (["mine", scripted], ["base", str(no_template_path), "--chat-template", "chatml"]):
        r = CliRunner().invoke(app, ["models", "add", *args])
        assert r.exit_code == 0, r.output
    h = Harness(opener(scripted, "")[0], tmp_path, open_model=opener)
    for name, ref in [("mine.json", "mine"), ("base.json", "base")]:
        (tmp_path / name).write_text(json.dumps({"model": ref, "messages": []}))
    h.run(f"/load {tmp_path / 'mine.json'}\rhello\r/load {tmp_path / 'base.json'}\rhello\r/exit\r")
    assert len(opener.opened) == 2  # "mine" is the running file: no reload
    assert f"model: base (from {tmp_path / 'base.json'})" in h.said
    # The file has no chat template: it answers only with the one its name was added with.
    assert h.out.getvalue() == ANSWER + "\n" + "Template path works\n"


def test_without_a_model_opener_the_running_model_goes_on(scripted_model, tmp_path):
    """A ChatREPL made without one (a library user's): the messages load, the model stays, and
    the user is told which model answers."""
    h = Harness(scripted_model, tmp_path)
    (tmp_path / "o.json").write_text(json.dumps({"model": "/elsewhere/other.gguf", "messages": [
        {"role": "user", "content": "earlier"}]}))
    h.run(f"/load {tmp_path / 'o.json'}\r/exit\r")
    assert "was saved with /elsewhere/other.gguf" in h.said and "loaded 1 messages" in h.said
    assert h.session.model is scripted_model and [m.content for m in h.session.messages] == ["earlier"]


def test_ctrl_c_while_the_model_is_fetched_keeps_the_chat_as_it_was(scripted_model, tmp_path):
    def interrupted(ref, running):  # what Ctrl-C during a download raises out of the opener
        raise KeyboardInterrupt

    h = Harness(scripted_model, tmp_path, open_model=interrupted)
    (tmp_path / "o.json").write_text(json.dumps({"model": "owner/repo:Q4_K_M", "messages": [
        {"role": "user", "content": "earlier"}]}))
    assert h.run(f"/load {tmp_path / 'o.json'}\rhello\r/exit\r") == 0
    assert "(stopped; kept" in h.said and h.out.getvalue() == ANSWER + "\n"
    assert [m.content for m in h.session.messages if m.role == "user"] == ["hello"]
