"""Exact tokenization: the tokenizer rebuilt from the GGUF equals SentencePiece itself."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatglm3_cli.engine.gguf_file import read_gguf
from chatglm3_cli.engine.tokenizer import SentencePieceTokenizer, build_model_proto, sentencepiece_size

BAD_WORDS = [" philosophy", " sophisticated", " peoples", " jeopard", " sophomore", " philosopher",
             "philosophy of people", "people", "Europe", "leopard", "geopolitics", "sop", "eop",
             "<|user|>", "[gMASK]", "sop eop", "<|assistant|>", "</s>", "<s>", "<unk>"]
CHUNKS = st.one_of(
    st.sampled_from(BAD_WORDS),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 .,!?'\"-_()", max_size=20),
    st.text(alphabet="你好世界人工智能哲学的是不了在有我他这中大来上国个到说们为子和龘龖𠀀", max_size=10),
    st.text(alphabet="🙂😀🚀👍🏽❤️✨🇨🇳", max_size=4),
    st.text(alphabet=" \t\n\r\u3000\u00a0", min_size=1, max_size=4),
)
TEXTS = st.lists(CHUNKS, max_size=8).map("".join)


def _spm(path):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(path))


@pytest.fixture(scope="module")
def ours(fixtures):
    return SentencePieceTokenizer.from_gguf(read_gguf(fixtures.path("tiny"))), _spm(fixtures.vocab_model())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
def test_equals_sentencepiece_on_generated_text(ours, text):
    tok, ref = ours
    assert tok.encode(text) == ref.encode(text)


@pytest.mark.parametrize("text", BAD_WORDS + ["", " ", "\n", "  two  spaces  ", "\t\ttabs\n\n",
                                              "混合 text with 中文 and emoji 🙂", "龘𠀀", "a\u3000b"])
def test_known_cases(ours, text):
    tok, ref = ours
    assert tok.encode(text) == ref.encode(text)


def test_sentencepiece_boundary_is_the_first_control_token(fixtures):
    info = read_gguf(fixtures.path("tiny"))
    assert sentencepiece_size(info.get("tokenizer.ggml.token_type")) == 64789


def test_llama_cpp_tokenizer_is_the_trap(fixtures, tiny_model):
    """llama.cpp lets sop/eop join merges; ours never yields a control token for plain text."""
    tok, ref = SentencePieceTokenizer.from_gguf(read_gguf(fixtures.path("tiny"))), _spm(fixtures.vocab_model())
    differs = []
    for word in [" philosophy", " sophisticated", " peoples", " jeopard", " sophomore", " philosopher"]:
        llama_ids = tiny_model._llama.tokenize(word, parse_special=False)
        assert all(i < 64789 for i in tok.encode(word))
        assert tok.encode(word) == ref.encode(word)
        if llama_ids != ref.encode(word):
            differs.append(word)
    assert differs, "expected llama.cpp's SPM tokenizer to mis-tokenize sop/eop words"
    assert tiny_model.tokenize(" philosophy") == ref.encode(" philosophy")


def test_hand_built_proto_round_trips(fixtures):
    import sentencepiece as spm

    ref = _spm(fixtures.vocab_model())
    n = ref.get_piece_size()
    pieces = [ref.id_to_piece(i) for i in range(n)]
    scores = [ref.get_score(i) for i in range(n)]
    types = [2 if ref.is_unknown(i) else 3 if ref.is_control(i) else 6 if ref.is_byte(i)
             else 5 if ref.is_unused(i) else 1 for i in range(n)]
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(build_model_proto(pieces, scores, types))
    text = "Hello 世界 🙂 philosophy\n\tend"
    assert sp.encode(text) == ref.encode(text)
    assert sp.decode(sp.encode(text)) == text


# --- the real ChatGLM3 vocabulary (only when shared/fixtures has it) -------------------------

@pytest.fixture(scope="module")
def real(fixtures, real_vocab):
    return SentencePieceTokenizer.from_gguf(read_gguf(fixtures.path("tiny-real"))), _spm(real_vocab)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
def test_real_vocab_equals_sentencepiece(real, text):
    tok, ref = real
    assert tok.encode(text) == ref.encode(text)


def test_real_vocab_documented_ids(real):
    tok, _ = real
    assert tok.encode("philosophy of people") == [8827, 290, 705]
    assert tok.encode("\n") == [30910, 13]


def test_real_vocab_llama_cpp_trap(fixtures, real_vocab):
    from chatglm3_cli.engine.model import Model

    with Model(fixtures.path("tiny-real"), n_ctx=64) as m:
        assert m._llama.tokenize("philosophy of people", parse_special=False) == [5119, 30914, 64792, 4951, 290, 705]
        assert m.tokenize("philosophy of people") == [8827, 290, 705]
