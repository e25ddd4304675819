"""--chat-template on every command that answers, and models info's template and stop tokens,
on a real GGUF without a chat template (the ChatML fixture with its template removed)."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.exit_codes import ExitCode

from ..conftest import make_test_model

ANSWER = "Template path works"


def cli(*args, input=None):
    return CliRunner().invoke(app, list(args), input=input)


@pytest.fixture
def jinja(tmp_path):
    f = tmp_path / "chatml.jinja"
    f.write_text(make_test_model.CHATML_TEMPLATE)
    return str(f)


def test_without_a_template_the_error_says_how_to_give_one(no_template_path):
    r = cli("run", "-m", str(no_template_path), "hi")
    assert r.exit_code == ExitCode.MODEL_ERROR
    assert "neither a ChatGLM3 model nor carries a chat template" in r.stderr and "--chat-template" in r.stderr


@pytest.mark.parametrize("how", ["chatml", "file"])
def test_run_and_chat(no_template_path, jinja, how):
    tmpl = jinja if how == "file" else how
    r = cli("run", "-m", str(no_template_path), "--chat-template", tmpl, "-t", "0", "hi")
    assert r.exit_code == 0, r.output
    assert r.stdout == ANSWER + "\n"
    r = cli("chat", "-m", str(no_template_path), "--chat-template", tmpl, "--no-save", "-t", "0", input="hi")
    assert r.exit_code == 0, r.output
    assert r.stdout == ANSWER + "\n"


def test_batch_and_translate(no_template_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "jobs.jsonl").write_text(json.dumps({"id": "a", "task": "generate", "prompt": "hi"}) + "\n")
    r = cli("batch", "-m", str(no_template_path), "--chat-template", "chatml", "jobs.jsonl")
    assert r.exit_code == 0, r.output
    line = json.loads((tmp_path / "jobs.results.jsonl").read_text())
    assert line["output"] == ANSWER and line["finish_reason"] == "stop"
    (tmp_path / "note.txt").write_text("One paragraph.\n")
    r = cli("translate", "-m", str(no_template_path), "--chat-template", "chatml", "note.txt", "--to", "de")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "note.de.txt").read_text() == ANSWER + "\n"


def test_bad_names_and_chatglm3_files(fixtures, no_template_path):
    r = cli("run", "-m", str(no_template_path), "--chat-template", "chatmll", "hi")
    assert r.exit_code == ExitCode.INPUT_ERROR
    assert "neither a file nor a built-in template name" in r.stderr and "chatml, llama3, gemma" in r.stderr
    r = cli("run", "-m", str(fixtures.path("scripted")), "--chat-template", "chatml", "-t", "0", "hi")
    assert r.exit_code == 0 and r.stdout == "Hello! I am ChatGLM3 🙂龘\n"
    assert "note: the chat template built-in chatml is not used: ChatGLM3 files always take the official" in r.stderr


def _info(path):
    r = cli("models", "info", str(path))
    assert r.exit_code == 0, r.output
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in r.stdout.splitlines())}


def test_models_info_shows_the_template_and_stop_tokens(fixtures, no_template_path):
    eog = fixtures.sidecar("template")["eog"]
    info = _info(fixtures.path("template"))
    assert info["chat template"] == f"yes ({len(make_test_model.CHATML_TEMPLATE)} characters)"
    assert info["prompts"] == "the file's chat template"
    assert info["stop tokens"] == f"</s> (2), <|im_end|> ({eog})"
    bare = _info(no_template_path)
    assert bare["chat template"] == "none" and "give one with --chat-template" in bare["prompts"]
    glm = _info(fixtures.path("scripted"))
    assert glm["prompts"].startswith("ChatGLM3's official format")
    assert glm["stop tokens"].startswith("<eos> (2), <|user|> (") and "<|observation|>" in glm["stop tokens"]
