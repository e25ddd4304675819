"""Special and huge files as inputs and outputs, in real processes: devices and FIFOs are
refused (never read without end, never replaced by a file), reads are capped, `-o /dev/stdout`
is stdout, and nothing is ever created beside a device. A translation the tool did not write
is never overwritten without --overwrite."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.exit_codes import ExitCode

CMD = [sys.executable, "-m", "chatglm3_cli"]
ANSWER = "Hello! I am ChatGLM3 🙂龘"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CHATGLM3_DEBUG", None)
    return env


def run(args: list[str], *, stdin=subprocess.DEVNULL, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(CMD + args, capture_output=True, text=True, env=_env(), stdin=stdin, cwd=cwd,
                          timeout=timeout)


def dev_entries() -> set[str]:
    return set(os.listdir("/dev"))


@pytest.fixture
def model(fixtures) -> str:
    return str(fixtures.path("scripted"))


@pytest.mark.parametrize("args", [
    ["run", "-f", "/dev/zero", "hi"],
    ["batch", "/dev/zero"],
    ["run", "--system-file", "/dev/zero", "hi"],
])
def test_a_device_as_input_is_refused_at_once(model, args):
    before = dev_entries()
    p = run(args[:1] + ["-m", model] + args[1:], timeout=60)
    assert p.returncode in (ExitCode.INPUT_ERROR, ExitCode.USAGE), p.stderr
    assert "/dev/zero is not a regular file or a pipe" in p.stderr and "Traceback" not in p.stderr
    assert dev_entries() == before


def test_translate_a_device_fails_that_file_only(model):
    p = run(["translate", "-m", model, "/dev/zero", "--format", "txt", "--to", "zh"], timeout=60)
    assert p.returncode == ExitCode.INPUT_ERROR, p.stderr  # a device is not an input: no retry helps
    assert "/dev/zero is not a regular file or a pipe" in p.stderr


def test_a_huge_input_is_refused_with_the_limit(model, tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(65 * 1024 * 1024)  # sparse: 65 MiB of zeros without the disk
    p = run(["run", "-m", model, "-f", str(big), "hi"])
    assert p.returncode == ExitCode.INPUT_ERROR, p.stderr
    assert "big.txt is larger than 64 MiB" in p.stderr
    with open("/dev/zero", "rb") as zero:  # endless stdin
        p = run(["run", "-m", model, "hi"], stdin=zero)
    assert p.returncode == ExitCode.INPUT_ERROR, p.stderr
    assert "stdin is larger than 64 MiB" in p.stderr


def test_a_pipe_is_an_input(model, tmp_path):
    r, w = os.pipe()
    os.write(w, b"from a pipe")
    os.close(w)
    try:
        p = subprocess.run(CMD + ["run", "-m", model, "-t", "0", "-f", f"/dev/fd/{r}", "--json", "hi"],
                           capture_output=True, text=True, env=_env(), stdin=subprocess.DEVNULL,
                           pass_fds=(r,), timeout=120)
    finally:
        os.close(r)
    assert p.returncode == 0, p.stderr
    assert "from a pipe" in p.stdout


def _jobs(tmp_path: Path) -> Path:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"id": f"g{i}", "task": "generate", "prompt": f"p{i}",
                                        "max_tokens": 4}) + "\n" for i in range(2)))
    return jobs


def test_batch_to_dev_stdout_streams_and_creates_nothing_beside_it(model, tmp_path):
    before = dev_entries()
    p = run(["batch", "-m", model, "-t", "0", str(_jobs(tmp_path)), "-o", "/dev/stdout"], timeout=120)
    assert p.returncode == 0, p.stderr
    assert sorted(json.loads(line)["id"] for line in p.stdout.splitlines()) == ["g0", "g1"]
    assert dev_entries() == before
    # beside the input, nothing (the state folder is the tool's own: when each model was last used)
    assert sorted(x.name for x in tmp_path.iterdir() if x.name != "state") == ["jobs.jsonl"]


@pytest.mark.parametrize("target", ["/dev/full", "/dev/null", "fifo"])
def test_batch_to_a_device_or_fifo_is_refused(model, tmp_path, target):
    if target == "fifo":
        target = str(tmp_path / "fifo")
        os.mkfifo(target)
    before = dev_entries()
    p = run(["batch", "-m", model, str(_jobs(tmp_path)), "-o", target], timeout=60)
    assert p.returncode == ExitCode.OUTPUT_ERROR, p.stderr
    assert "not a regular file" in p.stderr and "-o -" in p.stderr
    assert dev_entries() == before
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not list(tmp_path.glob("*.manifest.json")) and not list(tmp_path.glob(".*.lock"))


def test_history_export_writes_through_a_symlink_and_refuses_a_device(tmp_path, monkeypatch):
    from chatglm3_cli.chat.history import Conversation, ConversationStore

    monkeypatch.setenv("CHATGLM3_DATA_DIR", str(tmp_path / "data"))
    store = ConversationStore()
    store.save(Conversation(id="20260101-000000-abcd", created=0, updated=0, model="m",
                            messages=[{"role": "user", "content": "hi"}]))
    real = tmp_path / "real.md"
    real.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    r = CliRunner().invoke(app, ["history", "export", "20260101", "-o", str(link)])
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and "hi" in real.read_text()
    r = CliRunner().invoke(app, ["history", "export", "20260101", "-o", "/dev/full"])
    assert r.exit_code == ExitCode.OUTPUT_ERROR and "not a regular file" in r.stderr
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    r = CliRunner().invoke(app, ["history", "export", "20260101", "-o", "-"])
    assert r.exit_code == 0 and "hi" in r.stdout


# translate never overwrites what it did not write -----------------------------------------------

@pytest.fixture
def tr(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def invoke(*args):
        return CliRunner().invoke(app, ["translate", "-m", model, "-c", "512", *args])

    return invoke


def test_translate_keeps_a_translation_it_did_not_write(tr, tmp_path):
    (tmp_path / "notes.txt").write_text("One.\n")
    mine = tmp_path / "notes.zh.txt"
    mine.write_text("我自己的翻译\n")
    r = tr("notes.txt", "--to", "zh")
    assert r.exit_code == ExitCode.TRANSLATE_FAILED, r.output
    assert "notes.zh.txt already exists and was not written by chatglm3 translate" in r.stderr
    assert "--overwrite" in r.stderr
    assert mine.read_text() == "我自己的翻译\n"
    r = tr("notes.txt", "--to", "zh", "--overwrite")
    assert r.exit_code == 0, r.output
    assert mine.read_text() == ANSWER + "\n"
    r = tr("notes.txt", "--to", "zh")  # its own output: rewritten without asking
    assert r.exit_code == 0, r.output
    mine.write_text(ANSWER + "\n(edited by hand)\n")  # edited since: kept again
    r = tr("notes.txt", "--to", "zh")
    assert r.exit_code == ExitCode.TRANSLATE_FAILED and "edited since" in r.stderr
    assert mine.read_text().endswith("(edited by hand)\n")


def test_translate_writes_through_a_symlinked_output_with_the_umask_mode(tr, tmp_path):
    (tmp_path / "notes.txt").write_text("One.\n")
    r = tr("notes.txt", "--to", "ja")
    assert r.exit_code == 0, r.output
    out = tmp_path / "notes.ja.txt"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600
    (tmp_path / "elsewhere").mkdir()
    real = tmp_path / "elsewhere" / "notes.ja.txt"
    real.write_text("old")
    os.chmod(real, 0o640)
    out.unlink()
    out.symlink_to(real)
    r = tr("notes.txt", "--to", "ja", "--overwrite")
    assert r.exit_code == 0, r.output
    assert out.is_symlink() and real.read_text() == ANSWER + "\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640


def test_read_and_save_in_chat_refuse_devices(scripted_model, tmp_path):
    from .test_chat_repl import Harness

    h = Harness(scripted_model, tmp_path)
    assert h.run("/read /dev/zero\r/save /dev/full\r\x04") == 0
    assert "/dev/zero is not a regular file or a pipe" in h.said
    assert "cannot write /dev/full: it is not a regular file" in h.said
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
