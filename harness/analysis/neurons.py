"""Neuron-level analyses: similarity of layers neuron by neuron, and which neurons carry a property.

- ``neuron_rows``: for every layer pair of two models (or one model with itself), MaxCorr,
  MinCorr and LinReg in both directions (Wu et al. 2020; see :mod:`harness.analysis.measures`),
  from frames paired by time and accumulated utterance by utterance.
- ``rank_neurons``: a layer's neurons ranked for a frame-level property (phone identity) by
  the weight mass an elastic-net softmax probe puts on them (as NeuroX ranks neurons), with
  the check that makes a ranking worth reading: a probe on the top-k neurons against one on
  k random neurons and on the bottom k, scored on held-out frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from harness.analysis.inputs import Inputs, Model
from harness.analysis.measures import NeuronStats, neuron_similarity
from harness.analysis.options import NeuronOptions
from harness.analysis.plots import plot_heatmap, plot_ranking_check
from harness.analysis.tables import Table
from harness.errors import HarnessError


def neuron_rows(name_a: str, names_a: list[str], a: list[np.ndarray], name_b: str, names_b: list[str],
                b: list[np.ndarray], chunk: int = 4096) -> list[dict]:
    """One row per (layer of A, layer of B): neuron measures in both directions. ``a[l]``,
    ``b[l]``: frames paired by time ``[n, d]``; accumulated ``chunk`` frames at a time."""
    rows = []
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            stats = NeuronStats()
            for start in range(0, len(x), chunk):
                stats.update(x[start:start + chunk], y[start:start + chunk])
            ab, ba = neuron_similarity(stats)
            rows.append({"model_a": name_a, "layer_a": i, "layer_a_name": names_a[i], "model_b": name_b,
                         "layer_b": j, "layer_b_name": names_b[j],
                         "maxcorr_a": ab.maxcorr, "mincorr_a": ab.mincorr, "linreg_a": ab.linreg,
                         "maxcorr_b": ba.maxcorr, "mincorr_b": ba.mincorr, "linreg_b": ba.linreg})
    return rows


@dataclass
class NeuronRanking:
    """Per neuron of one layer: its best-matching neuron in the other model and their correlation, ranked."""
    order: list[int]  # neurons, most important first
    mass: list[float]  # weight mass per neuron (in ``order``)
    ablation: list[dict]  # {"k", "selection", "accuracy"} on held-out frames


def _softmax_probe(x: torch.Tensor, y: torch.Tensor, classes: int, l1: float, l2: float, steps: int,
                   seed: int) -> torch.nn.Linear:
    """Softmax regression with an elastic-net penalty, full-batch L-BFGS-free Adam (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        probe.weight.copy_(0.01 * torch.randn(probe.weight.shape, generator=g))
        probe.bias.zero_()
    opt = torch.optim.Adam(probe.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        w = probe.weight
        loss = torch.nn.functional.cross_entropy(probe(x), y) + l1 * w.abs().sum() / len(w) + l2 * (w * w).sum() / len(w)
        loss.backward()
        opt.step()
    return probe


def _accuracy(probe: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((probe(x).argmax(1) == y).float().mean())


def rank_neurons(x: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (8, 32, 128), l1: float = 1e-3,
                 l2: float = 1e-3, steps: int = 300, seed: int = 0) -> NeuronRanking:
    """Rank the neurons of ``x [n, d]`` for ``labels [n]`` (held-out: a fifth of the frames).

    Neurons are standardised first, so a neuron's weight mass (sum over classes of the
    absolute probe weights) compares across neurons of different scales."""
    if len(x) != len(labels) or len(x) < 50:
        raise HarnessError(f"{len(x)} frames for {len(labels)} labels: neuron ranking needs matched frames (>= 50)")
    rng = np.random.default_rng(seed)
    test = rng.random(len(x)) < 0.2
    classes = int(labels.max()) + 1
    xt = torch.as_tensor(x, dtype=torch.float32)
    mean, std = xt[~torch.from_numpy(test)].mean(0), xt[~torch.from_numpy(test)].std(0).clamp(min=1e-6)
    xt = (xt - mean) / std
    yt = torch.as_tensor(labels, dtype=torch.long)
    tr, te = ~torch.from_numpy(test), torch.from_numpy(test)
    probe = _softmax_probe(xt[tr], yt[tr], classes, l1, l2, steps, seed)
    mass = probe.weight.detach().abs().sum(0)
    order = torch.argsort(mass, descending=True).tolist()
    ablation = [{"k": x.shape[1], "selection": "all", "accuracy": _accuracy(probe, xt[te], yt[te])}]
    for k in ks:
        if k >= x.shape[1]:
            continue
        choices = {"top": order[:k], "bottom": order[-k:],
                   "random": sorted(rng.choice(x.shape[1], size=k, replace=False).tolist())}
        for name, idx in choices.items():
            sub = _softmax_probe(xt[tr][:, idx], yt[tr], classes, l1, l2, steps, seed)
            ablation.append({"k": k, "selection": name, "accuracy": _accuracy(sub, xt[te][:, idx], yt[te])})
    return NeuronRanking(order, mass[order].tolist(), ablation)


def neurons_table(inputs: Inputs, options: NeuronOptions) -> Table:
    """``options.prop`` unset: neuron similarity of every layer pair of ``upstream`` and
    ``against`` on at most ``max_samples`` frames paired by time (rows + MaxCorr heatmap);
    ``"phone"``: each layer's neurons ranked for phone identity (rows of rankings, the
    top/random/bottom-k check as ``.check.csv``, and a plot of it)."""
    a = inputs.model(options.upstream, options.random_init)
    if options.prop is not None:
        return _ranking_table(inputs, a, options)
    b = a if options.against is None else inputs.model(options.against)
    xa, xb = inputs.paired(a, b, options.max_samples, options.seed)
    rows = neuron_rows(a.spec, a.info.layer_names, xa, b.spec, b.info.layer_names, xb)
    matrix = np.array([[r["maxcorr_a"] for r in rows if r["layer_a"] == i] for i in range(len(xa))]).T
    draw = partial(plot_heatmap, matrix, a.info.layer_names, b.info.layer_names,
                   f"MaxCorr (mean best |r| of A's neurons, {len(xa[0])} frames)", xname=a.spec, yname=b.spec,
                   annotate=True)
    return Table(rows, pictures={".png": draw}, listed=[("rows", ""), ("plot", ".png")])


def _ranking_table(inputs: Inputs, model: Model, options: NeuronOptions) -> Table:
    if options.prop != "phone":
        raise HarnessError(f"neuron ranking supports --property phone, got {options.prop!r}")
    xs, labels, inventory = inputs.phone_frames(model, options.max_samples, options.seed)
    rank_rows, check_rows = [], []
    for l, x in enumerate(xs):
        r = rank_neurons(x, labels, seed=options.seed)
        name = model.info.layer_names[l]
        rank_rows += [{"upstream": model.spec, "layer": l, "layer_name": name, "rank": k, "neuron": n,
                       "weight_mass": m} for k, (n, m) in enumerate(zip(r.order, r.mass))]
        check_rows += [{"upstream": model.spec, "layer": l, "layer_name": name, **a} for a in r.ablation]
    draw = partial(plot_ranking_check, check_rows, f"{model.spec}: phone accuracy from k ranked neurons "
                                                   f"({len(labels)} frames, {len(inventory)} phones)")
    return Table(rank_rows, companions={".check.csv": check_rows}, pictures={".png": draw},
                 listed=[("rows", ""), ("top/random/bottom-k check", ".check.csv"), ("plot", ".png")])
