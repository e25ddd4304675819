"""Fixtures shared by the serve tests: a real server on the scripted model (one per module)."""
from __future__ import annotations

import pytest

from .serverproc import Server


@pytest.fixture(scope="module")
def scripted(fixtures, tmp_path_factory):
    """`chatglm3 serve` on the scripted model (a known greedy answer), with the test API key."""
    server = Server(fixtures.path("scripted"), tmp_path_factory.mktemp("scripted"), "--parallel", "2",
                    "--ctx", "256")
    yield server
    assert server.stop() == 0, "".join(server.stderr)
