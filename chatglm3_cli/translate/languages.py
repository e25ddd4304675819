"""Languages by code or name: what ``--to`` and ``--from`` accept and what the prompt says."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    code: str  # used in output names: notes.en.md
    name: str  # used in the instructions to the model
    known: bool = True  # False: a name we have no entry for, passed to the model as written

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
    "ms": ("Malay", ("malay", "bahasa melayu")),
    "sv": ("Swedish", ("swedish", "svenska")),
    "da": ("Danish", ("danish", "dansk")),
    "no": ("Norwegian", ("norwegian", "norsk", "nb")),
    "fi": ("Finnish", ("finnish", "suomi")),
    "cs": ("Czech", ("czech", "čeština", "cestina")),
    "el": ("Greek", ("greek", "ελληνικά")),
    "he": ("Hebrew", ("hebrew", "עברית")),
    "hu": ("Hungarian", ("hungarian", "magyar")),
    "ro": ("Romanian", ("romanian", "română", "romana")),
    "fa": ("Persian", ("persian", "farsi", "فارسی")),
    "bn": ("Bengali", ("bengali", "bangla", "বাংলা")),
    "sw": ("Swahili", ("swahili", "kiswahili")),
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
        # A misspelt language we know ("englsh") must not become a file name.englsh.md.
        close = _close_name(key)
        if close is not None:
            raise ValueError(f"unknown language {value!r}: did you mean {close}?")
        # A language we have no entry for, named in full: the model may know it by name (or
        # not: "klingon"). The caller warns that it is unchecked.
        return Language(key.replace(" ", "-"), v[:1].upper() + v[1:], known=False)
    raise ValueError(f"unknown language {value!r}: use a code ({', '.join(CODES)}) or a name "
                     f"such as English or 中文")


def _close_name(key: str) -> str | None:
    import difflib

    spellings = {name.lower(): name for name, _ in _KNOWN.values()}
    for name, aliases in _KNOWN.values():
        for a in aliases:
            if len(a) > 3:
                spellings.setdefault(a, name)
    hit = difflib.get_close_matches(key, list(spellings), n=1, cutoff=0.8)
    return spellings[hit[0]] if hit else None
