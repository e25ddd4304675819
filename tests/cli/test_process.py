"""The real command in real processes: start-up, pipes, terminals, signals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from chatglm3_cli.cli.exit_codes import ExitCode

from ..ptyrun import run_in_pty
from ..startup import started

CMD = [sys.executable, "-m", "chatglm3_cli"]
ANSWER = "Hello! I am ChatGLM3 🙂龘"


def _env():
    env = dict(os.environ)
    env.pop("CHATGLM3_DEBUG", None)
    env.pop("CHATGLM3_MODEL", None)
    return env


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["--version"], ["pull", "--help"],
                                  ["models", "--help"]])
def test_help_does_not_import_llama_cpp(argv):
    p = started(*argv)
    assert p.returncode == 0, p.stderr
    imported = p.imported
    assert not any(m.startswith("llama_cpp") for m in imported)
    assert not any(m.startswith(("sentencepiece", "huggingface_hub", "numpy")) for m in imported)
    assert p.stdout


def test_console_script_entry_point():
    exe = os.path.join(os.path.dirname(sys.executable), "chatglm3")
    if not os.path.exists(exe):
        pytest.skip("console script not installed in this environment")
    p = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "run" in p.stdout


def test_pipe_output_is_plain(fixtures):
    p = subprocess.run(CMD + ["run", "-m", str(fixtures.path("scripted")), "hi"],
                       capture_output=True, env=_env(), stdin=subprocess.DEVNULL, timeout=120)
    assert p.returncode == 0
    assert p.stdout.decode() == ANSWER + "\n"
    assert b"\x1b" not in p.stdout and p.stderr == b""


def test_piped_stdin_joins_prompt(fixtures):
    p = subprocess.run(CMD + ["run", "-m", str(fixtures.path("scripted")), "--json", "review"],
                       input=b"some diff", capture_output=True, env=_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    assert b'"content": "some diff\\n\\nreview"' in p.stdout


def test_broken_pipe_is_not_a_crash(fixtures):
    p = subprocess.Popen(CMD + ["run", "-m", str(fixtures.path("scripted-loop")), "--ctx", "8192", "hi"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=_env())
    assert p.stdout.read(5) == b"Hello"
    p.stdout.close()
    err = p.stderr.read()
    p.wait(timeout=60)
    assert p.returncode == ExitCode.BROKEN_PIPE
    assert b"Traceback" not in err and b"Exception ignored" not in err


def test_ctrl_c_stops_generation_with_130(fixtures):
    p = subprocess.Popen(CMD + ["run", "-m", str(fixtures.path("scripted-loop")), "--ctx", "100000", "hi"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=_env())
    assert p.stdout.read(5) == b"Hello"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == ExitCode.INTERRUPTED
    *before, last = err.decode().strip().splitlines()
    assert last == "interrupted"
    assert [line.split(" is ")[0] for line in before] == ["warning: --ctx 100000"]  # above the 2048 trained


def test_terminal_stdin_without_prompt_exits_2_instead_of_waiting(fixtures):
    code, screen = run_in_pty(_env(), CMD + ["run", "-m", str(fixtures.path("scripted"))], timeout=30)
    assert code == ExitCode.USAGE
    assert "Usage: chatglm3 run" in screen


def test_terminal_run_shows_the_answer(fixtures):
    code, screen = run_in_pty(_env(), CMD + ["run", "-m", str(fixtures.path("scripted")), "hi"])
    assert code == 0
    assert ANSWER in screen and "Leaked" not in screen
