"""chatglm3: run ChatGLM3 locally through llama.cpp, from the command line or from Python.

    from chatglm3_cli import Model, Message, SamplingParams
    with Model("chatglm3-6b.Q4_K_M.gguf") as m:
        for piece in m.generate([Message("user", "你好")], SamplingParams(temperature=0)):
            print(piece, end="", flush=True)

Importing this package does not load llama.cpp; opening a Model does.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Model", "Message", "SamplingParams", "Completion", "read_gguf", "errors", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .engine.completion import Completion
    from .engine.gguf_file import read_gguf
    from .engine.model import Model
    from .engine.prompt import Message
    from .engine.sampling import SamplingParams

_LAZY = {
    "Model": ("engine.model", "Model"),
    "Message": ("engine.prompt", "Message"),
    "SamplingParams": ("engine.sampling", "SamplingParams"),
    "Completion": ("engine.generate", "Completion"),
    "read_gguf": ("engine.gguf_file", "read_gguf"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{mod}", __name__), attr)
    if name == "errors":
        import importlib

        return importlib.import_module(".errors", __name__)
    raise AttributeError(name)
