"""Languages by code or name: what ``--to`` and ``--from`` accept and what the prompt says."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str  # used in output names: notes.en.md
    name: str  # used in the instructions to the model

    @property
    def spaced(self) -> bool:
        """Whether words are separated by spaces (for joining sentences split apart)."""
        return self.code.split("-")[0] not in ("zh", "ja", "th", "lo", "my", "km")


# code: (English name for the prompt, other spellings users type)
_KNOWN: dict[str, tuple[str, tuple[str, ...]]] = {
    "zh": ("Simplified Chinese", ("chinese", "zh-cn", "zh-hans", "cn", "中文", "简体中文", "汉语",
                                  "simplified chinese")),
    "zh-tw": ("Traditional Chinese", ("zh-hant", "zh-hk", "traditional chinese", "繁體中文", "繁体中文")),
    "en": ("English", ("english", "英语", "英文")),
    "ja": ("Japanese", ("japanese", "jp", "日本語", "日语", "日文")),
    "ko": ("Korean", ("korean", "kr", "한국어", "韩语")),
    "fr": ("French", ("french", "français", "francais", "法语")),
    "de": ("German", ("german", "deutsch", "德语")),
    "es": ("Spanish", ("spanish", "español", "espanol", "西班牙语")),
    "ru": ("Russian", ("russian", "русский", "俄语")),
    "it": ("Italian", ("italian", "italiano")),
    "pt": ("Portuguese", ("portuguese", "português", "portugues")),
    "nl": ("Dutch", ("dutch", "nederlands")),
    "pl": ("Polish", ("polish", "polski")),
    "uk": ("Ukrainian", ("ukrainian", "українська")),
    "tr": ("Turkish", ("turkish", "türkçe", "turkce")),
    "ar": ("Arabic", ("arabic", "العربية")),
    "hi": ("Hindi", ("hindi", "हिन्दी")),
    "vi": ("Vietnamese", ("vietnamese", "tiếng việt")),
    "th": ("Thai", ("thai", "ไทย")),
    "id": ("Indonesian", ("indonesian", "bahasa indonesia")),
}

CODES = tuple(_KNOWN)


def parse_language(value: str) -> Language:
    """A code (``en``), an English or native name (``English``, ``中文``). Raises ValueError."""
    v = value.strip()
    key = v.lower().replace("_", "-")
    if key in _KNOWN:
        return Language(key, _KNOWN[key][0])
    for code, (name, aliases) in _KNOWN.items():
        if key == name.lower() or key in aliases:
            return Language(code, name)
    if len(key) > 3 and all(c.isalpha() or c in " -" for c in key):
        # A language we have no entry for, named in full: the model knows it by name.
        return Language(key.replace(" ", "-"), v[:1].upper() + v[1:])
    raise ValueError(f"unknown language {value!r}: use a code ({', '.join(CODES)}) or a name "
                     f"such as English or 中文")
