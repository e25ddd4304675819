"""Which weights the AMX workaround moves to llama.cpp's CPU_REPACK buffer."""
from __future__ import annotations

from chatglm3_cli.engine.gguf_file import read_gguf
from chatglm3_cli.engine.llama.placement import repack_names


def test_q4_k_m_file_repacks_its_q4_0_and_q4_k_matrices_only(fixtures):
    info = read_gguf(fixtures.path("tiny-q4km"))
    by_name = {t.name: t for t in info.tensors}
    names = repack_names(info.tensors)
    assert names, "a Q4_K_M file has Q4_K matrices to repack"
    assert all(by_name[n].ggml_type in (2, 12) and len(by_name[n].shape) == 2 for n in names)
    assert "token_embd.weight" not in names
    # Q6_K (the Q4_K_M recipe keeps some tensors at 6 bits), F32 norms and biases stay put.
    left = [t for t in info.tensors if t.name not in names]
    assert any(t.ggml_type == 14 for t in left) and all(t.ggml_type != 12 or t.name == "token_embd.weight"
                                                        for t in left)


def test_f32_file_has_nothing_to_repack(fixtures):
    assert repack_names(read_gguf(fixtures.path("tiny")).tensors) == []
