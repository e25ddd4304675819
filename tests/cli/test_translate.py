"""`chatglm3 translate` through CliRunner and in real processes: files, directories, stdin,
bad inputs reported per file, exit codes, resume after kill -9."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.exit_codes import ExitCode

ANSWER = "Hello! I am ChatGLM3 🙂龘"
SRT = "1\n00:00:01,000 --> 00:00:02,000\nHello.\n\n2\n00:00:03,000 --> 00:00:04,500\nBye now.\n"


@pytest.fixture
def tr(fixtures, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = str(fixtures.path("scripted"))

    def invoke(*args, input=None):
        return CliRunner().invoke(app, ["translate", "-m", model, "-c", "512", *args], input=input)

    return invoke


def test_files_beside_the_input_and_summary(tr, tmp_path):
    (tmp_path / "notes.txt").write_text("One.\n\nTwo.\n")
    (tmp_path / "film.srt").write_text(SRT)
    r = tr("notes.txt", "film.srt", "--to", "ja")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "notes.ja.txt").read_text() == f"{ANSWER}\n\n{ANSWER}\n"
    assert (tmp_path / "film.ja.srt").read_text() == SRT.replace("Hello.", ANSWER).replace("Bye now.", ANSWER)
    assert (tmp_path / "notes.txt").read_text() == "One.\n\nTwo.\n"  # never overwritten
    assert r.stdout == ""  # files in, files out: stdout stays empty
    assert "translate: notes.txt -> notes.ja.txt (2 units, 1 chunk)" in r.stderr
    assert re.search(r"translate: 2 files · 2 chunks · \d+ requests · \d+ retries · 0 units not translated", r.stderr)


def test_bad_inputs_are_reported_per_file_and_the_rest_goes_on(tr, tmp_path):
    (tmp_path / "good.txt").write_text("Fine.\n")
    (tmp_path / "binary.txt").write_bytes(b"ab\x00cd")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "broken.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\nnot a timing\nx\n")
    (tmp_path / "slides.pdf").write_bytes(b"%PDF")
    names = ["good.txt", "binary.txt", "latin1.txt", "empty.md", "broken.srt", "slides.pdf", "missing.txt"]
    r = tr(*names, "--to", "zh")
    assert r.exit_code == ExitCode.INPUT_ERROR, r.output  # a rerun cannot help: no hint says to retry
    assert (tmp_path / "good.zh.txt").read_text() == ANSWER + "\n"
    err = r.stderr
    assert "binary.txt looks like a binary file" in err
    assert "latin1.txt is not valid UTF-8 (line 1" in err
    assert "empty.md is empty" in err
    assert "broken.srt: line 6: expected a timing line" in err
    assert "slides.pdf: cannot translate .pdf files (supported: .txt, .text, .md, .markdown, .srt, .vtt, .html, .htm, .xhtml, .epub, .po, .pot, .json, .arb, .yml, .yaml)" in err
    assert "file not found: missing.txt" in err
    assert "error: 6 of 7 files could not be read (listed above) (fix or leave out those files)" in err
    assert "retry" not in err
    r = tr("nope.md", "--to", "zh")  # issue 27: a missing input is an input error
    assert r.exit_code == ExitCode.INPUT_ERROR and "file not found: nope.md" in r.stderr and "retry" not in r.stderr
    assert not any(p.name.endswith((".zh.pdf", ".zh.srt", ".zh.md")) for p in tmp_path.iterdir())


def test_unwritable_output_is_reported_per_file(tr, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.txt").write_text("Words.\n")
    (tmp_path / "b" / "y.txt").write_text("More words.\n")
    (tmp_path / "b" / "y.zh.txt").mkdir()  # something that is not a file is in the way
    r = tr("a/x.txt", "b/y.txt", "--to", "zh")
    assert r.exit_code == ExitCode.TRANSLATE_FAILED
    assert (tmp_path / "a" / "x.zh.txt").read_text() == ANSWER + "\n"
    assert "cannot write b/y.zh.txt" in r.stderr
    # an output dir that cannot be created (a file stands where it would go)
    (tmp_path / "blocker").write_text("")
    r = tr("a/x.txt", "--to", "zh", "-o", "blocker/out")
    assert r.exit_code == ExitCode.TRANSLATE_FAILED and "cannot write blocker/out/x.txt" in r.stderr
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        r = tr("a/x.txt", "--to", "zh", "-o", "ro")
        assert r.exit_code == ExitCode.TRANSLATE_FAILED and "cannot write ro/x.txt" in r.stderr


def test_directory_with_glob_and_output_dir_mirrors_the_tree(tr, tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "index.md").write_text("# Home\n")
    (tmp_path / "docs" / "sub" / "page.md").write_text("Text.\n")
    (tmp_path / "docs" / "sub" / "page.de.md").write_text("Schon übersetzt.\n")  # an earlier output
    (tmp_path / "docs" / "notes.txt").write_text("Not matched by the glob.\n")
    r = tr("docs", "--to", "fr", "--glob", "**/*.md", "-o", "out")
    assert r.exit_code == 0, r.output
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()) == \
        ["index.md", "sub/page.md"]
    assert (tmp_path / "out" / "index.md").read_text() == f"# {ANSWER}\n"


def test_unsupported_type_alone(tr, tmp_path):
    (tmp_path / "a.docx").write_bytes(b"PK")
    r = tr("a.docx", "--to", "en")
    assert r.exit_code == ExitCode.INPUT_ERROR
    assert "a.docx: cannot translate .docx files (supported: .txt, .text, .md, .markdown, .srt, .vtt, .html, .htm, .xhtml, .epub, .po, .pot, .json, .arb, .yml, .yaml)" in r.stderr
    assert "--format" in r.stderr


def test_bad_files_alone_never_touch_the_model(tmp_path, monkeypatch):
    """No model is resolved (or downloaded) until some input is usable."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.docx").write_bytes(b"PK")
    r = CliRunner().invoke(app, ["translate", "a.docx", "--to", "en"])  # no -m, no model on disk
    assert r.exit_code == ExitCode.INPUT_ERROR, r.output
    assert "cannot translate .docx files" in r.stderr


