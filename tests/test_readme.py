"""The README's option tables and command sections match `--help`: every option a command
has is documented in its section, and every option a section's tables name exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from chatglm3_cli.cli.app import app

README = Path(__file__).resolve().parent.parent / "README.md"


def _sections() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    out = {}
    for m in re.finditer(r"^### `chatglm3 ([a-z]+)[^`]*`\n(.*?)(?=^##)", text, re.M | re.S):
        out[m.group(1)] = m.group(2)
    return out


def _long_options(cmd) -> set[str]:
    opts = {o for p in cmd.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])
            if o.startswith("--")}
    for sub in getattr(cmd, "commands", {}).values():
        opts |= _long_options(sub)
    return opts - {"--help"}


COMMANDS = sorted(typer.main.get_command(app).commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_documented_in_its_section(name):
    section = _sections().get(name)
    assert section is not None, f"README has no `### \\`chatglm3 {name} ...\\`` section"
    cmd = typer.main.get_command(app).commands[name]
    missing = sorted(o for o in _long_options(cmd) if not re.search(re.escape(o) + r"(?![\w-])", section))
    assert not missing, f"chatglm3 {name}: options missing from the README: {missing}"


@pytest.mark.parametrize("name", COMMANDS)
def test_the_tables_name_only_real_options(name):
    section = _sections().get(name, "")
    cmd = typer.main.get_command(app).commands[name]
    table_rows = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", table_rows))
    assert named <= _long_options(cmd), f"chatglm3 {name}: the README names {sorted(named - _long_options(cmd))}"


def test_published_docs_name_no_machine_paths():
    """Benchmarks and docs name models by file name, never by where a machine kept them."""
    root = README.parent
    for f in [README, *sorted((root / "docs").glob("*.md"))]:
        hit = re.search(r"(?<![\w.])/(work|home|root|tmp|Users)/[\w.-]+", f.read_text(encoding="utf-8"))
        assert hit is None, f"{f.name}: {hit.group(0)}"
