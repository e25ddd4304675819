"""Shared fixtures: the generated GGUF models (built once into the gitignored cache)."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("make_test_model", ROOT / "scripts" / "make_test_model.py")
make_test_model = importlib.util.module_from_spec(_spec)
sys.modules["make_test_model"] = make_test_model
_spec.loader.exec_module(make_test_model)

REAL_VOCAB = make_test_model.REAL_VOCAB


class Fixtures:
    """Builds each fixture on first use; files are reused across runs via the cache."""

    def __init__(self) -> None:
        self.cache = make_test_model.cache_dir()
        self._paths: dict[str, Path] = {}

    def path(self, kind: str) -> Path:
        if kind not in self._paths:
            self._paths[kind] = make_test_model.build(kind, self.cache)
        return self._paths[kind]

    def sidecar(self, kind: str) -> dict:
        return json.loads(self.path(kind).with_suffix(".json").read_text())

    def vocab_model(self) -> Path:
        return self.path("vocab")


def pytest_collection_modifyitems(config, items):
    """Marks by what a test needs, so the fast part runs alone: ``-m "not model"`` skips every
    test that loads a generated GGUF into llama.cpp (all of them use the ``fixtures`` fixture),
    ``-m "not ray"`` the tests that start a Ray cluster, ``-m "not browser"`` those that drive
    chromium."""
    for item in items:
        path = str(item.path)
        if "fixtures" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.model)
        if f"{os.sep}scale{os.sep}" in path:
            item.add_marker(pytest.mark.ray)
        if path.endswith("test_web_page.py"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def fixtures() -> Fixtures:
    return Fixtures()


@pytest.fixture(scope="session")
def real_vocab() -> Path:
    if not REAL_VOCAB.exists():
        pytest.skip("../shared/fixtures/chatglm3-tokenizer.model is absent")
    return REAL_VOCAB


@pytest.fixture(scope="session")
def scripted_model(fixtures):
    from chatglm3_cli.engine.model import Model

    m = Model(fixtures.path("scripted"), n_ctx=512)
    yield m
    m.close()


@pytest.fixture(scope="session")
def tiny_model(fixtures):
    from chatglm3_cli.engine.model import Model

    m = Model(fixtures.path("tiny"), n_ctx=1024)
    yield m
    m.close()


@pytest.fixture(scope="session")
def q4km_model(fixtures):
    """Random weights quantized to Q4_K_M by llama.cpp: the kind of file users download."""
    from chatglm3_cli.engine.model import Model

    m = Model(fixtures.path("tiny-q4km"), n_ctx=1024)
    yield m
    m.close()


def copy_without_chat_template(src: Path, out: Path) -> Path:
    """The same GGUF without tokenizer.chat_template: what a base model or an old conversion is."""
    from .gguf_edit import copy_with

    return copy_with(src, out, {}, drop=("tokenizer.chat_template",))


@pytest.fixture(scope="session")
def no_template_path(fixtures, tmp_path_factory) -> Path:
    """The ChatML "template" fixture (answers "Template path works") with its template removed."""
    return copy_without_chat_template(fixtures.path("template"), tmp_path_factory.mktemp("gguf") / "notemplate.gguf")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test sees the developer's own model, debug settings, config, data, HF cache or token,
    and none reaches the real Hub: HF_ENDPOINT points at a port where nothing listens. Every
    variable of chatglm3_cli.env.VARIABLES is cleared or given a fresh folder, and so is any
    other CHATGLM3_* variable (one added to the code but not to the table)."""
    from chatglm3_cli import env

    for var in list(os.environ):
        if var.startswith("CHATGLM3_") and env.BY_NAME.get(var, env.EnvVar(var, "", "")).in_tests != "keep":
            monkeypatch.delenv(var)
    for v in env.VARIABLES:
        if v.in_tests == "unset":
            monkeypatch.delenv(v.name, raising=False)
        elif v.in_tests == "tmpdir":  # CHATGLM3_STATE_DIR -> tmp_path / "state", HF_HOME -> "hf-home"
            folder = v.name.removeprefix("CHATGLM3_").removesuffix("_DIR").lower().replace("_", "-")
            monkeypatch.setenv(v.name, str(tmp_path / folder))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for var in ("NO_PROXY", "no_proxy"):  # the test Hub is local, even behind a proxy
        monkeypatch.setenv(var, "127.0.0.1,localhost")


@pytest.fixture
def hub(monkeypatch):
    """A local stand-in for the Hub (tests/hubserver.py), with HF_ENDPOINT pointing at it."""
    from .hubserver import HubServer

    server = HubServer(lifetime=120).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()
