"""The whole run: with a fake translator (protocol, retries, resume keys) and with the real
llama.cpp on the generated fixtures (structure, retries down to one unit, parallel equals
sequential, resume)."""
from __future__ import annotations

import contextlib

import pytest

from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.translate.checkpoint import checkpoint_dir
from chatglm3_cli.translate.formats import parse
from chatglm3_cli.translate.formats.subtitles import SRT_TIMING
from chatglm3_cli.translate.glossary import Glossary
from chatglm3_cli.translate.languages import parse_language
from chatglm3_cli.translate.pipeline import FileTask, instructions, translate

from .helpers import FakeDecoder, FakeModel, fake_run, numbered, settings, shout, units_of

ANSWER = "Hello! I am ChatGLM3 🙂龘"

MD = """---
title: T
---

# Title

Some text with `code` and a [link](http://x.org).

```sh
echo keep
```

- one
- two
"""


def good(units, system, user):
    return "以下是翻译：\n" + numbered(units)


def test_instructions_come_first_and_are_the_same_for_every_chunk(tmp_path):
    s, dec, outs = fake_run(tmp_path, {"a.md": MD, "b.md": "Other words.\n"}, good)
    assert s.ok and s.requests == 2
    out = outs[str(tmp_path / "a.md")]
    assert out == MD.replace("# Title", "# TITLE").replace(
        "Some text with `code` and a [link](http://x.org).", "SOME TEXT WITH `code` AND A [LINK](http://x.org).").replace(
        "- one\n- two", "- ONE\n- TWO")
    system, key = instructions(settings(glossary=Glossary((("x", "y"),))), "md")
    assert "Simplified Chinese" in system and "- x → y" in system and "- x → y" not in key


def test_mismatch_is_retried_smaller_down_to_one_unit(tmp_path):
    def merges(units, system, user):
        if len(units) > 1:
            return "[1] " + " ".join(units)  # merged: a mismatch
        return shout(units[0])  # one unit: a plain answer is fine

    text = "".join(f"Paragraph {k}.\n\n" for k in range(5))
    s, dec, outs = fake_run(tmp_path, {"a.txt": text}, merges)
    assert s.ok and s.failed_units == 0
    assert s.requests == 9 and s.retries == 4  # 5 -> 3+2 -> 2+1+1+1 -> 1+1: every split is counted
    assert outs[str(tmp_path / "a.txt")] == text.upper()


def test_a_unit_that_keeps_failing_is_reported_and_kept(tmp_path):
    def drops_code(units, system, user):
        return numbered(units, lambda u: shout(u).replace("{{1}}", ""))

    s, dec, outs = fake_run(tmp_path, {"a.md": "Use `x` here.\n\nPlain words.\n"}, drops_code)
    r = s.files[0]
    assert r.status == "partial" and not s.ok
    assert [(f.line, f.reason) for f in r.failures] == [(1, "placeholders changed (missing {{1}})")]
    assert r.failures[0].excerpt == "Use `x` here."
    assert outs[r.task.label] == "Use `x` here.\n\nPLAIN WORDS.\n"  # kept in the source, not dropped
    # the checkpoint stays so that a rerun only retries that unit
    assert list(checkpoint_dir().glob("*.jsonl"))


def test_a_file_where_every_unit_fails_writes_nothing(tmp_path):
    """An output identical to the input under a new name is not a translation."""
    def drops_code(units, system, user):
        return numbered(units, lambda u: shout(u).replace("{{1}}", ""))

    s, dec, outs = fake_run(tmp_path, {"a.md": "Use `x` here.\n\nAnd `y` there.\n"}, drops_code)
    r = s.files[0]
    assert r.status == "failed" and outs[r.task.label] is None
    assert r.error == f"{r.task.label}: nothing was translated (all 2 units failed, listed above); no output written"
    assert len(r.failures) == 2 and s.failed_files == [r]
    assert list(checkpoint_dir().glob("*.jsonl"))  # kept: a rerun with a change redoes only these


