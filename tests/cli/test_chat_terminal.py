"""`chatglm3 chat` as a real process: pipes without a terminal, and a real terminal (tmux).
What is not about the process (saving, --no-save, --continue, history) runs the same command
in this process through CliRunner: a real process per chat cost a Python start, the imports
and a model load each, for nothing those tests look at."""
from __future__ import annotations

import builtins
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.exit_codes import ExitCode

CMD = [sys.executable, "-m", "chatglm3_cli"]
ANSWER = "Hello! I am ChatGLM3 🙂龘"


def _env(tmp_path):
    env = dict(os.environ)
    env.pop("CHATGLM3_MODEL", None)
    env["CHATGLM3_DATA_DIR"] = str(tmp_path / "data")
    return env


@pytest.fixture
def chat(monkeypatch, tmp_path):
    """`chatglm3 chat -m MODEL ARGS <<< TEXT` in this process, saving under tmp_path/data. As in
    a process started with start_new_session, there is no terminal: /dev/tty does not open, so
    the terminal pytest runs in never joins the chat."""
    from chatglm3_cli.cli import chat as chat_command

    def no_tty(file, *args, **kwargs):
        if file == "/dev/tty":
            raise OSError(errno.ENXIO, "No such device or address", file)
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(chat_command, "open", no_tty, raising=False)

    def invoke(model, text, *args):
        r = CliRunner().invoke(app, ["chat", "-m", str(model), *args], input=text,
                               env={"CHATGLM3_DATA_DIR": str(tmp_path / "data")})
        assert r.exit_code == 0, r.output
        assert r.stdout == ANSWER + "\n"
        return r

    return invoke


