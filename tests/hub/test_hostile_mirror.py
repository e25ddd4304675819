"""A hostile Hub mirror (tests/hubserver.py told to lie) against the real `chatglm3 pull` process:
whatever it sends, nothing outside the model cache is created, replaced or unlinked, and a
value that would become a path outside it ends the run with exit 7 or 9 and one line."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatglm3_cli.cli.exit_codes import ExitCode
from chatglm3_cli.paths import hf_cache_dir, state_dir

CMD = [sys.executable, "-m", "chatglm3_cli"]
REPO = "acme/evil-GGUF"
FILE = "tiny.Q4_K_M.gguf"
VICTIM = b"the user's own file\n"


def tree(root: Path, skip: set[str]) -> dict[str, object]:
    """Everything under `root` except the cache (and the tool's state dir): names, kinds, bytes
    and link targets, to compare before and after."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip]
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = os.path.relpath(p, root)
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), oct(p.stat().st_mode))
    return out


@pytest.fixture
def world(tmp_path, hub, fixtures):
    """A user's files around the cache, and a mirror serving one small GGUF."""
    (tmp_path / "victim.txt").write_bytes(VICTIM)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / FILE).write_bytes(VICTIM)
    src = fixtures.path("template")
    hub.add(REPO, {FILE: src})
    # the cache and the tool's state dir are folders of tmp_path (tests/conftest.py)
    skip = {hf_cache_dir().relative_to(tmp_path).parts[0], state_dir().relative_to(tmp_path).parts[0]}
    before = tree(tmp_path, skip)
    yield src
    assert tree(tmp_path, skip) == before, "something outside the cache changed"
    assert (tmp_path / "victim.txt").read_bytes() == VICTIM


def pull(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("CHATGLM3_DEBUG", None)
    return subprocess.run(CMD + ["pull", *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def one_error_line(p: subprocess.CompletedProcess, *needles: str) -> None:
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n in lines[0], p.stderr


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("header", ["X-Linked-Etag", "ETag"])
def test_an_etag_with_a_path_in_it_is_refused(world, hub, header):
    hub.headers[FILE] = {"X-Linked-Etag": "", header: '"../../../victim.txt"'}
    p = pull(REPO)
    assert p.returncode == ExitCode.NETWORK_ERROR, p.stderr
    one_error_line(p, "invalid ETag", "does not behave like the Hugging Face Hub")
    assert p.stdout == ""


def test_a_commit_with_a_path_in_it_is_refused(world, hub, tmp_path):
    hub.headers[FILE] = {"X-Repo-Commit": "../../../outside"}
    p = pull(REPO)
    assert p.returncode == ExitCode.NETWORK_ERROR, p.stderr
    one_error_line(p, "invalid commit id")
    assert not (hf_cache_dir() / "models--acme--evil-GGUF" / "refs" / "main").exists()


@pytest.mark.parametrize("name", ["../../../../victim.Q4_K_M.gguf", "TMP/abs.Q4_K_M.gguf",
                                  "a//b.Q4_K_M.gguf", "./x/../../../outside/tiny.Q4_K_M.gguf"])
def test_a_listing_with_an_unsafe_path_is_refused(world, hub, name, tmp_path):
    name = name.replace("TMP", str(tmp_path))  # an absolute path
    hub.repos[REPO].files = {name: world}  # the only GGUF: the one the default quant picks
    p = pull(REPO)
    assert p.returncode == ExitCode.NETWORK_ERROR, p.stderr
    one_error_line(p, "unsafe path")
    assert not hub.gets(os.path.basename(name))


def test_a_file_name_with_dot_dot_is_refused_before_any_request(world, hub):
    p = pull(f"{REPO}/../../../victim.gguf")
    assert p.returncode == ExitCode.MODEL_ERROR, p.stderr
    one_error_line(p, "does not name a file in a repo")
    assert hub.requests == []


def _plant(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def test_links_planted_in_the_cache_are_never_written_through(world, hub, tmp_path):
    """A partial, a ref and a blob that are symlinks to the user's file: the download replaces
    the links and never writes into what they point at."""
    sha = sha256(world)
    rdir = hf_cache_dir() / "models--acme--evil-GGUF"
    _plant(rdir / "blobs" / f"{sha}.incomplete", tmp_path / "victim.txt")
    _plant(rdir / "refs" / "main", tmp_path / "victim.txt")
    p = pull(REPO)
    assert p.returncode == 0, p.stderr
    path = Path(p.stdout.strip())
    assert sha256(path) == sha and os.path.realpath(path) == str((rdir / "blobs" / sha).resolve())
    assert (rdir / "refs" / "main").read_text() == hub.repos[REPO].commit
    assert not (rdir / "refs" / "main").is_symlink()


def test_a_snapshot_dir_linked_outside_the_cache_is_refused(world, hub, tmp_path):
    rdir = hf_cache_dir() / "models--acme--evil-GGUF"
    _plant(rdir / "snapshots" / hub.repos[REPO].commit, tmp_path / "outside")
    p = pull(REPO)
    assert p.returncode == ExitCode.DOWNLOAD_ERROR, p.stderr
    one_error_line(p, "outside", "refusing")


def test_a_wrong_sha256_is_caught_and_the_bytes_deleted(world, hub):
    hub.headers[FILE] = {"X-Linked-Etag": '"' + "ab" * 32 + '"'}
    hub.listing_sha256[FILE] = "ab" * 32  # the same lie in both places
    p = pull(REPO)
    assert p.returncode == ExitCode.DOWNLOAD_ERROR, p.stderr
    one_error_line(p, "corrupt", "sha256")
    blobs = hf_cache_dir() / "models--acme--evil-GGUF" / "blobs"
    assert not blobs.exists() or list(blobs.iterdir()) == []


def test_listing_and_headers_announcing_different_hashes_are_refused(world, hub):
    hub.listing_sha256[FILE] = "cd" * 32
    p = pull(REPO)
    assert p.returncode == ExitCode.NETWORK_ERROR, p.stderr
    one_error_line(p, "two different sha256")


def test_a_file_without_an_announced_sha256_is_checked_by_size_with_a_warning(world, hub):
    hub.headers[FILE] = {"X-Linked-Etag": "", "ETag": '"5f3c1a2b-1a2b"'}  # nginx style: no hash
    p = pull(f"{REPO}/{FILE}")  # no listing either
    assert p.returncode == 0, p.stderr
    assert "announced no sha256" in p.stderr and "size only" in p.stderr
    path = Path(p.stdout.strip())
    assert sha256(path) == sha256(world)
    assert Path(os.path.realpath(path)).name == sha256(world)  # named by the hash we computed
    n = len(hub.gets(FILE))
    p = pull(f"{REPO}/{FILE}")  # found on disk by its snapshot link: not downloaded again
    assert p.returncode == 0 and "up to date" in p.stderr and len(hub.gets(FILE)) == n
    hub.headers[FILE]["X-Linked-Size"] = str(world.stat().st_size - 5)  # the size is checked
    p = pull(f"{REPO}/{FILE}")
    assert p.returncode == ExitCode.DOWNLOAD_ERROR and "corrupt" in p.stderr


def test_the_listing_sha256_checks_a_file_whose_headers_announce_none(world, hub):
    hub.headers[FILE] = {"X-Linked-Etag": "", "ETag": '"opaque-token"'}
    hub.corrupt.add(FILE)
    p = pull(REPO)
    assert p.returncode == ExitCode.DOWNLOAD_ERROR, p.stderr
    one_error_line(p, "corrupt", "sha256")
    assert "announced no sha256" not in p.stderr
