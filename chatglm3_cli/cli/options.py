"""Options shared by the commands that run a model, declared once."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

MODEL_HELP = ("Model: a .gguf path, an alias (chatglm3-6b, chatglm3-6b-128k, glm-4-9b-chat) with an "
              "optional :QUANT, or a Hub repo (owner/repo[:QUANT] or owner/repo/file.gguf); downloaded "
              "on first use (default: the config file's model, else chatglm3-6b:Q4_K_M).")

Model = Annotated[Optional[str], typer.Option(
    "--model", "-m", envvar="CHATGLM3_MODEL", show_envvar=True, help=MODEL_HELP)]
System = Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt.")]
SystemFile = Annotated[Optional[str], typer.Option(
    "--system-file", help="Read the system prompt from a file.", metavar="PATH")]
MaxTokens = Annotated[Optional[int], typer.Option(
    "--max-tokens", min=1, help="Stop after this many tokens (default: when the model ends its turn).")]
Temperature = Annotated[Optional[float], typer.Option(
    "--temperature", "-t", min=0.0, help="Sampling temperature; 0 = greedy and deterministic. (default: 0.8)")]
TopP = Annotated[Optional[float], typer.Option(
    "--top-p", min=0.0, max=1.0, help="Nucleus sampling threshold. (default: 0.8)")]
TopK = Annotated[Optional[int], typer.Option(
    "--top-k", min=0, help="Keep only the K most likely tokens; 0 = off. (default: 0)")]
RepeatPenalty = Annotated[Optional[float], typer.Option(
    "--repeat-penalty", min=0.0, help="Penalty for repeated tokens; 1 = off. (default: 1.0)")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed for reproducible sampling.")]
Ctx = Annotated[Optional[int], typer.Option(
    "--ctx", "-c", min=16, help="Context size in tokens. (default: the model's, at most 8192)")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=1, help="CPU threads. (default: the CPUs this process may use)")]
GpuLayers = Annotated[Optional[int], typer.Option(
    "--gpu-layers", help="Layers to offload to the GPU; -1 = all (the default when the build supports a GPU), 0 = none.")]
Verbose = Annotated[bool, typer.Option(
    "--verbose", "-v", help="Show llama.cpp's own log on stderr.")]
Offline = Annotated[bool, typer.Option(
    "--offline", help="Never use the network: only models already on disk (also HF_HUB_OFFLINE=1).")]
Endpoint = Annotated[Optional[str], typer.Option(
    "--endpoint", envvar="HF_ENDPOINT", show_envvar=True, metavar="URL",
    help="Hugging Face Hub endpoint or mirror, e.g. https://hf-mirror.com (default: https://huggingface.co).")]
