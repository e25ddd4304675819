"""Open a GGUF model and chat with it.

``Model`` decides, from the file's own metadata, which path a file takes:
- ChatGLM3 (architecture ``chatglm`` with a SentencePiece vocabulary and ChatGLM3's control
  tokens): the exact path, whether or not the file carries a template;
- GLM-4-9B-chat (architecture ``chatglm`` with a BPE vocabulary and GLM-4's special tokens):
  GLM-4's official template as token ids, and its stop set looked up in the vocabulary;
- any other model with an embedded chat template: that template, and the file's own
  end-of-generation tokens;
- a chat template given by the caller (a Jinja text or a llama.cpp built-in name, see
  ``templates``) replaces the file's, or stands in for a missing one. ChatGLM3 and GLM-4 files
  keep their official formats (the override is ignored, with a note).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .. import env
from ..errors import ModelFormatError, ModelLoadError, UnsupportedModelError
from . import backend, memory
from .generate import Completion, Generation, KVCache
from .gguf_file import GGUFInfo, read_gguf
from .lookup import SpecPolicy
from .prompt import (
    ChatGLM3Specials,
    GLM4Specials,
    Message,
    chatglm3_prompt_ids,
    glm4_prompt_ids,
    render_template,
    template_prompt_ids,
)
from .sampling import SamplingParams
from .steps import PadMode, StepTimes
from .templates import ChatTemplate, builtin_prompt_ids, builtin_prompt_text, turn_end_token
from .tokenizer import SentencePieceTokenizer

CHATGLM3 = "chatglm3"
GLM4 = "glm4"
TEMPLATE = "template"
DEFAULT_MAX_CTX = 8192
EOS_ID = 2


def detect_family(info: GGUFInfo) -> tuple[str, ChatGLM3Specials | GLM4Specials | None]:
    tokens = info.get("tokenizer.ggml.tokens")
    if info.architecture == "chatglm" and tokens:
        specials: ChatGLM3Specials | GLM4Specials | None = None
        if info.get("tokenizer.ggml.model") == "llama":
            specials = ChatGLM3Specials.from_tokens(tokens)
            if specials is not None:
                return CHATGLM3, specials
        elif info.get("tokenizer.ggml.model") == "gpt2":
            specials = GLM4Specials.from_tokens(tokens)
            if specials is not None:
                return GLM4, specials
    return TEMPLATE, None


# Tokens drafted per step by prompt-lookup speculation (the step evaluates 1 + this many rows).
SPECULATE_DRAFT = 3


def speculate_by_default(model: "Model") -> bool | None:
    """Speculation when not asked for: off. On the 2-core AVX2 machines here a 4-row decode
    step costs ~3.4x a 1-row step, and no run could show it faster (docs/benchmarks.md).
    CHATGLM3_SPECULATE=1 turns it on, =auto lets SpecPolicy time this machine's steps and
    draft only while that pays (None)."""
    want = (env.get("CHATGLM3_SPECULATE") or "").lower()
    if want in ("1", "on", "true", "yes"):
        return True
    if want == "auto":
        return None
    return False


def pad_rows_mode() -> PadMode:
    """CHATGLM3_PAD_ROWS: whether the parallel decoder pads a step's rows to a multiple of four
    (auto: where this machine measured it cheaper, steps.py)."""
    want = (env.get("CHATGLM3_PAD_ROWS") or "auto").lower()
    if want in ("1", "on", "true", "yes"):
        return "on"
    if want in ("0", "off", "false", "no"):
        return "off"
    return "auto"


def context_warning(n_ctx: int, n_ctx_train: int) -> str:
    return (f"--ctx {n_ctx} is more than the {n_ctx_train} tokens this model was trained on: "
            "answers may lose coherence past that point")


class Model:
    """A loaded GGUF chat model with one conversation context.

    >>> with Model("chatglm3-6b.Q4_K_M.gguf") as m:
    ...     print(m.chat([Message("user", "你好")], SamplingParams(temperature=0)).text)
    """

    def __init__(self, path: str | os.PathLike[str], *, n_ctx: int | None = None,
                 n_threads: int | None = None, n_gpu_layers: int | None = None,
                 n_batch: int = 512, verbose: bool = False,
                 chat_template: ChatTemplate | None = None, chat_context: bool = True,
                 speculate: bool | None = None, cache_type: str = "f16") -> None:
        """``chat_context=False``: do not create the single-sequence context now (batch and
        translate decode through their own ParallelDecoder context; the chat one would only
        take memory). It is then made on first use."""
        self.path = Path(path)
        self.notes: list[str] = []  # things the caller may want to tell the user
        backend.cache_type_id(cache_type)  # a ValueError before any work
        self.cache_type = cache_type
        self.info = read_gguf(self.path)  # typed errors for missing, not-GGUF, truncated
        tokens = self.info.get("tokenizer.ggml.tokens")
        if tokens is not None and len(set(tokens)) != len(tokens):
            # llama.cpp aborts the whole process on a duplicate token text: refuse it first.
            raise ModelFormatError(f"{self.path}: the vocabulary has duplicate token texts")
        self.family, self._specials = detect_family(self.info)
        self.tokenizer: SentencePieceTokenizer | None = None
        if self.family == CHATGLM3:
            self.tokenizer = SentencePieceTokenizer.from_gguf(self.info)
        backend.set_verbose(verbose)
        try:
            self._llama = backend.LlamaModel(str(self.path), n_gpu_layers, self.info.tensors)
        except ModelLoadError as e:
            if "unknown model architecture" in str(e):
                raise UnsupportedModelError(
                    f"{self.path}: architecture {self.info.architecture!r} is not supported by "
                    f"this build of llama.cpp",
                    hint="upgrade llama-cpp-python, or use another model") from e
            raise
        if self.family == CHATGLM3:
            s = self._specials
            assert s is not None
            # llama.cpp's end-of-generation set for ChatGLM3 is only <eos>; the model ends its
            # turn with <|user|>, or <|observation|> after a tool call.
            assert isinstance(s, ChatGLM3Specials)
            self.stop_tokens = {EOS_ID, s.roles["user"], s.roles["observation"]}
            self._tool_stop: int | None = s.roles["observation"]
            self.chat_template = self.info.chat_template
            self.template: ChatTemplate | None = None
            if chat_template is not None:
                self.notes.append(f"the chat template {chat_template.source} is not used: ChatGLM3 "
                                  f"files always take the official prompt format")
        elif self.family == GLM4:
            s = self._specials
            assert isinstance(s, GLM4Specials)
            # llama.cpp's converter marks only some of these as end-of-generation; GLM-4's own
            # generation config stops on all three.
            self.stop_tokens = {s.endoftext, s.roles["user"], s.roles["observation"]}
            self._tool_stop = s.roles["observation"]
            self.chat_template = self.info.chat_template
            self.template = None
            if chat_template is not None:
                self.notes.append(f"the chat template {chat_template.source} is not used: GLM-4-9B-chat "
                                  f"files always take GLM-4's official prompt format")
        else:
            own = self._llama.chat_template()
            if chat_template is None and not own:
                self.close()
                raise UnsupportedModelError(
                    f"{self.path} is neither a ChatGLM3 model nor carries a chat template",
                    hint="give one with --chat-template NAME|FILE (a llama.cpp built-in name such as "
                         "chatml, llama3, gemma, or a Jinja file)")
            self.template = chat_template or ChatTemplate(source="the file's template", text=own)
            self.chat_template = self.template.text
            self.stop_tokens = self._llama.eog_tokens()
            if chat_template is not None:
                end = turn_end_token(self._render_text, self._tokenize_special, self._llama.is_control)
                if end is not None and end not in self.stop_tokens:
                    self.stop_tokens.add(end)
            self._tool_stop = None
        # A claim of 2^31 tokens or more reaches us as a negative int32: unknown, not a size.
        train_ctx = self._llama.n_ctx_train if self._llama.n_ctx_train > 0 else DEFAULT_MAX_CTX
        self.n_ctx_train = train_ctx
        self._want_ctx = n_ctx if n_ctx else min(train_ctx, DEFAULT_MAX_CTX)
        # Things a user should hear about (the CLI prints them to stderr).
        self.warnings: list[str] = []
        if n_ctx and n_ctx > train_ctx:
            self.warnings.append(context_warning(n_ctx, train_ctx))
        # Prompt-lookup speculation: draft tokens per decode step (0 = off). Off unless asked
        # (speculate_by_default); --speculate drafts whenever there is a match; "auto" lets
        # SpecPolicy time this machine's decode steps and draft only while that pays.
        on = speculate if speculate is not None else speculate_by_default(self)
        self.speculate = SPECULATE_DRAFT if on is not False else 0
        # Decode-step times by row count on this machine, for the speculation policy and the
        # parallel decoder's row padding (steps.py).
        self.step_times = StepTimes()
        self.spec_policy: SpecPolicy | None = SpecPolicy(self.step_times) if on is None else None
        self.pad_rows = pad_rows_mode()
        self._n_batch = n_batch
        self._n_threads = n_threads or backend.default_threads()
        self._ctx: backend.LlamaContext | None = None
        self._kv: KVCache | None = None
        if chat_context:
            try:
                self._cache  # noqa: B018 - made now, so that load errors come from the constructor
            except ModelLoadError:
                self.close()
                raise

    @property
    def _cache(self) -> KVCache:
        """The chat context's KV cache, made on first use (after a memory check)."""
        if self._kv is None:
            memory.check_context(self.info, n_cells=self._want_ctx, n_batch=self._n_batch,
                                 what=f"{self._want_ctx} tokens", lower="--ctx or --cache-type",
                                 cache_type=self.cache_type,
                                 flash_attn=backend.uses_flash_attn(self.n_gpu_layers != 0, self._want_ctx,
                                                                    self.cache_type),
                                 on_cpu=self.n_gpu_layers == 0)
            self._ctx = backend.LlamaContext(self._llama, n_ctx=self._want_ctx, n_batch=self._n_batch,
                                             n_threads=self._n_threads, cache_type=self.cache_type)
            self._kv = KVCache(self._ctx)
        return self._kv

    # facts ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.info.get("general.name") or self.path.stem)

    @property
    def n_ctx(self) -> int:
        """The chat context's size (what llama.cpp made, once made)."""
        return self._ctx.n_ctx if self._ctx is not None else self._want_ctx

    @property
    def n_threads(self) -> int:
        return self._n_threads

    @property
    def n_gpu_layers(self) -> int:
        return self._llama.n_gpu_layers

    # text ----------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Token ids of plain text (never parsed for control tokens); exact for ChatGLM3."""
        if self.tokenizer is not None:
            return self.tokenizer.encode(text)
        return self._llama.tokenize(text, parse_special=False)

    @property
    def metadata_line(self) -> bool:
        """Whether answers begin with a metadata line (ChatGLM3 and GLM-4: empty, or a tool's name)."""
        return self.family in (CHATGLM3, GLM4)

    @property
    def tool_style(self) -> str | None:
        """How this model writes a tool call: "chatglm3" (tool_call(...)), "glm4" (JSON), or None."""
        return self.family if self.family in (CHATGLM3, GLM4) else None

    def token_text(self, token: int) -> str:
        return self._llama.token_text(token)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        if not messages:
            raise ValueError("no messages")
        if self.family == CHATGLM3:
            assert isinstance(self._specials, ChatGLM3Specials) and self.tokenizer is not None
            return chatglm3_prompt_ids(messages, self.tokenizer.encode, self._specials)
        if self.family == GLM4:
            from .tools import TOOLS_SYSTEM_PROMPT

            assert isinstance(self._specials, GLM4Specials)
            return glm4_prompt_ids(
                messages, lambda text: self._llama.tokenize(text, parse_special=False), self._specials,
                # ChatGLM3's tool preamble is not part of GLM-4's format (its tools block replaces it).
                skip_content=lambda m: m.tools is not None and m.content == TOOLS_SYSTEM_PROMPT)
        assert self.template is not None
        if self.template.builtin is not None:
            ids = builtin_prompt_ids(messages, self.template.builtin, tokenize=self._tokenize_special)
        else:
            assert self.chat_template is not None
            bos, eos = self._bos_eos_text()
            ids = template_prompt_ids(messages, self.chat_template, bos_token=bos, eos_token=eos,
                                      tokenize=self._tokenize_special)
        if self._llama.add_bos() and self._llama.bos_token() >= 0 and (not ids or ids[0] != self._llama.bos_token()):
            ids.insert(0, self._llama.bos_token())
        return ids

    def _tokenize_special(self, text: str, special: bool) -> list[int]:
        return self._llama.tokenize(text, parse_special=special)

    def _bos_eos_text(self) -> tuple[str, str]:
        bos = self._llama.token_text(self._llama.bos_token()) if self._llama.bos_token() >= 0 else ""
        eos_ids = sorted(self.stop_tokens)
        eos = self._llama.token_text(eos_ids[0]) if eos_ids else ""
        return bos, eos

    def _render_text(self, messages: Sequence[Message]) -> str:
        """The prompt as text (its contents unprotected): for finding a format's turn end."""
        assert self.template is not None
        if self.template.builtin is not None:
            return builtin_prompt_text(self.template.builtin, messages, [m.content for m in messages])
        assert self.template.text is not None
        bos, eos = self._bos_eos_text()
        return render_template(self.template.text, messages, bos_token=bos, eos_token=eos)

    # generation ----------------------------------------------------------------------------

    def generate(self, messages: Sequence[Message] | None = None, params: SamplingParams | None = None,
                 *, prompt_ids: Sequence[int] | None = None) -> Generation:
        """Start an answer: iterate the result for text pieces, then read ``.result``.

        Raises PromptTooLongError before any work when the prompt does not fit the context.
        """
        if prompt_ids is None:
            if messages is None:
                raise ValueError("messages or prompt_ids is required")
            prompt_ids = self.prompt_ids(messages)
        return Generation(self._llama, self._cache, prompt_ids, params or SamplingParams(),
                          stop_tokens=self.stop_tokens, tool_stop=self._tool_stop,
                          metadata_line=self.metadata_line, make_sampler=self._make_sampler,
                          speculate=self.speculate, spec_policy=self.spec_policy,
                          segment_token=self._specials.roles["assistant"] if self._specials else None)

    def _make_sampler(self, p: SamplingParams, grammar: str | None = None) -> backend.Sampler:
        return backend.Sampler(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                               repeat_penalty=p.repeat_penalty, seed=p.seed,
                               n_vocab=self._llama.n_vocab, grammar=grammar, vocab=self._llama.vocab)

    def chat(self, messages: Sequence[Message], params: SamplingParams | None = None) -> Completion:
        """The whole answer at once."""
        return self.generate(messages, params).complete()

    def reset(self) -> None:
        """Forget the KV cache (the next prompt is evaluated from scratch)."""
        if self._kv is not None:
            self._kv.reset()

    def describe(self, ids: Iterable[int]) -> list[tuple[int, str]]:
        return [(i, self._llama.token_text(i)) for i in ids]

    # lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        ctx = getattr(self, "_ctx", None)
        if ctx is not None:
            ctx.close()
            self._ctx = None
            self._kv = None
        llm = getattr(self, "_llama", None)
        if llm is not None:
            llm.close()
            self._llama = None  # type: ignore[assignment]

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()




