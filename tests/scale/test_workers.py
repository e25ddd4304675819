"""What a Ray worker does before any job, without Ray: find the driver's model on its node (the
same path, or the name pulled into its own cache) and refuse a file that is not the driver's;
rows and typed errors cross the wire as JSON."""
from __future__ import annotations

import shutil

import pytest

from chatglm3_cli import errors as E
from chatglm3_cli.engine.completion import Completion, Timings
from chatglm3_cli.engine.decoder import DecodeRequest, DecodeResult
from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.files import file_sha256
from chatglm3_cli.scale.workers import (
    LoadOptions,
    ModelRef,
    error_from_dict,
    error_to_dict,
    locate_model,
    open_model,
    request_from_json,
    request_to_json,
    result_from_json,
    result_to_json,
)


def test_the_drivers_path_when_this_node_sees_it(fixtures):
    path = fixtures.path("tiny")
    ref = ModelRef(name=str(path), path=str(path), sha256=file_sha256(path))
    assert locate_model(ref) == path


def test_a_workers_model_keeps_evaluated_prompts_on_its_node(fixtures, tmp_path, monkeypatch):
    """A rerun or resume on the same node restores the job's shared instructions from its disk
    cache, as a local batch run does (CHATGLM3_PROMPT_CACHE=0 turns it off there too)."""
    from chatglm3_cli.engine import promptcache

    path = fixtures.path("tiny")
    ref = ModelRef(name=str(path), path=str(path), sha256=file_sha256(path))
    monkeypatch.setenv("CHATGLM3_CACHE_DIR", str(tmp_path / "cache"))
    model = open_model(ref, LoadOptions(n_ctx=256))
    try:
        pc = promptcache.of(model)
        assert pc is not None and pc.root == tmp_path / "cache" / "prompts"
    finally:
        model.close()
    monkeypatch.setenv("CHATGLM3_PROMPT_CACHE", "0")
    model = open_model(ref, LoadOptions(n_ctx=256))
    try:
        assert promptcache.of(model) is None
    finally:
        model.close()


def test_a_path_no_node_has_says_what_to_do(fixtures, tmp_path):
    path = fixtures.path("tiny")
    ref = ModelRef(name=str(tmp_path / "gone.gguf"), path=str(tmp_path / "gone.gguf"), sha256=file_sha256(path))
    with pytest.raises(E.ModelNotFoundError) as e:
        locate_model(ref)
    assert "gone.gguf" in e.value.message and "every node" in e.value.hint


def test_another_file_at_the_drivers_path_is_refused(fixtures, tmp_path):
    # the same path on this node holds another model: never mixed into the job
    other = tmp_path / "model.gguf"
    shutil.copyfile(fixtures.path("scripted"), other)
    ref = ModelRef(name=str(other), path=str(other), sha256=file_sha256(fixtures.path("tiny")))
    with pytest.raises(E.ModelMismatchError) as e:
        locate_model(ref)
    assert "sha256" in e.value.message


def test_a_model_name_is_pulled_into_this_nodes_cache(fixtures, hub, tmp_path):
    src = fixtures.path("tiny")
    hub.add("someone/tiny-GGUF", {"tiny.Q8_0.gguf": src})
    driver_path = tmp_path / "elsewhere" / "tiny.Q8_0.gguf"  # the driver's cache: not on this node
    ref = ModelRef(name="someone/tiny-GGUF/tiny.Q8_0.gguf", path=str(driver_path), sha256=file_sha256(src))
    found = locate_model(ref)
    from chatglm3_cli.paths import hf_cache_dir

    assert found != driver_path and found.resolve().is_relative_to(hf_cache_dir().resolve())
    assert file_sha256(found) == ref.sha256
    assert locate_model(ref) == found  # the second actor on the node finds it on disk


def test_a_pulled_model_that_differs_from_the_drivers_is_refused(fixtures, hub):
    hub.add("someone/tiny-GGUF", {"tiny.Q8_0.gguf": fixtures.path("scripted")})
    ref = ModelRef(name="someone/tiny-GGUF/tiny.Q8_0.gguf", path="/nowhere/tiny.Q8_0.gguf",
                   sha256=file_sha256(fixtures.path("tiny")))
    with pytest.raises(E.ModelMismatchError):
        locate_model(ref)


def test_another_chatglm3_version_on_a_worker_is_refused(fixtures):
    path = fixtures.path("tiny")
    ref = ModelRef(name=str(path), path=str(path), sha256=file_sha256(path), version="0.0.1")
    with pytest.raises(E.ClusterError) as e:
        locate_model(ref)
    assert "0.0.1" in e.value.message


def test_typed_errors_keep_their_class_and_fields():
    err = error_from_dict(error_to_dict(E.PromptTooLongError(900, 512)))
    assert isinstance(err, E.PromptTooLongError) and (err.n_prompt, err.n_ctx) == (900, 512)
    assert err.message.startswith("the prompt is 900 tokens") and err.hint == "shorten the input or raise --ctx"
    unknown = error_from_dict({"type": "NotOurs", "message": "boom"})
    assert isinstance(unknown, E.GenerationError) and unknown.message == "boom"


def test_requests_and_results_round_trip():
    req = DecodeRequest("7", prompt_ids=[1, 2, 3], params=SamplingParams(temperature=0, max_tokens=9),
                        grammar='root ::= "a"')
    back = request_from_json(request_to_json(req))
    assert (back.key, list(back.prompt_ids), back.params, back.grammar) == ("7", [1, 2, 3], req.params, req.grammar)
    comp = Completion(text="你好 🙂", metadata="", finish_reason="stop", prompt_tokens=3, cached_tokens=1,
                      completion_tokens=2, timings=Timings(prompt_tokens=2, prompt_ms=1.5), tokens=[5, 6],
                      stop_token=2)
    assert result_from_json(result_to_json(DecodeResult("7", completion=comp))) == DecodeResult("7", completion=comp)
    lost = result_from_json(result_to_json(DecodeResult("8", error=E.GenerationError("gone"))))
    assert isinstance(lost.error, E.GenerationError) and lost.error.message == "gone" and lost.completion is None
