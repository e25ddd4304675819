"""Every environment variable the tool reads, in one table (name, meaning, default).

The table feeds ``paths.py`` and the other readers (through one typed accessor per kind:
``get`` text, ``path``, ``switch``/``flag`` on-off, ``mode`` on-off-auto, ``choice`` one of a
few words; each refuses a name that is not listed, and a value it cannot read is reported once
on stderr and treated as unset, never silently taken for something else), the test isolation
(tests/conftest.py clears or redirects each ``CHATGLM3_*`` variable), the epilog of ``chatglm3 --help`` and the README's
"Environment" table (a test keeps that one equal to ``markdown_table()``). Values are read at
call time, never at import time, so a test or a user can change them with one variable.

A new variable: add a row here, read it with ``env.get("NAME")``, and regenerate the README
table (tests/test_env.py prints the expected text when it differs).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class EnvVar:
    name: str
    meaning: str
    default: str
    # How tests isolate it: "unset", "tmpdir" (a fresh folder per test), or "keep" (test
    # infrastructure such as the fixture cache).
    in_tests: str = "unset"


VARIABLES: tuple[EnvVar, ...] = (
    EnvVar("CHATGLM3_MODEL", "the model used when -m is not given", "the config file's model, else chatglm3-6b:Q4_K_M"),
    EnvVar("CHATGLM3_DEBUG", "1: show tracebacks on errors (like --debug)", "off"),
    EnvVar("CHATGLM3_CONFIG_DIR", "the folder of config.toml", "~/.config/chatglm3 (the platform's config dir)",
           "tmpdir"),
    EnvVar("CHATGLM3_DATA_DIR", "saved conversations and the chat input history",
           "~/.local/share/chatglm3 (the platform's data dir)", "tmpdir"),
    EnvVar("CHATGLM3_STATE_DIR", "bookkeeping: when each model was last used, translate checkpoints",
           "~/.local/state/chatglm3 (the platform's state dir)", "tmpdir"),
    EnvVar("CHATGLM3_SOURCE", "hub or modelscope: where model aliases (chatglm3-6b ...) are read from",
           "the config file's source, else hub"),
    EnvVar("CHATGLM3_MODELSCOPE_CACHE", "where models from ModelScope are stored",
           "~/.cache/chatglm3/modelscope (the platform's cache dir)", "tmpdir"),
    EnvVar("CHATGLM3_CACHE_DIR", "the prompt cache (evaluated prompts kept on disk, `chatglm3 cache`)",
           "~/.cache/chatglm3 (the platform's cache dir)", "tmpdir"),
    EnvVar("CHATGLM3_PROMPT_CACHE", "0: keep no evaluated prompts on disk (the prompt cache)", "on"),
    EnvVar("CHATGLM3_PROMPT_CACHE_SIZE", "the most the prompt cache keeps on disk (e.g. 500M, 8G); the least "
           "recently used entries go first", "4G"),
    EnvVar("CHATGLM3_NOHISTORY", "1: chat keeps no input history", "off"),
    EnvVar("CHATGLM3_API_KEY", "the key `serve` requires as `Authorization: Bearer KEY` (like --api-key)", "none"),
    EnvVar("CHATGLM3_ORIGINS", "`serve`: web origins allowed besides the server's own, comma-separated, "
           "`*` patterns allowed (like --allowed-origins, and Ollama's OLLAMA_ORIGINS)", "none"),
    EnvVar("CHATGLM3_READ_TIMEOUT", "`serve`: seconds a client has to send a whole request (headers and "
           "body) before it is answered 408 and disconnected", "30"),
    EnvVar("CHATGLM3_CODE_ENV", "`--code`: comma-separated names of secret-looking environment variables "
           "(tokens, keys, passwords) the code interpreter's kernel may still see",
           "none: they are removed from the kernel's environment"),
    EnvVar("CHATGLM3_FLASH_ATTN", "on, off or auto: llama.cpp's flash attention",
           "off on a CPU up to 32,768 KV cells (on past that, and with a quantized `--cache-type`), "
           "auto with a GPU"),
    EnvVar("CHATGLM3_CPU_EXTRA_BUFTS", "1: llama.cpp's own choice of CPU weight buffers", "off (see README: AMX)"),
    EnvVar("CHATGLM3_NO_MEMORY_CHECK", "1: make a context even when its estimated memory exceeds what is available",
           "off: refused with the estimate"),
    EnvVar("CHATGLM3_MMAP", "1 or 0: map the model file, or read it into memory",
           "mapped; on a CPU, the pages repacking leaves unused are dropped while loading"),
    EnvVar("CHATGLM3_SPECULATE", "1, 0 or auto: prompt-lookup speculation on, off, or on while it measures "
           "faster (timed as it runs)", "off"),
    EnvVar("CHATGLM3_PAD_ROWS", "auto, 1 or 0: pad a parallel decode step to a multiple of four rows where "
           "this machine measured that cheaper (timed as it runs), always, or never", "auto"),
    EnvVar("CHATGLM3_OMP_WAIT_POLICY", "passive or active: how llama.cpp's threads wait, unless "
           "OMP_WAIT_POLICY or GOMP_SPINCOUNT is set", "passive"),
    EnvVar("OMP_WAIT_POLICY", "OpenMP's own wait policy (then the tool sets none)", "passive (set by the tool)"),
    EnvVar("GOMP_SPINCOUNT", "libgomp's spin count before a waiting thread sleeps (then the tool sets no policy)",
           "libgomp's"),
    EnvVar("CHATGLM3_TEST_CACHE", "where the tests keep their generated GGUF fixtures", ".cache/test-models",
           "keep"),
    EnvVar("HF_ENDPOINT", "the Hugging Face Hub or a mirror (like --endpoint)", "https://huggingface.co"),
    EnvVar("HF_TOKEN", "a Hub token for gated or private repos", "$HF_HOME/token, if any"),
    EnvVar("HF_TOKEN_PATH", "the file that holds the Hub token", "$HF_HOME/token"),
    EnvVar("HF_HUB_OFFLINE", "1: never use the network (like --offline)", "off"),
    EnvVar("TRANSFORMERS_OFFLINE", "1: the same as HF_HUB_OFFLINE (its older name)", "off"),
    EnvVar("MODELSCOPE_DOMAIN", "ModelScope's host (or an http(s) URL of a mirror)", "www.modelscope.cn"),
    EnvVar("MODELSCOPE_API_TOKEN", "a ModelScope token for private repos (sent as a Bearer token)", "none"),
    EnvVar("HF_HOME", "the Hugging Face folder", "$XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface",
           "tmpdir"),
    EnvVar("HF_HUB_CACHE", "where models are stored (shared with huggingface_hub)", "$HF_HOME/hub", "tmpdir"),
    EnvVar("XDG_CACHE_HOME", "the user cache folder", "~/.cache"),
    EnvVar("RAY_ADDRESS", "`--ray auto`: the Ray cluster to join", "the cluster started on this machine"),
    EnvVar("RAY_AUTH_MODE", "`--ray`: `token` when the cluster requires Ray's token authentication",
           "Ray's; a cluster started for one job gets a token of its own"),
    EnvVar("RAY_AUTH_TOKEN", "`--ray`: the token that joins such a cluster", "~/.ray/auth_token"),
    EnvVar("RAY_BACKEND_LOG_LEVEL", "`--ray`: Ray's native log level", "fatal, unless -v"),
)

BY_NAME = {v.name: v for v in VARIABLES}
_ON = ("1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no")
_warned: set[str] = set()


def _check(name: str) -> None:
    if name not in BY_NAME:
        raise KeyError(f"{name} is not in chatglm3_cli.env.VARIABLES: add it there first")


def get(name: str) -> Optional[str]:
    """The stripped value, or None when unset or empty."""
    _check(name)
    value = os.environ.get(name, "").strip()
    return value or None


def _unreadable(name: str, value: str, expected: str) -> None:
    """A value no accessor can read: said once per variable (stderr: this is library code that
    every command reaches, before any console exists), then treated as unset."""
    if name in _warned:
        return
    _warned.add(name)
    sys.stderr.write(f"chatglm3: warning: {name}={value[:40]!r} is not {expected}; "
                     f"using the default ({BY_NAME[name].default})\n")


def switch(name: str) -> Optional[bool]:
    """1/on/true/yes -> True, 0/off/false/no -> False (any case), unset -> None."""
    value = get(name)
    if value is None:
        return None
    low = value.lower()
    if low in _ON or low in _OFF:
        return low in _ON
    _unreadable(name, value, "1 or 0 (on/off, true/false, yes/no)")
    return None


def flag(name: str) -> bool:
    """A switch that is off unless set on."""
    return switch(name) is True


def mode(name: str) -> Optional[str]:
    """"on", "off" or "auto" (the switch spellings count), None when unset."""
    value = get(name)
    if value is None:
        return None
    low = value.lower()
    if low == "auto":
        return "auto"
    if low in _ON or low in _OFF:
        return "on" if low in _ON else "off"
    _unreadable(name, value, "on, off or auto")
    return None


def choice(name: str, choices: tuple[str, ...]) -> Optional[str]:
    """One of `choices` (any case, returned as listed), None when unset."""
    value = get(name)
    if value is None:
        return None
    for c in choices:
        if value.lower() == c.lower():
            return c
    _unreadable(name, value, " or ".join(choices))
    return None


def parse_size(text: str) -> int:
    """Bytes from "4G", "500M", "64k", "123" (binary units). ValueError when it is not a size."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(t[-1:], 1)
    value = float(t[:-1] if scale > 1 else t)
    if not value >= 0:  # negative or NaN
        raise ValueError(text)
    return int(value * scale)


def size(name: str) -> Optional[int]:
    """A size in bytes ("4G", "500M", "64k"), None when unset."""
    value = get(name)
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError:
        _unreadable(name, value, "a size such as 500M or 4G")
        return None


def path(name: str) -> Optional[Path]:
    """The value as a path, with ~ and $VARS expanded; None when unset or empty."""
    value = get(name)
    return Path(os.path.expanduser(os.path.expandvars(value))) if value else None


def markdown_table() -> str:
    rows = ["| variable | meaning | default |", "| --- | --- | --- |"]
    rows += [f"| `{v.name}` | {v.meaning} | {v.default} |" for v in VARIABLES if v.in_tests != "keep"]
    return "\n".join(rows)


def help_epilog() -> str:
    """For `chatglm3 --help`: the variables by name (their meaning is in the README)."""
    ours = ", ".join(v.name for v in VARIABLES if v.name.startswith("CHATGLM3_") and v.in_tests != "keep")
    hf = ", ".join(v.name for v in VARIABLES if v.name.startswith("HF_") and v.name != "HF_TOKEN_PATH")
    return f"Environment: {ours}; {hf}. See the README's Environment table."