def test_piped_text_without_a_terminal_answers_and_exits(fixtures, tmp_path):
    p = subprocess.run(CMD + ["chat", "-m", str(fixtures.path("scripted"))], input=b"notes to discuss",
                       capture_output=True, env=_env(tmp_path), timeout=120, start_new_session=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == ANSWER + "\n"
    assert b"\x1b" not in p.stdout
    convs = list((tmp_path / "data" / "conversations").glob("*.json"))
    assert len(convs) == 1
    saved = json.loads(convs[0].read_text())
    assert saved["messages"][0] == {"role": "user", "content": "notes to discuss"}


def test_nothing_piped_and_no_terminal_is_a_usage_error(fixtures, tmp_path):
    p = subprocess.run(CMD + ["chat", "-m", str(fixtures.path("scripted"))], stdin=subprocess.DEVNULL,
                       capture_output=True, env=_env(tmp_path), timeout=120, start_new_session=True)
    assert p.returncode == ExitCode.USAGE and b"nothing to answer" in p.stderr


def test_no_save_and_history_commands(chat, fixtures, tmp_path):
    env = _env(tmp_path)
    model = fixtures.path("scripted")
    chat(model, "unsaved", "--no-save")
    assert not (tmp_path / "data" / "conversations").exists()
    chat(model, "kept question")
    runner = CliRunner()
    listing = runner.invoke(app, ["history"], env={"CHATGLM3_DATA_DIR": env["CHATGLM3_DATA_DIR"]})
    assert listing.exit_code == 0 and "kept question" in listing.stdout and "1 turns" in listing.stdout
    conv_id = listing.stdout.split()[0]
    shown = runner.invoke(app, ["history", "show", conv_id], env={"CHATGLM3_DATA_DIR": env["CHATGLM3_DATA_DIR"]})
    assert "## User\n\nkept question" in shown.stdout and ANSWER in shown.stdout
    out = tmp_path / "export.json"
    exp = runner.invoke(app, ["history", "export", conv_id, "--format", "json", "-o", str(out)],
                        env={"CHATGLM3_DATA_DIR": env["CHATGLM3_DATA_DIR"]})
    assert exp.exit_code == 0
    assert json.loads(out.read_text())["messages"][1]["content"] == ANSWER
    missing = runner.invoke(app, ["history", "show", "nope"], env={"CHATGLM3_DATA_DIR": env["CHATGLM3_DATA_DIR"]})
    assert missing.exit_code == ExitCode.INPUT_ERROR and "chatglm3 history" in missing.stderr


def test_continue_resumes_the_last_conversation(chat, fixtures, tmp_path):
    model = fixtures.path("scripted")
    chat(model, "first session")
    assert "resumed conversation" in chat(model, "second session", "--continue").stderr
    convs = list((tmp_path / "data" / "conversations").glob("*.json"))
    assert len(convs) == 1
    msgs = json.loads(convs[0].read_text())["messages"]
    assert [m["content"] for m in msgs if m["role"] == "user"] == ["first session", "second session"]


# --- a real terminal ------------------------------------------------------------------------

TMUX = shutil.which("tmux")


class Tmux:
    def __init__(self, name, tmp_path):
        self.name = name
        self.socket = str(tmp_path / "tmux.sock")

    def __call__(self, *args):
        return subprocess.run([TMUX, "-S", self.socket, *args], capture_output=True, text=True, timeout=30)

    def screen(self):
        return self("capture-pane", "-t", self.name, "-p", "-S", "-200").stdout

    def wait_for(self, needle, timeout=60.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.screen()
            if needle in s:
                return s
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} never appeared on screen:\n{self.screen()}")


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_real_terminal_type_interrupt_type_exit(fixtures, tmp_path):
    t = Tmux("chat", tmp_path)
    env = _env(tmp_path)
    model = str(fixtures.path("scripted-loop"))
    cmd = " ".join([sys.executable, "-m", "chatglm3_cli", "chat", "-m", model, "--ctx", "60000"])
    envs = " ".join(f"{k}='{v}'" for k, v in [("CHATGLM3_DATA_DIR", env["CHATGLM3_DATA_DIR"]),
                                                ("PYTHONPATH", os.pathsep.join(sys.path))])
    t("new-session", "-d", "-s", "chat", "-x", "100", "-y", "30", f"env {envs} {cmd}; echo EXIT=$?; sleep 60")
    try:
        t.wait_for(">>>")
        t("send-keys", "-t", "chat", "hello", "Enter")
        t.wait_for("Hello! I am ChatGLM3 Hello!")
        t("send-keys", "-t", "chat", "C-c")
        t.wait_for("[interrupted]")
        t("send-keys", "-t", "chat", "/show", "Enter")
        screen = t.wait_for("context:")
        assert "of 60000 tokens used" in screen or "tokens used" in screen
        t("send-keys", "-t", "chat", "/exit", "Enter")
        screen = t.wait_for("EXIT=")
        assert "EXIT=0" in screen
        assert "Traceback" not in screen
        convs = list((tmp_path / "data" / "conversations").glob("*.json"))
        msgs = json.loads(convs[0].read_text())["messages"]
        assert msgs[1]["role"] == "assistant" and msgs[1]["interrupted"] is True
    finally:
        t("kill-server")


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_piped_first_message_then_the_terminal(fixtures, tmp_path):
    t = Tmux("piped", tmp_path)
    env = _env(tmp_path)
    cmd = " ".join([sys.executable, "-m", "chatglm3_cli", "chat", "-m", str(fixtures.path("scripted"))])
    envs = " ".join(f"{k}='{v}'" for k, v in [("CHATGLM3_DATA_DIR", env["CHATGLM3_DATA_DIR"]),
                                                ("PYTHONPATH", os.pathsep.join(sys.path))])
    t("new-session", "-d", "-s", "piped", "-x", "100", "-y", "20",
      f"echo 'my piped notes' | env {envs} {cmd}; echo EXIT=$?; sleep 60")
    try:
        t.wait_for(">>>")
        t("send-keys", "-t", "piped", "follow up", "Enter")
        t.wait_for(">>> follow up")
        screen = t.wait_for(">>> follow up\n" + ANSWER)
        t("send-keys", "-t", "piped", "/exit", "Enter")
        screen = t.wait_for("EXIT=")
        assert "EXIT=0" in screen and screen.count(ANSWER) == 2
        convs = list((tmp_path / "data" / "conversations").glob("*.json"))
        users = [m["content"] for m in json.loads(convs[0].read_text())["messages"] if m["role"] == "user"]
        assert users == ["my piped notes", "follow up"]
    finally:
        t("kill-server")


def _start(t, tmp_path, name, args, *, width=100, height=30, piped=None):
    env = _env(tmp_path)
    cmd = " ".join([sys.executable, "-m", "chatglm3_cli", "chat", *args])
    envs = " ".join(f"{k}='{v}'" for k, v in [("CHATGLM3_DATA_DIR", env["CHATGLM3_DATA_DIR"]),
                                                ("CHATGLM3_NOHISTORY", "1"),
                                                ("PYTHONPATH", os.pathsep.join(sys.path))])
    pipe = f"echo '{piped}' | " if piped else ""
    t("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
      f"{pipe}env {envs} {cmd}; echo EXIT=$?; sleep 60")


def _saved_answers(tmp_path):
    convs = list((tmp_path / "data" / "conversations").glob("*.json"))
    return [m for m in json.loads(convs[0].read_text())["messages"] if m["role"] == "assistant"]


def _shown(screen, start, end):
    """The text between the line that starts with `start` and the next line with `end`,
    lines joined as rich wrapped them (at spaces)."""
    lines = screen.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(start))
    j = next(k for k in range(i + 1, len(lines)) if end in lines[k])
    return " ".join(line.strip() for line in lines[i + 1:j] if line.strip())


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_ctrl_c_never_shows_a_line_of_the_answer_twice(fixtures, tmp_path):
    """Ctrl-C lands while the answer is being drawn; what stays on screen is exactly the
    answer as saved, once (it used to show its first line twice above [interrupted])."""
    t = Tmux("intr", tmp_path)
    _start(t, tmp_path, "intr", ["-m", str(fixtures.path("scripted-loop")), "--ctx", "60000"])
    try:
        t.wait_for(">>>")
        rounds = 4
        for k in range(rounds):
            t("send-keys", "-t", "intr", f"question {k}", "Enter")
            deadline = time.time() + 60
            while time.time() < deadline:  # some answer text below this round's prompt
                s = t.screen()
                if f">>> question {k}" in s and s.split(f">>> question {k}", 1)[1].count("ChatGLM3") >= 2:
                    break
                time.sleep(0.05)
            t("send-keys", "-t", "intr", "C-c")
            deadline = time.time() + 60
            while t.screen().count("[interrupted]") < k + 1 and time.time() < deadline:
                time.sleep(0.1)
        t.wait_for(">>>")
        t("send-keys", "-t", "intr", "/exit", "Enter")
        screen = t.wait_for("EXIT=")
        assert "EXIT=0" in screen and "Traceback" not in screen
        answers = _saved_answers(tmp_path)
        assert len(answers) == rounds and all(a["interrupted"] for a in answers)
        for k, saved in enumerate(answers):
            shown = _shown(screen, f">>> question {k}", "[interrupted]")
            assert shown and saved["content"].startswith(shown), (k, shown, saved["content"])
    finally:
        t("kill-server")


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_keys_typed_during_an_answer_are_not_echoed_into_it(fixtures, tmp_path):
    """Typing ahead while an answer streams: the keys wait for the next prompt instead of
    being echoed into the answer, where the extra line broke the live display (the flaky
    test_piped_first_message_then_the_terminal saw the answer three times)."""
    t = Tmux("ahead", tmp_path)
    _start(t, tmp_path, "ahead", ["-m", str(fixtures.path("scripted-loop")), "--max-tokens", "600"])
    try:
        t.wait_for(">>>")
        t("send-keys", "-t", "ahead", "go", "Enter")
        t.wait_for("Hello! I am ChatGLM3 Hello!")
        # Echo is off while the answer streams (a ^C or typed keys are not drawn into it) ...
        tty = t("display", "-p", "-t", "ahead", "#{pane_tty}").stdout.strip()
        assert re.search(r"(^|\s)-echo(\s|$)", _stty(tty))
        t("send-keys", "-t", "ahead", "/show", "Enter")  # typed ahead, mid-answer
        screen = t.wait_for("context:")
        saved = _saved_answers(tmp_path)[0]["content"]
        note = "note: the answer was cut off at 600 tokens (--max-tokens): raise it to let the model finish"
        assert _shown(screen, ">>> go", ">>> /show") == f"{saved} {note}"  # once, whole, nothing mixed in
        t("send-keys", "-t", "ahead", "/exit", "Enter")
        assert "EXIT=0" in t.wait_for("EXIT=")
        assert re.search(r"(^|\s)echo(\s|$)", _stty(tty))  # ... and back on afterwards
    finally:
        t("kill-server")


