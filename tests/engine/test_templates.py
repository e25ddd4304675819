"""--chat-template: a Jinja file or a llama.cpp built-in name for a GGUF without (or with the
wrong) template; models info's facts (template, stop tokens). Real llama.cpp, generated files."""
from __future__ import annotations

import pytest

from chatglm3_cli.engine.llama.model import builtin_chat_templates
from chatglm3_cli.engine.model import Model, chat_facts
from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.engine.templates import MAX_TEMPLATE_BYTES, load_chat_template
from chatglm3_cli.errors import InputError, UnsupportedModelError
from tests.conftest import make_test_model

GREEDY = SamplingParams(temperature=0, max_tokens=16)
NAMES = None


def names():
    global NAMES
    if NAMES is None:
        NAMES = builtin_chat_templates()
    return NAMES


def test_llama_cpp_lists_its_builtin_formats():
    assert {"chatml", "llama3", "gemma"} <= set(names())


def test_a_file_without_a_template_says_how_to_give_one(no_template_path):
    with pytest.raises(UnsupportedModelError) as e:
        Model(no_template_path)
    assert "--chat-template" in e.value.hint


@pytest.mark.parametrize("how", ["builtin", "jinja"])
def test_a_given_template_makes_it_answer(no_template_path, fixtures, tmp_path, how):
    if how == "builtin":
        tmpl = load_chat_template("chatml", names())
    else:
        f = tmp_path / "chatml.jinja"
        f.write_text(make_test_model.CHATML_TEMPLATE)
        tmpl = load_chat_template(str(f), names())
    with Model(no_template_path, n_ctx=256, chat_template=tmpl) as m:
        r = m.chat([Message("user", "hi")], GREEDY)
        assert r.text == fixtures.sidecar("template")["answer"] and r.finish_reason == "stop"
        assert m.template is tmpl


def test_builtin_and_jinja_chatml_give_the_same_ids_and_user_text_stays_text(no_template_path, tmp_path):
    f = tmp_path / "t.jinja"
    f.write_text(make_test_model.CHATML_TEMPLATE)
    msgs = [Message("system", "be brief"), Message("user", "<|im_end|> is not special here")]
    with Model(no_template_path, n_ctx=256, chat_template=load_chat_template("chatml", names())) as m:
        builtin_ids = m.prompt_ids(msgs)
        im_end = m._llama.tokenize("<|im_end|>", parse_special=True)
    with Model(no_template_path, n_ctx=256, chat_template=load_chat_template(str(f), names())) as m:
        jinja_ids = m.prompt_ids(msgs)
    assert builtin_ids == jinja_ids
    assert len(im_end) == 1 and builtin_ids.count(im_end[0]) == 2  # the format's own two only


def test_the_formats_turn_end_becomes_a_stop_token(no_template_path, tmp_path):
    """A format's end-of-turn token stops generation even when the file does not list it."""
    own = {i for i, _ in chat_facts(no_template_path).stop_tokens}
    with Model(no_template_path, n_ctx=256, chat_template=load_chat_template("gemma", names())) as m:
        # This vocabulary has no <end_of_turn> token: nothing is added.
        assert len(m._llama.tokenize("<end_of_turn>", parse_special=True)) != 1
        assert m.stop_tokens == own
    # A format that ends each turn with a control token the file does not count as an end.
    f = tmp_path / "odd.jinja"
    f.write_text("{% for m in messages %}<|im_end|>{{ m['role'] }}\n{{ m['content'] }}<|im_start|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_end|>assistant\n{% endif %}")
    with Model(no_template_path, n_ctx=256, chat_template=load_chat_template(str(f), names())) as m:
        (start,) = m._llama.tokenize("<|im_start|>", parse_special=True)
        assert start not in own and m.stop_tokens == own | {start}


def test_chatglm3_files_keep_their_format_and_say_so(fixtures):
    with Model(fixtures.path("scripted"), n_ctx=256,
               chat_template=load_chat_template("chatml", names())) as m:
        assert m.family == "chatglm3" and m.template is None
        assert m.notes and "official prompt format" in m.notes[0]
        ids = m.prompt_ids([Message("user", "hi")])
        assert "<|im_start|>" not in "".join(t for _, t in m.describe(ids))


@pytest.mark.parametrize("value,needle", [
    ("chatmll", "neither a file nor a built-in template name"),
    ("./missing.jinja", "no such file"),
    ("", "empty"),
])
def test_bad_values(value, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=needle) as e:
        load_chat_template(value, names())
    if value == "chatmll":
        assert e.value.hint.startswith("give a Jinja file, or one of llama.cpp's names: chatml, llama3, gemma")


def test_template_files_are_bounded_and_not_empty(tmp_path):
    big = tmp_path / "big.jinja"
    big.write_text("x" * (MAX_TEMPLATE_BYTES + 1))
    with pytest.raises(InputError, match="too large"):
        load_chat_template(str(big), names())
    empty = tmp_path / "empty.jinja"
    empty.write_text("\n")
    with pytest.raises(InputError, match="empty"):
        load_chat_template(str(empty), names())


def test_a_template_that_cannot_render_is_a_typed_error(no_template_path, tmp_path):
    f = tmp_path / "bad.jinja"
    f.write_text("{% for m in messages %}{{ raise_exception('no ' + m.role) }}{% endfor %}")
    with Model(no_template_path, n_ctx=256, chat_template=load_chat_template(str(f), names())) as m:
        with pytest.raises(UnsupportedModelError, match="refused the messages: no user"):
            m.prompt_ids([Message("user", "hi")])


def test_chat_facts(fixtures, no_template_path):
    glm = chat_facts(fixtures.path("scripted"))
    assert glm.family == "chatglm3" and glm.template_chars > 0
    assert [t for _, t in glm.stop_tokens] == ["<eos>", "<|user|>", "<|observation|>"]
    tmpl = chat_facts(fixtures.path("template"))
    assert tmpl.template_chars == len(make_test_model.CHATML_TEMPLATE)
    # llama.cpp's own end-of-generation set: the file's eos (<|im_end|>) and </s> by its name
    assert tmpl.stop_tokens == [(2, "</s>"), (fixtures.sidecar("template")["eog"], "<|im_end|>")]
    bare = chat_facts(no_template_path)
    assert bare.template_chars == 0 and "--chat-template" in bare.prompt_format
