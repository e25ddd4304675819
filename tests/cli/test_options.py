"""The option groups (cli/options.py): declared once, built into one object per command."""
from __future__ import annotations

from typing import Annotated, Optional

import pytest
import typer
from typer.testing import CliRunner

from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.errors import handle_errors
from chatglm3_cli.cli.exit_codes import ExitCode
from chatglm3_cli.cli.options import (
    Group,
    ModelArgs,
    SamplingArgs,
    SamplingParams,
    SequenceCtx,
    SystemArgs,
    parallel_option,
    with_options,
)


def _probe_app(**groups) -> tuple[typer.Typer, list]:
    """A one-command app whose command records what the groups built (plumbing only)."""
    seen: list = []
    probe = typer.Typer()

    @probe.command()
    @handle_errors
    @with_options
    def cmd(
        word: Annotated[str, typer.Option("--word")] = "x",
        model: ModelArgs = groups.get("model", ModelArgs.options()),
        sampling: SamplingParams = groups.get("sampling", SamplingArgs.options()),
        system: SystemArgs = groups.get("system", SystemArgs.options()),
    ) -> None:
        seen.append((word, model, sampling, system))

    @probe.command()
    def other() -> None:  # a second command keeps `cmd` a named sub-command
        pass

    return probe, seen


def test_values_arrive_as_one_object_per_group():
    probe, seen = _probe_app()
    r = CliRunner().invoke(probe, ["cmd", "--word", "w", "-m", "a.gguf", "-c", "512", "--threads", "3",
                                   "-t", "0.2", "--top-k", "5", "--seed", "7", "--max-tokens", "9",
                                   "-s", "be brief", "--offline"])
    assert r.exit_code == 0, r.output
    word, model, sampling, system = seen[0]
    assert word == "w"
    assert (model.model, model.ctx, model.threads, model.offline, model.verbose) == ("a.gguf", 512, 3, True, False)
    assert sampling == SamplingParams(temperature=0.2, top_p=0.8, top_k=5, repeat_penalty=1.0, seed=7,
                                      max_tokens=9)
    assert system.text() == "be brief"


def test_defaults_are_the_engines_unless_a_command_changes_them():
    probe, seen = _probe_app()
    CliRunner().invoke(probe, ["cmd"])
    assert seen[0][2] == SamplingParams()
    probe, seen = _probe_app(sampling=SamplingArgs.options(temperature=0.0))
    r = CliRunner().invoke(probe, ["cmd"])
    assert seen[0][2] == SamplingParams(temperature=0.0)
    r = CliRunner().invoke(probe, ["cmd", "--help"], env={"COLUMNS": "120"})
    assert "[default: 0.0]" in r.stdout


def test_optional_and_omitted_options():
    probe, seen = _probe_app(model=ModelArgs.options(omit=("ctx", "verbose")))
    r = CliRunner().invoke(probe, ["cmd", "--help"], env={"COLUMNS": "120"})
    assert "--ctx" not in r.stdout and "--verbose" not in r.stdout and "--parallel" not in r.stdout
    assert "--model" in r.stdout and "--threads" in r.stdout
    probe, seen = _probe_app(model=ModelArgs.options(ctx=SequenceCtx, parallel=parallel_option("Things")))
    r = CliRunner().invoke(probe, ["cmd", "-p", "3", "-c", "100"])
    assert r.exit_code == 0, r.output
    model = seen[0][1]
    assert (model.parallel, model.n_parallel(), model.ctx) == (3, 3, 100)
    assert CliRunner().invoke(probe, ["cmd", "-c", "20"]).exit_code == ExitCode.USAGE  # SequenceCtx: min 64


def test_unknown_option_names_are_refused_at_declaration():
    with pytest.raises(TypeError, match="no options"):
        ModelArgs.options(kontext=1)


def test_an_option_declared_twice_is_refused():
    def cmd(model: ModelArgs = ModelArgs.options(),
            ctx: Annotated[Optional[int], typer.Option("--ctx")] = None) -> None:
        pass

    with pytest.raises(TypeError, match="declared twice"):
        with_options(cmd)


def test_invalid_sampling_and_system_choices_are_usage_errors(tmp_path):
    # top_p 0 passes Typer's range but not SamplingParams: one line, exit 2, before any model loads
    r = CliRunner().invoke(app, ["run", "-m", str(tmp_path / "absent.gguf"), "--top-p", "0", "hi"])
    assert r.exit_code == ExitCode.USAGE
    assert r.stderr.startswith("error: top_p must be in (0, 1]")
    (tmp_path / "s.txt").write_text("sys", encoding="utf-8")
    r = CliRunner().invoke(app, ["run", "-m", str(tmp_path / "absent.gguf"), "-s", "x",
                                 "--system-file", str(tmp_path / "s.txt"), "hi"])
    assert r.exit_code == ExitCode.USAGE and "either --system or --system-file" in r.stderr


def _options_by_command():
    cmd = typer.main.get_command(app)
    out = {}
    for name, sub in cmd.commands.items():
        out[name] = {p.name: p for p in sub.params}
    return out


GROUP_PANELS = {name: cls.PANEL for cls in (ModelArgs, SamplingArgs, SystemArgs)
                for name in Group(cls, **({"parallel": parallel_option("x")} if cls is ModelArgs else {})).names}


@pytest.mark.parametrize("command", sorted(n for n, ps in _options_by_command().items()
                                             if "model" in ps and n not in ("pull",)))
def test_shared_options_come_from_their_group(command):
    """A command that re-declares --model, --temperature, --system... by hand fails here: add
    the group (or the flag to the group) in cli/options.py instead."""
    params = _options_by_command()[command]
    for name, p in params.items():
        if (command, name) == ("bench", "parallel"):
            continue  # a list of levels to compare, not one model setting
        if name in GROUP_PANELS:
            assert getattr(p, "rich_help_panel", None) == GROUP_PANELS[name], (command, name)