def test_stdin_to_stdout(tr):
    r = tr("-", "--to", "en", "--format", "srt", input=SRT)
    assert r.exit_code == 0, r.output
    assert r.stdout == SRT.replace("Hello.", ANSWER).replace("Bye now.", ANSWER)
    r = tr("-", "--to", "en", input="Plain text\n\n\nagain")
    assert r.stdout == f"{ANSWER}\n\n\n{ANSWER}"  # no newline added or lost


def test_preview_prints_and_writes_nothing(tr, tmp_path):
    (tmp_path / "long.txt").write_text("".join(f"Paragraph number {k} is here.\n\n" for k in range(12)))
    r = tr("long.txt", "--to", "zh", "--preview", "1")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "long.zh.txt").exists()
    assert r.stdout.startswith(f"{ANSWER}\n\n{ANSWER}")
    assert "Paragraph number 11" not in r.stdout and "preview of 1 chunk" in r.stderr


def test_glossary_report_and_bilingual(tr, tmp_path):
    (tmp_path / "a.txt").write_text("The model is small.\n")
    (tmp_path / "g.json").write_text(json.dumps({"model": "模型"}, ensure_ascii=False))
    r = tr("a.txt", "--to", "zh", "--glossary", "g.json", "--bilingual")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a.zh.txt").read_text() == f"The model is small.\n\n{ANSWER}\n"
    assert "glossary terms not used where they occurred: model → 模型 (1×)" in r.stderr


def test_a_language_the_tool_does_not_know_is_warned_about(tr, tmp_path):
    (tmp_path / "a.txt").write_text("Words.\n")
    r = tr("a.txt", "--to", "klingon")
    assert r.exit_code == 0, r.output
    assert "warning: --to 'Klingon' is not a language this tool knows" in r.stderr
    assert "NAME.klingon.EXT" in r.stderr and (tmp_path / "a.klingon.txt").exists()
    r = tr("a.txt", "--to", "englsh")
    assert r.exit_code == ExitCode.USAGE and "did you mean English?" in r.stderr


