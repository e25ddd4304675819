"""Model names: aliases, quants, Hub references and picking a file from a listing."""
from __future__ import annotations

import pytest

from chatglm3_cli import config
from chatglm3_cli.errors import ModelNotFoundError, ModelNotOnHubError
from chatglm3_cli.hub.registry import parse_spec, pick_file, quant_of
from chatglm3_cli.hub.resolve import model_name


@pytest.mark.parametrize("name, quant", [
    ("chatglm3-6b.Q4_K_M.gguf", "Q4_K_M"), ("chatglm3-6b-q4_0.gguf", "Q4_0"),
    ("glm-4-9b-chat-Q4_K_M.gguf", "Q4_K_M"), ("chatglm3-6b.IQ4_XS.gguf", "IQ4_XS"),
    ("chatglm3-6b.f16.gguf", "F16"), ("sub/dir/model-bf16.gguf", "BF16"), ("model.gguf", None),
])
def test_quant_of(name, quant):
    assert quant_of(name) == quant


def test_alias_with_and_without_quant():
    s = parse_spec("chatglm3-6b:q8_0")
    assert (s.repo_id, s.quant, s.alias) == ("mradermacher/chatglm3-6b-GGUF", "q8_0", "chatglm3-6b")
    assert parse_spec("glm-4-9b-chat").repo_id == "bartowski/glm-4-9b-chat-GGUF"
    assert parse_spec("chatglm3-6b-128k").repo_id == "mradermacher/chatglm3-6b-128k-GGUF"


def test_hub_references():
    assert parse_spec("owner/repo").repo_id == "owner/repo"
    s = parse_spec("owner/repo:Q5_K_M")
    assert (s.repo_id, s.quant) == ("owner/repo", "Q5_K_M")
    s = parse_spec("owner/repo/sub/file.Q2_K.gguf")
    assert (s.repo_id, s.filename) == ("owner/repo", "sub/file.Q2_K.gguf")


def test_paths(tmp_path, monkeypatch):
    f = tmp_path / "a" / "b" / "c.gguf"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    assert parse_spec("a/b/c.gguf").path is not None  # an existing file wins over owner/repo/file
    assert parse_spec("./x/y/z.gguf").is_local and parse_spec("/abs/m.gguf").is_local
    assert parse_spec("missing.gguf").is_local and parse_spec("models/missing.gguf").is_local
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        parse_spec("no-such-alias")


def test_pick_file_is_case_insensitive_and_lists_what_exists():
    files = ["README.md", "m.Q4_K_M.gguf", "m.Q8_0.gguf", "m.f16.gguf"]
    assert pick_file(parse_spec("o/r:q8_0"), files, where="") == "m.Q8_0.gguf"
    assert pick_file(parse_spec("o/r"), files, where="") == "m.Q4_K_M.gguf"  # the default quant
    with pytest.raises(ModelNotOnHubError, match="no Q2_K file.*quants: F16, Q4_K_M, Q8_0"):
        pick_file(parse_spec("o/r:Q2_K"), files, where="")
    assert pick_file(parse_spec("o/r"), ["only-q4_0.gguf"], where="") == "only-q4_0.gguf"
    split = ["big-Q8_0-00001-of-00002.gguf", "big-Q8_0-00002-of-00002.gguf"]
    assert pick_file(parse_spec("o/r:Q8_0"), split, where="") == split[0]


def test_precedence_flag_env_config_default(monkeypatch):
    assert model_name() == "chatglm3-6b"
    config.config_file().parent.mkdir(parents=True)
    config.config_file().write_text('model = "glm-4-9b-chat"  # mine\n')
    assert model_name() == "glm-4-9b-chat"
    monkeypatch.setenv("CHATGLM3_MODEL", "chatglm3-6b-128k")
    assert model_name() == "chatglm3-6b-128k"
    assert model_name("owner/repo") == "owner/repo"


def test_modelscope_names():
    s = parse_spec("ms://LLM-Research/glm-4-9b-chat-GGUF:q8_0")
    assert (s.source, s.repo_id, s.quant) == ("modelscope", "LLM-Research/glm-4-9b-chat-GGUF", "q8_0")
    s = parse_spec("ms://owner/repo/sub/x.Q4_K_M.gguf")
    assert (s.source, s.repo_id, s.filename) == ("modelscope", "owner/repo", "sub/x.Q4_K_M.gguf")
    assert parse_spec("owner/repo").source == "hub"
    s = parse_spec("glm-4-9b-chat", source="modelscope")
    assert (s.source, s.repo_id) == ("modelscope", "LLM-Research/glm-4-9b-chat-GGUF")
    for bad in ("ms://nothing", "ms://owner/repo/../x.gguf", "ms://"):
        with pytest.raises(ModelNotFoundError):
            parse_spec(bad)
    with pytest.raises(ModelNotFoundError, match="no ModelScope repo known"):
        parse_spec("chatglm3-6b", source="modelscope")


def test_source_preference_from_the_environment_and_the_config(monkeypatch, capsys):
    from chatglm3_cli import env
    from chatglm3_cli.hub.resolve import preferred_source

    assert preferred_source() == "hub"
    config.config_file().parent.mkdir(parents=True)
    config.config_file().write_text('source = "modelscope"\n')
    assert preferred_source() == "modelscope"
    monkeypatch.setenv("CHATGLM3_SOURCE", "HUB")
    assert preferred_source() == "hub"
    monkeypatch.setattr(env, "_warned", set())
    monkeypatch.setenv("CHATGLM3_SOURCE", "modelscop")  # a typo: said once, then the config's
    assert preferred_source() == "modelscope" and preferred_source() == "modelscope"
    err = capsys.readouterr().err
    assert err.count("CHATGLM3_SOURCE='modelscop' is not hub or modelscope") == 1