def test_a_model_that_echoes_the_source_is_not_a_translation(tmp_path):
    """What SmolLM2-135M did to an SRT file: every cue came back as it was (docs/real-model-findings.md)."""
    text = "Good morning, everyone.\n\nWhere is the train station?\n\nOK.\n"
    s, dec, outs = fake_run(tmp_path, {"a.txt": text}, lambda units, system, user: numbered(units, str))
    r = s.files[0]
    assert r.status == "failed" and outs[r.task.label] is None
    assert (r.wordy, r.unchanged) == (2, 2)  # "OK." is too short to tell
    assert "the model returned the text untranslated (all 2 units came back identical" in r.error

    def half(units, system, user):  # echoes only the station
        return numbered(units, lambda u: u if "station" in u else shout(u))

    s, dec, outs = fake_run(tmp_path, {"b.txt": text}, half)
    r = s.files[0]
    assert r.status == "translated" and (r.wordy, r.unchanged) == (2, 1)
    assert outs[r.task.label] == "GOOD MORNING, EVERYONE.\n\nWhere is the train station?\n\nOK.\n"


def test_retry_advice_says_what_would_change_the_outcome():
    from chatglm3_cli.translate.pipeline import FileResult, Summary, UnitFailure, retry_advice

    s = Summary(files=[FileResult(FileTask("a.txt"), failures=[
        UnitFailure(1, "the unit does not fit the context (raise --ctx)", "x")])])
    at_zero = retry_advice(s, SamplingParams(temperature=0))
    assert "the same command repeats the same answers" in at_zero and "--ctx" in at_zero
    assert "larger model" in at_zero and "run the same command again" not in at_zero
    s.files[0].failures[0].reason = "placeholders changed (missing {{1}})"
    assert "--ctx" not in retry_advice(s, SamplingParams(temperature=0))
    assert "run the same command again" in retry_advice(s, SamplingParams(temperature=0.7))


def test_resume_uses_the_checkpoint_and_a_glossary_change_invalidates_only_its_chunks(tmp_path):
    text = "".join(f"Paragraph {k} about {'GPUs' if k == 3 else 'text'}.\n\n" for k in range(6))
    kw = dict(max_chunk_units=1)
    calls = []

    def stop_after_three(units, system, user):
        calls.append(user)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return numbered(units)

    s, dec, outs = fake_run(tmp_path, {"a.txt": text}, stop_after_three, **kw)
    assert s.interrupted and s.files[0].status == "interrupted"
    assert outs[str(tmp_path / "a.txt")] is None  # nothing half-written
    s, dec, outs = fake_run(tmp_path, {"a.txt": text}, good, **kw)
    assert s.ok and s.cached == 3 and s.requests == 3  # the 3 finished chunks are not redone
    assert outs[str(tmp_path / "a.txt")] == text.upper()
    assert not list(checkpoint_dir().glob("*.jsonl"))  # removed once complete
    # again with a glossary: only the chunk where the term occurs is translated again
    s1, _, _ = fake_run(tmp_path, {"a.txt": text}, good, **kw)
    assert s1.requests == 6
    (tmp_path / "a.zh.txt").unlink()
    calls.clear()
    s, _, _ = fake_run(tmp_path, {"a.txt": text}, stop_after_three, **kw)  # leaves 3 in the checkpoint
    s, dec, _ = fake_run(tmp_path, {"a.txt": text}, good, glossary=Glossary((("GPUs", "显卡"),)), **kw)
    assert s.cached == 3 and s.requests == 3
    assert s.unused_terms == {("GPUs", "显卡"): 1}  # the fake translator ignored the glossary


def test_a_checkpoint_that_cannot_be_written_says_once_that_resume_is_off(tmp_path):
    """The run goes on, but no hint may promise to "retry only what failed"."""
    from chatglm3_cli.translate.progress import TranslateProgress
    from chatglm3_cli.translate.results import retry_advice

    class Notes(TranslateProgress):
        def __init__(self):
            self.notes = []

        def note(self, text):
            self.notes.append(text)

    checkpoint_dir().parent.mkdir(parents=True, exist_ok=True)
    checkpoint_dir().write_text("a file where the checkpoint directory goes")
    text = "".join(f"Paragraph {k} here.\n\n" for k in range(4)) + "Use `x` here.\n"
    drops_code = lambda units, system, user: numbered(units, lambda u: shout(u).replace("{{1}}", ""))  # noqa: E731
    notes = Notes()
    s, dec, outs = fake_run(tmp_path, {"a.md": text}, drops_code, progress=notes, max_chunk_units=1)
    r = s.files[0]
    assert r.status == "partial" and outs[r.task.label].startswith("PARAGRAPH 0 HERE."), r.error
    assert len(notes.notes) == 1 and "resume is off for" in notes.notes[0] and "a.md" in notes.notes[0]
    assert not r.resumable
    advice = retry_advice(s, SamplingParams(temperature=0.7))
    assert "resume is off" in advice and "only what failed" not in advice


