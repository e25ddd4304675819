"""The code interpreter's kernel: a real ipykernel through jupyter_client."""
from __future__ import annotations

import time

import pytest

from chatglm3_cli.tools.interpreter import Interpreter, InterpreterError, extract_code, truncate

# A 1x1 PNG, built in the kernel so that no imaging library is needed.
PNG_CELL = (
    "import base64\n"
    "from IPython.display import Image, display\n"
    "display(Image(data=base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==')))\n"
)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    with Interpreter(tmp_path_factory.mktemp("work"), timeout=60) as it:
        yield it


def test_cells_share_state_and_run_in_the_workdir(kernel):
    r = kernel.run("x = 6 * 7\nprint('x is', x)")
    assert r.text == "x is 42\n" and not r.error and r.observation() == "x is 42"
    r = kernel.run("import os\nx + 1, os.getcwd()")
    assert r.observation() == f"(43, {str(kernel.workdir)!r})"


def test_an_exception_is_the_observation_without_ansi_codes(kernel):
    r = kernel.run("1 / 0")
    assert r.error and "ZeroDivisionError" in r.observation() and "\x1b" not in r.observation()


def test_an_image_is_saved_as_png_and_observed_as_image(kernel):
    r = kernel.run(PNG_CELL)
    assert r.observation() == "[Image]" and len(r.images) == 1
    path = r.images[0]
    assert path.parent == kernel.workdir and path.suffix == ".png"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_output_is_truncated_to_the_documented_size(kernel):
    r = kernel.run("print('a' * 5000)")
    assert len(r.text) == 5001
    assert r.observation() == "a" * 1024 + " [TRUNCATED]"


def test_a_cell_that_runs_too_long_is_interrupted_and_the_kernel_lives_on(tmp_path):
    with Interpreter(tmp_path / "new" / "dir", timeout=3) as it:
        assert it.workdir.is_dir()  # created
        t0 = time.monotonic()
        r = it.run("import time\nprint('started', flush=True)\ntime.sleep(120)")
        assert time.monotonic() - t0 < 60
        assert r.timed_out and "started" in r.text and r.observation().endswith("Timed out")
        assert it.run("print('still here')").text == "still here\n"  # state survives the interrupt
        km = it._km
    assert it._km is None and not km.is_alive()  # closed with the context


def test_default_workdir_is_a_new_temporary_directory():
    a, b = Interpreter(), Interpreter()
    assert a.workdir != b.workdir and a.workdir.is_dir() and not any(a.workdir.iterdir())
    a.close()
    b.close()  # never started: closing is harmless


def test_workdir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(InterpreterError, match="not a directory"):
        Interpreter(f)


def test_extract_code_and_truncate():
    text = "Let me compute.\n```python\nprint(1)\n```\nand\n```python\nprint(2)\n```"
    assert extract_code(text) == "print(2)\n"
    assert extract_code("no code") is None
    assert truncate("abc", 2) == "ab [TRUNCATED]" and truncate("ab", 2) == "ab"


def test_secrets_are_not_in_the_kernels_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "gh-secret")
    monkeypatch.setenv("MY_PLAIN_SETTING", "visible")
    monkeypatch.setenv("CHATGLM3_CODE_ENV", "GITHUB_TOKEN")
    with Interpreter(tmp_path, timeout=60) as it:
        r = it.run("import os\nprint(sorted(k for k, v in os.environ.items() "
                   "if v in ('hf_secret', 'sk-secret', 'aws-secret', 'gh-secret', 'visible')))")
    assert r.text.strip() == "['GITHUB_TOKEN', 'MY_PLAIN_SETTING']", r.text


def test_an_image_that_cannot_be_written_is_reported_not_claimed(tmp_path):
    work = tmp_path / "work"
    (tmp_path / "elsewhere").mkdir()
    with Interpreter(work, timeout=60) as it:
        it.run("1")  # the kernel is up
        (work / "image-1.png").symlink_to(tmp_path / "elsewhere" / "target.png")  # never written through
        ok = it.run(PNG_CELL)
        work.rename(tmp_path / "moved")  # the working directory is gone: the next image cannot be written
        r = it.run(PNG_CELL)
    assert ok.images == [work / "image-2.png"] and not (tmp_path / "elsewhere" / "target.png").exists()
    assert r.images == [] and "[Image]" not in r.observation()
    assert "image not saved" in r.observation(), r.observation()
