"""Strings from a model file or a cache folder are shown with control characters spelled out:
a GGUF's general.name cannot clear the screen or set the window title (models info, the chat
banner), nor can a file name in the cache (models list)."""
from __future__ import annotations

import os
import shutil
import sys

import pytest
from typer.testing import CliRunner

from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.visible import visible
from chatglm3_cli.paths import hf_cache_dir

from ..gguf_edit import copy_with
from .test_chat_terminal import TMUX, Tmux, _env

EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[H\u202eevil"


def _evil_model(fixtures, tmp_path):
    import gguf

    return copy_with(fixtures.path("scripted"), tmp_path / "evil.gguf",
                     {"general.name": (EVIL, gguf.GGUFValueType.STRING)})


def test_visible_spells_out_controls_and_keeps_text():
    assert visible("a\x1b[2Jb\r\n\u202ec\x7f\x85 龘🙂") == "a\\x1b[2Jb\\r\\n\\u202ec\\x7f\\x85 龘🙂"
    assert visible("x\ny\tz", lines=True) == "x\ny\tz"


def test_models_info_shows_the_name_escaped(fixtures, tmp_path):
    r = CliRunner().invoke(app, ["models", "info", str(_evil_model(fixtures, tmp_path))])
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in r.stdout


def test_models_list_shows_cache_file_names_escaped(fixtures):
    snap = hf_cache_dir() / "models--acme--evil-GGUF" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    shutil.copy(fixtures.path("template"), snap / "x\x1b[2J\x1b]0;t\x07.Q8_0.gguf")
    r = CliRunner().invoke(app, ["models"])
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.stdout and "x\\x1b[2J\\x1b]0;t\\x07.Q8_0.gguf" in r.stdout


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_the_chat_banner_shows_the_name_escaped(fixtures, tmp_path):
    model = _evil_model(fixtures, tmp_path)
    t = Tmux("banner", tmp_path)
    envs = " ".join(f"{k}='{v}'" for k, v in [("CHATGLM3_DATA_DIR", _env(tmp_path)["CHATGLM3_DATA_DIR"]),
                                                ("PYTHONPATH", os.pathsep.join(sys.path))])
    t("new-session", "-d", "-s", "banner", "-x", "120", "-y", "30",
      f"env {envs} {sys.executable} -m chatglm3_cli chat -m {model} --plain; echo EXIT=$?; sleep 60")
    try:
        screen = t.wait_for(">>>")
        assert "chatting with \\x1b]0;pwned\\x07\\x1b[2J\\x1b[H\\u202eevil" in screen, screen
        t("send-keys", "-t", "banner", "/exit", "Enter")
        assert "EXIT=0" in t.wait_for("EXIT=")
    finally:
        t("kill-server")
