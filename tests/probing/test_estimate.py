"""``harness plan``: rates with two significant figures, a training-time estimate from timed
steps of the real probes, and the device each was measured on."""

from __future__ import annotations

import re

import pytest

from harness.features.planning import human_seconds
from harness.probing.engine import RunRequest
from harness.probing.estimate import TrainingTiming, plan_run


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _significant_figures(number: str) -> int:
    digits = number.replace(",", "").replace(".", "").lstrip("0")
    return len(digits.rstrip("0")) if "." not in number else len(digits)


@pytest.mark.parametrize("cache", ["disk", "none"])
def test_plan_measures_extraction_and_training_on_the_runs_device(tiny_corpus, home, tmp_path, cache):
    req = RunRequest(upstream="mfcc", task="phone", layer="0", data_root=tiny_corpus, out=tmp_path / "o",
                     max_steps=40, overrides={"batch_size": 4, "val_interval": 10}, cache=cache, progress=False,
                     protocol="quick")
    est = plan_run(req)
    text = est.format()
    t = est.training
    assert t is not None and t.steps == 40 and t.validations == 4 and t.batch == 4 and t.timed_steps >= 3
    assert t.step_s > 0 and t.eval_utt_s > 0 and t.total_s > t.train_s
    assert (t.upstream_step_s > 0) == (cache == "none")  # streamed steps pay the forward pass
    rate = re.search(r"(extraction|upstream forward): ([\d.,]+) s of audio per s, measured on a sample on cpu \(",
                     text)
    assert rate and _significant_figures(rate.group(2)) <= 2, text
    line = next(l for l in text.splitlines() if l.startswith("training:"))
    assert "on cpu (" in line and "for 40 steps" in line and "in all about" in line
    per_step = re.search(r"training: ([\d.,]+) s per step of 1 probe", line)
    assert per_step and _significant_figures(per_step.group(1)) <= 2
    assert not (home / "features").exists() and not (home / "runs").exists()  # measured, nothing written


def test_training_time_adds_steps_validations_and_scoring():
    t = TrainingTiming(step_s=0.5, upstream_step_s=0.25, eval_utt_s=0.01, upstream_eval_s=3.0, steps=120,
                       validations=4, dev_utterances=200, test_utterances=100, probes=3, batch=8, timed_steps=5,
                       device="cpu (2 threads), 32-true")
    assert t.train_s == 90.0
    assert t.eval_s == pytest.approx((5 * 200 + 100) * 0.01 + 3.0)
    assert "about 1.5 min for 120 steps" in t.format() and "+ 0.25 s of upstream forward" in t.format()


def test_human_seconds_has_two_significant_figures():
    assert [human_seconds(s) for s in (44.6, 300.0, 6264.0, 2_145_600.0)] == ["45 s", "5.0 min", "1.7 h", "600 h"]
