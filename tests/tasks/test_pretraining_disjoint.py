"""No task tests a shipped model on audio it was pretrained on.

For every model in ``upstreams/checkpoints/*/recipe.yaml`` the pretraining audio is what
``load_train_audio`` reads for the recipe's ``data.layouts``; for every task the test audio is
what ``examples(data_root, "test")`` returns, and for asv both sides of every trial."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import harness.audio
from harness.data.voxceleb import voxceleb1_path
from harness.registry import load_task, task_names
from harness.training.hubert import load_train_audio

CHECKPOINTS = Path(__file__).resolve().parents[2] / "upstreams" / "checkpoints"
RECIPES = sorted(CHECKPOINTS.glob("*/recipe.yaml"))


def _pretraining_audio(corpus: Path, layouts: list[str], monkeypatch) -> set[Path]:
    """The files ``load_train_audio`` reads (recorded instead of decoded)."""
    read: set[Path] = set()

    def record(path, *args, **kwargs):
        read.add(Path(path).resolve())
        return np.zeros(16000, np.float32)

    reader = sys.modules[load_train_audio.__module__]  # the module that calls read_audio, whatever its name
    assert reader.read_audio is harness.audio.read_audio
    with monkeypatch.context() as m:
        m.setattr(reader, "read_audio", record)
        load_train_audio(corpus, layouts, progress=False)
    return read


def _test_audio(corpus: Path) -> dict[str, set[Path]]:
    out = {}
    for name in task_names():
        cls = load_task(name)
        task = cls(cls.default_config())
        files = {Path(e.path).resolve() for e in task.examples(corpus, "test")}
        for enrol, test, _ in getattr(task, "trials", {}).get("test", []):
            files |= {voxceleb1_path(corpus, enrol).resolve(), voxceleb1_path(corpus, test).resolve()}
        out[name] = files
    return out


def test_no_shipped_model_was_pretrained_on_any_test_audio(tiny_corpus, monkeypatch):
    assert RECIPES, f"no shipped recipes under {CHECKPOINTS}"
    tests = _test_audio(tiny_corpus)
    assert "asv" in tests and all(tests.values())
    for recipe in RECIPES:
        layouts = yaml.safe_load(recipe.read_text())["data"]["layouts"]
        seen = _pretraining_audio(tiny_corpus, layouts, monkeypatch)
        assert seen, recipe
        for task, files in tests.items():
            heard = sorted(str(p.relative_to(tiny_corpus.resolve())) for p in files & seen)
            assert not heard, f"{recipe.parent.name} was pretrained on {len(heard)} {task} test files, e.g. {heard[0]}"


def test_the_check_catches_the_original_trial_list(tiny_corpus, monkeypatch):
    """veri_test.txt (kept for comparison) has trials on iden_split code 1, which pretraining
    reads: the check above would fail on it, so it is not vacuous."""
    from harness.data import read_voxceleb1_trials

    if not any(r for r in RECIPES if "voxceleb1" in yaml.safe_load(r.read_text())["data"]["layouts"]):
        pytest.skip("no shipped recipe pretrains on VoxCeleb1")
    layouts = ["librispeech", "fsc", "voxceleb1"]
    seen = _pretraining_audio(tiny_corpus, layouts, monkeypatch)
    old = {voxceleb1_path(tiny_corpus, x).resolve() for t in read_voxceleb1_trials(tiny_corpus, "veri_test.txt")
           for x in (t.enrol, t.test)}
    assert old & seen
