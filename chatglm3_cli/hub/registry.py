"""What a model name means: aliases, quants, Hub references, and picking a file from a listing.

Forms accepted wherever a model is named (`-m`, `pull`, `models info/rm`):
- a path to a .gguf file;
- an alias (`chatglm3-6b`, `chatglm3-6b-128k`, `glm-4-9b-chat`), optionally `:QUANT`;
- a Hub reference: `owner/repo`, `owner/repo:QUANT`, `owner/repo/path/file.gguf`;
- a ModelScope reference: the same forms after `ms://` (`ms://owner/repo:QUANT`);
- a local model named with `chatglm3 models add` (resolved by config.py, not here).

An alias reads from the Hub, or from ModelScope where the user prefers it (CHATGLM3_SOURCE or
`source = "modelscope"` in the config file) and the alias has a known ModelScope repo.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from ..errors import ModelNotFoundError, ModelNotOnHubError
from .cachepaths import bad_repo_path

DEFAULT_MODEL = "chatglm3-6b"
DEFAULT_QUANT = "Q4_K_M"  # what llama.cpp's `-hf repo` and Ollama pick too: good size/quality


# alias -> Hub repo (file names there: chatglm3-6b.Q4_K_M.gguf, chatglm3-6b-128k.Q8_0.gguf,
# glm-4-9b-chat-Q4_K_M.gguf; the exact name is always taken from the listing or the disk)
ALIASES: dict[str, str] = {
    "chatglm3-6b": "mradermacher/chatglm3-6b-GGUF",  # ChatGLM3-6B, 8K context
    "chatglm3-6b-128k": "mradermacher/chatglm3-6b-128k-GGUF",  # 128K context
    "glm-4-9b-chat": "bartowski/glm-4-9b-chat-GGUF",  # GLM-4: BPE vocabulary, chatglm4 template
}

# alias -> ModelScope repo. Only names seen in the issue that asked for ModelScope (not checked
# against modelscope.cn from here: no network on the machine that wrote this); an alias missing
# here is refused with a hint to name a repo with ms://.
MS_ALIASES: dict[str, str] = {
    "glm-4-9b-chat": "LLM-Research/glm-4-9b-chat-GGUF",
}
SOURCES = ("hub", "modelscope")
MS_PREFIX = "ms://"

# A quant inside a file name: Q4_K_M, q8_0, IQ4_XS, f16, BF16 ... delimited by . - _ or the ends.
_QUANT_RE = re.compile(r"(?i)(?<![a-z0-9])(i?q\d+(?:_[a-z0-9]+)*|bf16|f16|f32|mxfp4|tq\d_\d)(?![a-z0-9])")
_REPO_PART = r"[A-Za-z0-9][\w.-]{0,95}"
_REPO_RE = re.compile(rf"^({_REPO_PART})/({_REPO_PART})(?::([\w.-]+))?$")
_REPO_FILE_RE = re.compile(rf"^({_REPO_PART})/({_REPO_PART})/(.+\.gguf)$", re.IGNORECASE)
_SPLIT_RE = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)


def quant_of(filename: str) -> Optional[str]:
    """The quant a GGUF file name carries (upper case), or None: `chatglm3-6b.Q4_K_M.gguf` -> Q4_K_M."""
    stem = os.path.basename(filename)
    if stem.lower().endswith(".gguf"):
        stem = stem[:-5]
    found = _QUANT_RE.findall(stem)
    return found[-1].upper() if found else None


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model name: either a local file (`path`) or a file in a Hub repo."""

    text: str
    path: Optional[Path] = None
    repo_id: Optional[str] = None
    quant: Optional[str] = None  # as the user typed it; matched case-insensitively
    filename: Optional[str] = None  # exact path in the repo when the user named one
    alias: Optional[str] = None
    source: str = "hub"  # or "modelscope"

    @property
    def is_local(self) -> bool:
        return self.path is not None


def _looks_like_path(text: str) -> bool:
    return (text.startswith(("/", "./", "../", "~", ".\\")) or os.path.isabs(text)
            or (os.sep != "/" and os.sep in text))


