from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Never touch the user's ~/.cache/harness from tests."""
    home = tmp_path_factory.mktemp("harness-home")
    old = os.environ.get("HARNESS_HOME")
    os.environ["HARNESS_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("HARNESS_HOME", None)
    else:
        os.environ["HARNESS_HOME"] = old


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """The tiny profile, seed 0, built once per test session (~5 s)."""
    from harness.corpus.build import build

    out = tmp_path_factory.mktemp("corpus") / "tiny-seed0"
    build(out, "tiny", 0, progress=False)
    return out