def _stty(tty):
    with open(tty) as f:
        return subprocess.run(["stty", "-a"], stdin=f, capture_output=True, text=True, timeout=10).stdout


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_single_newlines_in_an_answer_keep_their_lines(tmp_path):
    """As a chat UI shows them: a poem keeps its lines (CommonMark would join them)."""
    script = tmp_path / "show.py"
    script.write_text(
        "import sys\n"
        "from chatglm3_cli.cli.render import MarkdownRenderer\n"
        "text = ('Roses are red,\\nviolets are blue,\\n**sugar** is sweet.\\n\\n'\n"
        "        'Second paragraph\\nstill second.\\n\\n- item one\\n- item two\\n')\n"
        "r = MarkdownRenderer(sys.stdout)\n"
        "for i in range(0, len(text), 3):\n"
        "    r.feed(text[i:i + 3])\n"
        "r.finish()\n"
        "print('DONE')\n")
    t = Tmux("md", tmp_path)
    env = f"PYTHONPATH='{os.pathsep.join(sys.path)}'"
    t("new-session", "-d", "-s", "md", "-x", "80", "-y", "30", f"env {env} {sys.executable} {script}; sleep 60")
    try:
        screen = t.wait_for("DONE")
        lines = [line.strip() for line in screen.splitlines() if line.strip()]
        i = lines.index("Roses are red,")
        assert lines[i:i + 4] == ["Roses are red,", "violets are blue,", "sugar is sweet.", "Second paragraph"]
        assert lines[i + 4] == "still second."
        assert [x for x in lines if "item" in x] == ["• item one", "• item two"]
    finally:
        t("kill-server")


