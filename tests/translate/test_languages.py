"""--to/--from values, and the instructions they (and --prompt-file) produce."""
from __future__ import annotations

import pytest

from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.translate.glossary import Glossary
from chatglm3_cli.translate.languages import parse_language
from chatglm3_cli.translate.pipeline import Settings, instructions


@pytest.mark.parametrize("value,code,name", [
    ("zh", "zh", "Simplified Chinese"), ("中文", "zh", "Simplified Chinese"), ("EN", "en", "English"),
    ("Japanese", "ja", "Japanese"), ("zh_TW", "zh-tw", "Traditional Chinese"), ("français", "fr", "French"),
    ("Esperanto", "esperanto", "Esperanto"),  # not in our table, but a name the model knows
])
def test_languages(value, code, name):
    lang = parse_language(value)
    assert (lang.code, lang.name) == (code, name)
    assert lang.known == (value != "Esperanto")  # the CLI warns about the unchecked one


@pytest.mark.parametrize("value,meant", [("englsh", "English"), ("Portugese", "Portuguese"), ("germna", "German")])
def test_a_misspelt_known_language_is_refused_with_a_suggestion(value, meant):
    with pytest.raises(ValueError, match=f"unknown language '{value}': did you mean {meant}"):
        parse_language(value)


def test_unknown_code_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown language 'xx'.*zh, zh-tw, en"):
        parse_language("xx")


def test_prompt_file_placeholders_and_the_checkpoint_key():
    s = Settings(target=parse_language("de"), source=parse_language("en"), params=SamplingParams(),
                 prompt_template="Translate {from} to {to}.\n{format_rules}\n{glossary}",
                 glossary=Glossary((("model", "Modell"),)))
    system, key = instructions(s, "srt")
    assert system.startswith("Translate English to German.\nEach unit is one subtitle cue.")
    assert system.endswith("- model → Modell")
    assert "Modell" not in key  # the glossary is keyed per chunk, by the terms that occur in it
    default, _ = instructions(Settings(target=parse_language("ja"), params=SamplingParams()), "md")
    assert "into Japanese" in default and "The text is Markdown" in default and "[1]" in default
