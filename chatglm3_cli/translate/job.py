"""What to translate and how: the run's settings and one input file's task."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from .glossary import Glossary
from .languages import Language

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.sampling import SamplingParams


@dataclass
class Settings:
    target: Language
    params: "SamplingParams"
    source: Optional[Language] = None  # None: the model detects it
    n_parallel: int = 4
    n_ctx: Optional[int] = None  # per sequence; None: the model's, at most 4096
    bilingual: bool = False
    glossary: Glossary = field(default_factory=Glossary)
    prompt_template: Optional[str] = None  # --prompt-file: replaces the instructions
    preview: Optional[int] = None  # translate only the first N chunks of each file
    max_answer_tokens: Optional[int] = None  # cap per answer; default 3x the chunk's tokens + 32
    max_chunk_tokens: int = 768
    max_chunk_units: int = 16
    overwrite: bool = False  # replace an existing output that translate did not write
    retranslate: bool = False  # gettext: also the entries that already have a translation


@dataclass
class FileTask:
    label: str  # how messages name it: the path, or "stdin"
    path: Optional[Path] = None  # None: ``data`` holds the input (stdin)
    output: Optional[Path] = None  # None: the text is returned in FileResult.text
    fmt: Optional[str] = None  # None: from the extension
    data: Optional[bytes] = None
    checkpoint: Optional[str] = None  # what the checkpoint is named after; default: the output

