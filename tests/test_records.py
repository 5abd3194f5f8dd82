"""The record schema: round trips, outcomes, and every committed record is self-consistent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.records import (
    MetricSpec,
    Outcomes,
    ResultRecord,
    UpstreamRef,
    is_record_file,
    outcomes_path,
    portable_root,
    read_outcomes,
    read_record,
    record_path,
    write_record,
)

RESULTS = Path(__file__).resolve().parent.parent / "results"


def _record(**kw) -> ResultRecord:
    base = dict(upstream=UpstreamRef("tiny", "hf", "@x", "ab" * 32, False, None, ("cnn", "t1"), 320), task="phone",
                metric=MetricSpec("accuracy", True), probe="layer_1", layer=1, layers=[1], layer_weights=None,
                dev={"accuracy": 0.5}, test={"accuracy": 0.25}, best_step=10, steps=20, seed=0,
                config={"lr": 0.1}, corpus={"kind": "harness-embedded"}, run_key="k", test_utterances=4,
                versions={"harness": "0.1.0"})
    base.update(kw)
    return ResultRecord(**base)


def test_a_record_and_its_outcomes_round_trip(tmp_path):
    rec = _record(dev_curve=[{"step": 10, "accuracy": 0.5}], timing={"train_s": 1.0})
    out = Outcomes.accuracy(["a", "b"], [1, 0], [2, 2])
    path = write_record(tmp_path, rec, out)
    assert path == record_path(tmp_path, rec) and path.parent.name == rec.setting_id
    assert read_record(path) == rec and read_outcomes(path) == out and out.value == 0.25
    assert json.loads(outcomes_path(path).read_text()) == {"ids": ["a", "b"], "correct": [1, 0], "total": [2, 2]}
    err = Outcomes.error_rate(["a"], [3], [10], word_errors=[1])
    assert Outcomes.from_json(err.to_json()) == err and err.value == 0.3
    with pytest.raises(ValueError, match="unequal length"):
        Outcomes.accuracy(["a", "b"], [1])


def test_setting_ids_separate_what_was_measured_differently():
    a = _record()
    assert a.setting_id == _record(seed=3, probe="weighted", layer="weighted").setting_id  # same setting
    for changed in (_record(steps=21), _record(config={"lr": 0.2}), _record(corpus={"kind": "external"}),
                    _record(world_size=2), _record(versions={"harness": "0.2.0"})):
        assert changed.setting_id != a.setting_id
    assert a.upstream.label == "tiny" and _record(upstream=UpstreamRef("tiny", random_init=True)).upstream.label == \
        "tiny (random init)"


def test_paths_under_the_harness_home_are_written_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    assert portable_root(tmp_path / "home" / "corpus" / "default-seed0") == "$HARNESS_HOME/corpus/default-seed0"
    assert portable_root(tmp_path / "elsewhere") == str((tmp_path / "elsewhere").resolve())


def test_every_committed_record_is_consistent():
    """Each committed record sits in its setting's folder, is current, and its outcomes give its test score."""
    files = [p for p in RESULTS.rglob("*.json") if is_record_file(p)]
    records = [(p, read_record(p)) for p in files]
    records = [(p, r) for p, r in records if r is not None]
    assert len(records) > 100
    for path, rec in records:
        assert path.parent.name == rec.setting_id, path
        assert path.name == f"{rec.probe}_seed{rec.seed}.json"
        assert rec.format == 2 and rec.run_key and rec.data_root.startswith("$HARNESS_HOME/"), path
        outcomes = read_outcomes(path)
        if rec.task == "asv":  # one outcome per trial ("enrol|test"), over the test utterances
            used = {u for trial in outcomes.ids for u in trial.split("|")}
            assert len(used) == rec.test_utterances, path
        else:
            assert len(outcomes.ids) == rec.test_utterances
        assert outcomes.value == pytest.approx(rec.score, abs=1e-12), path