@dataclass(frozen=True)
class ChatFacts:
    """How a file's prompts are built and where its answers stop (``models info``)."""

    family: str
    template_chars: int  # the embedded chat template's length; 0 when it has none
    prompt_format: str  # in words
    stop_tokens: list[tuple[int, str]]


def chat_facts(path: str | os.PathLike[str], info: GGUFInfo | None = None) -> ChatFacts:
    """Read from the file's metadata and its vocabulary alone (no weights are loaded)."""
    info = info or read_gguf(Path(path))
    template = info.chat_template or ""
    family, specials = detect_family(info)
    if family == CHATGLM3:
        assert specials is not None
        tokens = info.get("tokenizer.ggml.tokens") or []
        ids = sorted({EOS_ID, specials.roles["user"], specials.roles["observation"]})
        return ChatFacts(family, len(template), "ChatGLM3's official format (build_chat_input); "
                         "--chat-template is not used", [(i, str(tokens[i])) for i in ids if i < len(tokens)])
    if family == GLM4:
        assert isinstance(specials, GLM4Specials)
        tokens = info.get("tokenizer.ggml.tokens") or []
        ids = sorted({specials.endoftext, specials.roles["user"], specials.roles["observation"]})
        return ChatFacts(family, len(template), "GLM-4's official format ([gMASK]<sop>, <|role|> turns); "
                         "--chat-template is not used", [(i, str(tokens[i])) for i in ids if i < len(tokens)])
    vocab = backend.LlamaModel(str(path), 0, vocab_only=True)
    try:
        own = vocab.chat_template() or ""
        stops = [(i, vocab.token_text(i)) for i in sorted(vocab.eog_tokens())]
    finally:
        vocab.close()
    fmt = ("the file's chat template" if own else
           "none: this file carries no chat template; give one with --chat-template NAME|FILE")
    return ChatFacts(family, len(own), fmt, stops)
