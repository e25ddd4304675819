"""The chat page's files: every one ships in the wheel (package data), the vendored libraries are
the versions their note says, each with its licence."""
from __future__ import annotations

import fnmatch
import re
import sys
from pathlib import Path

from chatglm3_cli.serve.page import HEADERS, web_files

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = None

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "chatglm3_cli" / "serve" / "web"


def test_every_page_file_is_package_data_and_served():
    files = sorted(str(p.relative_to(WEB)) for p in WEB.rglob("*") if p.is_file())
    assert "index.html" in files and "app.js" in files
    if tomllib is not None:
        data = tomllib.loads((ROOT / "pyproject.toml").read_text())
        patterns = data["tool"]["setuptools"]["package-data"]["chatglm3_cli.serve"]
        missing = [f for f in files if not any(fnmatch.fnmatch(f"web/{f}", pat) for pat in patterns)]
        assert not missing, f"not in pyproject's package-data, so not in the wheel: {missing}"
    served = set(web_files())
    assert {f for f in files if not f.startswith("vendor/licenses/")} <= served


def test_index_loads_only_files_that_ship_and_nothing_from_elsewhere():
    html = (WEB / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(r.startswith("/web/") or r == "data:," for r in refs), refs
    assert all(r[len("/web/"):] in web_files() for r in refs if r.startswith("/web/"))
    for js in WEB.glob("*.js"):  # the page's own modules import only each other
        for imp in re.findall(r'from "([^"]+)"', js.read_text()):
            assert imp.startswith("./") and (WEB / imp).is_file(), (js.name, imp)
    assert "script-src 'self'" in HEADERS["Content-Security-Policy"]


def test_vendored_versions_match_their_note_and_keep_their_licences():
    note = (WEB / "vendor" / "README.md").read_text()
    heads = {"marked.min.js": r"marked v([\d.]+)", "purify.min.js": r"DOMPurify ([\d.]+)",
             "highlight.min.js": r"Highlight\.js v([\d.]+)"}
    for name, pattern in heads.items():
        text = (WEB / "vendor" / name).read_text()
        version = re.search(pattern, text[:600]).group(1)  # the licence header at the top
        row = next(line for line in note.splitlines() if line.startswith(f"| `{name}`"))
        assert f"| {version} |" in row, (name, version, row)
    licences = {p.name for p in (WEB / "vendor" / "licenses").iterdir()}
    assert licences == {"marked-LICENSE.md", "dompurify-LICENSE", "highlightjs-LICENSE"}
