#!/usr/bin/env python3
"""Write the GGUF files that the tests and benchmarks run on.

Every file is generated here, from nothing but this script, ``scripts/corpus.txt`` and the
``gguf``/``sentencepiece`` packages, into a gitignored cache (``.cache/test-models`` or
``$CHATGLM3_TEST_CACHE``). Nothing generated is ever committed.

Kinds:
  vocab          a SentencePiece BPE (byte fallback, ChatGLM3's normalizer settings) trained
                 on scripts/corpus.txt: the project's own ChatGLM3-style vocabulary
  tiny           ChatGLM3 architecture, random weights, our vocabulary laid out like ChatGLM3's
                 (control tokens at the real ids, padded to 65024): mechanics and equivalence
  tiny-q4km      ChatGLM3 architecture, random weights 256 wide, quantized to Q4_K_M (Q4_K and
                 Q6_K, the default download's type) by llama.cpp's own quantizer: batch decoding
                 against one sequence on the kind of file users run
  tiny-q4_0, tiny-f16
                 the same random weights quantized to Q4_0 (repacked for llama.cpp's AVX2/AVX-512
                 GEMM kernels) or converted to F16: prompt and batch exactness on those types
  scripted       zeroed blocks + one-hot embeddings: the greedy continuation of any prompt is
                 "\\n" + a known answer + <|user|> + a leaked "next user turn" + <eos>
  scripted-tool  the same, answering with a tool call: the metadata line "search", then
                 tool_call(city="Paris") and <|observation|> (on a vocabulary that also saw tool calls)
  scripted-loop  the same, answering "Hello! I am ChatGLM3" forever (never a stop token)
  scripted-code  the same, in ChatGLM3's code-interpreter format: the metadata line "interpreter",
                 a ```python block whose code is exec(open('cell.py').read()) (tests put the
                 cell's real code in cell.py in the kernel's working directory), <|observation|>
  answer-plain, answer-tool, answer-text-tool, answer-two-text
                 one answer shape each, on one-hot embeddings plus one attention layer that
                 switches some tokens' successors once a marker token is in the context (so an
                 answer can repeat "\\n" and <|assistant|>): a plain answer; a tool call; text,
                 then <|assistant|> and a tool call; two text segments. The .json sidecar lists
                 the segments (metadata, content), the stop token and the answer's token ids
  glm4           GLM-4-9B-chat's layout: architecture chatglm with a small byte-level BPE
                 vocabulary (GPT-2 style, pre-tokenizer chatglm-bpe) and GLM-4's special tokens
                 at their texts; GLM-4's official template embedded; greedy answer "\\n" + a
                 known answer + <|user|> + a leak + <|observation|> + a leak + <|endoftext|>
  glm4-tool      the same vocabulary answering with GLM-4's tool call: "get_weather" + "\\n" +
                 {"city": "Paris"} + <|observation|> + a leak + <|user|> + <|endoftext|>
  template       llama architecture with an embedded ChatML template whose end-of-generation
                 token is <|im_end|>: the path every non-ChatGLM3 model takes
  template-tools the same with a Qwen2.5-style template that reads ``tools``; greedy answer: a
                 Hermes/Qwen call <tool_call>\n{"name": "search", "arguments": {"city": "Paris"}}
                 \n</tool_call> (three user-defined tokens), <|im_end|>, a leak
  6b             the real ChatGLM3-6B shapes with random Q4_0 weights (~3.5 GB): for speed
  tiny-real, scripted-real
                 as tiny/scripted, on the real ChatGLM3 vocabulary, built only when
                 ../shared/fixtures/chatglm3-tokenizer.model exists

Usage: python scripts/make_test_model.py KIND [KIND ...] [--cache DIR] [--force]
Prints the path of each file (cached files are reused).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus.txt"
REAL_VOCAB = ROOT.parent / "shared" / "fixtures" / "chatglm3-tokenizer.model"

# ChatGLM3's vocabulary layout (see shared/docs/chatglm3-facts.md).
SP_VOCAB_SIZE = 64789
PADDED_VOCAB = 65024
SPECIAL_TOKENS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop",
                  "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
USER, ASSISTANT, OBSERVATION, EOS = 64795, 64796, 64797, 2
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The official llama.cpp text template for ChatGLM3: scripted.gguf carries it so that the tests
# can prove a ChatGLM3 file never takes the template path.
CHATGLM3_TEMPLATE = (
    "[gMASK]sop{% for message in messages %}<|{{ message['role'] }}|>\n {{ message['content'] }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2.5's chat template (Qwen/Qwen2.5-7B-Instruct tokenizer_config.json), its tools branch
# kept whole: tools as JSON lines in <tools>, calls as <tool_call> blocks, results as
# <tool_response> in a user turn.
TOOLS_TEMPLATE = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are a helpful assistant.' }}\n"
    "    {%- endif %}\n    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user "
    "query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, "
    "\\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n    {%- endif %}\n"
    "{%- endif %}\n{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)
# The template-tools fixture's answer, one user-defined token each (the scripted model maps
# each token to one successor, so the answer cannot repeat "\n" or a quote).
TEMPLATE_CALL_PIECES = ["<tool_call>\n", '{"name": "search", "arguments": {"city": "Paris"}}', "\n</tool_call>"]

SCRIPTED_ANSWER = "Hello! I am ChatGLM3 🙂龘"
SCRIPTED_LEAK = "Leaked next turn"
TOOL_METADATA = "search"
TOOL_CONTENT = 'tool_call(city="Paris")'  # ChatGLM3 writes a call as Python
TOOL_ARGS = {"city": "Paris"}  # what the call's arguments are


def cache_dir(override: str | None = None) -> Path:
    path = Path(override or os.environ.get("CHATGLM3_TEST_CACHE") or ROOT / ".cache" / "test-models")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fingerprint() -> str:
    """Files are rebuilt when this script, the corpus or the tool versions change."""
    import gguf
    import sentencepiece

    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(CORPUS.read_bytes())
    h.update(f"{gguf.__version__ if hasattr(gguf, '__version__') else ''}{sentencepiece.__version__}".encode())
    return h.hexdigest()[:12]


def _atomic_target(path: Path) -> Path:
    return path.with_name(path.name + f".tmp{os.getpid()}")


# ---------------------------------------------------------------------------------------------
# Vocabularies


# Extra training text for the tool-calling fixture's vocabulary: the scripted model maps each
# token to one successor, so its answer must not repeat a token, and on the base vocabulary
# "tool_call" is spelled t-o-o-l.
TOOL_CORPUS = ('Tools are called in Python: tool_call(city="Paris") asks for the weather, '
               'tool_call(query="ChatGLM3") searches the web, and tool_call(symbol="AAPL") reads '
               "a price. A tool_call names its arguments.\n")


# The interpreter fixture's code: one user-defined piece (the scripted model maps each token to
# one successor, so a code cell written piece by piece could not repeat a character), and the
# fence lines as pieces of their own ("\\n" is needed once for the metadata line).
CODE_CELL = "exec(open('cell.py').read())"
CODE_PIECES = ["```python\n", CODE_CELL, "\n```"]
CODE_CORPUS = ("The interpreter runs Python code. An interpreter cell prints its result, and the "
               "interpreter shows images too.\n" * 3)


def train_vocab(out: Path, extra: str = "", user_defined: list[str] | None = None) -> Path:
    """Train our own ChatGLM3-style SentencePiece BPE on the repo's corpus (plus extra text)."""
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "vocab"
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text(CORPUS.read_text(encoding="utf-8") + extra, encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(prefix), model_type="bpe", vocab_size=1200,
            hard_vocab_limit=False, byte_fallback=True, character_coverage=1.0,
            normalization_rule_name="identity", add_dummy_prefix=True,
            remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
            shuffle_input_sentence=False, minloglevel=2,
            **({"user_defined_symbols": user_defined} if user_defined else {}),
        )
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = pb.ModelProto()
        proto.ParseFromString(prefix.with_suffix(".model").read_bytes())
        # BPE learns "sop"/"eop" from "philosophy" and "people"; ChatGLM3's real vocabulary has
        # no such pieces (the texts belong to its control tokens, and llama.cpp aborts on a
        # duplicate token text). Renaming keeps the ids; a renamed piece can never be matched.
        for i, piece in enumerate(proto.pieces):
            if piece.piece in SPECIAL_TOKENS:
                piece.piece = f"<reserved{i}>"
        tmp_out = _atomic_target(out)
        tmp_out.write_bytes(proto.SerializeToString())
        os.replace(tmp_out, out)
    return out


