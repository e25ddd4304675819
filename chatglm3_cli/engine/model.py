"""Open a GGUF model and chat with it.

``Model`` decides, from the file's own metadata, which path a file takes (families.py):
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

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .. import env
from ..errors import InputError, ModelFormatError, ModelLoadError, UnsupportedModelError
from . import families, memory
from .completion import Completion
from .families import official_family
from .generate import Generation, KVCache
from .gguf_file import GGUFInfo, read_gguf
from .llama import placement, runtime
from .llama.context import LlamaContext
from .llama.model import LlamaModel
from .llama.sampler import Sampler
from .prompt import (
    ChatGLM3Specials,
    GLM4Specials,
    Message,
    render_template,
    template_prompt_ids,
)
from .sampling import SamplingParams
from .sequence import AnswerFormat
from .speculation import SpecPolicy
from .step_costs import PadMode, StepTimes
from .templates import ChatTemplate, builtin_prompt_ids, builtin_prompt_text, turn_end_token
from .tokenizer import SentencePieceTokenizer

CHATGLM3 = families.ChatGLM3.name
GLM4 = families.GLM4.name
TEMPLATE = "template"
DEFAULT_MAX_CTX = 8192


def detect_family(info: GGUFInfo) -> tuple[str, ChatGLM3Specials | GLM4Specials | None]:
    """The family's name and control tokens (families.py); TEMPLATE and None for the rest."""
    fam = official_family(info)
    return (fam.name, fam.specials) if fam is not None else (TEMPLATE, None)


# Tokens drafted per step by prompt-lookup speculation (the step evaluates 1 + this many rows).
SPECULATE_DRAFT = 3


def speculate_by_default() -> bool | None:
    """Speculation when not asked for: off. On the 2-core AVX2 machines here a 4-row decode
    step costs several 1-row steps, and no run could show it faster (docs/benchmarks.md).
    CHATGLM3_SPECULATE=1 turns it on, =auto lets SpecPolicy time this machine's steps and
    draft only while that pays (None)."""
    want = env.mode("CHATGLM3_SPECULATE")
    return None if want == "auto" else want == "on"


