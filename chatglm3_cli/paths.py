"""Where the tool keeps things. Every location is read from the environment at call time (not
import time), so a test or a user can move it with one variable.

Model weights live in the Hugging Face cache, shared with huggingface_hub and other tools:
HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub (huggingface_hub's rule).
"""
from __future__ import annotations

from pathlib import Path

from .env import path as _env_path


def hf_home() -> Path:
    xdg = _env_path("XDG_CACHE_HOME") or Path.home() / ".cache"
    return _env_path("HF_HOME") or xdg / "huggingface"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache (models--owner--repo/blobs, snapshots, refs)."""
    return _env_path("HF_HUB_CACHE") or hf_home() / "hub"


def modelscope_cache_dir() -> Path:
    """Models from ModelScope, in the Hugging Face cache layout (blobs, snapshots, locks) but a
    folder of their own, so that a repo named alike on both sites never mixes files:
    CHATGLM3_MODELSCOPE_CACHE, else the platform's user cache dir (~/.cache/chatglm3/modelscope)."""
    override = _env_path("CHATGLM3_MODELSCOPE_CACHE")
    if override is not None:
        return override
    import platformdirs

    return Path(platformdirs.user_cache_dir("chatglm3", appauthor=False)) / "modelscope"


def config_dir() -> Path:
    """CHATGLM3_CONFIG_DIR, else the platform's user config dir (~/.config/chatglm3 on Linux)."""
    override = _env_path("CHATGLM3_CONFIG_DIR")
    if override is not None:
        return override
    import platformdirs

    return Path(platformdirs.user_config_dir("chatglm3", appauthor=False))


def config_file() -> Path:
    return config_dir() / "config.toml"


def data_dir() -> Path:
    """Saved conversations and the chat input history: CHATGLM3_DATA_DIR or the platform's."""
    override = _env_path("CHATGLM3_DATA_DIR")
    if override is not None:
        return override
    import platformdirs

    return Path(platformdirs.user_data_dir("chatglm3", appauthor=False))


def state_dir() -> Path:
    """Small bookkeeping (when each model was last used): CHATGLM3_STATE_DIR or the platform's."""
    override = _env_path("CHATGLM3_STATE_DIR")
    if override is not None:
        return override
    import platformdirs

    return Path(platformdirs.user_state_dir("chatglm3", appauthor=False))


def cache_dir() -> Path:
    """Things that can be recomputed (evaluated prompts): CHATGLM3_CACHE_DIR or the platform's
    user cache dir (~/.cache/chatglm3 on Linux)."""
    override = _env_path("CHATGLM3_CACHE_DIR")
    if override is not None:
        return override
    import platformdirs

    return Path(platformdirs.user_cache_dir("chatglm3", appauthor=False))