def test_a_fully_failed_translation_writes_nothing_and_says_what_would_help(fixtures, tmp_path, monkeypatch):
    """The loop model never ends its turn: every unit is cut off at its cap, even alone."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("One.\n\nTwo.\n")
    r = CliRunner().invoke(app, ["translate", "-m", str(fixtures.path("scripted-loop")), "-c", "512",
                                 "a.txt", "--to", "ja"])
    assert r.exit_code == ExitCode.TRANSLATE_FAILED, r.output
    assert not (tmp_path / "a.ja.txt").exists()
    assert "a.txt: nothing was translated (all 2 units failed, listed above); no output written" in r.stderr
    assert "not translated: a.txt:1: the answer was cut off" in r.stderr
    assert "at temperature 0 the same command repeats the same answers" in r.stderr
    assert "run the same command again to retry" not in r.stderr


@pytest.mark.parametrize("args,needle", [
    (["a.txt", "--to", "klingonish-xx1"], "unknown language"),
    (["a.txt", "--to", "zh", "--format", "docx"], "--format must be one of"),
    (["-", "a.txt", "--to", "zh"], "cannot be mixed"),
])
def test_usage_errors(tr, tmp_path, args, needle):
    (tmp_path / "a.txt").write_text("x\n")
    r = tr(*args)
    assert r.exit_code == ExitCode.USAGE and needle in r.stderr


def test_help_does_not_import_the_engine_or_the_translate_library():
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "chatglm3_cli", "translate", "--help"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert p.returncode == 0, p.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if "|" in line]
    assert not any(m.startswith(("llama_cpp", "numpy", "huggingface_hub", "sentencepiece")) for m in imported)
    # the library (and its Markdown parsing) loads only when a translation runs; markdown_it
    # itself is imported by Typer's rich help, not by us
    assert not any(m.startswith("chatglm3_cli.translate") for m in imported)
    assert "--to" in p.stdout


def _summary_counts(stderr: str) -> tuple[int, int]:
    m = re.search(r"(\d+) chunks?(?: · (\d+) answers? from the checkpoint)? · (\d+) requests?", stderr)
    assert m, stderr
    return int(m.group(2) or 0), int(m.group(3))


def test_resume_after_kill_9_redoes_nothing_finished(fixtures, tmp_path):
    model = str(fixtures.path("scripted"))
    text = "".join(f"Paragraph {k} has a few words in it.\n\n" for k in range(40))
    for d in ("killed", "clean"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "book.txt").write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("CHATGLM3_DEBUG", "CHATGLM3_MODEL")}
    cmd = [sys.executable, "-m", "chatglm3_cli", "translate", "book.txt", "--to", "zh", "-m", model, "-c", "512"]
    ckpt_dir = tmp_path / "state" / "translate"
    p = subprocess.Popen(cmd + ["-p", "1"], cwd=tmp_path / "killed", env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    lines: list[bytes] = []
    while time.monotonic() < deadline and p.poll() is None:
        files = list(ckpt_dir.glob("*.jsonl")) if ckpt_dir.exists() else []
        lines = files[0].read_bytes().splitlines() if files else []
        if len(lines) >= 5:
            break
        time.sleep(0.01)
    assert p.poll() is None, "the run finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert not (tmp_path / "killed" / "book.zh.txt").exists()  # no half-written output
    done = [json.loads(x) for x in (list(ckpt_dir.glob("*.jsonl"))[0]).read_bytes().splitlines() if x.endswith(b"}")]
    ok = sum(1 for e in done if e["status"] == "ok")
    resumed = subprocess.run(cmd, cwd=tmp_path / "killed", env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    clean = subprocess.run(cmd, cwd=tmp_path / "clean", env=env, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    cached, requests = _summary_counts(resumed.stderr)
    _, clean_requests = _summary_counts(clean.stderr)
    assert cached == ok > 0
    # every request the killed run finished (answers and known mismatches) is not made again
    assert requests == clean_requests - len(done)
    assert (tmp_path / "killed" / "book.zh.txt").read_bytes() == (tmp_path / "clean" / "book.zh.txt").read_bytes()
    assert not list(ckpt_dir.glob("*.jsonl"))  # removed once the output is complete


def test_ctrl_c_exits_130_and_keeps_finished_chunks(fixtures, tmp_path):
    text = "".join(f"Paragraph {k} has a few words in it.\n\n" for k in range(40))
    (tmp_path / "book.txt").write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("CHATGLM3_DEBUG", "CHATGLM3_MODEL")}
    p = subprocess.Popen([sys.executable, "-m", "chatglm3_cli", "translate", "book.txt", "--to", "zh", "-m",
                          str(fixtures.path("scripted")), "-c", "512", "-p", "1"], cwd=tmp_path, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt_dir = tmp_path / "state" / "translate"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None:
        files = list(ckpt_dir.glob("*.jsonl")) if ckpt_dir.exists() else []
        if files and len(files[0].read_bytes().splitlines()) >= 3:
            break
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == ExitCode.INTERRUPTED, err
    assert b"interrupted; finished chunks are kept: run the same command again to resume" in err
    assert b"Traceback" not in err and out == b""
    assert not (tmp_path / "book.zh.txt").exists() and list(ckpt_dir.glob("*.jsonl"))


def test_a_directory_walk_leaves_configuration_files_alone(tr, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<p>Hello there</p>\n")
    (tmp_path / "site" / "package.json").write_text('{"name": "my site", "private": true}\n')
    (tmp_path / "site" / "ci.yml").write_text("name: build the site\n")
    r = tr("site", "--to", "fr")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == ["ci.yml", "index.fr.html", "index.html",
                                                                       "package.json"]
    r = tr("site", "--to", "fr", "--glob", "*.json")  # asked for by name
    assert r.exit_code == 0 and (tmp_path / "site" / "package.fr.json").exists()


def test_locale_and_html_files_through_llama_cpp(tr, tmp_path):
    """The real decoder on the scripted fixture: values and blocks get its answer, keys, tags and
    what has placeholders the answer lacks stay as they were (listed, exit 20)."""
    (tmp_path / "en.json").write_text('{"title": "Welcome back", "n": 3, "greet": "Hi {{name}}"}\n')
    (tmp_path / "page.html").write_text("<html><body><h1 id=a>Hello there</h1>\n<p>Some <b>bold</b> text</p>"
                                        "</body></html>\n")
    r = tr("en.json", "page.html", "--to", "fr")
    assert r.exit_code == ExitCode.TRANSLATE_FAILED, r.output
    assert json.loads((tmp_path / "en.fr.json").read_text()) == {"title": ANSWER, "n": 3, "greet": "Hi {{name}}"}
    assert (tmp_path / "page.fr.html").read_text() == (f"<html><body><h1 id=a>{ANSWER}</h1>\n"
                                                         "<p>Some <b>bold</b> text</p></body></html>\n")
    assert "en.json:1: placeholders changed (missing {{1}})" in r.stderr


def test_the_terminal_display_shows_files_from_plain_values(tmp_path):
    """The rich renderer (stderr a terminal) gets FileProgress values: a file that cannot be used
    first, then each file's line."""
    import io

    from chatglm3_cli.cli import console
    from chatglm3_cli.cli.translate_progress import RichTranslate, make_translate_progress
    from chatglm3_cli.translate.pipeline import FileTask, translate

    from ..translate.helpers import FakeDecoder, FakeModel, numbered, settings

    err = io.StringIO()
    progress = make_translate_progress(console.Console(sys.stdin, sys.stdout, err, stderr_tty=True))
    assert isinstance(progress, RichTranslate)
    (tmp_path / "a.txt").write_text("Hello there.\n\nMore text here.\n")
    tasks = [FileTask("a.txt", path=tmp_path / "a.txt", output=tmp_path / "a.zh.txt"),
             FileTask("missing.txt", path=tmp_path / "missing.txt", output=tmp_path / "m.zh.txt")]
    s = translate(tasks, open_model=FakeModel, settings=settings(), model_id="fake", progress=progress,
                  make_decoder=lambda m, **kw: FakeDecoder(m, lambda units, system, user: numbered(units)))
    assert [r.status for r in s.files] == ["translated", "failed"]
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", err.getvalue())  # the bar's control codes
    assert out.index("missing.txt") < out.index("a.txt ->")
    flat = " ".join(out.split())  # rich wraps long lines
    assert "translate: a.txt -> " in flat and "(2 units, 1 chunk)" in flat, out
