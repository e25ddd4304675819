"""The config file: read with care (exit 13, one line, never a hang or a flood), per-model
settings, `models add` / `models rm` of a local file, and `chat --continue` keeping its model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from chatglm3_cli import config
from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.exit_codes import ExitCode
from chatglm3_cli.paths import config_file

ANSWER = "Template path works"
CMD = [sys.executable, "-m", "chatglm3_cli"]


def cli(*args, input=None):
    return CliRunner().invoke(app, list(args), input=input)


def write_config(data: bytes | str) -> None:
    config_file().parent.mkdir(parents=True, exist_ok=True)
    config_file().write_bytes(data.encode() if isinstance(data, str) else data)


@pytest.mark.parametrize("what, data, needle", [
    ("invalid UTF-8", b'model = "\xff\xfe"\n', "not UTF-8"),
    ("nested 100,000 deep", b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "config file"),
    ("a 10 MB model name", b'model = "' + b"a" * 10_000_000 + b'"\n', "larger than"),
    ("a 100 kB model name", b'model = "' + b"a" * 100_000 + b'"\n', "100,000 characters long"),
    ("a number for the model", b"model = 3\n", "model must be a model name"),
    ("a bad source", b'source = "github"\n', "source must be"),
    ("a sampling value out of range", b"[models.x]\npath = \"x.gguf\"\ntop_p = 3\n", "top_p in [models.'x']"),
])
def test_a_bad_config_file_is_exit_13_in_one_short_line(what, data, needle):
    write_config(data)
    r = cli("run", "hi")
    assert r.exit_code == ExitCode.CONFIG_ERROR, (what, r.output[:300])
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and len(r.stderr) < 400, what
    assert needle in r.stderr, (what, r.stderr)


def test_a_device_or_fifo_as_config_is_refused_without_reading_or_waiting(tmp_path):
    config_file().parent.mkdir(parents=True)
    os.symlink("/dev/zero", config_file())
    r = cli("run", "hi")
    assert r.exit_code == ExitCode.CONFIG_ERROR and "not a regular file" in r.stderr
    config_file().unlink()
    os.mkfifo(config_file())
    # a real process: a hang would be the test's timeout, not a stuck suite
    p = subprocess.run([*CMD, "run", "hi"], capture_output=True, text=True, timeout=120)
    assert p.returncode == ExitCode.CONFIG_ERROR and "not a regular file" in p.stderr


def test_home_as_a_file_means_no_config(fixtures, tmp_path):
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if k not in ("CHATGLM3_CONFIG_DIR", "XDG_CONFIG_HOME")}
    env["HOME"] = str(home)
    p = subprocess.run([*CMD, "run", "-m", str(fixtures.path("scripted")), "-t", "0", "--max-tokens", "2", "hi"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr


def test_unknown_keys_are_reported_with_the_nearest_known_one(fixtures):
    write_config(f'modle = "x"\n[models.m]\npath = {json.dumps(str(fixtures.path("scripted")))}\n'
                 'chat_tempalte = "gemma"\n')
    cfg = config.load()
    assert cfg.model is None and cfg.models["m"].chat_template is None
    assert len(cfg.problems) == 2
    assert "unknown key 'modle' (did you mean model?)" in cfg.problems[0]
    assert "unknown key 'chat_tempalte' in [models.'m'] (did you mean chat_template?)" in cfg.problems[1]
    r = cli("run", "-m", "m", "-t", "0", "--max-tokens", "2", "hi")
    assert r.exit_code == 0, r.output
    assert r.stderr.count("unknown key") == 2 and "did you mean chat_template?" in r.stderr


def test_models_add_names_a_file_with_its_settings(no_template_path, tmp_path):
    r = cli("models", "add", "base", str(no_template_path), "--chat-template", "chatml",
            "-s", "Be brief.", "-t", "0", "--max-tokens", "3")
    assert r.exit_code == 0, r.output
    settings = config.load().models["base"]
    assert settings.path == str(no_template_path) and settings.chat_template == "chatml"
    assert settings.system == "Be brief." and settings.sampling == {"temperature": 0.0, "max_tokens": 3}

    r = cli("run", "-m", "base", "--max-tokens", "20", "--verbose-prompt", "hi")  # the command line wins
    assert r.exit_code == 0, r.output
    assert r.stdout == ANSWER + "\n" and "[▁br][i][ef][.]" in r.stderr  # the system prompt
    r = cli("run", "-m", "base", "hi")  # the configured max_tokens: cut off at 3
    assert r.exit_code == 0 and "cut off at 3 tokens" in r.stderr, r.output

    rows = [json.loads(x) for x in cli("models", "--json").stdout.splitlines()]
    assert {(x["name"], x["source"]) for x in rows} == {("base", "local")}
    assert "source:        local" in cli("models", "info", "base").stdout

    again = cli("models", "add", "base", str(no_template_path))
    assert again.exit_code == ExitCode.CONFIG_ERROR and "models rm base" in again.stderr
    for bad in (["a/b", str(no_template_path)], ["x", str(tmp_path / "none.gguf")], ["chatglm3-6b", str(no_template_path)]):
        assert cli("models", "add", *bad).exit_code != 0, bad
    (tmp_path / "notes.gguf").write_text("not a model")
    assert cli("models", "add", "y", str(tmp_path / "notes.gguf")).exit_code == ExitCode.USAGE

    r = cli("models", "rm", "base")
    assert r.exit_code == 0, r.output
    assert "base" not in config.load().models and no_template_path.exists()


def test_files_used_with_m_are_listed(fixtures):
    assert cli("run", "-m", str(fixtures.path("scripted")), "--max-tokens", "1", "hi").exit_code == 0
    rows = [json.loads(x) for x in cli("models", "--json").stdout.splitlines()]
    assert [(x["source"], x["path"]) for x in rows] == [("file", str(fixtures.path("scripted")))]
    assert rows[0]["last_used"] > 0


def test_chat_continue_reuses_the_conversations_model(fixtures, tmp_path, monkeypatch):
    model = tmp_path / "mine.gguf"
    os.symlink(fixtures.path("scripted"), model)
    monkeypatch.chdir(tmp_path)
    r = cli("chat", "-m", "mine.gguf", "-t", "0", input="hi")  # a relative path, saved absolute
    assert r.exit_code == 0, r.output
    monkeypatch.chdir("/")
    r = cli("chat", "--continue", "-t", "0", input="again")  # no -m: the conversation's, not the Hub's
    assert r.exit_code == 0, r.output
    assert f"model: {model}" in r.stderr and "resumed conversation" in r.stderr
