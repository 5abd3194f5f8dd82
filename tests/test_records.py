"""The record schema: round trips, outcomes, and every committed record is self-consistent."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from harness.probing.identity import finished_paths
from harness.records import (
    MetricSpec,
    Outcomes,
    ResultRecord,
    UpstreamRef,
    find_outcomes,
    is_record_file,
    outcomes_from_bytes,
    outcomes_path,
    outcomes_to_bytes,
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


def _legacy(path: Path, outcomes: Outcomes) -> Path:
    """Turn a record's outcomes into the JSON form results written before the archive hold."""
    outcomes_path(path).unlink()
    legacy = path.with_name(path.name[: -len(".json")] + ".outcomes.json")
    legacy.write_text(json.dumps(outcomes.to_json()))
    return legacy


def test_a_record_and_its_outcomes_round_trip(tmp_path):
    rec = _record(dev_curve=[{"step": 10, "accuracy": 0.5}], timing={"train_s": 1.0})
    out = Outcomes.accuracy(["a", "b"], [1, 0], [2, 2])
    path = write_record(tmp_path, rec, out)
    assert path == record_path(tmp_path, rec) and path.parent.name == rec.setting_id
    assert read_record(path) == rec and read_outcomes(path) == out and out.value == 0.25
    assert outcomes_path(path).name == "layer_1_seed0.outcomes.npz" == find_outcomes(path).name
    with np.load(outcomes_path(path), allow_pickle=False) as z:  # plain arrays: no pickle needed to read it
        assert json.loads(z["meta"].tobytes())["ids"] == ["a", "b"] and z["column0"].dtype == np.uint8
    assert sorted(p.name for p in path.parent.iterdir()) == ["layer_1_seed0.json", "layer_1_seed0.outcomes.npz"]
    err = Outcomes.error_rate(["a"], [3], [10], word_errors=[1])
    assert Outcomes.from_json(err.to_json()) == err and err.value == 0.3
    with pytest.raises(ValueError, match="unequal length"):
        Outcomes.accuracy(["a", "b"], [1])


AWKWARD = [
    Outcomes.accuracy([], [], []),  # an empty split
    # non-ASCII, empty, control characters, and a surrogate-escaped byte of an undecodable file name
    Outcomes.accuracy(["ü/ñ", "日本語", "", "tab\tnew\nline", "nul\x00", " ", "bad\udcff"], [1, 0, 1, 1, 0, 1, 1]),
    Outcomes.accuracy(["a", "b"], [37, 0], [412, 3]),  # frame counts
    Outcomes.accuracy(["a", "b"], [0.25, 1], [1.5, 2]),  # fractional weights
    Outcomes.error_rate(["a", "b", "c"], [3, 0, 2 ** 40], [10, 0, 2 ** 41], word_errors=[1, 0, 5],
                        word_lengths=[4, 0, 9], note=["x", None, [1, "é"]]),
    Outcomes.verification(["a|b", "c|d", "e|f"], [0.5, -1e-300, 3.25], [1, 0, 1]),
    Outcomes.error_rate(["a"], [-3], [70000]),
]


@pytest.mark.parametrize("outcomes", AWKWARD, ids=lambda o: f"{o.kind}-{len(o.ids)}")
def test_outcomes_round_trip_in_both_forms(tmp_path, outcomes):
    data = outcomes_to_bytes(outcomes)
    back = outcomes_from_bytes(data)
    assert back == outcomes and outcomes_to_bytes(back) == data  # exact, and the same bytes every time
    if all(type(v) is int for v in outcomes.numerator):  # integer counts stay Python ints
        assert all(type(v) is int for v in back.numerator)
    path = write_record(tmp_path, _record(), outcomes)
    assert read_outcomes(path) == outcomes
    _legacy(path, outcomes)
    assert find_outcomes(path).suffix == ".json" and read_outcomes(path) == outcomes


def test_nan_scores_survive_the_archive():
    """A verification score can be NaN (a collapsed embedding); it must come back as NaN, not fail."""
    back = outcomes_from_bytes(outcomes_to_bytes(Outcomes.verification(["a|b", "c|d"], [float("nan"), 0.5], [1, 0])))
    assert math.isnan(back.numerator[0]) and back.numerator[1] == 0.5 and back.denominator == [1, 0]


def test_unreadable_outcomes_say_which_file(tmp_path):
    path = write_record(tmp_path, _record(), Outcomes.accuracy(["a"], [1]))
    outcomes_path(path).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="layer_1_seed0.outcomes.npz"):
        read_outcomes(path)
    with zipfile.ZipFile(outcomes_path(path), "w") as z:  # a zip, but not ours
        z.writestr("other.npy", b"")
    with pytest.raises(ValueError, match="not an outcomes archive"):
        read_outcomes(path)
    outcomes_path(path).unlink()
    with pytest.raises(FileNotFoundError):
        read_outcomes(path)


def test_rewriting_a_legacy_record_leaves_one_outcomes_file(tmp_path):
    out = Outcomes.accuracy(["a"], [1])
    path = write_record(tmp_path, _record(), out)
    _legacy(path, out)
    write_record(tmp_path, _record(), Outcomes.accuracy(["a"], [0]))
    assert sorted(p.name for p in path.parent.iterdir()) == ["layer_1_seed0.json", "layer_1_seed0.outcomes.npz"]
    assert read_outcomes(path).numerator == [0]


def test_a_run_with_outcomes_in_either_form_is_finished(tmp_path):
    rec = _record()
    out = Outcomes.accuracy(["a"], [1])
    path = write_record(tmp_path, rec, out)
    def finished():
        return finished_paths(tmp_path / rec.upstream.folder / rec.task, [rec.probe], rec.seed, rec.run_key, rec.steps)

    assert finished() == [path]
    _legacy(path, out)
    assert finished() == [path]
    find_outcomes(path).unlink()  # a record without outcomes is not a finished run
    assert finished() is None


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


def test_the_upgrade_script_converts_an_old_results_folder(tmp_path):
    """scripts/upgrade_outcomes.py: every JSON outcomes file becomes an archive reading back equal
    (NaN included); a second run finds nothing; a broken file is one line and a non-zero exit."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "upgrade_outcomes.py"
    kept = {}
    for i, out in enumerate([Outcomes.accuracy(["a", "é"], [1, 0], [3, 2]),
                             Outcomes.verification(["a|b", "c|d"], [float("nan"), 0.25], [1, 0]),
                             Outcomes.error_rate(["x"], [2], [7], word_errors=[1], word_lengths=[3])]):
        path = write_record(tmp_path / "res", _record(probe=f"layer_{i}", layer=i), out)
        kept[path] = out.to_json()
        _legacy(path, out)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "res")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "3 outcomes files converted" in run.stdout, run.stderr
    assert not list((tmp_path / "res").rglob("*.outcomes.json"))
    for path, data in kept.items():
        assert json.dumps(read_outcomes(path).to_json()) == json.dumps(data)  # NaN prints as NaN on both sides
    again = subprocess.run([sys.executable, str(script), str(tmp_path / "res")], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "0 outcomes files converted" in again.stdout
    broken = next(iter(kept)).with_name("layer_9_seed0.outcomes.json")
    broken.write_text("{not json")
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "res")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "layer_9_seed0.outcomes.json" in bad.stderr
    assert broken.exists()
