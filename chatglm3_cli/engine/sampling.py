"""Sampling parameters and their defaults (ChatGLM3's official generation config)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

# THUDM/chatglm3-6b generation defaults: do_sample with temperature 0.8 and top_p 0.8.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.8
# The cap of an answer nobody capped, where no one watches it stream (run, batch): a model that
# never ends its turn (weak models repeat themselves) would otherwise fill the whole context.
DEFAULT_ANSWER_CAP = 2048


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen.

    temperature 0 means greedy (deterministic). top_k 0 and top_p 1 switch those filters off.
    max_tokens None means: until the model ends its turn or the context is full. seed None
    draws a random seed; a fixed seed makes sampling reproducible.
    """

    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = 0
    repeat_penalty: float = 1.0
    seed: int | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.repeat_penalty <= 0:
            raise ValueError("repeat_penalty must be > 0")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")

    def with_(self, **changes: Any) -> "SamplingParams":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
