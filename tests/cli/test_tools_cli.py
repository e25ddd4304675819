"""`run` and `chat` with --tools, --tool-json and --code: consent, --yes, no terminal, --json,
and the approval prompt on a real terminal (tmux)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.exit_codes import ExitCode

from .test_chat_terminal import TMUX, Tmux, _env

CMD = [sys.executable, "-m", "chatglm3_cli"]


def _tools_file(tmp_path, fail=False):
    marker = tmp_path / "called.txt"
    body = "raise RuntimeError('search is down')" if fail else "return 'sunny in ' + city"
    p = tmp_path / "mytools.py"
    p.write_text(textwrap.dedent(f'''
        def search(city: str) -> str:
            """Search the weather of a city."""
            with open({str(marker)!r}, "a") as f:
                f.write(city + "\\n")
            {body}
        '''))
    return p, marker


def test_run_with_yes_calls_the_tool_and_json_has_every_call(fixtures, tmp_path):
    tools, marker = _tools_file(tmp_path)
    r = CliRunner().invoke(app, ["run", "-m", str(fixtures.path("scripted-tool")), "--tools", str(tools),
                                 "--yes", "--max-tool-calls", "2", "--json", "Weather in Paris?"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert marker.read_text() == "Paris\nParis\n"
    assert out["tool_calls"] == [{"name": "search", "arguments": {"city": "Paris"}, "status": "ok",
                                  "result": "sunny in Paris"}] * 2
    assert out["tool_call_limit_reached"] is True and out["pending_call"]["name"] == "search"
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["system", "user", "assistant", "observation", "assistant", "observation", "assistant"]
    assert out["messages"][0]["tools"][0]["name"] == "search"


def test_run_with_yes_shows_calls_on_stderr_and_keeps_stdout_for_answers(fixtures, tmp_path):
    tools, marker = _tools_file(tmp_path, fail=True)
    r = CliRunner().invoke(app, ["run", "-m", str(fixtures.path("scripted-tool")), "--tools", str(tools),
                                 "--yes", "--max-tool-calls", "1", "Weather?"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""  # the only answers were calls
    assert "search(city='Paris')" in r.stderr and "Error: RuntimeError: search is down" in r.stderr
    assert "--max-tool-calls 1" in r.stderr and marker.read_text() == "Paris\n"


def test_run_without_a_terminal_refuses_tools_unless_yes(fixtures, tmp_path):
    tools, marker = _tools_file(tmp_path)
    p = subprocess.run(CMD + ["run", "-m", str(fixtures.path("scripted-tool")), "--tools", str(tools), "hi"],
                       stdin=subprocess.DEVNULL, capture_output=True, env=_env(tmp_path), timeout=120,
                       start_new_session=True)
    assert p.returncode == ExitCode.USAGE and b"no terminal to approve tool calls" in p.stderr
    assert b"--yes" in p.stderr and not marker.exists()


def test_tool_json_calls_are_shown_not_run(fixtures, tmp_path):
    spec = tmp_path / "tools.json"
    spec.write_text(json.dumps([{"type": "function", "function": {
        "name": "search", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]))
    r = CliRunner().invoke(app, ["run", "-m", str(fixtures.path("scripted-tool")), "--tool-json", str(spec),
                                 "--json", "x"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tool_calls"] == [] and out["pending_call"] == {"name": "search", "arguments": {"city": "Paris"}}


def test_run_with_a_template_that_supports_tools(fixtures, tmp_path):
    """A GGUF whose chat template reads ``tools``: the <tool_call> its answer writes runs the
    tool, its result goes back through the template, and --json reports the call; without
    --json the call's text is not printed as the answer."""
    tools, marker = _tools_file(tmp_path)
    want = fixtures.sidecar("template-tools")["call"]
    r = CliRunner().invoke(app, ["run", "-m", str(fixtures.path("template-tools")), "--tools", str(tools),
                                 "--yes", "--max-tool-calls", "1", "--json", "Weather in Paris?"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert marker.read_text() == "Paris\n"
    assert out["tool_calls"] == [{**want, "status": "ok", "result": "sunny in Paris"}]
    assert out["pending_call"] == want and out["finish_reason"] == "tool_calls" and out["response"] == ""
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "observation", "assistant"]
    r = CliRunner().invoke(app, ["run", "-m", str(fixtures.path("template-tools")), "--tools", str(tools),
                                 "--yes", "--max-tool-calls", "0", "Weather in Paris?"])
    assert r.exit_code == 0, r.stderr
    assert "<tool_call>" not in r.stdout and "--max-tool-calls 0" in r.stderr


def test_code_and_tools_together_is_a_usage_error(fixtures, tmp_path):
    tools, _ = _tools_file(tmp_path)
    r = CliRunner().invoke(app, ["run", "-m", str(fixtures.path("scripted-code")), "--code", "--tools",
                                 str(tools), "x"])
    assert r.exit_code == ExitCode.USAGE and "either a tool list or the code interpreter" in r.stderr
    r = CliRunner().invoke(app, ["run", "-m", str(fixtures.path("scripted-code")), "--workdir", str(tmp_path), "x"])
    assert r.exit_code == ExitCode.USAGE and "needs --code" in r.stderr


def test_tools_on_a_model_without_a_tool_format(fixtures, tmp_path):
    tools, marker = _tools_file(tmp_path)
    r = CliRunner().invoke(app, ["run", "-m", str(fixtures.path("template")), "--tools", str(tools), "--yes", "x"])
    assert r.exit_code == ExitCode.USAGE and "no tool-calling format" in r.stderr and not marker.exists()


def test_run_code_with_yes_runs_the_cell_in_the_workdir(fixtures, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "cell.py").write_text("print(6 * 7)\n")
    r = CliRunner().invoke(app, ["run", "-m", str(fixtures.path("scripted-code")), "--code", "--yes",
                                 "--workdir", str(work), "--max-tool-calls", "1", "--json", "6*7?"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    (call,) = out["tool_calls"]
    assert call["name"] == "interpreter" and call["code"] == "exec(open('cell.py').read())\n"
    assert call["status"] == "ok" and call["result"] == "42"
    assert out["messages"][0] == {"role": "system", "content": out["messages"][0]["content"]}
    assert "你是一位智能AI助手" in out["messages"][0]["content"]


def test_chat_piped_without_terminal_refuses_then_yes_runs(fixtures, tmp_path):
    tools, marker = _tools_file(tmp_path)
    base = CMD + ["chat", "-m", str(fixtures.path("scripted-tool")), "--tools", str(tools),
                  "--max-tool-calls", "1", "--no-save"]
    p = subprocess.run(base, input=b"Weather in Paris?", capture_output=True, env=_env(tmp_path),
                       timeout=120, start_new_session=True)
    assert p.returncode == 0, p.stderr
    assert b"[refused]" in p.stderr and not marker.exists()
    p = subprocess.run(base + ["--yes"], input=b"Weather in Paris?", capture_output=True, env=_env(tmp_path),
                       timeout=120, start_new_session=True)
    assert p.returncode == 0, p.stderr
    assert b"[result] sunny in Paris" in p.stderr and marker.read_text() == "Paris\n"


def _chat_in_tmux(name, tmp_path, args):
    """`chatglm3 chat ARGS` in a real terminal (tmux session NAME, 120x40); it prints EXIT=rc."""
    t = Tmux(name, tmp_path)
    cmd = " ".join(CMD + ["chat", *args])
    envs = " ".join(f"{k}='{v}'" for k, v in [("CHATGLM3_DATA_DIR", _env(tmp_path)["CHATGLM3_DATA_DIR"]),
                                                ("PYTHONPATH", os.pathsep.join(sys.path))])
    t("new-session", "-d", "-s", name, "-x", "120", "-y", "40", f"env {envs} {cmd}; echo EXIT=$?; sleep 60")
    return t


def _wait_count(t, needle, n, timeout=60.0):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if t.screen().count(needle) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} did not appear {n} times:\n{t.screen()}")


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_approval_prompt_in_a_real_terminal(fixtures, tmp_path):
    tools, marker = _tools_file(tmp_path)
    t = _chat_in_tmux("tools", tmp_path, ["-m", str(fixtures.path("scripted-tool")), "--tools", str(tools),
                                          "--max-tool-calls", "2", "--plain"])
    try:
        t.wait_for(">>>")
        t("send-keys", "-t", "tools", "/tools", "Enter")
        t.wait_for("search(city): Search the weather of a city.")
        t("send-keys", "-t", "tools", "Weather in Paris?", "Enter")
        t.wait_for("The model wants to call search(city='Paris')")
        t.wait_for("[a]lways for this tool:")
        assert not marker.exists()  # nothing runs while the question is open
        t("send-keys", "-t", "tools", "n", "Enter")
        t.wait_for("[refused]")
        _wait_count(t, "Run it?", 2)  # the observation went back; the scripted model calls again
        assert not marker.exists()
        t("send-keys", "-t", "tools", "a", "Enter")
        t.wait_for("[result] sunny in Paris")
        t.wait_for("stopped: the model asked for more than 2 tool calls")
        assert marker.read_text() == "Paris\n"
        t("send-keys", "-t", "tools", "/exit", "Enter")
        screen = t.wait_for("EXIT=")
        assert "EXIT=0" in screen and "Traceback" not in screen
    finally:
        t("kill-server")


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_ctrl_c_at_the_approval_prompt_stops_the_chain_not_the_chat(fixtures, tmp_path):
    """One Ctrl-C at "Run it?" ends the model's calls (it was 5 refusals before); the chat goes on."""
    tools, marker = _tools_file(tmp_path)
    t = _chat_in_tmux("stop", tmp_path, ["-m", str(fixtures.path("scripted-tool")), "--tools", str(tools),
                                         "--max-tool-calls", "5", "--plain", "--no-save"])
    try:
        t.wait_for(">>>")
        t("send-keys", "-t", "stop", "Weather in Paris?", "Enter")
        t.wait_for("Run it?")
        t("send-keys", "-t", "stop", "C-c")
        t.wait_for("(tool calls stopped; the chat goes on)")
        _wait_count(t, ">>>", 2)
        screen = t.screen()
        assert screen.count("Run it?") == 1 and "[refused]" not in screen, screen
        assert not marker.exists()
        t("send-keys", "-t", "stop", "/exit", "Enter")
        screen = t.wait_for("EXIT=")
        assert "EXIT=0" in screen and "Traceback" not in screen, screen
    finally:
        t("kill-server")


def test_glm4_answers_and_calls_tools_in_its_own_format(fixtures, tmp_path):
    r = CliRunner().invoke(app, ["run", "-m", str(fixtures.path("glm4")), "Hello"])
    assert r.exit_code == 0 and r.stdout == "Hello from GLM-4\n"
    tools = tmp_path / "weather.py"
    tools.write_text('def get_weather(city: str) -> dict:\n    """The weather."""\n    return {"city": city, "sky": "clear"}\n')
    r = CliRunner().invoke(app, ["run", "-m", str(fixtures.path("glm4-tool")), "--tools", str(tools), "--yes",
                                 "--max-tool-calls", "1", "--json", "Weather in Paris?"])
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["family"] == "glm4"
    assert out["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}, "status": "ok",
                                  "result": '{"city": "Paris", "sky": "clear"}'}]
    assert out["messages"][2] == {"role": "assistant", "content": '{"city": "Paris"}', "metadata": "get_weather"}
    r = CliRunner().invoke(app, ["run", "-m", str(fixtures.path("glm4")), "--code", "--yes", "x"])
    assert r.exit_code == ExitCode.USAGE and "not ChatGLM3" in r.stderr


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_ctrl_c_in_a_running_cell_interrupts_the_kernel_not_the_chat(fixtures, tmp_path):
    """Ctrl-C while an approved cell runs stops the cell (the kernel lives on with its state)
    and the chat goes on; the cell's remaining code never runs."""
    pytest.importorskip("jupyter_client")
    work = tmp_path / "work"
    work.mkdir()
    started, finished = work / "started.txt", work / "finished.txt"
    # The scripted model's cell is exec(open('cell.py').read()): it keeps state, says it has
    # started, then waits far longer than the test.
    (work / "cell.py").write_text(textwrap.dedent(f"""
        import time
        kept = 41 + 1
        open({str(started)!r}, "w").write("yes")
        time.sleep(120)
        open({str(finished)!r}, "w").write("yes")
        """))
    t = _chat_in_tmux("cell", tmp_path, ["-m", str(fixtures.path("scripted-code")), "--code", "--workdir", str(work),
                                         "--max-tool-calls", "1", "--plain", "--no-save"])
    try:
        t.wait_for(">>>")
        t("send-keys", "-t", "cell", "What is 6*7?", "Enter")
        t.wait_for("Run it?")
        t("send-keys", "-t", "cell", "y", "Enter")
        import time

        deadline = time.time() + 120  # the kernel starts on the first cell (slow on a busy machine)
        while not started.exists():
            assert time.time() < deadline, t.screen()
            time.sleep(0.2)
        t("send-keys", "-t", "cell", "C-c")
        t.wait_for("[interrupted]")
        t.wait_for(">>>", timeout=30)
        screen = t.screen()
        assert screen.count(">>>") >= 2, screen  # the chat asks for the next message
        # the cell's own KeyboardInterrupt traceback is its observation; none of ours
        assert "EXIT=" not in screen and "chatglm3_cli" not in screen, screen
        t("send-keys", "-t", "cell", "/exit", "Enter")
        screen = t.wait_for("EXIT=")
        assert "EXIT=0" in screen, screen
        assert not finished.exists()  # the rest of the cell never ran
    finally:
        t("kill-server")


SPOOF_CELL = "import os; os.system('touch PWNED') #\x1b[2K\rprint('hello world')\n"


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
@pytest.mark.parametrize("color", [True, False])
def test_a_cell_cannot_hide_code_from_the_approval_prompt(tmp_path, color):
    """The approval prompt itself (show_call + terminal_ask) on a real terminal: the escape
    codes that once erased the line are shown as text, and nothing runs on "n"."""
    script = tmp_path / "ask.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from chatglm3_cli.cli.tooling import terminal_ask, tty_line_reader
        from chatglm3_cli.tools.chain import Approvals, Toolbox, ToolCall
        from chatglm3_cli.tools.interpreter import Interpreter

        box = Toolbox(interpreter=Interpreter({str(tmp_path)!r}))
        ask = terminal_ask(tty_line_reader(sys.stderr), sys.stderr, color={color})
        outcome = box.run(ToolCall("interpreter", code={SPOOF_CELL!r}), Approvals(ask))
        print("STATUS=" + outcome.status)
        box.close()
        """))
    t = Tmux("spoof", tmp_path)
    envs = f"PYTHONPATH='{os.pathsep.join(sys.path)}'"
    t("new-session", "-d", "-s", "spoof", "-x", "120", "-y", "30",
      f"cd {tmp_path} && env {envs} {sys.executable} {script}; echo EXIT=$?; sleep 60")
    try:
        screen = t.wait_for("[a]lways for this tool:")
        assert "os.system('touch PWNED')" in screen and "\\x1b[2K\\r" in screen, screen
        t("send-keys", "-t", "spoof", "n", "Enter")
        screen = t.wait_for("EXIT=")
        assert "STATUS=refused" in screen and "EXIT=0" in screen, screen
        assert not (tmp_path / "PWNED").exists()
    finally:
        t("kill-server")


def test_chat_with_a_template_that_supports_tools_never_shows_the_call_as_text(fixtures, tmp_path):
    """chat streams a template model's answer; the <tool_call> block it writes is held back
    (and run as a call), never printed as part of the answer."""
    tools, marker = _tools_file(tmp_path)
    r = CliRunner().invoke(app, ["chat", "--no-save", "-m", str(fixtures.path("template-tools")), "--tools",
                                 str(tools), "--yes", "--max-tool-calls", "1"], input="Weather in Paris?\n")
    assert r.exit_code == 0, r.stderr
    assert marker.read_text() == "Paris\n"
    assert "<tool_call>" not in r.stdout and '"arguments"' not in r.stdout
