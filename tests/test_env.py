"""One registry of environment variables (chatglm3_cli/env.py): the code reads only listed
names, the tests isolate all of them, the README shows them all."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from chatglm3_cli import env, paths

ROOT = Path(__file__).resolve().parent.parent


def test_every_variable_named_in_the_code_is_listed():
    named = set()
    for f in (ROOT / "chatglm3_cli").rglob("*.py"):
        named |= set(re.findall(r"\b((?:CHATGLM3|HF)_[A-Z_]+[A-Z])\b", f.read_text(encoding="utf-8")))
    unlisted = sorted(named - set(env.BY_NAME))
    assert not unlisted, f"add these to chatglm3_cli/env.py VARIABLES: {unlisted}"


def test_reading_an_unlisted_name_is_refused():
    with pytest.raises(KeyError, match="VARIABLES"):
        env.get("CHATGLM3_SOMETHING_NEW")


def test_tests_see_no_chatglm3_variable_but_fresh_folders(tmp_path):
    leaked = {k: v for k, v in os.environ.items() if k.startswith("CHATGLM3_")
              and env.BY_NAME[k].in_tests == "unset"}
    assert not leaked
    assert paths.config_dir() == tmp_path / "config"
    assert paths.data_dir() == tmp_path / "data"
    assert paths.state_dir() == tmp_path / "state"
    assert paths.hf_cache_dir() == tmp_path / "hf-hub-cache"


def test_paths_follow_the_variables_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATGLM3_DATA_DIR", str(tmp_path / "elsewhere"))
    assert paths.data_dir() == tmp_path / "elsewhere"
    monkeypatch.setenv("CHATGLM3_DATA_DIR", "")
    assert paths.data_dir() != tmp_path / "elsewhere"  # empty means the platform's folder


def test_flags():
    os.environ["CHATGLM3_NOHISTORY"] = "Yes"
    try:
        assert env.flag("CHATGLM3_NOHISTORY")
    finally:
        del os.environ["CHATGLM3_NOHISTORY"]
    assert not env.flag("CHATGLM3_NOHISTORY")


def test_one_accessor_per_kind_and_a_bad_value_is_said_once(monkeypatch, capsys):
    from chatglm3_cli.engine.llama.placement import use_mmap
    from chatglm3_cli.engine.model import pad_rows_mode, speculate_by_default

    monkeypatch.setattr(env, "_warned", set())
    for value, want in (("ON", True), ("no", False), ("", None)):
        monkeypatch.setenv("CHATGLM3_MMAP", value)
        assert env.switch("CHATGLM3_MMAP") is want
    for value, want in (("auto", "auto"), ("1", "on"), ("False", "off")):
        monkeypatch.setenv("CHATGLM3_SPECULATE", value)
        assert env.mode("CHATGLM3_SPECULATE") == want
    monkeypatch.setenv("CHATGLM3_OMP_WAIT_POLICY", "ACTIVE")
    assert env.choice("CHATGLM3_OMP_WAIT_POLICY", ("passive", "active")) == "active"
    assert capsys.readouterr().err == ""
    # A value no accessor can read: the default, and one warning per variable (not per read).
    monkeypatch.setenv("CHATGLM3_MMAP", "nope")
    monkeypatch.setenv("CHATGLM3_SPECULATE", "sometimes")
    monkeypatch.setenv("CHATGLM3_PAD_ROWS", "4")
    for _ in range(3):
        assert use_mmap() is True and speculate_by_default() is False and pad_rows_mode() == "auto"
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3, err
    assert "CHATGLM3_MMAP='nope' is not 1 or 0" in err[0] and "using the default (mapped" in err[0]
    assert "CHATGLM3_SPECULATE='sometimes' is not on, off or auto" in err[1]
    assert "CHATGLM3_PAD_ROWS='4'" in err[2]


def test_the_readme_table_is_the_registry():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert env.markdown_table() in readme, "README's Environment table differs; expected:\n" + env.markdown_table()


def test_help_names_the_variables():
    from typer.testing import CliRunner

    from chatglm3_cli.cli.app import app

    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout
    for v in env.VARIABLES:
        if v.name.startswith("CHATGLM3_") and v.in_tests != "keep":
            assert v.name in out
