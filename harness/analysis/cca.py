"""CCA of every layer with a property, under the published layer-wise protocol.

Scoring follows :class:`CcaProtocol` (after Pasad, Shi and Livescu's layer-wise analysis,
ASRU 2021 / ICASSP 2023): 10 label-stratified folds, 3 trials each with its own dev and
test fold, CCA fitted on the other 8 for every pair of per-view epsilons (reference
convention: ridge epsilon x max|C| per view, flat dimensions dropped), the pair chosen on
dev, the held-out PWCCA (Morcos et al. 2018) weighted by the view with fewer neurons (the
property), mean over trials. SVCCA (Raghu et al. 2017) and the mean canonical correlation
are scored the same way. Failed fits are rows with an error, never dropped.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from harness.analysis.inputs import Inputs
from harness.analysis.measures import (
    CcaProblem,
    SimilarityError,
    SvdReduction,
    pwcca_score,
)
from harness.analysis.options import CcaOptions
from harness.analysis.plots import plot_heatmap, plot_lines
from harness.analysis.properties import Sampling
from harness.analysis.tables import Table
from harness.errors import HarnessError

CCA_MEASURES = ("pwcca", "svcca", "cca_mean")
RELATIVE_EPSILONS = (0.0, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1)
MEASURE_NAMES = {"pwcca": "PWCCA", "svcca": "SVCCA", "cca_mean": "mean CCA"}


@dataclass(frozen=True)
class CcaProtocol:
    """How a CCA score is measured (defaults: the published layer-wise protocol).

    Samples are split into ``folds`` label-stratified folds; each of ``trials`` trials takes
    a dev fold and a test fold (disjoint across trials) and fits on the rest, for every pair
    of epsilons (one per view) of the grid; the pair with the best dev score gives the
    trial's test score; the result is the mean over trials. Raises :class:`HarnessError`
    for an unknown measure or too few folds for the trials."""

    measure: str = "pwcca"  # pwcca | svcca | cca_mean
    convention: str = "reference"  # see harness.analysis.measures
    weights: str = "smaller"  # PWCCA weighting view: smaller (published), x (the layer) or y (the property)
    folds: int = 10
    trials: int = 3
    epsilons: tuple[float, ...] = (1e-11, 1e-9, 1e-7, 1e-5)
    keep: float = 0.99  # SVCCA: variance kept by each view's SVD

    def __post_init__(self) -> None:
        if self.measure not in CCA_MEASURES:
            raise HarnessError(f"unknown CCA measure {self.measure!r}; use {', '.join(CCA_MEASURES)}")
        if self.folds < 3:
            raise HarnessError("--folds must be at least 3 (one test, one dev and at least one training fold)")
        if 2 * self.trials > self.folds:
            raise HarnessError(f"--trials {self.trials} needs {2 * self.trials} folds (a dev and a test fold each); "
                               f"raise --folds or lower --trials")

    @property
    def pairs(self) -> list[tuple[float, float]]:
        """(epsilon of the layer, epsilon of the property): every pair for the reference
        convention (a separate epsilon per view), the diagonal for the relative one."""
        if self.convention == "reference":
            return [(a, b) for a in self.epsilons for b in self.epsilons]
        return [(e, e) for e in self.epsilons]

    @classmethod
    def of(cls, options: CcaOptions) -> CcaProtocol:
        """The protocol the options ask for; the epsilon grid defaults per convention."""
        epsilons = tuple(options.epsilons) if options.epsilons else (
            cls.epsilons if options.convention == "reference" else RELATIVE_EPSILONS)
        return cls(measure=options.measure, convention=options.convention, weights=options.weights,
                   folds=options.folds, trials=options.trials, epsilons=epsilons)


def stratified_folds(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id per sample ``[n]`` in ``0..k-1``, each label spread evenly over the folds."""
    fold = np.empty(len(labels), dtype=int)
    for lab in np.unique(labels):
        idx = np.nonzero(labels == lab)[0]
        idx = idx[rng.permutation(len(idx))]
        start = int(rng.integers(k))
        fold[idx] = (np.arange(len(idx)) + start) % k
    return fold


def _held_out_score(protocol: CcaProtocol, fit, x, y) -> float:
    if protocol.measure == "pwcca":
        return pwcca_score(fit, x, y, protocol.weights)
    u = (x - fit.mean_x) @ fit.wx
    v = (y - fit.mean_y) @ fit.wy
    return float(_column_correlations(u, v).mean())


