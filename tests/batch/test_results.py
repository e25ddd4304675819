"""The results file and manifest: repair, de-duplication, retries, the sha256 cache."""
from __future__ import annotations

import json
import os

import pytest

from chatglm3_cli.batch import results as R
from chatglm3_cli.errors import ManifestMismatchError, ResultsInUseError


def ok(i):
    return {"id": i, "task": "generate", "output": "x", "error": None}


def bad(i):
    return {"id": i, "task": "generate", "output": None, "error": {"type": "X", "message": "m"}}


def write(path, *objs, tail=b""):
    path.write_bytes(b"".join(R.dumps_line(o) for o in objs) + tail)


def ids(path):
    return [R.line_key(json.loads(line)) for line in path.read_text().splitlines()]


def test_missing_or_empty_file(tmp_path):
    assert R.ResultsFile(tmp_path / "none.jsonl").prepare(retry_errors=False).answered == {}
    (tmp_path / "e.jsonl").write_bytes(b"")
    assert R.ResultsFile(tmp_path / "e.jsonl").prepare(retry_errors=False).answered == {}


def test_half_written_last_line_is_truncated(tmp_path):
    p = tmp_path / "r.jsonl"
    write(p, ok("a"), bad("b"), tail=b'{"id": "c", "task": "gen')
    before = p.stat().st_ino
    rep = R.ResultsFile(p).prepare(retry_errors=False)
    assert rep.answered == {"a": True, "b": False} and rep.truncated_bytes == 24
    assert ids(p) == ["a", "b"] and p.read_bytes().endswith(b"\n")
    assert p.stat().st_ino == before  # truncated in place, not rewritten


def test_complete_last_line_without_newline_is_kept(tmp_path):
    p = tmp_path / "r.jsonl"
    write(p, ok("a"), tail=json.dumps(ok("b")).encode())
    rep = R.ResultsFile(p).prepare(retry_errors=False)
    assert rep.answered == {"a": True, "b": True} and p.read_bytes().endswith(b"\n")


def test_retry_errors_removes_failed_lines(tmp_path):
    p = tmp_path / "r.jsonl"
    write(p, ok("a"), bad("b"), ok("c"))
    rep = R.ResultsFile(p).prepare(retry_errors=True)
    assert rep.answered == {"a": True, "c": True} and rep.dropped_retry == 1
    assert ids(p) == ["a", "c"]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temp file left


def test_duplicates_keep_the_success_and_idless_reports_go(tmp_path):
    p = tmp_path / "r.jsonl"
    keyless = {"id": None, "line": 3, "error": {"type": "InvalidRecordError", "message": "x"}}
    write(p, bad("a"), ok("a"), ok("b"), ok("b"), keyless)
    p.write_bytes(p.read_bytes() + b"garbage in the middle\n" + R.dumps_line(ok("c")))
    rep = R.ResultsFile(p).prepare(retry_errors=False)
    assert rep.answered == {"a": True, "b": True, "c": True}
    assert (rep.dropped_duplicates, rep.dropped_keyless, rep.dropped_corrupt) == (2, 1, 1)
    assert sorted(ids(p)) == ["a", "b", "c"]


def test_openai_lines_are_keyed_by_custom_id(tmp_path):
    p = tmp_path / "r.jsonl"
    write(p, {"id": "batch_req_1", "custom_id": "x", "response": {"status_code": 200}, "error": None},
          {"id": "batch_req_2", "custom_id": "y", "response": {"status_code": 400}, "error": {"code": "c"}})
    assert R.ResultsFile(p).prepare(retry_errors=False).answered == {"x": True, "y": False}


def test_append_writes_whole_lines(tmp_path):
    f = R.ResultsFile(tmp_path / "sub" / "r.jsonl")
    f.append(ok("a"))
    f.append(ok("é"))
    f.close()
    assert ids(tmp_path / "sub" / "r.jsonl") == ["a", "é"]


def _manifest(sha="s1", temperature=0.0):
    return R.Manifest(model_sha256=sha, model_path="/m.gguf", model_size=1,
                      params={"temperature": temperature, "ctx": None}, input="jobs.jsonl")


def test_check_manifest(tmp_path):
    out = tmp_path / "r.jsonl"
    assert R.check_manifest(None, _manifest(), out, has_results=False, force=False) == []
    with pytest.raises(ManifestMismatchError, match="has no manifest"):
        R.check_manifest(None, _manifest(), out, has_results=True, force=False)
    old = _manifest().to_dict()
    assert R.check_manifest(old, _manifest(), out, has_results=True, force=False) == []
    with pytest.raises(ManifestMismatchError, match="model: /m.gguf"):
        R.check_manifest(old, _manifest(sha="s2"), out, has_results=True, force=False)
    with pytest.raises(ManifestMismatchError, match="temperature: 0.0 -> 0.5"):
        R.check_manifest(old, _manifest(temperature=0.5), out, has_results=True, force=False)
    assert R.check_manifest(old, _manifest(temperature=0.5), out, has_results=True, force=True)


def test_one_writer_at_a_time(tmp_path):
    a, b = R.ResultsFile(tmp_path / "r.jsonl"), R.ResultsFile(tmp_path / "r.jsonl")
    a.lock()
    with pytest.raises(ResultsInUseError, match="another chatglm3 batch is writing"):
        b.lock()
    a.close()
    b.lock()  # free again
    b.close()
