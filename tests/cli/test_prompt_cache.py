"""The prompt cache through the commands: a second `run -f` on the same document reads only the
new question, `cache` lists and clears, deleting a conversation deletes its entries, and two
processes at once leave a consistent cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from chatglm3_cli.cli.app import app
from chatglm3_cli.engine import promptcache

DOC = ("The philosophy of people is a sophisticated subject. 今天天气很好，我们去公园散步吧。\n") * 12


@pytest.fixture
def cli(fixtures, tmp_path):
    runner = CliRunner()
    (tmp_path / "doc.txt").write_text(DOC, encoding="utf-8")

    def invoke(*args, input=None, env=None):
        return runner.invoke(app, list(args), input=input, env=env)

    invoke.model = str(fixtures.path("tiny"))
    invoke.doc = str(tmp_path / "doc.txt")
    return invoke


def _ask(cli, question, *extra, env=None):
    r = cli("run", "-m", cli.model, "-f", cli.doc, question, "--json", "-t", "0", "--max-tokens", "8",
            *extra, env=env)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), r.stderr


def test_a_second_run_on_the_same_document_reads_only_the_new_question(cli):
    first, _ = _ask(cli, "What is it about?")
    assert first["usage"]["cached_tokens"] == 0
    second, err = _ask(cli, "Who wrote it?", "-v")
    plain, _ = _ask(cli, "Who wrote it?", env={"CHATGLM3_PROMPT_CACHE": "0"})
    assert second["usage"]["cached_tokens"] > second["usage"]["prompt_tokens"] - 24
    assert plain["usage"]["cached_tokens"] == 0
    assert (second["response"], second["usage"]["completion_tokens"]) == (
        plain["response"], plain["usage"]["completion_tokens"])  # the same answer as without the cache
    assert "tokens restored from disk" in err


def test_cache_lists_and_clears(cli):
    _ask(cli, "What is it about?")
    r = cli("cache")
    assert r.exit_code == 0, r.output
    assert "1 entries" in r.stderr and "tokens" in r.stdout and "KiB" in r.stdout
    r = cli("cache", "clear")
    assert r.exit_code == 0 and "removed 1 entries" in r.stderr
    assert promptcache.list_entries() == []
    assert "0 entries" in cli("cache").stderr


def test_deleting_a_conversation_deletes_its_entries(cli):
    r = cli("chat", "-m", cli.model, "-t", "0", "--max-tokens", "8", input=DOC)
    assert r.exit_code == 0, r.output
    _ask(cli, "Not a conversation.")  # an entry of no conversation stays
    (conv,) = [e.conversation for e in promptcache.list_entries() if e.conversation]
    assert len(promptcache.list_entries()) == 2
    r = cli("history", "delete", conv)
    assert r.exit_code == 0, r.output
    left = promptcache.list_entries()
    assert len(left) == 1 and left[0].conversation is None
    assert cli("history", "show", conv).exit_code != 0


def test_two_processes_at_once(cli, tmp_path):
    env = dict(os.environ)
    env.pop("CHATGLM3_DEBUG", None)
    cmd = [sys.executable, "-m", "chatglm3_cli", "run", "-m", cli.model, "-f", cli.doc, "-t", "0",
           "--max-tokens", "8", "--json"]
    procs = [subprocess.Popen(cmd + [f"Question {i}?"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, env=env) for i in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1] for o in outs]
    assert all(b"warning" not in err for _, err in outs)
    entries = promptcache.list_entries()
    assert entries and all(e.error is None for e in entries)
    assert not list(promptcache.cache_root().glob(promptcache.TEMP_PATTERN))
    again, _ = _ask(cli, "Question 9?")
    assert again["usage"]["cached_tokens"] > 0


def test_chat_continue_resumes_without_reading_the_conversation_again(cli):
    import re

    r = cli("chat", "-m", cli.model, "-t", "0", "--max-tokens", "8", input=DOC)
    assert r.exit_code == 0, r.output
    r = cli("chat", "-m", cli.model, "-t", "0", "--max-tokens", "8", "--continue", "--stats", "-v",
            input="And then?")
    assert r.exit_code == 0, r.output
    assert re.search(r"resumed conversation \S+ \(2 messages, context: \d{3} of \d+ tokens\)", r.stderr), r.stderr
    m = re.search(r"\[(\d+) new prompt tokens \((\d+) cached, (\d+) from the disk cache\)", r.stderr)
    assert m, r.stderr
    new, cached, disk = map(int, m.groups())
    assert cached == disk > 200 and new < 24  # only the new question (and an aligned tail) was read
    assert "tokens restored from disk" in r.stderr


def test_saved_token_ids_that_do_not_spell_the_answer_are_not_used(fixtures):
    from chatglm3_cli.chat.history import message_from_record
    from chatglm3_cli.chat.session import ChatSession
    from chatglm3_cli.engine.model import Model

    with Model(fixtures.path("tiny"), n_ctx=256) as m:
        good = m.tokenize("\n") + m.tokenize("Hello there")
        records = [{"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "Hello there", "token_ids": good},
                   {"role": "user", "content": "again"},
                   {"role": "assistant", "content": "Something else", "token_ids": good},
                   {"role": "user", "content": "and"},
                   {"role": "assistant", "content": "x", "token_ids": [10 ** 7]},
                   {"role": "assistant", "content": "y", "token_ids": ["1"]}]
        msgs = [message_from_record(d) for d in records]
        assert msgs[6].token_ids is None  # not ids at all
        s = ChatSession(m)
        s.load(msgs)
        assert s.messages[1].token_ids == good  # spells its answer: kept
        assert s.messages[3].token_ids is None  # another answer's: the text is encoded instead
        assert s.messages[5].token_ids is None  # not in this vocabulary


def test_the_spinner_shows_only_while_a_slow_prompt_is_read_and_leaves_no_trace():
    import io
    import time

    from chatglm3_cli.cli.repl import _Spinner

    quick = io.StringIO()
    with _Spinner(quick) as s:
        s.stop()  # the first piece came at once: nothing was shown
    assert quick.getvalue() == ""
    slow = io.StringIO()
    with _Spinner(slow) as s:
        time.sleep(_Spinner.DELAY_S + 0.5)
        s.stop()
    out = slow.getvalue()
    assert "reading the prompt" in out and out.endswith("\r\x1b[K")  # erased before the answer
