"""Opening a bad model file gives a typed error with a one-line message, never a crash."""
from __future__ import annotations

import numpy as np
import pytest

from chatglm3_cli.engine.model import Model
from chatglm3_cli.errors import ModelFormatError, ModelNotFoundError, UnsupportedModelError

from ..gguf_edit import copy_with


def _write_gguf(path, arch, tensors=True, template=None, vocab=None):
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_head_count(1)
    if vocab:
        w.add_tokenizer_model("llama")
        w.add_token_list(vocab.tokens)
        w.add_token_scores(vocab.scores)
        w.add_token_types(vocab.types)
    if template:
        w.add_chat_template(template)
    if tensors:
        w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_missing(tmp_path):
    with pytest.raises(ModelNotFoundError):
        Model(tmp_path / "missing.gguf")


def test_not_a_gguf(tmp_path):
    p = tmp_path / "model.gguf"
    p.write_bytes(b"PK\x03\x04" + b"\x00" * 4096)
    with pytest.raises(ModelFormatError, match="not a GGUF"):
        Model(p)


def test_truncated_download(fixtures, tmp_path):
    data = fixtures.path("scripted").read_bytes()
    p = tmp_path / "partial.gguf"
    p.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ModelFormatError, match="truncated"):
        Model(p)


def test_unknown_architecture(tmp_path):
    p = _write_gguf(tmp_path / "alien.gguf", "nonesuch")
    with pytest.raises(UnsupportedModelError, match="nonesuch"):
        Model(p)


def test_incomplete_chatglm_file_is_a_load_error(tmp_path, fixtures):
    """Architecture known, tensors missing: llama.cpp refuses; we report it in one line."""
    from chatglm3_cli.errors import ModelError

    p = _write_gguf(tmp_path / "broken.gguf", "chatglm")
    with pytest.raises(ModelError) as e:
        Model(p)
    assert "\n" not in e.value.message


def test_model_without_template_or_chatglm3_vocab(fixtures, tmp_path):
    """A non-ChatGLM3 model needs a chat template; without one the error says so."""

    out = copy_with(fixtures.path("template"), tmp_path / "notemplate.gguf", {}, drop=("tokenizer.chat_template",))
    with pytest.raises(UnsupportedModelError, match="chat template"):
        Model(out)


def test_duplicate_vocabulary_refused_before_llama_cpp_aborts(tmp_path):
    """llama.cpp's vocab loader GGML_ASSERTs (kills the process) on duplicate token texts."""
    from types import SimpleNamespace

    vocab = SimpleNamespace(tokens=["<unk>", "a", "a"], scores=[0.0, 0.0, 0.0], types=[2, 1, 1])
    p = _write_gguf(tmp_path / "dup.gguf", "llama", vocab=vocab)
    with pytest.raises(ModelFormatError, match="duplicate"):
        Model(p)