def _column_correlations(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    u, v = u - u.mean(0), v - v.mean(0)
    den = torch.sqrt((u * u).sum(0) * (v * v).sum(0))
    return torch.where(den > 0, (u * v).sum(0) / den.clamp(min=1e-300), torch.zeros_like(den))


def cca_rows(upstream_name: str, checkpoint: str, layer_names: list[str], xs: list[np.ndarray], y: np.ndarray,
             labels: np.ndarray, prop: str, protocol: CcaProtocol, seed: int) -> list[dict]:
    """One row per (trial, layer, epsilon pair): dev and test score, or the error of a fit
    that failed (kept, never dropped). ``xs``: per layer ``[n, d]``; ``y``: the property
    ``[n, p]``; ``labels [n]`` stratify the folds. Folds and trials follow from ``seed``.
    Computes in float64 on the GPU when there is one."""
    rows = []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    y_all = torch.as_tensor(y, dtype=torch.float64, device=device)
    order = np.random.default_rng([seed, 99]).permutation(protocol.folds)
    for trial in range(protocol.trials):
        fold = stratified_folds(labels, protocol.folds, np.random.default_rng([seed, trial]))
        dev_f, test_f = int(order[2 * trial]), int(order[2 * trial + 1])
        masks = {name: torch.from_numpy(m).to(device) for name, m in
                 (("train", (fold != dev_f) & (fold != test_f)), ("dev", fold == dev_f), ("test", fold == test_f))}
        for l, x in enumerate(xs):
            x_all = torch.as_tensor(x, dtype=torch.float64, device=device)
            views = {name: (x_all[m], y_all[m]) for name, m in masks.items()}
            base = {"upstream": upstream_name, "checkpoint": checkpoint, "layer": l, "layer_name": layer_names[l],
                    "property": prop, "measure": protocol.measure, "trial": trial, "dev_fold": dev_f,
                    "test_fold": test_f}
            try:
                if protocol.measure == "svcca":  # each view reduced by an SVD fitted on the training fold
                    rx, ry = SvdReduction.fit(views["train"][0], protocol.keep), SvdReduction.fit(views["train"][1],
                                                                                                 protocol.keep)
                    views = {k: (rx(a), ry(b)) for k, (a, b) in views.items()}
                problem = CcaProblem(*views["train"], convention=protocol.convention)
            except SimilarityError as exc:
                rows += [{**base, "epsilon_x": ex, "epsilon_y": ey, "dev_score": float("nan"), "score": float("nan"),
                          "error": str(exc)} for ex, ey in protocol.pairs]
                continue
            for ex, ey in protocol.pairs:
                row = {**base, "epsilon_x": ex, "epsilon_y": ey}
                try:
                    fit = problem.fit(ex, ey)
                    dev = _held_out_score(protocol, fit, *views["dev"])
                    test = _held_out_score(protocol, fit, *views["test"])
                    rows.append({**row, "dev_score": dev, "score": test, "error": ""})
                except SimilarityError as exc:
                    rows.append({**row, "dev_score": float("nan"), "score": float("nan"), "error": str(exc)})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (checkpoint, layer, property): the test score at each trial's dev-chosen epsilon
    pair, mean and std over trials; the most chosen pair; how many fits failed."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["checkpoint"], r["layer"], r["property"], r["trial"])].append(r)
    per = defaultdict(list)
    failed = Counter()
    first_error: dict = {}
    for (ck, layer, prop, _), rs in groups.items():
        ok = [r for r in rs if not r["error"]]
        failed[(ck, layer, prop)] += len(rs) - len(ok)
        for r in rs:
            if r["error"]:
                first_error.setdefault((ck, layer, prop), f"epsilon {r['epsilon_x']}/{r['epsilon_y']}: {r['error']}")
        if ok:  # ties go to the larger epsilons (the more regularised fit)
            best = max(ok, key=lambda r: (r["dev_score"], r["epsilon_x"], r["epsilon_y"]))
            per[(ck, layer, prop)].append((best["score"], (best["epsilon_x"], best["epsilon_y"])))
    out = []
    for key in sorted(set(per) | set(failed)):
        vals = [v for v, _ in per.get(key, [])]
        eps = Counter(e for _, e in per.get(key, [])).most_common(1)
        out.append({"checkpoint": key[0], "layer": key[1], "property": key[2],
                    "mean": float(np.mean(vals)) if vals else float("nan"),
                    "std": float(np.std(vals)) if vals else float("nan"), "n": len(vals),
                    "epsilon": f"{eps[0][0][0]:g}/{eps[0][0][1]:g}" if eps else None, "failed_fits": failed[key],
                    "first_error": first_error.get(key, "")})
    return out


def check_sample_counts(xs: list[np.ndarray], y: np.ndarray, prop: str, folds: int) -> None:
    """Refuse (:class:`HarnessError`) samples too few for CCA: a training split (``folds - 2``
    folds) no larger than the widest view, or held-out folds no larger than the number of
    canonical directions."""
    n_train = len(y) * (folds - 2) // folds
    widest = max(max(x.shape[1] for x in xs), y.shape[1])
    if n_train <= widest:
        raise HarnessError(f"{len(y)} {prop} samples ({n_train} per training split) for up to {widest} dimensions: "
                           "CCA needs more samples than dimensions; use more utterances (--limit, --split) "
                           "or fewer property classes (--top-words)")
    k = min(min(x.shape[1] for x in xs), y.shape[1])
    if len(y) // folds <= k:
        raise HarnessError(f"{len(y)} {prop} samples give held-out folds of ~{len(y) // folds}, not more than the "
                           f"{k} canonical directions; use more utterances, fewer --folds or fewer --top-words")


def summary_lines(summary: list[dict], name: str) -> list[str]:
    """The summary as a terminal table, with a line on failed fits if any."""
    lines = [f"{'checkpoint':<40}{'layer':>6}{name:>9}{'std':>8}{'eps (layer/prop)':>18}{'failed':>8}"]
    for r in summary:
        lines.append(f"{str(r['checkpoint'])[-40:]:<40}{r['layer']:>6}{r['mean']:>9.4f}{r['std']:>8.4f}"
                     f"{str(r['epsilon']):>18}{r['failed_fits']:>8}")
    failures = [r for r in summary if r["failed_fits"]]
    if failures:
        lines.append(f"{sum(r['failed_fits'] for r in failures)} fits failed (rows kept in the CSV with their error); "
                     f"first: layer {failures[0]['layer']}, {failures[0]['first_error']}")
    return lines


def cca_table(inputs: Inputs, options: CcaOptions) -> Table:
    """Every layer of ``options.upstream`` (or of each of ``options.checkpoints``) against
    ``options.prop`` under :class:`CcaProtocol`: rows per (trial, layer, epsilon pair), the
    summary per layer (``.summary.csv``), a line plot and, for several checkpoints, a
    checkpoint x layer grid (``.grid.png``). Raises :class:`HarnessError` for too few samples;
    a table whose every fit failed carries the first error as its failure."""
    protocol = CcaProtocol.of(options)
    specs = list(options.checkpoints or [options.upstream])
    sampling = Sampling(options.max_samples, options.top_words, options.per_label, options.seed)
    rows = []
    for spec in specs:
        model = inputs.model(spec, options.random_init)
        xs, y, labels = inputs.properties(model, options.prop, sampling)
        check_sample_counts(xs, y, options.prop, protocol.folds)
        if inputs.progress:
            print(f"{spec}: {len(y)} {options.prop} samples, {y.shape[1]} property dims, {len(xs)} layers, "
                  f"{protocol.trials} trials x {len(protocol.pairs)} epsilon pairs", file=sys.stderr)
        rows += cca_rows(spec + (" (random init)" if options.random_init else ""), spec, model.info.layer_names, xs,
                         y, labels, options.prop, protocol, options.seed)
    summary = summarise(rows)
    name = MEASURE_NAMES[protocol.measure]
    title = f"{name} with {options.prop}: {', '.join(specs) if len(specs) == 1 else f'{len(specs)} checkpoints'}"
    pictures = {".png": partial(plot_lines, summary, title, ylabel=f"{name} (held-out folds)")}
    if len(specs) > 1:
        pictures[".grid.png"] = partial(_plot_grid, summary, specs, f"{name} with {options.prop}")
    failure = f"no CCA fit succeeded: {summary[0]['first_error']}" if all(r["n"] == 0 for r in summary) else ""
    return Table(rows, companions={".summary.csv": summary}, pictures=pictures, lines=summary_lines(summary, name),
                 listed=[("rows", ""), ("summary", ".summary.csv"), ("plot", ".png")], failure=failure)


def _plot_grid(summary: list[dict], specs: list[str], title: str, path: Path) -> None:
    """Checkpoint x layer heatmap of the summary's means."""
    layers = sorted({r["layer"] for r in summary})
    grid = np.full((len(specs), len(layers)), np.nan)
    for r in summary:
        grid[specs.index(r["checkpoint"]), layers.index(r["layer"])] = r["mean"]
    plot_heatmap(grid, [str(l) for l in layers], [Path(s).name for s in specs], title, path, "layer", "checkpoint")
