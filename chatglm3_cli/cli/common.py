"""Pieces every model-running command shares: model resolution, sampling, system prompts."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..errors import ModelNotFoundError
from .errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.model import Model
    from ..engine.sampling import SamplingParams


def resolve_model_path(model: Optional[str]) -> str:
    if not model:
        raise ModelNotFoundError(
            "no model given", hint="pass -m/--model PATH.gguf or set CHATGLM3_MODEL")
    return model


def open_model(model: Optional[str], *, ctx: Optional[int], threads: Optional[int],
               gpu_layers: Optional[int], verbose: bool) -> "Model":
    from ..engine.model import Model  # loading llama.cpp is deferred to here

    return Model(resolve_model_path(model), n_ctx=ctx, n_threads=threads,
                 n_gpu_layers=gpu_layers, verbose=verbose)


def sampling(*, temperature: Optional[float], top_p: Optional[float], top_k: Optional[int],
             repeat_penalty: Optional[float], seed: Optional[int],
             max_tokens: Optional[int]) -> "SamplingParams":
    from ..engine.sampling import SamplingParams

    try:
        return SamplingParams().with_(temperature=temperature, top_p=top_p, top_k=top_k,
                                      repeat_penalty=repeat_penalty, seed=seed,
                                      max_tokens=max_tokens)
    except ValueError as e:
        raise UsageError(str(e)) from e


def system_prompt(system: Optional[str], system_file: Optional[str]) -> Optional[str]:
    from ..textio import read_text_file

    if system is not None and system_file is not None:
        raise UsageError("use either --system or --system-file, not both")
    if system_file is not None:
        return read_text_file(system_file).strip("\n")
    return system
