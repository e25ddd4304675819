"""Every command's --help, locked: what a user reads cannot change by accident.

The golden files in tests/cli/help/ are the exact text `chatglm3 ... --help` prints at 80
columns. When a change to the help is deliberate (a new option, corrected wording), regenerate
them and review the diff:

    UPDATE_GOLDEN=1 python -m pytest tests/cli/test_help.py

A new command fails here until its golden file exists, so nobody adds help text unseen.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from chatglm3_cli.cli.app import app

GOLDEN = Path(__file__).parent / "help"
WIDTH = 80


def command_paths() -> list[tuple[str, ...]]:
    """Every command and sub-command of the app, found by walking it (new ones included)."""
    paths: list[tuple[str, ...]] = []

    def walk(cmd, path: tuple[str, ...]) -> None:
        if getattr(cmd, "hidden", False):
            return
        paths.append(path)
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, path + (name,))

    walk(typer.main.get_command(app), ())
    return paths


def render_help(path: tuple[str, ...], width: int) -> str:
    env = {"COLUMNS": str(width), "LINES": "50", "NO_COLOR": "1", "TERM": "dumb"}
    r = CliRunner().invoke(app, [*path, "--help"], env=env)
    assert r.exit_code == 0, r.output
    return r.stdout


def golden_name(path: tuple[str, ...]) -> str:
    return "-".join(("chatglm3",) + path) + ".txt"


@pytest.fixture(autouse=True)
def _plain_rich(monkeypatch):
    for var in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TERMINAL_WIDTH"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "chatglm3")
def test_help_matches_the_golden_file(path):
    text = render_help(path, WIDTH)
    golden = GOLDEN / golden_name(path)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), (f"no golden help for `{' '.join(path)}`: run "
                             "UPDATE_GOLDEN=1 python -m pytest tests/cli/test_help.py and review it")
    assert text == golden.read_text(encoding="utf-8")


def test_no_stale_golden_files():
    expected = {golden_name(p) for p in command_paths()}
    stale = sorted(p.name for p in GOLDEN.glob("*.txt") if p.name not in expected)
    assert not stale, f"golden help for commands that no longer exist: {stale}"


TYPE_LIKE = re.compile(r"<(bool|int|float|str|text|list|path)\b[^>]*>|\b(int|float) range\b|\{[A-Z.]+\}")


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "chatglm3")
def test_help_reads_well_at_common_widths(path, width):
    """Defaults are shown, placeholders are names (N, PATH), never types (<bool>, <int range>)."""
    text = render_help(path, width)
    assert not TYPE_LIKE.search(text), TYPE_LIKE.search(text).group(0)
    assert max(len(line) for line in text.splitlines()) <= width
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    with_default = [p for p in cmd.params if getattr(p, "show_default", None) is not False
                    and not getattr(p, "is_flag", False)
                    and (isinstance(p.show_default, str) or p.default not in (None, ()))]
    assert text.count("[default:") >= len(with_default), [p.name for p in with_default]
