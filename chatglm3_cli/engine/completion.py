"""What a finished answer comes back as from either loop (generate.py, decoder.py): its text
and parts, why it ended, token counts (``Completion``) and how long each phase took (``Timings``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .sequence import Segment


@dataclass
class Timings:
    prompt_tokens: int = 0  # evaluated now (not taken from the cache)
    prompt_ms: float = 0.0
    first_token_ms: float = 0.0  # from the start until the first token was sampled
    generated_tokens: int = 0
    generation_ms: float = 0.0

    @property
    def prompt_tps(self) -> float | None:
        return self.prompt_tokens / self.prompt_ms * 1000 if self.prompt_ms > 0 and self.prompt_tokens else None

    @property
    def generation_tps(self) -> float | None:
        # The first token comes from the prompt's logits; the rest each cost one decode.
        n = self.generated_tokens
        return n / self.generation_ms * 1000 if self.generation_ms > 0 and n else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens, "prompt_ms": round(self.prompt_ms, 3),
            "first_token_ms": round(self.first_token_ms, 3),
            "prompt_per_second": _r(self.prompt_tps),
            "generated_tokens": self.generated_tokens, "generation_ms": round(self.generation_ms, 3),
            "generation_per_second": _r(self.generation_tps),
        }


def _r(x: float | None) -> float | None:
    return round(x, 3) if x is not None else None


@dataclass
class Completion:
    text: str
    metadata: str
    finish_reason: str  # "stop", "tool_calls" (ended by <|observation|>), "length", "interrupted"
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    timings: Timings
    tokens: list[int] = field(default_factory=list)
    stop_token: int | None = None
    # The answer's messages (split at <|assistant|>): text joins them by a blank line, and
    # metadata is the last one's (README: "Answers in several parts").
    segments: list[Segment] = field(default_factory=list)

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "cached_tokens": self.cached_tokens}
