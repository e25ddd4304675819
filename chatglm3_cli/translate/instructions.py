"""The instructions every chunk of a format is sent with (the system message): ours, or the
user's --prompt-file, with the format's rules and the glossary filled in."""
from __future__ import annotations

from .job import Settings

_CUES = ("Each unit is one subtitle cue. Translate each cue on its own, about as short as the "
         "source, keeping its line breaks; never move words between cues.")
_BLOCKS = ("Each unit is the text of one block of a {what}; its tags and entities are placeholders: "
           "keep each next to the words it marks.")
_MESSAGES = ("Each unit is a message of {what} user interface: translate it as such, as short as the "
             "source; its {syntax} are placeholders.")

FORMAT_RULES = {
    "txt": "The text is plain text. Keep the line breaks inside a unit.",
    "md": ("The text is Markdown. Keep its markup (#, *, _, >, [link text]{{n}}) where it is and "
           "translate the words, including link texts."),
    "srt": _CUES,
    "vtt": _CUES,
    "html": _BLOCKS.format(what="web page"),
    "epub": _BLOCKS.format(what="book"),
    "po": _MESSAGES.format(what="a program's", syntax="format specifiers"),
    "json": _MESSAGES.format(what="an app's", syntax="variables and plural syntax"),
    "yaml": _MESSAGES.format(what="an app's", syntax="variables and plural syntax"),
}

DEFAULT_INSTRUCTIONS = (
    "You are a professional translator. Translate the user's text {from_part}into {to}.\n"
    "The text comes as numbered units: each starts on a new line with its number in square "
    "brackets, like [1].\n"
    "Answer with the same units, in the same order: each number in square brackets followed by "
    "the translation of that unit only. Never merge, split, skip or add units.\n"
    "Placeholders such as {{1}} stand for code, links and markup: copy each one unchanged into "
    "the translation of its unit.\n"
    "Answer with the translation only: no notes, no explanations.\n"
    "{format_rules}"
)


def instructions(settings: Settings, fmt: str) -> tuple[str, str]:
    """(the system message, the same without the glossary: part of each chunk's checkpoint key)."""
    src = settings.source
    template = settings.prompt_template if settings.prompt_template is not None else DEFAULT_INSTRUCTIONS
    filled = (template.replace("{from_part}", f"from {src.name} " if src else "")
              .replace("{from}", src.name if src else "the language it is written in")
              .replace("{to}", settings.target.name)
              .replace("{format_rules}", FORMAT_RULES[fmt]))
    key_text = filled.replace("{glossary}", "")
    g = settings.glossary
    block = ("Always translate these terms as given:\n" + g.block()) if g else ""
    if "{glossary}" in filled:
        system = filled.replace("{glossary}", block)
    else:
        system = filled + ("\n" + block if block else "")
    return system.strip(), key_text.strip()