def test_a_paragraph_too_big_for_a_chunk_is_split_at_sentences_and_joined_back(tmp_path):
    para = " ".join(f"Sentence number {k} is here." for k in range(30))
    s, dec, outs = fake_run(tmp_path, {"a.txt": f"Short.\n\n{para}\n"}, good, max_chunk_tokens=40,
                             target=parse_language("en"))  # a spaced language: parts joined by a space
    assert s.ok and s.files[0].units == 2
    assert all(len(u) < 200 for u in sum((units_of(r) for r in dec.requests), []))
    assert outs[str(tmp_path / "a.txt")] == f"SHORT.\n\n{para.upper()}\n"


def test_byte_order_mark_and_line_endings_survive(tmp_path):
    model = FakeModel()
    p = tmp_path / "w.txt"
    p.write_bytes(b"\xef\xbb\xbfOne line\r\nand two\r\n\r\nPara.\r\n")
    s = translate([FileTask(str(p), path=p, output=tmp_path / "o.txt")], open_model=lambda: model,
                  settings=settings(), model_id="fake", make_decoder=lambda m, **kw: FakeDecoder(m, good))
    assert s.ok
    assert (tmp_path / "o.txt").read_bytes() == b"\xef\xbb\xbfONE LINE\r\nAND TWO\r\n\r\nPARA.\r\n"


def test_preview_translates_only_the_first_chunks_and_writes_no_file(tmp_path):
    text = "".join(f"Paragraph {k}.\n\n" for k in range(6))
    model = FakeModel()
    p = tmp_path / "a.txt"
    p.write_text(text)
    out = tmp_path / "a.zh.txt"
    s = translate([FileTask(str(p), path=p, output=out)], open_model=lambda: model,
                  settings=settings(preview=2, max_chunk_units=2), model_id="fake",
                  make_decoder=lambda m, **kw: FakeDecoder(m, good))
    r = s.files[0]
    assert r.status == "preview" and not out.exists()
    assert r.text == "PARAGRAPH 0.\n\nPARAGRAPH 1.\n\nPARAGRAPH 2.\n\nPARAGRAPH 3.\n"


# the real llama.cpp ------------------------------------------------------------------------

@contextlib.contextmanager
def _borrow(model):
    yield model  # a session fixture: translate may 'close' it without closing it


SAMPLES = {
    "doc.md": MD + "\n| A | B |\n|---|---|\n| cell one | `c` |\n\nA link to [docs](https://d.io/x) here.\n",
    "subs.srt": "".join(f"{k}\n00:00:0{k},000 --> 00:00:0{k},900\nLine {k} of the film.\n\n" for k in range(1, 6)),
    "subs.vtt": "WEBVTT\n\nNOTE keep\n\n00:01.000 --> 00:02.000\n<i>First</i> cue\n\nid2\n00:03.000 --> 00:04.000\nSecond cue\n",
    "notes.txt": "First paragraph.\nStill first.\n\n\nSecond paragraph.\n",
}