def test_history_and_continue_survive_a_malformed_conversation(chat, fixtures, tmp_path):
    env = _env(tmp_path)
    model = fixtures.path("scripted")
    chat(model, "first session")
    convs = tmp_path / "data" / "conversations"
    (convs / "99999999-999999-bad1.json").write_text('{"id": "x", "created": 9e9, "updated": 9e9, '
                                                     '"messages": "abc"}')
    (convs / "99999999-999999-bad2.json").mkdir()
    (convs / "99999999-999999-bad3.json").write_text("{" * 50_000)
    err = chat(model, "second session", "--continue").stderr
    assert "resumed conversation" in err and err.count("warning: skipped") == 3
    runner = CliRunner()
    denv = {"CHATGLM3_DATA_DIR": env["CHATGLM3_DATA_DIR"]}
    listing = runner.invoke(app, ["history"], env=denv)
    assert listing.exit_code == 0 and "first session" in listing.stdout
    assert "skipped 99999999-999999-bad1.json" in listing.stderr and "Traceback" not in listing.output
    for args, code, needle in [
        (["history", "show", "*"], ExitCode.INPUT_ERROR, "not a conversation id: '*'"),
        (["history", "show", "99999999"], ExitCode.INPUT_ERROR, "ambiguous id '99999999': 99999999-999999-bad1"),
        (["history", "show", "99999999-999999-bad1"], ExitCode.INPUT_ERROR, "not a valid saved conversation"),
        (["history", "export", listing.stdout.split()[0], "-o", "/proc/nope/x.md"], ExitCode.OUTPUT_ERROR,
         "cannot write /proc/nope/x.md"),
    ]:
        r = runner.invoke(app, args, env=denv)
        assert r.exit_code == code, (args, r.output)
        assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_closed_stdout_and_stdin(fixtures, tmp_path):
    env = _env(tmp_path)
    model = str(fixtures.path("scripted"))
    # `run >&-`: nowhere to write the answer is a broken pipe, said in one line.
    p = subprocess.run(CMD + ["run", "-m", model, "hello"], stderr=subprocess.PIPE, env=env, timeout=120,
                       stdin=subprocess.DEVNULL, pass_fds=(), close_fds=True,
                       preexec_fn=lambda: os.close(1))
    assert p.returncode == ExitCode.BROKEN_PIPE, p.stderr
    assert p.stderr.decode().strip() == "error: stdout is closed: there is nowhere to write the answer"
    # `run <&-`: no stdin is no piped text; the prompt argument is answered.
    p = subprocess.run(CMD + ["run", "-m", model, "hello"], capture_output=True, env=env, timeout=120,
                       preexec_fn=lambda: os.close(0))
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == ANSWER + "\n"
    p = subprocess.run(CMD + ["run", "-m", model], capture_output=True, env=env, timeout=120,
                       preexec_fn=lambda: os.close(0))
    assert p.returncode == ExitCode.USAGE and len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_unwritable_data_dir_warns_once_and_chat_goes_on(fixtures, tmp_path):
    t = Tmux("rodata", tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cmd = " ".join([sys.executable, "-m", "chatglm3_cli", "chat", "-m", str(fixtures.path("scripted"))])
    envs = " ".join(f"{k}='{v}'" for k, v in [("CHATGLM3_DATA_DIR", str(blocker / "data")),
                                                ("PYTHONPATH", os.pathsep.join(sys.path))])
    t("new-session", "-d", "-s", "rodata", "-x", "120", "-y", "40", f"env {envs} {cmd}; echo EXIT=$?; sleep 60")
    try:
        t.wait_for(">>>")
        for word in ("one", "two"):
            t("send-keys", "-t", "rodata", word, "Enter")
            t.wait_for(f">>> {word}\n{ANSWER}")
        t("send-keys", "-t", "rodata", "/exit", "Enter")
        screen = t.wait_for("EXIT=")
        assert "EXIT=0" in screen, screen
        assert screen.count("warning: cannot write to") == 1, screen
        assert "Traceback" not in screen and "Press ENTER" not in screen
    finally:
        t("kill-server")


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_load_switches_to_the_files_model_in_a_real_chat(fixtures, tmp_path):
    """`chat -m answer-plain`, then /load of a conversation saved with the scripted model: the
    scripted model answers next, and the saved conversation now names it (--continue)."""
    t = Tmux("load", tmp_path)
    scripted = str(fixtures.path("scripted"))
    saved = tmp_path / "a.json"
    saved.write_text(json.dumps({"model": scripted, "messages": [{"role": "user", "content": "earlier"}]}))
    _start(t, tmp_path, "load", ["-m", str(fixtures.path("answer-plain"))], width=300)
    try:
        t.wait_for(">>>")
        t("send-keys", "-t", "load", f"/load {saved}", "Enter")
        t.wait_for(f"model: {scripted} (from {saved})")
        t("send-keys", "-t", "load", "now", "Enter")
        t.wait_for(ANSWER)
        t("send-keys", "-t", "load", "/exit", "Enter")
        screen = t.wait_for("EXIT=")
        assert "EXIT=0" in screen and "Traceback" not in screen
        convs = list((tmp_path / "data" / "conversations").glob("*.json"))
        conv = json.loads(convs[0].read_text())
        assert conv["model"] == scripted
        assert [m["content"] for m in conv["messages"] if m["role"] == "user"] == ["earlier", "now"]
    finally:
        t("kill-server")
