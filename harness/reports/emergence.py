"""When each level emerges during pretraining: sigmoid fits of probe scores across checkpoints.

For one checkpoint series (an objective), one task (a level) and one layer, the test metric at
pretraining steps 0 = s_0 < s_1 < ... < s_k (step 0: the random-weights model) is fitted with
a four-parameter logistic

    y(s) = y0 + (plateau - y0) / (1 + exp(-(s - t50) / width))

so three numbers say when and how a level appears: ``t50`` (reported as the step where the
fitted curve is halfway from its step-0 value to its plateau, which is the logistic midpoint
when the curve starts near its lower asymptote and stays meaningful when it rises at once),
``slope`` = (plateau - y0) / (4 width) (the rise per step at t50) and ``plateau``. Intervals come from a paired bootstrap over test items: the same resampled
utterances score every checkpoint, the curve is refitted on each replicate. 'Early', 'late'
and 'in parallel' then become comparisons of t50 across levels and layers.

The autoencoder measure (:func:`autoencoder_rows`) compares, per checkpoint, the top layers'
CCA with the acoustic input (mel) and with words: how far the top layer drifts back toward
the input (mel rebound) and away from words (word drop), and where each peaks.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.errors import HarnessError
from harness.reports.figures import save_png

N_BOOTSTRAP = 200
BOOTSTRAP_SEED = 7


def sigmoid(steps: np.ndarray, y0: float, plateau: float, t50: float, width: float) -> np.ndarray:
    """The four-parameter logistic ``y0 + (plateau - y0) / (1 + exp(-(steps - t50) / width))``."""
    return y0 + (plateau - y0) / (1.0 + np.exp(-(np.asarray(steps, float) - t50) / width))


@dataclass
class SigmoidFit:
    """A fitted logistic of a test metric over pretraining steps: its parameters and the emergence step ``t50``."""
    t50: float
    width: float
    plateau: float
    y0: float
    rmse: float

    @property
    def slope(self) -> float:
        """Rise per step at the half-height point."""
        return (self.plateau - self.y0) / (4.0 * self.width)

    @property
    def start(self) -> float:
        """The fitted score at step 0 (the random-weights model)."""
        return float(sigmoid(0.0, self.y0, self.plateau, self.t50, self.width))

    @property
    def half_rise(self) -> float:
        """The step where the fitted curve is halfway from its step-0 value to its plateau.
        Equal to ``t50`` when the curve starts near its lower asymptote; for a curve that
        rises at once and saturates (concave from step 0), ``t50`` sits at or below 0 while
        this stays the step that half of the measured gain needs."""
        a = 1.0 / (1.0 + np.exp(self.t50 / self.width))  # logistic fraction reached at step 0
        f = (a + 1.0) / 2.0
        return float(self.t50 + self.width * np.log(f / (1.0 - f)))


def fit_sigmoid(steps: Sequence[float], values: Sequence[float]) -> SigmoidFit:
    """Least-squares four-parameter logistic through the points (``steps`` must include 0, the
    random-weights model). t50 is kept within [0, 2 x the last step], the width within [1% of
    the last step, the last step]; a few starting points guard against local minima."""
    from scipy.optimize import least_squares

    steps, values = np.asarray(steps, float), np.asarray(values, float)
    if len(steps) < 4 or 0.0 not in steps:
        raise HarnessError("a sigmoid fit needs the step-0 (random weights) value and at least three checkpoints")
    last = float(steps.max())
    spread = float(values.max() - values.min()) + 1e-6
    start, end = float(values[steps == 0][0]), float(values[steps == last][0])
    best = None
    for t_init in (0.1 * last, 0.25 * last, 0.5 * last, last):
        p0 = [start, end, t_init, 0.15 * last]
        # both asymptotes within one spread of the measured scores: a curve that is flat at its
        # end must not be extrapolated to a plateau no checkpoint came near
        lo = [float(values.min()) - spread, float(values.min()) - spread, 0.0, 0.01 * last]
        hi = [float(values.max()) + spread, float(values.max()) + spread, 2.0 * last, last]
        res = least_squares(lambda p: sigmoid(steps, *p) - values, np.clip(p0, lo, hi), bounds=(lo, hi))
        if best is None or res.cost < best.cost:
            best = res
    y0, plateau, t50, width = best.x
    rmse = float(np.sqrt(np.mean(best.fun ** 2)))
    return SigmoidFit(float(t50), float(width), float(plateau), float(y0), rmse)


@dataclass
class CurvePoint:
    """One (checkpoint step, layer) point of a learning trajectory with its test score."""
    step: int
    score: float
    numerator: np.ndarray  # per test item (the bootstrap resamples these, paired across steps)
    denominator: np.ndarray


def fit_with_intervals(points: Sequence[CurvePoint], n_bootstrap: int = N_BOOTSTRAP,
                       seed: int = BOOTSTRAP_SEED) -> dict:
    """The fit and 95% bootstrap intervals of t50, slope and plateau."""
    points = sorted(points, key=lambda p: p.step)
    steps = np.array([p.step for p in points], float)
    fit = fit_sigmoid(steps, [p.score for p in points])
    n = len(points[0].numerator)
    rng = np.random.default_rng(seed)
    draws = {"t50": [], "slope": [], "plateau": [], "rise": [], "net_change": []}
    for _ in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        ys = [p.numerator[idx].sum() / max(p.denominator[idx].sum(), 1e-12) for p in points]
        f = fit_sigmoid(steps, ys)
        draws["t50"].append(f.half_rise)
        draws["slope"].append(f.slope)
        draws["plateau"].append(f.plateau)
        draws["rise"].append(f.plateau - f.start)
        draws["net_change"].append(ys[-1] - ys[0])
    # t50 is reported as the half-rise step from the measured start (see SigmoidFit.half_rise);
    # the logistic's own midpoint is kept as `center`
    out = {"t50": fit.half_rise, "center": fit.t50, "slope": fit.slope, "plateau": fit.plateau,
           "start": fit.start, "rise": fit.plateau - fit.start, "y0": fit.y0, "rmse": fit.rmse,
           "net_change": points[-1].score - points[0].score,
           "checkpoints": len(points) - 1}
    for key, vals in draws.items():
        out[f"{key}_low"], out[f"{key}_high"] = (float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5)))
    # t50 describes an emergence only where the level rose beyond the noise: judged on the
    # measured scores (last checkpoint vs step 0, paired over items), not on the fit, which
    # can chase the noise of five points
    out["direction"] = ("rises" if out["net_change_low"] > 0 else "falls" if out["net_change_high"] < 0
                        else "flat")
    return out


_STEP = re.compile(r"step_?(\d+)")


def checkpoint_step(source: str, final_steps: int | None = None) -> int | None:
    """The pretraining step of a checkpoint from its folder name (``step_001200``); None if unknown."""
    m = _STEP.search(source)
    return int(m.group(1)) if m else final_steps


def series_points(results: Path, task: str) -> dict[tuple[str, int], list[CurvePoint]]:
    """From the records of a checkpoint series (plus its random-weights run): per (task, layer)
    the curve points, step 0 being the random-weights model."""
    from harness.reports.ranking import load_records

    per: dict[tuple[str, int], list[CurvePoint]] = defaultdict(list)
    seen: set[tuple] = set()
    for r in load_records(results, task=task):
        rec = r.record
        if not rec.is_single_layer:
            continue
        step = 0 if rec.upstream.random_init else checkpoint_step(rec.upstream.source)
        if step is None:
            continue
        key = (rec.task, int(rec.layer))
        if (key, step) in seen:
            continue
        seen.add((key, step))
        num, den = np.asarray(r.outcomes.numerator, float), np.asarray(r.outcomes.denominator, float)
        if not rec.metric.higher_is_better and r.outcomes.kind == "error_rate":
            num = den - num  # error rates become 'correct' shares, so every curve rises
        per[key].append(CurvePoint(step, float(num.sum() / max(den.sum(), 1e-12)), num, den))
    return per


def emergence_rows(series: dict[str, Path], tasks: Sequence[str], n_bootstrap: int = N_BOOTSTRAP) -> list[dict]:
    """Tidy rows: one per (objective, task, layer) with its fit and intervals."""
    rows = []
    for objective, folder in series.items():
        for task in tasks:
            for (t, layer), points in sorted(series_points(Path(folder), task).items()):
                if len(points) < 3 or 0 not in {p.step for p in points}:
                    continue
                fit = fit_with_intervals(points, n_bootstrap)
                rows.append({"objective": objective, "task": t, "layer": layer, **fit,
                             "steps": " ".join(str(p.step) for p in sorted(points, key=lambda p: p.step)),
                             "scores": " ".join(f"{p.score:.4f}" for p in sorted(points, key=lambda p: p.step))})
    if not rows:
        raise HarnessError("no checkpoint series with a random-weights run and two or more checkpoints was found")
    return rows


def plot_emergence(rows: list[dict], path: Path) -> None:
    """One panel per level: t50 (with its 95% interval) per layer, objectives overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    objectives = sorted({r["objective"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.2), dpi=100, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for k, obj in enumerate(objectives):
            sel = sorted((r for r in rows if r["task"] == task and r["objective"] == obj
                          and r.get("direction", "rises") == "rises"), key=lambda r: r["layer"])
            if not sel:
                continue
            xs = np.array([r["layer"] for r in sel]) + (k - (len(objectives) - 1) / 2) * 0.15
            t = np.array([r["t50"] for r in sel])
            err = np.array([[r["t50"] - r["t50_low"] for r in sel], [r["t50_high"] - r["t50"] for r in sel]])
            ax.errorbar(xs, t, yerr=np.clip(err, 0, None), fmt="o-", capsize=3, markersize=4, label=obj)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("half-rise step (t50, 95% CI); rising curves only")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def _step_of(checkpoint: str) -> int | None:
    """A checkpoint's step from its name, or from its card's spec (``tiny_hubert_it1`` is
    ``hf:@tiny_hubert/it1/step_003600``)."""
    from harness.registry import cards

    step = checkpoint_step(checkpoint)
    card = cards().get(checkpoint)
    return step if step is not None or card is None else checkpoint_step(card.spec)


def autoencoder_rows(mel_summary: list[dict], word_summary: list[dict]) -> list[dict]:
    """Per checkpoint: the top layer's CCA with mel and with words, how far the top layer
    rebounds toward the input (mel at the top minus its minimum over layers) and drops from
    words (the word maximum minus its value at the top), and the layers where each peaks."""
    def by_checkpoint(rows):
        out = defaultdict(dict)
        for r in rows:
            out[r["checkpoint"]][int(r["layer"])] = float(r["mean"])
        return out

    mel, word = by_checkpoint(mel_summary), by_checkpoint(word_summary)
    steps = {ck: _step_of(ck) for ck in mel}
    rows = []
    for ck in sorted(mel, key=lambda c: (steps[c] is None, steps[c] or 0, c)):
        if ck not in word:
            continue
        m, w = mel[ck], word[ck]
        top = max(m)
        rows.append({"checkpoint": ck, "step": steps[ck], "top_layer": top, "mel_top": m[top],
                     "word_top": w[top], "mel_rebound": m[top] - min(m.values()),
                     "word_drop": max(w.values()) - w[top], "mel_peak_layer": max(m, key=m.get),
                     "word_peak_layer": max(w, key=w.get), "mel_over_word_top": m[top] / w[top] if w[top] else np.nan})
    return rows
