"""JSON input files nested thousands deep or holding a 5,000-digit number are input errors
(exit 4, one line), not tracebacks with exit 1."""
from __future__ import annotations

import subprocess
import sys

import pytest

from chatglm3_cli.cli.exit_codes import ExitCode

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_NUMBER = '{"a": ' + "1" * 5000 + "}"


def _cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "chatglm3_cli", *args], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, cwd=tmp_path)


@pytest.mark.parametrize("content", [DEEP, HUGE_NUMBER], ids=["nested", "big-number"])
def test_a_hostile_tool_json_file(fixtures, tmp_path, content):
    spec = tmp_path / "tools.json"
    spec.write_text(content)
    r = _cli(tmp_path, "run", "-m", str(fixtures.path("scripted-tool")), "--tool-json", str(spec), "hi")
    assert r.returncode == ExitCode.INPUT_ERROR, r.stderr[-800:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content", [DEEP, HUGE_NUMBER], ids=["nested", "big-number"])
def test_a_hostile_glossary(fixtures, tmp_path, content):
    glossary = tmp_path / "terms.json"
    glossary.write_text(content)
    src = tmp_path / "in.txt"
    src.write_text("Hello world.\n")
    r = _cli(tmp_path, "translate", str(src), "--to", "zh", "-m", str(fixtures.path("tiny")),
             "--glossary", str(glossary), "-o", str(tmp_path / "out.txt"))
    assert r.returncode == ExitCode.INPUT_ERROR, r.stderr[-800:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
