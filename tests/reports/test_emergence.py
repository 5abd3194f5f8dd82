"""Emergence fits: known sigmoids are recovered; intervals cover the truth; the autoencoder table."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.reports.emergence import (
    CurvePoint,
    autoencoder_rows,
    fit_sigmoid,
    fit_with_intervals,
    sigmoid,
)


@pytest.mark.parametrize("y0,plateau,t50,width", [(0.1, 0.6, 900.0, 200.0), (0.3, 0.65, 1800.0, 400.0),
                                                  (0.05, 0.4, 300.0, 60.0)])
def test_a_known_sigmoid_is_recovered(y0, plateau, t50, width):
    steps = np.array([0, 300, 600, 900, 1200, 1800, 2400, 3000, 3600], float)
    fit = fit_sigmoid(steps, sigmoid(steps, y0, plateau, t50, width))
    assert abs(fit.t50 - t50) <= 0.02 * 3600  # within 2% of the run
    assert abs(fit.plateau - plateau) <= 0.01 and abs(fit.y0 - y0) <= 0.01
    assert abs(fit.slope - (plateau - y0) / (4 * width)) <= 0.1 * (plateau - y0) / (4 * width)
    noisy = sigmoid(steps, y0, plateau, t50, width) + np.random.default_rng(0).normal(0, 0.005, len(steps))
    assert abs(fit_sigmoid(steps, noisy).t50 - t50) <= 0.05 * 3600


def test_bootstrap_intervals_cover_the_truth_on_synthetic_items():
    """95% intervals: over ten independent synthetic experiments, the true t50 falls inside at
    least eight of them (a miss or two is what 95% coverage predicts)."""
    covered = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        steps = [0, 600, 1200, 1800, 2400, 3600]
        truth = sigmoid(np.array(steps, float), 0.1, 0.7, 1200.0, 250.0)
        n = 3000
        points = []
        for s, p in zip(steps, truth):
            correct = (rng.random(n) < p).astype(float)
            points.append(CurvePoint(s, correct.mean(), correct, np.ones(n)))
        fit = fit_with_intervals(points, n_bootstrap=100)
        covered += fit["t50_low"] <= 1200 <= fit["t50_high"]
        assert fit["t50_high"] - fit["t50_low"] < 300
        assert fit["plateau_low"] - 0.03 <= 0.7 <= fit["plateau_high"] + 0.03
    assert covered >= 8
    with pytest.raises(HarnessError, match="step-0"):
        fit_sigmoid([600, 1200, 1800, 2400], [0.2, 0.4, 0.5, 0.5])


def test_the_autoencoder_table_reads_rebound_and_drop():
    mel = [{"checkpoint": "x/step_000600", "layer": str(l), "mean": str(v)} for l, v in enumerate([0.9, 0.6, 0.5, 0.7])]
    word = [{"checkpoint": "x/step_000600", "layer": str(l), "mean": str(v)} for l, v in enumerate([0.2, 0.5, 0.6, 0.4])]
    (row,) = autoencoder_rows(mel, word)
    assert row["step"] == 600 and row["top_layer"] == 3
    assert row["mel_rebound"] == pytest.approx(0.2) and row["word_drop"] == pytest.approx(0.2)
    assert row["mel_peak_layer"] == 0 and row["word_peak_layer"] == 2


def test_the_autoencoder_table_is_in_training_order_with_card_steps():
    """Summaries list checkpoints by name; a card without a step in its name (the final
    checkpoint) takes the step from its spec and comes last."""
    names = ["tiny_hubert_it1", "tiny_hubert_it1_step1200", "tiny_hubert_it1_step600"]
    rows = [{"checkpoint": n, "layer": str(l), "mean": "0.5"} for n in names for l in range(2)]
    got = autoencoder_rows(rows, rows)
    assert [r["checkpoint"] for r in got] == ["tiny_hubert_it1_step600", "tiny_hubert_it1_step1200", "tiny_hubert_it1"]
    assert [r["step"] for r in got] == [600, 1200, 3600]


def test_a_curve_that_rises_at_once_gets_its_half_rise_step():
    """A saturating curve (concave from step 0) puts the logistic midpoint at the lower bound;
    the reported t50 is the step where half of the measured gain is reached (800 ln 2 here)."""
    steps = [0, 600, 1200, 2400, 3600]
    truth = 0.15 + 0.35 * (1 - np.exp(-np.array(steps, float) / 800.0))
    n = 4000
    rng = np.random.default_rng(3)
    points = []
    for s, p in zip(steps, truth):
        correct = (rng.random(n) < p).astype(float)
        points.append(CurvePoint(s, correct.mean(), correct, np.ones(n)))
    fit = fit_with_intervals(points, n_bootstrap=50)
    assert fit["center"] < 200  # the logistic's midpoint says nothing here
    assert abs(fit["t50"] - 800 * np.log(2)) <= 150 and fit["t50_low"] > 200
    assert abs(fit["rise"] - 0.35 * (1 - np.exp(-4.5))) <= 0.03


def test_half_rise_equals_t50_when_the_curve_starts_at_its_floor():
    steps = np.array([0, 600, 1200, 1800, 2400, 3600], float)
    fit = fit_sigmoid(steps, sigmoid(steps, 0.1, 0.6, 1500.0, 200.0))
    assert abs(fit.half_rise - fit.t50) <= 5


def test_a_flat_or_falling_curve_is_marked_and_its_plateau_stays_near_the_data():
    """A level that does not rise gets no emergence step to read, and the fit may not invent a
    plateau far from every measured score (an unbounded fit gave 18.6 for an accuracy)."""
    steps = [0, 600, 1200, 2400, 3600]
    n, rng = 4000, np.random.default_rng(5)
    same = (rng.random(n) < 0.84).astype(float)  # a level training never touches: the same outcomes
    for truth, direction in ((None, "flat"), ([0.23, 0.20, 0.15, 0.10, 0.08], "falls"),
                             ([0.84, 0.845, 0.85, 0.852, 0.853], None)):
        points = []
        for i, s in enumerate(steps):
            correct = same if truth is None else (rng.random(n) < truth[i]).astype(float)
            points.append(CurvePoint(s, correct.mean(), correct, np.ones(n)))
        fit = fit_with_intervals(points, n_bootstrap=40)
        lo, hi = min(p.score for p in points), max(p.score for p in points)
        assert lo - (hi - lo) - 1e-6 - 1e-9 <= fit["plateau"] <= hi + (hi - lo) + 1e-6 + 1e-9
        if direction:
            assert fit["direction"] == direction, (truth, fit["direction"], fit["net_change_low"])
