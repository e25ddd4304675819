"""An answer is kept only when it is a translation of its unit: what a weak model did
(issue 25, SmolLM2-135M) is replayed with scripted answers, and each is retried smaller, then
counted as failed, and never written."""
from __future__ import annotations

import pytest

from chatglm3_cli.translate.checkpoint import checkpoint_dir
from chatglm3_cli.translate.chunks import Mismatch, Piece
from chatglm3_cli.translate.instructions import instructions
from chatglm3_cli.translate.validate import InstructionEcho, check

from .helpers import fake_run, numbered, settings, shout

SYSTEM_MD, _ = instructions(settings(), "md")
SYSTEM_TXT, _ = instructions(settings(), "txt")


def piece(text):
    return Piece(0, 0, text, len(text) // 4 + 1)


@pytest.mark.parametrize("source,answer,why", [
    # the cases, as SmolLM2 answered them
    ("Getting started", "Getting started The text is Markdown. Keep its markup (#, *, _, >, [link text]{{n}}) "
                        "where it is and translate the words, including link texts.", "unit marker|{}|instructions"),
    ("See you tomorrow.", "The text is plain text. Keep the line breaks inside a unit.", "instructions"),
    ("Where is the train station?", "{1} where is the train station?", "broken placeholder"),
    ("See [link]{{1}}.", "link text {[link text]{{1}}}", "{}"),
    # and their neighbours
    ("Hello world", "[1] Bonjour [3] le monde", "unit marker"),
    # SmolLM2 on guide.md (scripts/smoke_real_model.py): the bold phrase was dropped
    ("This tool runs **language models** on your own computer.", "This tool runs on your own computer.", "'*'"),
    ("Hello world", "You are a professional translator.", "instructions"),
    ("Hello world", "Answer with the translation only: no notes, no explanations.", "instructions"),
    ("Hi.", "Bonjour! " * 30, "too long"),
    ("This is a rather long sentence that says quite a lot of things about the weather today.", "Oui.",
     "too short"),
    ("Questions and answers stay on your machine.", "Mignonette.", "too short"),  # SmolLM2 at -t 0.7
])
def test_what_is_not_a_translation_is_rejected(source, answer, why):
    echo = InstructionEcho(SYSTEM_MD + "\n" + SYSTEM_TXT)
    with pytest.raises(Mismatch) as e:
        check(piece(source), answer, echo)
    assert any(w in str(e.value) for w in why.split("|")), str(e.value)


@pytest.mark.parametrize("source,answer", [
    ("Hello world", "你好，世界"),
    ("你好，世界。今天天气很好，我们去公园散步吧。", "Hello, world. The weather is nice today, let's take a walk in the park."),
    ("Use {{1}} to keep [the docs]{{2}} open.", "Utilisez {{1}} pour garder [la doc]{{2}} ouverte."),
    ("OK", "D'accord, c'est bon"),  # short sources may grow
    ("Thank you very much!", "Merci !"),  # and short answers may be right
    ("Please click here to continue.", "请点击此处继续。"),
    # a text about translating may say what the instructions say: the source said it first
    ("Translate the user's text into French, please.", "Traduisez le texte en français : translate the user's text"),
])
def test_translations_pass(source, answer):
    check(piece(source), answer, InstructionEcho(SYSTEM_MD))


def test_an_echoed_instruction_is_retried_alone_and_then_fails_without_being_written(tmp_path):
    """Every unit answered with the format's rule (the issue's guide.md): nothing is written."""
    def echoes(units, system, user):
        return numbered(units, lambda u: "The text is Markdown. Keep its markup where it is and translate the words.")

    s, dec, outs = fake_run(tmp_path, {"guide.md": "# Getting started\n\nSee you tomorrow.\n\n| a cell |\n|---|\n"},
                            echoes)
    r = s.files[0]
    assert r.status == "failed" and outs[r.task.label] is None
    assert len(r.failures) == 3 and all("repeats the instructions" in f.reason for f in r.failures)
    assert s.retries == 2 and s.requests == 1 + 2 + 2  # 3 units -> 2+1 -> 1+1: each unit asked alone


def test_a_weak_model_gives_fewer_units_not_a_wrong_file(tmp_path):
    """Chunks where the model misbehaves are split; units it translates alone are kept, the others
    stay in the source language and are listed."""
    def sometimes(units, system, user):
        if len(units) > 1:  # echoes the instructions when given several units
            return SYSTEM_TXT
        u = units[0]
        if "station" in u:
            return "{1} " + u  # debris
        if "code" in u:
            return shout(u) + " {{9}}"  # an invented placeholder
        if "drop" in u:
            return shout(u).replace("{{1}}", "")  # a dropped one
        return shout(u)

    text = ("Good morning, everyone.\n\nWhere is the train station?\n\nSee http://x.org for code.\n\n"
            "Please drop http://y.org here.\n\nSee you tomorrow.\n")
    s, dec, outs = fake_run(tmp_path, {"a.txt": text}, sometimes)
    r = s.files[0]
    assert r.status == "partial" and s.retries >= 1
    reasons = {f.line: f.reason for f in r.failures}
    assert "broken placeholder" in reasons[3] and "unknown {{9}}" in reasons[5] and "missing {{1}}" in reasons[7]
    assert outs[r.task.label] == ("GOOD MORNING, EVERYONE.\n\nWhere is the train station?\n\nSee http://x.org for code.\n\n"
                                  "Please drop http://y.org here.\n\nSEE YOU TOMORROW.\n")


def test_an_answer_kept_by_an_older_version_is_checked_again(tmp_path, monkeypatch):
    """A checkpoint written before these checks may hold echoed instructions: on resume they are
    asked again, not written."""
    import chatglm3_cli.translate.run as run

    def echoes(units, system, user):
        return numbered(units, lambda u: "The text is plain text. Keep the line breaks inside a unit.")

    text = "First paragraph here.\n\nSecond paragraph here.\n"
    monkeypatch.setattr(run, "check_all", lambda *a: None)  # the older version: no checks
    calls = []

    def echo_then_stop(units, system, user):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return echoes(units, system, user)

    s, _, _ = fake_run(tmp_path, {"a.txt": text}, echo_then_stop, max_chunk_units=1)
    assert s.interrupted and list(checkpoint_dir().glob("*.jsonl"))
    monkeypatch.undo()
    s, dec, outs = fake_run(tmp_path, {"a.txt": text}, lambda units, system, user: numbered(units),
                            max_chunk_units=1)
    assert s.ok and s.cached == 0 and s.requests == 2
    assert outs[str(tmp_path / "a.txt")] == text.upper()


def test_failed_units_and_echoes_make_no_file(tmp_path):
    """SmolLM2 on guide.md after the checks: 3 units rejected, the other 3 echoed (one with a space
    before a placeholder). The output would have been the input: nothing is written."""
    def weak(units, system, user):
        return numbered(units, lambda u: "The text is Markdown." if "**" in u or "Install" in u
                        else u.replace("{{2}}", " {{2}}"))

    text = "# Getting started\n\nRuns **models** here.\n\n- Install `x` now.\n- See <b>the docs</b> for more.\n"
    s, dec, outs = fake_run(tmp_path, {"guide.md": text}, weak)
    r = s.files[0]
    assert r.status == "failed" and outs[r.task.label] is None
    assert r.error.endswith("(2 units failed, listed above; the other 2 came back identical to the source); "
                            "no output written"), r.error


def test_glossary_translations_are_not_instructions():
    from chatglm3_cli.translate.glossary import Glossary

    g = Glossary((("training pipeline", "le pipeline d'entraînement de nos modèles de langue"),))
    system, _ = instructions(settings(glossary=g, target=settings().target), "txt")
    assert "le pipeline d'entraînement de nos modèles de langue" in system
    check(piece("Our training pipeline is fast."), "Le pipeline d'entraînement de nos modèles de langue est rapide.",
          InstructionEcho(system))
    with pytest.raises(Mismatch, match="instructions"):  # the glossary's own heading is an instruction
        check(piece("Our training pipeline is fast."), "Always translate these terms as given: rapide",
              InstructionEcho(system))