def pad_rows_mode() -> PadMode:
    """CHATGLM3_PAD_ROWS: whether the parallel decoder pads a step's rows to a multiple of four
    (auto: where this machine measured it cheaper, step_costs.py)."""
    want = env.mode("CHATGLM3_PAD_ROWS") or "auto"
    return "on" if want == "on" else ("off" if want == "off" else "auto")


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
        placement.cache_type_id(cache_type)  # a ValueError before any work
        self.cache_type = cache_type
        self.info = read_gguf(self.path)  # typed errors for missing, not-GGUF, truncated
        tokens = self.info.get("tokenizer.ggml.tokens")
        if tokens is not None and len(set(tokens)) != len(tokens):
            # llama.cpp aborts the whole process on a duplicate token text: refuse it first.
            raise ModelFormatError(f"{self.path}: the vocabulary has duplicate token texts")
        self.official = official_family(self.info)  # ChatGLM3, GLM-4, or None: a templated model
        self.family = self.official.name if self.official is not None else TEMPLATE
        self._specials = self.official.specials if self.official is not None else None
        self.tokenizer: SentencePieceTokenizer | None = None
        if self.family == CHATGLM3:
            self.tokenizer = SentencePieceTokenizer.from_gguf(self.info)
        runtime.set_verbose(verbose)
        try:
            self._llama = LlamaModel(str(self.path), n_gpu_layers, self.info.tensors)
        except ModelLoadError as e:
            if "unknown model architecture" in str(e):
                raise UnsupportedModelError(
                    f"{self.path}: architecture {self.info.architecture!r} is not supported by "
                    f"this build of llama.cpp",
                    hint="upgrade llama-cpp-python, or use another model") from e
            raise
        if self.official is not None:
            self.stop_tokens = self.official.stop_tokens
            self._tool_stop: int | None = self.official.tool_stop
            self.chat_template = self.info.chat_template
            self.template: ChatTemplate | None = None
            if chat_template is not None:
                self.notes.append(self.official.ignored_template_note(chat_template.source))
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
        on = speculate if speculate is not None else speculate_by_default()
        self.speculate = SPECULATE_DRAFT if on is not False else 0
        # Decode-step times by row count on this machine, for the speculation policy and the
        # parallel decoder's row padding (step_costs.py).
        self.step_times = StepTimes()
        self.spec_policy: SpecPolicy | None = SpecPolicy(self.step_times) if on is None else None
        self.pad_rows = pad_rows_mode()
        self._n_batch = n_batch
        self._n_threads = n_threads or runtime.default_threads()
        self._ctx: LlamaContext | None = None
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
                                 flash_attn=placement.uses_flash_attn(self.n_gpu_layers != 0, self._want_ctx,
                                                                    self.cache_type),
                                 on_cpu=self.n_gpu_layers == 0)
            self._ctx = LlamaContext(self._llama, n_ctx=self._want_ctx, n_batch=self._n_batch,
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
        return self.official is not None

    @property
    def tool_style(self) -> str | None:
        """How this model writes a tool call: "chatglm3" (tool_call(...)), "glm4" (JSON),
        "template" (its Jinja chat template reads ``tools``: calls are read from the text,
        toolcalls.read_template_calls), or None (no tools)."""
        if self.official is not None:
            return self.official.name
        if not hasattr(self, "_reads_tools"):  # parsed once: serve asks per request
            from .jinja_render import supports_tools

            text = self.template.text if self.template is not None else None
            self._reads_tools = bool(text) and supports_tools(text or "")
        return TEMPLATE if self._reads_tools else None

    def token_text(self, token: int) -> str:
        return self._llama.token_text(token)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        if not messages:
            raise ValueError("no messages")
        if self.official is not None:
            return self.official.prompt_ids(messages, self.tokenize)
        tools = None
        if any(m.tools or m.arguments is not None for m in messages):  # tools, or calls made earlier
            if self.tool_style != TEMPLATE:  # no place for them: refused, never dropped
                raise UnsupportedModelError(
                    f"{self.name} has no tool-calling format (ChatGLM3, GLM-4 and models whose chat "
                    "template supports tools have one): tools cannot be offered to it")
            messages, tools = self._template_tools(messages)
        assert self.template is not None
        if self.template.builtin is not None:
            ids = builtin_prompt_ids(messages, self.template.builtin, tokenize=self._tokenize_special)
        else:
            assert self.chat_template is not None
            bos, eos = self._bos_eos_text()
            ids = template_prompt_ids(messages, self.chat_template, bos_token=bos, eos_token=eos,
                                      tokenize=self._tokenize_special, tools=tools)
        if self._llama.add_bos() and self._llama.bos_token() >= 0 and (not ids or ids[0] != self._llama.bos_token()):
            ids.insert(0, self._llama.bos_token())
        return ids

    def _template_tools(self, messages: Sequence[Message]) -> tuple[list[Message], list[dict[str, Any]] | None]:
        """The messages without the tools' system message, and the tools, for a template that
        takes them as its ``tools`` variable. ChatGLM3's tool preamble is not part of it (a
        system prompt of the user's stays). The specs and earlier calls are rendered as the
        template's own text (parsed for control tokens), so one that spells a control token
        is refused."""
        from .toolcalls import TOOLS_SYSTEM_PROMPT

        tools: list[dict[str, Any]] = []
        kept: list[Message] = []
        for m in messages:
            if m.role == "system" and m.tools:
                tools += m.tools
                if m.content and m.content != TOOLS_SYSTEM_PROMPT:
                    kept.append(Message("system", m.content))
            else:
                kept.append(m)
        calls = [[m.metadata, m.arguments] for m in messages if m.arguments is not None]
        spelled = json.dumps([tools, calls], ensure_ascii=False)
        if any(self._llama.is_control(t) for t in self._tokenize_special(spelled, True)):
            raise InputError("a tool definition or call contains the text of one of the model's control tokens")
        return kept, tools or None

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
                 *, prompt_ids: Sequence[int] | None = None, stops: Sequence[str] = ()) -> Generation:
        """Start an answer: iterate the result for text pieces, then read ``.result``.
        ``stops``: strings that end the answer where they appear (not included).

        Raises PromptTooLongError before any work when the prompt does not fit the context.
        """
        if prompt_ids is None:
            if messages is None:
                raise ValueError("messages or prompt_ids is required")
            prompt_ids = self.prompt_ids(messages)
        return Generation(self._cache, prompt_ids, params or SamplingParams(), fmt=self.answer_format,
                          new_sampler=self.new_sampler, speculate=self.speculate,
                          spec_policy=self.spec_policy, stops=stops)

    # what decoding loops and servers need --------------------------------------------------

    @property
    def tool_stop(self) -> int | None:
        """The stop token that ends a tool call (ChatGLM3's and GLM-4's <|observation|>)."""
        return self._tool_stop

    @property
    def segment_token(self) -> int | None:
        """The token that starts a new message inside an answer (<|assistant|>), if any."""
        return self.official.segment_token if self.official is not None else None

    @property
    def answer_format(self) -> AnswerFormat:
        return AnswerFormat(stop_tokens=frozenset(self.stop_tokens), tool_stop=self._tool_stop,
                            segment_token=self.segment_token, metadata_line=self.metadata_line,
                            token_bytes=self._llama.token_bytes)

    def token_bytes(self, token: int) -> bytes:
        return self._llama.token_bytes(token)

    def new_sampler(self, p: SamplingParams, grammar: str | None = None) -> Sampler:
        """A sampler chain for one answer (the caller closes it)."""
        return Sampler(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                               repeat_penalty=p.repeat_penalty, seed=p.seed,
                               n_vocab=self._llama.n_vocab, grammar=grammar, vocab=self._llama.vocab)

    def new_context(self, *, n_ctx: int, n_batch: int, n_seq_max: int = 1,
                    kv_unified: bool = False) -> LlamaContext:
        """Another llama.cpp context on this model's weights (the parallel decoder's)."""
        return LlamaContext(self._llama, n_ctx=n_ctx, n_batch=n_batch, n_threads=self._n_threads,
                                    n_seq_max=n_seq_max, kv_unified=kv_unified, cache_type=self.cache_type)

    def raw_prompt_ids(self, text: str) -> list[int]:
        """A raw completion's prompt: the text as the model's own tokenizer encodes it for
        generation (ChatGLM3 prepends [gMASK] sop; others their BOS)."""
        ids = self.tokenize(text)
        if self.official is not None:
            return self.official.raw_prefix + ids
        if self._llama.add_bos() and self._llama.bos_token() >= 0:
            return [self._llama.bos_token()] + ids
        return ids

    @property
    def llama(self) -> LlamaModel:
        """The loaded llama.cpp model (for engine-level tools: benchmarks, exactness checks)."""
        return self._llama

    @property
    def chat_context(self) -> LlamaContext | None:
        """The chat context, once made (None before first use)."""
        return self._ctx

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
    fam = official_family(info)
    if fam is not None:
        tokens = info.get("tokenizer.ggml.tokens") or []
        ids = sorted(fam.stop_tokens)
        return ChatFacts(fam.name, len(template), fam.format_words,
                         [(i, str(tokens[i])) for i in ids if i < len(tokens)])
    vocab = LlamaModel(str(path), 0, vocab_only=True)
    try:
        own = vocab.chat_template() or ""
        stops = [(i, vocab.token_text(i)) for i in sorted(vocab.eog_tokens())]
    finally:
        vocab.close()
    fmt = ("the file's chat template" if own else
           "none: this file carries no chat template; give one with --chat-template NAME|FILE")
    return ChatFacts(TEMPLATE, len(own), fmt, stops)
