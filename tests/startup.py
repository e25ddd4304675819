"""What a help command imports, from one real process per command line per test session.

Several rooms check that help never imports what only work needs (llama.cpp, Ray, the scale
package, numpy): each check used to start its own `python -X importtime` for the same command
line, and a Python start with the CLI's imports is the cost of such a test."""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Started:
    returncode: int
    stdout: str
    stderr: str
    imported: frozenset[str]  # every module the process imported, by its dotted name


@functools.cache
def started(*argv: str) -> Started:
    """``python -X importtime -m chatglm3_cli ARGV`` without the developer's model or debug
    setting (help reads neither: the answer holds for the whole session)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CHATGLM3_DEBUG", "CHATGLM3_MODEL")}
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "chatglm3_cli", *argv], capture_output=True,
                       text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
    imported = frozenset(line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if "|" in line)
    return Started(p.returncode, p.stdout, p.stderr, imported)