def parse_spec(text: str, *, source: str = "hub") -> ModelSpec:
    """Parse a model name. A file that exists on disk always wins, so old `-m FILE` keeps working.
    `source` is where an alias reads from (the user's preference; `ms://` always means ModelScope)."""
    text = text.strip()
    if not text:
        raise ModelNotFoundError("empty model name")
    if text.lower().startswith(MS_PREFIX):
        ms = _parse_repo(text, text[len(MS_PREFIX):], "modelscope")
        assert ms is not None  # without missing_ok it raises instead
        return ms
    expanded = os.path.expanduser(text)
    if os.path.isfile(expanded) or _looks_like_path(text):
        return ModelSpec(text, path=Path(expanded))
    name, _, quant = text.partition(":")
    if name.lower() in ALIASES and "/" not in name:
        alias = name.lower()
        if source == "modelscope":
            if alias not in MS_ALIASES:
                raise ModelNotFoundError(
                    f"{alias} has no ModelScope repo known to chatglm3 (the preferred source is ModelScope)",
                    hint="name one with ms://OWNER/REPO[:QUANT], or read it from the Hub with CHATGLM3_SOURCE=hub")
            return ModelSpec(text, repo_id=MS_ALIASES[alias], quant=quant or None, alias=alias,
                             source="modelscope")
        return ModelSpec(text, repo_id=ALIASES[alias], quant=quant or None, alias=alias)
    spec = _parse_repo(text, text, "hub", missing_ok=True)
    if spec is not None:
        return spec
    if text.lower().endswith(".gguf") or "/" in text:
        return ModelSpec(text, path=Path(expanded))  # a path that does not exist: reported later
    raise ModelNotFoundError(
        f"unknown model {text[:200]!r}",
        hint=f"use a .gguf path, an alias ({', '.join(ALIASES)}), a Hub repo like owner/repo:Q4_K_M, "
             "ms://owner/repo for ModelScope, or a name from `chatglm3 models add`")


def _parse_repo(text: str, ref: str, source: str, missing_ok: bool = False) -> Optional[ModelSpec]:
    """`owner/repo[:QUANT]` or `owner/repo/path/file.gguf` (what follows `ms://` for ModelScope)."""
    m = _REPO_FILE_RE.match(ref)
    if m:
        why = bad_repo_path(m.group(3))
        if why is not None:
            raise ModelNotFoundError(f"{text[:200]!r} does not name a file in a repo ({why})",
                                     hint="use owner/repo/path/file.gguf without '..' or empty parts")
        return ModelSpec(text, repo_id=f"{m.group(1)}/{m.group(2)}", filename=m.group(3), source=source)
    m = _REPO_RE.match(ref)
    if m and not ref.lower().endswith(".gguf"):  # `dir/model.gguf` is a (missing) file, not a repo
        return ModelSpec(text, repo_id=f"{m.group(1)}/{m.group(2)}", quant=m.group(3), source=source)
    if missing_ok:
        return None
    raise ModelNotFoundError(f"{text[:200]!r} does not name a ModelScope repo",
                             hint="use ms://OWNER/REPO[:QUANT] or ms://OWNER/REPO/FILE.gguf")


def gguf_files(names: Iterable[str]) -> list[str]:
    """GGUF files that are whole models: split parts after the first and mmproj files are left out."""
    out = []
    for n in names:
        low = n.lower()
        if not low.endswith(".gguf") or "mmproj" in os.path.basename(low):
            continue
        if _SPLIT_RE.search(n) and not re.search(r"-00001-of-\d{5}\.gguf$", n, re.IGNORECASE):
            continue
        out.append(n)
    return out


def pick_file(spec: ModelSpec, names: Iterable[str], *, where: str) -> str:
    """Choose the file `spec` means among a repo's files (a Hub listing, or what is on disk).

    `where` names the source for messages ("on the Hub", "on disk"). Raises ModelNotOnHubError
    listing what exists when nothing matches.
    """
    names = list(names)
    if spec.filename:
        if spec.filename in names:
            return spec.filename
        raise ModelNotOnHubError(f"{spec.repo_id} has no file {spec.filename} {where}"
                                 + _listing(gguf_files(names)))
    files = gguf_files(names)
    if not files:
        raise ModelNotOnHubError(f"{spec.repo_id} has no .gguf files {where}")
    want = (spec.quant or DEFAULT_QUANT).upper()
    matches = sorted(f for f in files if quant_of(f) == want)
    if matches:
        return min(matches, key=len)  # `x.Q4_K_M.gguf` over `x.i1-Q4_K_M.gguf`-like variants
    if spec.quant is None and len(files) == 1:
        return files[0]  # a single-quant repo: no need to name the quant
    raise ModelNotOnHubError(f"{spec.repo_id} has no {want} file {where}" + _listing(files))


def _listing(files: list[str]) -> str:
    quants = sorted({q for q in (quant_of(f) for f in files) if q})
    if quants:
        return f"; quants: {', '.join(quants)}"
    return f"; files: {', '.join(files[:10])}" if files else ""