@dataclass
class Vocab:
    tokens: list[str]
    scores: list[float]
    types: list[int]

    def id(self, piece: str) -> int:
        return self.tokens.index(piece)


def chatglm3_vocab(sp_model_path: Path) -> Vocab:
    """Lay a SentencePiece model out as llama.cpp's converter writes ChatGLM3's vocabulary."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(sp_model_path.read_bytes())
    tokens, scores, types = [], [], []
    for i, p in enumerate(proto.pieces):
        tokens.append({0: "<unk>", 1: "<bos>", 2: "<eos>"}.get(i, p.piece))
        scores.append(p.score)
        types.append(p.type)
    # Our small vocabulary is padded with unused pieces so that the control tokens sit at
    # ChatGLM3's real ids.
    for i in range(len(tokens), SP_VOCAB_SIZE):
        tokens.append(f"<unused{i}>")
        scores.append(-1e9)
        types.append(UNUSED)
    assert len(tokens) == SP_VOCAB_SIZE, len(tokens)
    clash = set(tokens) & set(SPECIAL_TOKENS)
    if clash:  # llama.cpp aborts on duplicate token texts
        raise ValueError(f"the trained vocabulary contains control token texts: {clash}")
    for piece in SPECIAL_TOKENS:
        tokens.append(piece)
        scores.append(0.0)
        types.append(CONTROL)
    for i in range(len(tokens), PADDED_VOCAB):
        tokens.append(f"[PAD{i}]")
        scores.append(0.0)
        types.append(UNUSED)
    return Vocab(tokens, scores, types)


def chatml_vocab(sp_model_path: Path, user_defined: tuple[str, ...] = ()) -> Vocab:
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(sp_model_path.read_bytes())
    v = Vocab([p.piece for p in proto.pieces], [p.score for p in proto.pieces],
              [p.type for p in proto.pieces])
    for piece, kind in [("<|im_start|>", CONTROL), ("<|im_end|>", CONTROL)] + [(p, USER_DEFINED) for p in user_defined]:
        v.tokens.append(piece)
        v.scores.append(0.0)
        v.types.append(kind)
    return v


def sp_encode(sp_model_path: Path, text: str) -> list[int]:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(sp_model_path)).encode(text)


# ---------------------------------------------------------------------------------------------
# Writers


@dataclass
class Shape:
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_ctx: int = 2048

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def _chatglm_header(writer, shape: Shape, vocab: Vocab, name: str, template: str | None) -> None:
    writer.add_name(name)
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(shape.head_dim // 2)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("chatglm-spm")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    if template is not None:
        writer.add_chat_template(template)


def _chatglm_tensors(shape: Shape, n_vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """Tensor names and numpy shapes (rows = output features) of a ChatGLM3 file."""
    qkv = shape.n_embd + 2 * shape.n_head_kv * shape.head_dim
    out = [("token_embd.weight", (n_vocab, shape.n_embd)), ("output_norm.weight", (shape.n_embd,)),
           ("output.weight", (n_vocab, shape.n_embd))]
    for i in range(shape.n_layer):
        out += [
            (f"blk.{i}.attn_norm.weight", (shape.n_embd,)),
            (f"blk.{i}.attn_qkv.weight", (qkv, shape.n_embd)),
            (f"blk.{i}.attn_qkv.bias", (qkv,)),
            (f"blk.{i}.attn_output.weight", (shape.n_embd, shape.n_embd)),
            (f"blk.{i}.ffn_norm.weight", (shape.n_embd,)),
            (f"blk.{i}.ffn_up.weight", (2 * shape.n_ff, shape.n_embd)),
            (f"blk.{i}.ffn_down.weight", (shape.n_embd, shape.n_ff)),
        ]
    return out


def _write(path: Path, arch: str, header, tensors: list[tuple[str, np.ndarray]]) -> Path:
    import gguf

    tmp = _atomic_target(path)
    writer = gguf.GGUFWriter(str(tmp), arch)
    header(writer)
    for name, data in tensors:
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path


def write_random_chatglm(path: Path, vocab: Vocab, seed: int = 1234,
                         shape: Shape = Shape(n_embd=64, n_layer=2, n_ff=128, n_head=4, n_head_kv=2),
                         std: float = 0.3, out_std: float = 1.0, name: str = "tiny random chatglm3") -> Path:
    rng = np.random.default_rng(seed)
    tensors = []
    for tname, shp in _chatglm_tensors(shape, len(vocab.tokens)):
        if tname.endswith("norm.weight"):
            data = np.ones(shp, dtype=np.float32)
        else:
            data = rng.normal(0, out_std if tname == "output.weight" else std, shp).astype(np.float32)
        tensors.append((tname, data))
    return _write(path, "chatglm", lambda w: _chatglm_header(w, shape, vocab, name, None), tensors)


def write_random_q4km(path: Path, vocab: Vocab, seed: int = 4321, ftype: str = "Q4_K_M") -> Path:
    """A random ChatGLM3 quantized by llama.cpp to Q4_K_M (K-quants need rows of 256), or to
    another llama.cpp file type (Q4_0, F16: the other types the engine's exactness rules cover)."""
    import ctypes

    from chatglm3_cli.engine.llama import runtime

    llama_cpp = runtime.llama()  # with the engine's log handler, which keeps llama.cpp quiet
    name = "tiny random chatglm3 " + ftype.lower()
    f32 = write_random_chatglm(path.with_name(path.name + ".f32"), vocab, seed,
                               Shape(n_embd=256, n_layer=2, n_ff=512, n_head=4, n_head_kv=2),
                               std=0.15, out_std=0.5, name=name)
    tmp = _atomic_target(path)
    try:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
        params.nthread = 2
        if llama_cpp.llama_model_quantize(os.fsencode(f32), os.fsencode(tmp), ctypes.byref(params)) != 0:
            raise RuntimeError(f"llama.cpp could not quantize {f32}")
        os.replace(tmp, path)
    finally:
        f32.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return path


def _chain_weights(chain: list[int], n_vocab: int, n_embd: int) -> tuple[np.ndarray, np.ndarray]:
    """One-hot embeddings + an output matrix mapping each chain token to its successor."""
    succ: dict[int, int] = {}
    for cur, nxt in zip(chain, chain[1:]):
        if cur in succ and succ[cur] != nxt:
            raise ValueError(f"token {cur} has two successors in the scripted chain")
        succ[cur] = nxt
    if len(succ) > n_embd:
        raise ValueError("scripted chain longer than the embedding width")
    embd = np.zeros((n_vocab, n_embd), dtype=np.float32)
    out = np.zeros((n_vocab, n_embd), dtype=np.float32)
    for slot, (cur, nxt) in enumerate(succ.items()):
        embd[cur, slot] = 1.0
        out[nxt, slot] = 4.0
    return embd, out


SCRIPTED_SHAPE = Shape(n_embd=128, n_layer=1, n_ff=128, n_head=4, n_head_kv=2)


def _write_scripted(path: Path, vocab: Vocab, name: str, given: dict[str, np.ndarray],
                    ones: Callable[[str], bool], sidecar: dict) -> Path:
    """A one-layer ChatGLM3 file: the ``given`` tensors, ones where ``ones`` says (norm
    weights), zeros elsewhere; and its JSON sidecar."""
    tensors = []
    for tname, shp in _chatglm_tensors(SCRIPTED_SHAPE, len(vocab.tokens)):
        if tname in given:
            data = given[tname]
        elif ones(tname):
            data = np.ones(shp, dtype=np.float32)
        else:
            data = np.zeros(shp, dtype=np.float32)
        tensors.append((tname, data))
    _write(path, "chatglm",
           lambda w: _chatglm_header(w, SCRIPTED_SHAPE, vocab, name, CHATGLM3_TEMPLATE), tensors)
    path.with_suffix(".json").write_text(json.dumps(sidecar, ensure_ascii=False, indent=1))
    return path


def write_scripted_chatglm(path: Path, vocab: Vocab, chain: list[int], sidecar: dict) -> Path:
    embd, out = _chain_weights(chain, len(vocab.tokens), SCRIPTED_SHAPE.n_embd)
    # every block is zero: the residual stream is the token embedding
    return _write_scripted(path, vocab, "scripted chatglm3", {"token_embd.weight": embd, "output.weight": out},
                           lambda t: t == "output_norm.weight", sidecar)


# The answer-shape fixtures: (metadata, content) per segment, and the turn's stop token.
ANSWER_SHAPES: dict[str, tuple[list[tuple[str, str]], int]] = {
    "plain": ([("", "The sky is blue")], USER),
    "tool": ([(TOOL_METADATA, TOOL_CONTENT)], OBSERVATION),
    "text-tool": ([("", "Okay!"), (TOOL_METADATA, TOOL_CONTENT)], OBSERVATION),
    "two-text": ([("", "Part one"), ("", "Part two")], USER),
}


def _switched_chain(answer: list[int], marker: int) -> tuple[dict[int, int], dict[int, int]]:
    """Each token's successor before the marker is in the context, and the tokens whose
    successor differs once it is (the marker counts from its own position on)."""
    succ: dict[int, int] = {}
    switch: dict[int, int] = {}
    seen = False
    for cur, nxt in zip(answer, answer[1:]):
        seen = seen or cur == marker
        if cur not in succ:
            if seen and cur in switch and switch[cur] != nxt:
                raise ValueError(f"token {cur} has two successors after the marker")
            succ[cur] = nxt
        elif succ[cur] != nxt:
            if not seen or switch.get(cur, nxt) != nxt:
                raise ValueError(f"token {cur} has two successors in the scripted answer")
            switch[cur] = nxt
    return succ, switch


def write_switched_chatglm(path: Path, vocab: Vocab, answer: list[int], marker: int, sidecar: dict) -> Path:
    """One-hot embeddings map each token to its successor (as write_scripted_chatglm); one
    attention layer gives up to two tokens another successor once ``marker`` is in the context.

    Head h (0, 1) has a query only for its switched token, on a dimension that RoPE leaves
    alone (the last of the head), and only the marker has a key there: the switched token
    attends to the marker alone when it is present (score ~32 against 0), to nothing of value
    otherwise. The marker's value, routed by attn_output to a spare residual dimension P_h,
    outvotes the token's own successor (logit 8 per unit against 4)."""
    shape = SCRIPTED_SHAPE
    succ, switch = _switched_chain(answer, marker)
    if len(switch) > 2:
        raise ValueError("at most two switched tokens (one per attention head on the marker's key)")
    embd, out = _pairs_weights(succ, len(vocab.tokens), shape.n_embd - 2)
    hd = shape.head_dim
    n_q = shape.n_embd
    qkv = np.zeros((n_q + 2 * shape.n_head_kv * hd, shape.n_embd), dtype=np.float32)
    attn_out = np.zeros((shape.n_embd, shape.n_embd), dtype=np.float32)
    slot = {tok: int(np.argmax(embd[tok])) for tok in succ}
    if marker not in slot:
        raise ValueError("the marker must have a successor")
    a = 1.2  # normalised one-hot entries are sqrt(128) = 11.3: score (11.3 a)^2 / sqrt(32) ~ 32
    qkv[n_q + hd - 1, slot[marker]] = a  # key, kv head 0, last dimension
    # value, kv head 0, dimension 0 (values follow the keys): 1.0 once normalised
    qkv[n_q + shape.n_head_kv * hd, slot[marker]] = 1 / np.sqrt(shape.n_embd)
    for h, (tok, nxt) in enumerate(switch.items()):
        phase = shape.n_embd - 1 - h  # a residual dimension no token's embedding uses
        qkv[h * hd + hd - 1, slot[tok]] = a
        attn_out[phase, h * hd] = 1.0
        out[nxt, phase] = 8.0
    given = {"token_embd.weight": embd, "output.weight": out, "blk.0.attn_qkv.weight": qkv,
             "blk.0.attn_output.weight": attn_out}
    return _write_scripted(path, vocab, "scripted chatglm3 answer shape", given,
                           lambda t: t.endswith("norm.weight") and "ffn" not in t, sidecar)


def _pairs_weights(succ: dict[int, int], n_vocab: int, n_slots: int) -> tuple[np.ndarray, np.ndarray]:
    if len(succ) > n_slots:
        raise ValueError("scripted answer longer than the embedding width")
    embd = np.zeros((n_vocab, n_slots + 2), dtype=np.float32)
    out = np.zeros((n_vocab, n_slots + 2), dtype=np.float32)
    for i, (cur, nxt) in enumerate(succ.items()):
        embd[cur, i] = 1.0
        out[nxt, i] = 4.0
    return embd, out


def answer_shape(sp_model_path: Path, shape: str) -> tuple[list[int], int, dict]:
    """The token ids of one answer shape (from the prompt's <|assistant|> on), its marker, and
    its sidecar."""
    segments, stop = ANSWER_SHAPES[shape]
    answer = [ASSISTANT]
    for i, (meta, content) in enumerate(segments):
        if i:
            answer.append(ASSISTANT)
        answer += (sp_encode(sp_model_path, meta) if meta else []) + [13] + sp_encode(sp_model_path, content)
    answer += [stop, EOS]
    first = segments[0][1]
    # The first segment's last token: it must appear in no prompt the tests send (the tools
    # system message included), or the answer would switch from the start.
    marker = sp_encode(sp_model_path, first)[-1]
    sidecar = {"segments": [{"metadata": m, "content": c, **({"arguments": TOOL_ARGS} if m else {})}
                            for m, c in segments], "stop": stop,
               "answer_ids": answer[1:-2], "marker": marker}
    return answer, marker, sidecar


def write_template_model(path: Path, sp_model_path: Path, tools: bool = False) -> Path:
    """A llama-architecture model with a ChatML template; greedy: answer, <|im_end|>, leak.
    ``tools``: Qwen2.5's template, and the answer is a <tool_call> block."""
    vocab = chatml_vocab(sp_model_path, tuple(TEMPLATE_CALL_PIECES) if tools else ())
    im_end = vocab.id("<|im_end|>")
    answer = "".join(TEMPLATE_CALL_PIECES) if tools else "Template path works"
    answer_ids = ([vocab.id(p) for p in TEMPLATE_CALL_PIECES] if tools
                  else sp_encode(sp_model_path, "Template path works"))
    leak_ids = sp_encode(sp_model_path, SCRIPTED_LEAK)
    newline = vocab.id("<0x0A>")  # the prompt ends with "<|im_start|>assistant\n"
    chain = [newline] + answer_ids + [im_end] + leak_ids + [EOS]
    n_embd, n_ff, n_head = 64, 64, 4
    embd, out = _chain_weights(chain, len(vocab.tokens), n_embd)
    tensors = [("token_embd.weight", embd), ("output_norm.weight", np.ones(n_embd, np.float32)),
               ("output.weight", out)]
    for i in range(1):
        tensors += [
            (f"blk.{i}.attn_norm.weight", np.zeros(n_embd, np.float32)),
            (f"blk.{i}.attn_q.weight", np.zeros((n_embd, n_embd), np.float32)),
            (f"blk.{i}.attn_k.weight", np.zeros((n_embd, n_embd), np.float32)),
            (f"blk.{i}.attn_v.weight", np.zeros((n_embd, n_embd), np.float32)),
            (f"blk.{i}.attn_output.weight", np.zeros((n_embd, n_embd), np.float32)),
            (f"blk.{i}.ffn_norm.weight", np.zeros(n_embd, np.float32)),
            (f"blk.{i}.ffn_gate.weight", np.zeros((n_ff, n_embd), np.float32)),
            (f"blk.{i}.ffn_up.weight", np.zeros((n_ff, n_embd), np.float32)),
            (f"blk.{i}.ffn_down.weight", np.zeros((n_embd, n_ff), np.float32)),
        ]

    def header(w):
        w.add_name("scripted tools template model" if tools else "scripted chatml template model")
        w.add_context_length(1024)
        w.add_embedding_length(n_embd)
        w.add_block_count(1)
        w.add_feed_forward_length(n_ff)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_dimension_count(n_embd // n_head)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(vocab.tokens)
        w.add_token_scores(vocab.scores)
        w.add_token_types(vocab.types)
        w.add_bos_token_id(1)
        w.add_eos_token_id(im_end)
        w.add_unk_token_id(0)
        w.add_add_bos_token(False)
        w.add_chat_template(TOOLS_TEMPLATE if tools else CHATML_TEMPLATE)

    _write(path, "llama", header, tensors)
    path.with_suffix(".json").write_text(json.dumps(
        {"answer": answer, "leak": SCRIPTED_LEAK, "eog": im_end,
         **({"call": {"name": TOOL_METADATA, "arguments": TOOL_ARGS}} if tools else {})}, indent=1))
    return path


def write_6b(path: Path, vocab: Vocab) -> Path:
    """ChatGLM3-6B's shapes with random Q4_0 weights, streamed to disk tensor by tensor."""
    import gguf

    shape = Shape(n_embd=4096, n_layer=28, n_ff=13696, n_head=32, n_head_kv=2, n_ctx=8192)
    q4 = gguf.GGMLQuantizationType.Q4_0
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[q4]
    rng = np.random.default_rng(6)
    # A pool of valid Q4_0 blocks (small fp16 scales, random nibbles), tiled over each tensor:
    # decode speed depends on the shapes and the type, not on the values.
    pool_blocks = 1 << 20
    pool = np.zeros((pool_blocks, block_bytes), dtype=np.uint8)
    pool[:, :2] = rng.uniform(0.002, 0.02, pool_blocks).astype(np.float16).view(np.uint8).reshape(-1, 2)
    pool[:, 2:] = rng.integers(0, 256, (pool_blocks, block_bytes - 2), dtype=np.uint8)
    pool = pool.reshape(-1)

    plan = []
    for name, shp in _chatglm_tensors(shape, len(vocab.tokens)):
        if len(shp) == 1:
            plan.append((name, shp, None))
        else:
            plan.append((name, (shp[0], shp[1] // block_elems * block_bytes), q4))

    tmp = _atomic_target(path)
    writer = gguf.GGUFWriter(str(tmp), "chatglm")
    _chatglm_header(writer, shape, vocab, "chatglm3-6b-shaped random q4_0", None)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    for name, shp, raw in plan:
        if raw is None:
            writer.add_tensor_info(name, shp, np.dtype(np.float32), int(np.prod(shp)) * 4)
        else:
            writer.add_tensor_info(name, shp, np.dtype(np.uint8), int(np.prod(shp)), raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, shp, raw in plan:
        if raw is None:
            data = (np.ones(shp, np.float32) if "norm" in name
                    else rng.normal(0, 0.02, shp).astype(np.float32))
        else:
            n = int(np.prod(shp))
            reps = -(-n // pool.size)
            data = np.tile(pool, reps)[:n].reshape(shp) if reps > 1 else pool[:n].reshape(shp)
        writer.write_tensor_data(data)
    writer.close()
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
# GLM-4


GLM4_SPECIALS = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>",
                 "<|user|>", "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
                 "<|begin_of_video|>", "<|end_of_video|>"]
# GLM-4-9B-chat's official chat template (THUDM/glm-4-9b-chat tokenizer_config.json), with the
# branches for function tools; its built-in python/browser/cogview tools are left out.
GLM4_TEMPLATE = (
    "[gMASK]<sop>{% for item in messages %}{% if item['tools'] is defined %}<|system|>\n"
    "你是一个名为 GLM-4 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n"
    "# 可用工具{% set tools = item['tools'] %}{% for tool in tools %}{% if tool['type'] == 'function' %}\n\n"
    "## {{ tool['function']['name'] }}\n\n{{ tool['function'] | tojson(indent=4) }}\n"
    "在调用上述函数时，请使用 Json 格式表示调用的参数。{% endif %}{% endfor %}{% endif %}"
    "{% if item['content'] %}<|{{ item['role'] }}|>{{ item['metadata'] }}\n{{ item['content'] }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
GLM4_ANSWER = "Hello from GLM-4"
GLM4_LEAK2 = "Observation leak"
GLM4_TOOL = "get_weather"
GLM4_TOOL_ARGS = '{"city": "Paris"}'
GLM4_CORPUS = ("Weather in Paris? What is the weather like today in Beijing? Hello, how are you? "
               "GLM-4 answers questions about the weather, the city and the time.\n")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for bytes, as byte-level BPE vocabularies spell them."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _chunks(text: str) -> list[str]:
    import re

    return re.findall(r" ?[A-Za-z_]+| ?[0-9]| ?[^\sA-Za-z0-9]+|\s+", text)


@dataclass
class BPEVocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]

    def id(self, token: str) -> int:
        return self.tokens.index(token)

    def chunk_ids(self, text: str) -> list[int]:
        """Ids of text cut into our chunks, each a whole token of this vocabulary."""
        b2u = _bytes_to_unicode()
        return [self.id("".join(b2u[b] for b in c.encode("utf-8"))) for c in _chunks(text)]


def glm4_vocab() -> BPEVocab:
    """Byte-level BPE: the 256 byte tokens, then whole-chunk tokens of the fixture texts built
    by left-to-right merges, then GLM-4's special tokens (control)."""
    b2u = _bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    seen = set(tokens)
    merges: list[str] = []
    texts = [GLM4_CORPUS, GLM4_ANSWER, SCRIPTED_LEAK, GLM4_LEAK2, GLM4_TOOL, GLM4_TOOL_ARGS]
    for text in texts:
        for chunk in _chunks(text):
            u = "".join(b2u[b] for b in chunk.encode("utf-8"))
            for i in range(2, len(u) + 1):
                if u[:i] not in seen:
                    merges.append(f"{u[:i - 1]} {u[i - 1]}")
                    tokens.append(u[:i])
                    seen.add(u[:i])
    types = [NORMAL] * len(tokens)
    for piece in GLM4_SPECIALS:
        assert piece not in seen
        tokens.append(piece)
        types.append(CONTROL)
    return BPEVocab(tokens, types, merges)


def write_glm4(path: Path, tool: bool) -> Path:
    v = glm4_vocab()
    sp = {t: v.id(t) for t in GLM4_SPECIALS}
    nl = v.id(_bytes_to_unicode()[10])
    if tool:
        chain = ([sp["<|assistant|>"]] + v.chunk_ids(GLM4_TOOL) + [nl] + v.chunk_ids(GLM4_TOOL_ARGS)
                 + [sp["<|observation|>"]] + v.chunk_ids(SCRIPTED_LEAK) + [sp["<|user|>"], sp["<|endoftext|>"]])
        sidecar = {"metadata": GLM4_TOOL, "answer": GLM4_TOOL_ARGS, "stop": sp["<|observation|>"],
                   "leak": SCRIPTED_LEAK}
    else:
        chain = ([sp["<|assistant|>"], nl] + v.chunk_ids(GLM4_ANSWER) + [sp["<|user|>"]]
                 + v.chunk_ids(SCRIPTED_LEAK) + [sp["<|observation|>"]] + v.chunk_ids(GLM4_LEAK2)
                 + [sp["<|endoftext|>"]])
        sidecar = {"metadata": "", "answer": GLM4_ANSWER, "stop": sp["<|user|>"], "leak": SCRIPTED_LEAK,
                   "leak2": GLM4_LEAK2}
    sidecar.update(chain=chain, answer_ids=chain[1:chain.index(sidecar["stop"])],
                   specials=sp, template=GLM4_TEMPLATE)
    shape = Shape(n_embd=64, n_layer=1, n_ff=64, n_head=4, n_head_kv=2)
    embd, out = _chain_weights(chain, len(v.tokens), shape.n_embd)
    tensors = []
    for name, shp in _chatglm_tensors(shape, len(v.tokens)):
        if name == "token_embd.weight":
            data = embd
        elif name == "output.weight":
            data = out
        elif name == "output_norm.weight":
            data = np.ones(shp, dtype=np.float32)
        else:
            data = np.zeros(shp, dtype=np.float32)
        tensors.append((name, data))

    def header(w) -> None:
        w.add_name("scripted glm-4" + (" tool" if tool else ""))
        w.add_context_length(shape.n_ctx)
        w.add_embedding_length(shape.n_embd)
        w.add_block_count(shape.n_layer)
        w.add_feed_forward_length(shape.n_ff)
        w.add_head_count(shape.n_head)
        w.add_head_count_kv(shape.n_head_kv)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_dimension_count(shape.head_dim // 2)
        w.add_rope_freq_base(10000.0)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("chatglm-bpe")
        w.add_token_list(v.tokens)
        w.add_token_types(v.types)
        w.add_token_merges(v.merges)
        # As llama.cpp's converter writes GLM-4: eos <|endoftext|>, eot <|user|>, and nothing
        # for <|observation|>.
        w.add_eos_token_id(sp["<|endoftext|>"])
        w.add_eot_token_id(sp["<|user|>"])
        w.add_unk_token_id(sp["<|endoftext|>"])
        w.add_pad_token_id(sp["<|endoftext|>"])
        w.add_add_bos_token(False)
        w.add_chat_template(GLM4_TEMPLATE)

    _write(path, "chatglm", header, tensors)
    path.with_suffix(".json").write_text(json.dumps(sidecar, ensure_ascii=False, indent=1))
    return path


# ---------------------------------------------------------------------------------------------
# Kinds


def scripted_chain(sp_model_path: Path, tool: bool) -> tuple[list[int], dict]:
    if tool:
        meta_ids = sp_encode(sp_model_path, TOOL_METADATA)
        content_ids = sp_encode(sp_model_path, TOOL_CONTENT)
        leak_ids = sp_encode(sp_model_path, SCRIPTED_LEAK)
        chain = [ASSISTANT] + meta_ids + [13] + content_ids + [OBSERVATION] + leak_ids + [EOS]
        sidecar = {"metadata": TOOL_METADATA, "answer": TOOL_CONTENT, "stop": OBSERVATION,
                   "leak": SCRIPTED_LEAK, "answer_ids": [13] + content_ids}
    else:
        content_ids = sp_encode(sp_model_path, SCRIPTED_ANSWER)
        leak_ids = sp_encode(sp_model_path, SCRIPTED_LEAK)
        chain = [ASSISTANT, 13] + content_ids + [USER] + leak_ids + [EOS]
        sidecar = {"metadata": "", "answer": SCRIPTED_ANSWER, "stop": USER,
                   "leak": SCRIPTED_LEAK, "answer_ids": [13] + content_ids}
    sidecar["chain"] = chain
    return chain, sidecar


def code_chain(sp_model_path: Path) -> tuple[list[int], dict]:
    meta_ids = sp_encode(sp_model_path, "interpreter")
    content = "".join(CODE_PIECES)
    content_ids = sp_encode(sp_model_path, content)
    leak_ids = sp_encode(sp_model_path, SCRIPTED_LEAK)
    import sentencepiece as spm

    # The user-defined pieces come right after <unk> <s> </s>: the byte pieces move up.
    newline = spm.SentencePieceProcessor(model_file=str(sp_model_path)).piece_to_id("<0x0A>")
    chain = [ASSISTANT] + meta_ids + [newline] + content_ids + [OBSERVATION] + leak_ids + [EOS]
    return chain, {"metadata": "interpreter", "answer": content, "code": CODE_CELL, "stop": OBSERVATION,
                   "leak": SCRIPTED_LEAK, "answer_ids": [newline] + content_ids, "chain": chain}


def loop_chain(sp_model_path: Path) -> tuple[list[int], dict]:
    """A chain that never ends: for interrupting a long answer."""
    ids = sp_encode(sp_model_path, "Hello! I am ChatGLM3")
    chain = [ASSISTANT, 13] + ids + [ids[0]]
    return chain, {"metadata": "", "answer": None, "loop": "Hello! I am ChatGLM3"}


def build(kind: str, cache: Path, force: bool = False) -> Path:
    fp = _fingerprint()
    real = kind.endswith("-real")
    base = kind[: -len("-real")] if real else kind
    if kind == "vocab":
        path = cache / f"vocab-{fp}.model"
        return path if path.exists() and not force else train_vocab(path)
    if kind == "vocab-tools":
        path = cache / f"vocab-tools-{fp}.model"
        return path if path.exists() and not force else train_vocab(path, TOOL_CORPUS)
    if kind == "vocab-code":
        path = cache / f"vocab-code-{fp}.model"
        return path if path.exists() and not force else train_vocab(path, CODE_CORPUS, CODE_PIECES)
    if kind in ("glm4", "glm4-tool"):
        path = cache / f"{kind}-{fp}.gguf"
        return path if path.exists() and not force else write_glm4(path, tool=kind == "glm4-tool")
    if real and not REAL_VOCAB.exists():
        raise FileNotFoundError(f"{REAL_VOCAB} is absent: the -real fixtures cannot be built")
    sp_path = REAL_VOCAB if real else build(
        {"scripted-tool": "vocab-tools", "scripted-code": "vocab-code"}.get(
            base, "vocab-tools" if base.startswith("answer-") else "vocab"), cache)
    path = cache / f"{kind}-{fp}.gguf"
    if path.exists() and not force:
        return path
    if base == "tiny":
        return write_random_chatglm(path, chatglm3_vocab(sp_path))
    if base == "tiny-q4km" and not real:
        return write_random_q4km(path, chatglm3_vocab(sp_path))
    if base in ("tiny-q4_0", "tiny-f16") and not real:
        return write_random_q4km(path, chatglm3_vocab(sp_path), ftype=base.split("-")[1].upper())
    if base in ("scripted", "scripted-tool"):
        chain, sidecar = scripted_chain(sp_path, tool=base == "scripted-tool")
        return write_scripted_chatglm(path, chatglm3_vocab(sp_path), chain, sidecar)
    if base == "scripted-code" and not real:
        chain, sidecar = code_chain(sp_path)
        return write_scripted_chatglm(path, chatglm3_vocab(sp_path), chain, sidecar)
    if base.startswith("answer-") and base[len("answer-"):] in ANSWER_SHAPES and not real:
        answer, marker, sidecar = answer_shape(sp_path, base[len("answer-"):])
        return write_switched_chatglm(path, chatglm3_vocab(sp_path), answer, marker, sidecar)
    if base == "scripted-loop":
        chain, sidecar = loop_chain(sp_path)
        return write_scripted_chatglm(path, chatglm3_vocab(sp_path), chain, sidecar)
    if base in ("template", "template-tools") and not real:
        return write_template_model(path, sp_path, tools=base == "template-tools")
    if base == "6b" and not real:
        return write_6b(path, chatglm3_vocab(sp_path))
    raise ValueError(f"unknown kind {kind!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kinds", nargs="+")
    ap.add_argument("--cache", default=None)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    cache = cache_dir(args.cache)
    for kind in args.kinds:
        print(build(kind, cache, args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
