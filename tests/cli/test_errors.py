"""No error escapes the mapping: every command is wrapped, every typed error has a named exit
code, and the README's exit-code table is the enum."""
from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import chatglm3_cli
from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.errors import exit_code_for, format_error
from chatglm3_cli.cli.exit_codes import ExitCode
from chatglm3_cli.errors import ChatGLM3Error

README = Path(__file__).resolve().parents[2] / "README.md"


def _all_commands():
    """(name, callback) of every command and group callback the app runs."""
    out = []

    def walk(cmd, path):
        if getattr(cmd, "callback", None) is not None and path:
            out.append((" ".join(path), cmd.callback))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, path + (name,))

    walk(typer.main.get_command(app), ())
    return out


def _handles_errors(fn) -> bool:
    while fn is not None:
        if getattr(fn, "handles_errors", False):
            return True
        fn = getattr(fn, "__wrapped__", None)
    return False


@pytest.mark.parametrize("name,callback", _all_commands(), ids=[n for n, _ in _all_commands()])
def test_every_command_is_wrapped_by_the_error_handler(name, callback):
    assert _handles_errors(callback), f"`chatglm3 {name}` is not decorated with @handle_errors"


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _import_everything():
    for mod in pkgutil.walk_packages(chatglm3_cli.__path__, "chatglm3_cli."):
        if not mod.name.endswith("__main__"):  # that one runs the app
            importlib.import_module(mod.name)


def test_every_typed_error_has_a_named_exit_code():
    _import_everything()  # errors declared anywhere in the package count
    classes = sorted(set(_subclasses(ChatGLM3Error)), key=lambda c: c.__name__)
    assert len(classes) > 20
    from chatglm3_cli.errors import InternalError

    # InternalError is the one typed error that is a bug of ours: it keeps FAILURE (exit 1)
    assert exit_code_for(InternalError("x")) == ExitCode.FAILURE
    unmapped = [c.__name__ for c in classes
                if c is not InternalError and exit_code_for(c.__new__(c)) == ExitCode.FAILURE]
    assert not unmapped, f"add these to cli/errors.py _CODES (FAILURE means a bug): {unmapped}"


def test_the_message_is_one_line_with_the_hint():
    from chatglm3_cli.errors import ConfigError

    assert format_error(ConfigError("the config file x is not valid TOML")) == \
        "error: the config file x is not valid TOML (fix or delete the config file)"


def test_a_broken_config_file_has_its_own_exit_code(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATGLM3_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text("model = [unclosed\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["run", "hi"])
    assert r.exit_code == ExitCode.CONFIG_ERROR, r.output
    assert r.stderr.startswith("error: the config file") and r.stderr.count("\n") == 1


def _readme_exit_codes() -> dict[int, str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    return {int(code): name for code, name in re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.M)}


def test_the_readme_table_is_the_enum():
    assert _readme_exit_codes() == {int(c): c.name for c in ExitCode}
