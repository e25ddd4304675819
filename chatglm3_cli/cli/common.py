"""Pieces every model-running command shares: model resolution, sampling, system prompts."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from .errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.model import Model
    from ..engine.sampling import SamplingParams


def resolve_model_path(model: Optional[str], *, offline: Optional[bool] = None,
                       endpoint: Optional[str] = None) -> str:
    """-m/CHATGLM3_MODEL, then the config file, then the default; downloads a Hub model on first
    use with a progress display on stderr (see chatglm3_cli.hub.resolve)."""
    from ..hub.resolve import resolve_model
    from . import console as console_mod
    from .progress import make_progress

    progress = make_progress(console_mod.current())
    return str(resolve_model(model, offline=offline, endpoint=endpoint, progress=progress))


def open_model(model: Optional[str], *, ctx: Optional[int], threads: Optional[int],
               gpu_layers: Optional[int], verbose: bool, offline: Optional[bool] = None,
               endpoint: Optional[str] = None) -> "Model":
    path = resolve_model_path(model, offline=offline, endpoint=endpoint)
    from ..engine.model import Model  # loading llama.cpp is deferred to here

    return Model(path, n_ctx=ctx, n_threads=threads, n_gpu_layers=gpu_layers, verbose=verbose)


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
