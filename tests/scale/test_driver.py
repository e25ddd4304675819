"""The driver's edges on a real Ray cluster: a worker that cannot start fails the job with its
own typed error (a stand-in worker class: plumbing only), an address where no cluster is is one
line; without Ray, --ray says how to install it; --help never imports Ray."""
from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from chatglm3_cli import errors as E
from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.exit_codes import ExitCode
from chatglm3_cli.scale.cluster import ClusterOptions, connect
from chatglm3_cli.scale.driver import Totals, run

from ..startup import started
from .conftest import needs_ray


def broken_worker_class():
    class Broken:
        def __init__(self, **kwargs) -> None:
            from chatglm3_cli.errors import ModelMismatchError

            raise ModelMismatchError("worker w1: /m.gguf has sha256 abc…, the driver's model def…")

        def __call__(self, batch):  # pragma: no cover
            return batch

    return Broken


@needs_ray
def test_a_worker_that_cannot_start_fails_the_job_with_its_own_error(ray_cluster):
    items = {"a": json.dumps({"key": "a"})}
    with connect(ClusterOptions(address=ray_cluster.address, workers=1)) as cluster:
        with pytest.raises(E.ModelMismatchError) as e:
            list(run(cluster, items, broken_worker_class(), {}, batch_size=1, totals=Totals()))
    assert "sha256" in e.value.message


@needs_ray
def test_an_unreachable_address_is_one_line(tmp_path):
    with pytest.raises(E.ClusterError) as e:
        with connect(ClusterOptions(address="127.0.0.1:9")):
            pass
    assert "127.0.0.1:9" in e.value.message


@pytest.mark.parametrize("command", ["batch", "translate"])
def test_ray_flag_without_ray_says_how_to_install(monkeypatch, fixtures, tmp_path, command):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` fails
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": 1, "task": "generate", "prompt": "hi"}\n')
    args = [str(jobs)] if command == "batch" else [str(jobs), "--to", "zh", "--format", "txt"]
    r = CliRunner().invoke(app, [command, *args, "-m", str(fixtures.path("tiny")), "--ray", "local"])
    assert r.exit_code == ExitCode.CLUSTER_ERROR, r.output
    assert "pip install '.[ray]'" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs.jsonl"]  # nothing written


def test_worker_options_only_with_ray(fixtures, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": 1, "task": "generate", "prompt": "hi"}\n')
    r = CliRunner().invoke(app, ["batch", str(jobs), "--workers", "2"])
    assert r.exit_code == ExitCode.USAGE and "--workers only apply with --ray" in r.output


@pytest.mark.parametrize("argv, want", [
    (["batch", "j.jsonl", "--ray"], ["batch", "j.jsonl", "--ray=local"]),
    (["batch", "j.jsonl", "--ray", "--workers", "2"], ["batch", "j.jsonl", "--ray=local", "--workers", "2"]),
    (["batch", "--ray", "-"], ["batch", "--ray=local", "-"]),
    (["batch", "j.jsonl", "--ray", "auto"], ["batch", "j.jsonl", "--ray", "auto"]),
    (["batch", "j.jsonl", "--ray", "10.0.0.5:6379"], ["batch", "j.jsonl", "--ray", "10.0.0.5:6379"]),
    (["run", "--", "--ray"], ["run", "--", "--ray"]),
])
def test_a_bare_ray_flag_means_a_local_cluster(argv, want):
    from chatglm3_cli.cli.app import optional_values

    assert optional_values(argv) == want


def test_help_imports_neither_ray_nor_the_scale_package():
    for cmd in (["batch", "--help"], ["translate", "--help"], ["--help"]):
        p = started(*cmd)
        assert p.returncode == 0, p.stderr
        assert not any(m == "ray" or m.startswith("ray.") for m in p.imported), cmd
        assert not any(m.startswith("chatglm3_cli.scale") for m in p.imported), cmd
    assert "--ray" in started("batch", "--help").stdout