def test_structure_with_the_scripted_model(tmp_path, scripted_model):
    tasks = []
    for name, text in SAMPLES.items():
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        tasks.append(FileTask(name, path=p, output=p.with_name(p.stem + ".zh" + p.suffix)))
    s = translate(tasks, open_model=lambda: _borrow(scripted_model), settings=settings(n_parallel=3, n_ctx=512),
                  model_id="scripted")
    by = {r.task.label: r for r in s.files}
    assert s.requests > s.chunks and s.retries > 0  # multi-unit chunks fail, single units pass
    outs = {name: (tmp_path / name).with_name(f"{(tmp_path / name).stem}.zh{(tmp_path / name).suffix}")
            .read_text(encoding="utf-8") for name in SAMPLES}
    for name, text in SAMPLES.items():
        assert (tmp_path / name).read_text(encoding="utf-8") == text  # the input is untouched
    # srt: same number of cues, same numbers and timings; every cue's text is the answer
    src_lines, out_lines = SAMPLES["subs.srt"].splitlines(), outs["subs.srt"].splitlines()
    timings = [k for k, line in enumerate(src_lines) if SRT_TIMING.match(line)]
    assert [k for k, line in enumerate(out_lines) if SRT_TIMING.match(line)] == timings
    assert all(out_lines[k] == src_lines[k] and out_lines[k - 1] == src_lines[k - 1] for k in timings)
    assert [out_lines[k + 1] for k in timings] == [ANSWER] * 5 and by["subs.srt"].status == "translated"
    # vtt: tags are placeholders the scripted answer lacks: that cue is reported and kept
    assert outs["subs.vtt"] == SAMPLES["subs.vtt"].replace("Second cue", ANSWER)
    assert [f.line for f in by["subs.vtt"].failures] == [6]
    # md: front matter and code identical, placeholders either restored or the unit kept
    md = outs["doc.md"]
    assert md.startswith("---\ntitle: T\n---\n\n# " + ANSWER + "\n")
    assert "```sh\necho keep\n```" in md and f"- {ANSWER}\n- {ANSWER}" in md
    assert "Some text with `code` and a [link](http://x.org)." in md  # failed unit kept as is
    assert f"| {ANSWER} | {ANSWER} |\n|---|---|\n| {ANSWER} | `c` |" in md
    assert {f.line for f in by["doc.md"].failures} == {7, 20}
    assert parse("md", md, "o").render({}) == md
    # txt: paragraphs and blank lines
    assert outs["notes.txt"] == f"{ANSWER}\n\n\n{ANSWER}\n"


@pytest.mark.parametrize("kind", ["scripted", "tiny"])
def test_parallel_and_sequential_give_the_same_files(tmp_path, fixtures, kind, scripted_model, tiny_model):
    """The scripted model's files are translated through retries; the tiny model's answers are
    random text that fails validation, so its runs check that the same requests are made."""
    from chatglm3_cli.engine.decoder import ParallelDecoder

    model = scripted_model if kind == "scripted" else tiny_model
    files = {"a.txt": "".join(f"The {w} paragraph talks about people.\n\n" for w in ("first", "second", "third")),
             "b.md": "# Heading\n\nSome `code` here.\n\n- one\n- two\n"}
    if kind == "scripted":
        files["c.srt"] = SAMPLES["subs.srt"]
    cap = 16 if kind == "scripted" else 3  # the random model never stops: keep its answers short
    results, prompts = {}, {}

    class Recording(ParallelDecoder):
        def run(self, requests):
            def note(rs):
                for r in rs:
                    prompts.setdefault(self.n_parallel, set()).add(tuple(r.prompt_ids))
                    yield r
            return super().run(note(requests))

    for n in (1, 4):
        d = tmp_path / f"p{n}"
        d.mkdir()
        for name, text in files.items():
            (d / name).write_text(text)
        tasks = [FileTask(name, path=d / name, output=d / f"out-{name}") for name in files]
        s = translate(tasks, open_model=lambda: _borrow(model),
                      settings=settings(n_parallel=n, n_ctx=512, max_chunk_units=3, max_answer_tokens=cap),
                      model_id=kind, make_decoder=Recording)
        # (a file of which nothing could be translated is not written: None)
        results[n] = {t.label: (d / f"out-{t.label}").read_bytes() if (d / f"out-{t.label}").exists() else None
                      for t in tasks}
        results[n]["stats"] = (s.requests, s.retries, s.failed_units, [r.status for r in s.files])
    assert results[1] == results[4]
    assert prompts[1] == prompts[4] and len(prompts[1]) == results[1]["stats"][0]
    if kind == "scripted":
        assert results[1]["a.txt"] == f"{ANSWER}\n\n".encode() * 3
        assert results[1]["stats"][1] > 0  # retries happened, in both runs alike
