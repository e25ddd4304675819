"""Untrusted text made safe to print: control characters shown, never obeyed.

Strings from a model file (its name, its template), a cache folder, a server or the model
itself reach the terminal in approval prompts, banners and listings. An escape sequence there
can clear the screen, set the window title or hide a line of code (``\\x1b[2K\\r``) from the
person asked to approve it. ``visible`` spells every such character out (``\\x1b``, ``\\r``,
``\\u202e``) so that what is shown is what is there.
"""
from __future__ import annotations

import re
import unicodedata

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\x1b": "\\x1b"}


def _spelled(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _is_hidden(ch: str) -> bool:
    """C0 and C1 controls and DEL (Cc); the format characters that reorder or hide text, such
    as bidi overrides and zero-width characters (Cf); line and paragraph separators; lone
    surrogates."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs")


_CANDIDATES = re.compile(r"[^\x20-\x7e]")  # printable ASCII never needs a look


def visible(text: str, *, lines: bool = False) -> str:
    """``text`` with control and invisible format characters spelled out. With ``lines``,
    newlines (and tabs) stay as they are: for multi-line code and output."""
    def spell(m: re.Match[str]) -> str:
        ch = m.group(0)
        if lines and ch in "\n\t":
            return ch
        return _spelled(ch) if _is_hidden(ch) else ch

    return _CANDIDATES.sub(spell, text)
