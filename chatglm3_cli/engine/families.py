"""The model families with an official format of their own, one small class each: how their
prompts are built and where their answers stop, read from their control tokens alone.

ChatGLM3 (architecture ``chatglm``, a SentencePiece vocabulary with ChatGLM3's control tokens)
and GLM-4-9B-chat (``chatglm``, a BPE vocabulary with GLM-4's special tokens) answer with a
metadata line, may start a new message with <|assistant|>, and end a tool call with
<|observation|>. Every other model is prompted through a chat template (model.py, templates.py).
"""
from __future__ import annotations

from typing import Callable, ClassVar, Generic, Sequence, TypeVar

from .gguf_file import GGUFInfo
from .prompt import ChatGLM3Specials, GLM4Specials, Message, chatglm3_prompt_ids, glm4_prompt_ids

EOS_ID = 2  # ChatGLM3's <eos>

S = TypeVar("S", ChatGLM3Specials, GLM4Specials)


class OfficialFamily(Generic[S]):
    """A family whose files always take its official prompt format."""

    name: ClassVar[str]
    format_words: ClassVar[str]  # the prompt format, in words (``models info``)
    display: ClassVar[str]  # the family, as a note names it

    def __init__(self, specials: S) -> None:
        self.specials: S = specials

    @property
    def end_of_text(self) -> int:
        raise NotImplementedError

    @property
    def stop_tokens(self) -> set[int]:
        """The turn ends with <|user|>, or <|observation|> after a tool call, or the end of
        text. (llama.cpp's end-of-generation set for ChatGLM3 is only <eos>, and its converter
        marks only some of GLM-4's; their own generation configs stop on all three.)"""
        return {self.end_of_text, self.specials.roles["user"], self.specials.roles["observation"]}

    @property
    def tool_stop(self) -> int:
        return self.specials.roles["observation"]

    @property
    def segment_token(self) -> int:
        return self.specials.roles["assistant"]

    @property
    def raw_prefix(self) -> list[int]:
        """What a raw completion's text follows: [gMASK] sop."""
        return [self.specials.gmask, self.specials.sop]

    def ignored_template_note(self, source: str) -> str:
        return f"the chat template {source} is not used: {self.display} files always take the official prompt format"

    def prompt_ids(self, messages: Sequence[Message], tokenize: Callable[[str], list[int]]) -> list[int]:
        raise NotImplementedError


class ChatGLM3(OfficialFamily[ChatGLM3Specials]):
    name = "chatglm3"
    format_words = "ChatGLM3's official format (build_chat_input); --chat-template is not used"
    display = "ChatGLM3"

    @property
    def end_of_text(self) -> int:
        return EOS_ID

    def prompt_ids(self, messages: Sequence[Message], tokenize: Callable[[str], list[int]]) -> list[int]:
        return chatglm3_prompt_ids(messages, tokenize, self.specials)


class GLM4(OfficialFamily[GLM4Specials]):
    name = "glm4"
    format_words = "GLM-4's official format ([gMASK]<sop>, <|role|> turns); --chat-template is not used"
    display = "GLM-4-9B-chat"

    @property
    def end_of_text(self) -> int:
        return self.specials.endoftext

    def prompt_ids(self, messages: Sequence[Message], tokenize: Callable[[str], list[int]]) -> list[int]:
        from .toolcalls import TOOLS_SYSTEM_PROMPT

        # ChatGLM3's tool preamble is not part of GLM-4's format (its tools block replaces it).
        return glm4_prompt_ids(messages, tokenize, self.specials,
                               skip_content=lambda m: m.tools is not None and m.content == TOOLS_SYSTEM_PROMPT)


def official_family(info: GGUFInfo) -> ChatGLM3 | GLM4 | None:
    """The file's official family, from its metadata and vocabulary; None: a templated model."""
    tokens = info.get("tokenizer.ggml.tokens")
    if info.architecture != "chatglm" or not tokens:
        return None
    kind = info.get("tokenizer.ggml.model")
    if kind == "llama":
        c3 = ChatGLM3Specials.from_tokens(tokens)
        return ChatGLM3(c3) if c3 is not None else None
    if kind == "gpt2":
        g4 = GLM4Specials.from_tokens(tokens)
        return GLM4(g4) if g4 is not None else None
    return None
