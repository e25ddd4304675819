"""Progress that shows life: plain lines when stderr is not a terminal (a file start line and
status lines while tokens are generated), rich bars that move with tokens on a terminal, and a
time-left estimate from tokens, with the same tok/s the summary shows."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from chatglm3_cli.cli import console
from chatglm3_cli.cli import progress as cli_progress
from chatglm3_cli.cli.app import app
from chatglm3_cli.progress import RunStats, format_seconds_left

TEXT = "The quick brown fox jumps over the lazy dog, again and again, until the night falls.\n"


# the arithmetic ---------------------------------------------------------------------------------

def test_time_left_comes_from_tokens_not_from_items():
    s = RunStats(planned=10, started=time.monotonic() - 100)
    s.done_now = s.answered = 2
    s.generated_tokens, s.tokens_in_flight, s.items_in_flight = 800, 200, 2
    assert s.tokens_per_second == pytest.approx(10.0, rel=0.02)  # 1000 tokens in 100 s
    # 8 items of ~400 tokens left, 200 of them generated already: 3000 tokens at 10 tok/s
    assert s.seconds_left() == pytest.approx(300, rel=0.02)


def test_no_estimate_rather_than_a_wrong_one():
    # Issue 15: 7 of 10 finished quickly with short answers, the last 3 run long. Counting
    # items said "about 4m34s left" for a run that took 21 more minutes.
    s = RunStats(planned=10, started=time.monotonic() - 60)
    s.done_now = s.answered = 7
    s.generated_tokens, s.tokens_in_flight, s.items_in_flight = 70, 3000, 3
    assert s.seconds_left() is None
    assert format_seconds_left(s.seconds_left()) == ""
    nothing_yet = RunStats(planned=4, started=time.monotonic() - 5)
    assert nothing_yet.seconds_left() is None  # no answer and no guess


def test_the_live_speed_is_the_summary_speed():
    s = RunStats(planned=2, started=time.monotonic() - 10)
    s.generated_tokens, s.done_now, s.answered = 50, 2, 2
    live = s.tokens_per_second
    s.seconds = 10.0
    assert s.tokens_per_second == pytest.approx(live, rel=0.01) == pytest.approx(5.0, rel=0.01)


def test_the_bar_moves_with_tokens_before_any_item_finishes():
    s = RunStats(planned=1, expected_item_tokens=100)
    assert s.items_progress() == 0
    s.tokens_in_flight, s.items_in_flight = 40, 1
    assert s.items_progress() == pytest.approx(0.4)
    s.tokens_in_flight = 500  # longer than expected: never shown as finished
    assert s.items_progress() < 1


def test_formatting():
    assert format_seconds_left(42) == ", about 42s left"
    assert format_seconds_left(125) == ", about 2m05s left"
    assert format_seconds_left(3 * 3600 + 120) == ", about 3h02m left"


# plain lines (stderr not a terminal) -----------------------------------------------------------

@pytest.fixture
def every_step(monkeypatch):
    """A status line after every decoding step instead of every 5 s: the tiny models are fast."""
    monkeypatch.setattr(cli_progress, "STATUS_EVERY_S", 0.0)


def test_translate_plain_lines_show_the_file_and_status_while_generating(fixtures, tmp_path, monkeypatch,
                                                                          every_step):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text(TEXT, encoding="utf-8")
    # scripted-loop never ends its answer: tokens flow until the answer's cap
    r = CliRunner().invoke(app, ["translate", "-m", str(fixtures.path("scripted-loop")), "-c", "512",
                                 "notes.txt", "--to", "ja"])
    lines = r.stderr.splitlines()
    assert lines[0] == "translate: notes.txt: 1 unit in 1 chunk", r.stderr
    status = [ln for ln in lines if re.fullmatch(r"translate: 0/1 chunks, \d+ tokens?, [\d.]+ tok/s.*", ln)]
    assert len(status) >= 2, r.stderr
    counts = [int(re.search(r"(\d+) tokens?", ln).group(1)) for ln in status]
    assert counts == sorted(counts) and counts[-1] > counts[0]  # they grow with the tokens
    assert "\x1b[" not in r.stderr  # no control codes in a log


def test_batch_plain_lines(fixtures, tmp_path, every_step):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"id": f"r{i}", "task": "generate", "prompt": f"p{i}",
                                        "max_tokens": 12}) + "\n" for i in range(3)), encoding="utf-8")
    r = CliRunner().invoke(app, ["batch", str(jobs), "-m", str(fixtures.path("scripted-loop")),
                                 "-t", "0", "-c", "256", "-p", "2"])
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert lines[0] == "batch: 3 records to run"
    assert any(re.fullmatch(r"batch: [0-2]/3 done, 0 failed, \d+ tokens?, [\d.]+ tok/s.*", ln) for ln in lines), r.stderr
    # the summary's speed is the one the status lines computed, over the whole run
    assert re.search(r"this run: 3 records, 36 tokens generated in [\d.]+s, [\d.]+ tok/s", r.stderr)


def test_the_file_start_line_reaches_a_pipe_at_once(fixtures, tmp_path):
    """In a real process with stderr a pipe (a log, `2>&1 | tee`), the first line arrives
    before the work ends, within a bounded time."""
    (tmp_path / "notes.txt").write_text(TEXT * 3, encoding="utf-8")
    p = subprocess.Popen([sys.executable, "-m", "chatglm3_cli", "translate", "-m",
                          str(fixtures.path("scripted-loop")), "-c", "512", "notes.txt", "--to", "ja"],
                         cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        first = p.stderr.readline()  # blocks until a line is flushed
        assert re.fullmatch(r"translate: notes.txt: \d+ units? in \d+ chunks?\n", first), first
        rest = p.communicate(timeout=120)[1]
    finally:
        p.kill()
        p.wait()
    assert re.search(r"^translate: 1 file \(1 failed\) · ", rest, re.M)  # the loop never answers well


# rich displays (stderr a terminal) ---------------------------------------------------------------

def test_translate_rich_display(fixtures, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("One.\n\nTwo.\n", encoding="utf-8")
    with console.terminal(stderr=True):
        r = CliRunner().invoke(app, ["translate", "-m", str(fixtures.path("scripted")), "-c", "512",
                                     "notes.txt", "--to", "ja"])
    assert r.exit_code == 0, r.output
    err = r.stderr
    assert "all files" in err and "1/1 chunks" in err and "tok/s" in err
    assert "translate: notes.txt -> notes.ja.txt (2 units, 1 chunk)" in err
    assert re.search(r"translate: 1 file · 1 chunk", err)  # the summary after the display
    assert r.stdout == ""


def test_batch_rich_display(fixtures, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "task": "generate", "prompt": "hi"}\n{"id": "b", "task": "nope"}\n',
                    encoding="utf-8")
    with console.terminal(stderr=True):
        r = CliRunner().invoke(app, ["batch", str(jobs), "-m", str(fixtures.path("scripted")), "-t", "0",
                                     "-c", "256"])
    err = r.stderr
    assert "batch" in err and "2/2 done" in err and "tok/s" in err
    assert "failed: b:" in err or "1 failed" in err
    assert "batch: 2 records: 1 succeeded, 1 failed" in err


def test_download_displays():
    """Plain: one line per file; terminal: a rich bar with the size."""
    from chatglm3_cli.cli.progress import make_progress
    from chatglm3_cli.hub import human_size

    class Err:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

        def isatty(self):
            return False

    plain = console.Console(sys.stdin, sys.stdout, Err())
    p = make_progress(plain)
    p.start("owner/repo/model.gguf", 2_000_000, 0)
    p.advance(1_000_000)
    p.end(True)
    assert plain.stderr.text == f"downloading owner/repo/model.gguf ({human_size(2_000_000)})\n"
    tty = console.Console(sys.stdin, sys.stdout, Err(), stderr_tty=True)
    p = make_progress(tty)
    p.start("owner/repo/model.gguf", 2_000_000, 0)
    p.advance(1_000_000)
    p.end(True)
    assert "model.gguf" in tty.stderr.text and re.search(r"1\.0/2\.0 MB", tty.stderr.text)
    assert "\x1b[" in tty.stderr.text  # drawn as on a terminal
