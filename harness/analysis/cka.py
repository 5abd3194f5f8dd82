"""Layer similarity across models or checkpoints: linear CKA of every layer pair (Kornblith
et al. 2019; biased and debiased), optionally with held-out PWCCA, mini-batch CKA over every
frame (Nguyen, Raghu and Kornblith 2021), and each checkpoint's layers against the last
checkpoint's. Frames of two models are paired by time (:mod:`harness.analysis.frames`)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from harness.analysis.frames import frame_count, pair_indices, pick
from harness.analysis.inputs import Inputs, Model
from harness.analysis.measures import (
    CcaProblem,
    SimilarityError,
    hsic_unbiased_gram,
    linear_cka,
    pwcca_score,
)
from harness.analysis.options import CkaOptions
from harness.analysis.plots import plot_heatmap
from harness.analysis.tables import Table
from harness.task import Example

PAIR_PWCCA_EPSILON = 1e-9  # reference convention: epsilon x max|C| per view


def heldout_pwcca(x: np.ndarray, y: np.ndarray, seed: int = 0, epsilon: float = PAIR_PWCCA_EPSILON) -> float:
    """PWCCA (Morcos et al. 2018) of two representations ``x [n, d1]``, ``y [n, d2]`` of the
    same frames, fitted on a random half of the frames (``seed``) and scored on the other half
    (weights from the view with fewer neurons), so a wide layer cannot look similar by
    overfitting the canonical directions. Raises :class:`SimilarityError` when a half has
    too few frames or a covariance is singular."""
    order = np.random.default_rng(seed).permutation(len(x))
    fit_idx, test_idx = order[: len(x) // 2], order[len(x) // 2:]
    fit = CcaProblem(x[fit_idx], y[fit_idx], "reference").fit(epsilon, epsilon)
    return pwcca_score(fit, x[test_idx], y[test_idx])


def cka_rows(name_a: str, names_a: list[str], a: list[np.ndarray], name_b: str, names_b: list[str],
             b: list[np.ndarray], with_pwcca: bool = False, seed: int = 0) -> list[dict]:
    """One row per (layer of A, layer of B): linear CKA biased and debiased (and held-out
    PWCCA if ``with_pwcca``) of ``a[i] [n, d_i]`` and ``b[j] [n, d_j]``, frames paired by
    row; a measure that fails is NaN with its error in the row."""
    rows = []
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            try:
                biased, unbiased, err = linear_cka(x, y), linear_cka(x, y, debiased=True), ""
            except SimilarityError as exc:
                biased, unbiased, err = float("nan"), float("nan"), str(exc)
            row = {"model_a": name_a, "layer_a": i, "layer_a_name": names_a[i], "model_b": name_b, "layer_b": j,
                   "layer_b_name": names_b[j], "cka": biased, "cka_debiased": unbiased}
            if with_pwcca:
                try:
                    row["pwcca_heldout"] = heldout_pwcca(x, y, seed)
                except SimilarityError as exc:
                    row["pwcca_heldout"], err = float("nan"), err or str(exc)
            rows.append({**row, "error": err})
    return rows


def minibatch_cka_grid(ua, fa, ub, fb, examples: list[Example], batch: int) -> np.ndarray:
    """Mini-batch CKA (Nguyen et al. 2021) of every layer pair over *all* frames paired by time,
    reading one utterance at a time from the caches ``fa``/``fb`` and holding only one batch
    of ``batch`` frames (its Gram matrices) at a time. Returns ``[layers_a, layers_b]``."""
    la, lb = ua.num_layers, ub.num_layers
    num, kk, ll = np.zeros((la, lb)), np.zeros(la), np.zeros(lb)
    buf_a: list[list[np.ndarray]] = [[] for _ in range(la)]
    buf_b: list[list[np.ndarray]] = [[] for _ in range(lb)]
    filled = 0

    def flush() -> None:
        nonlocal filled
        if filled < 4:
            return
        ka = [torch.from_numpy(np.concatenate(b)).double() for b in buf_a]
        kb = [torch.from_numpy(np.concatenate(b)).double() for b in buf_b]
        grams_a = [x @ x.T for x in ka]
        grams_b = [y @ y.T for y in kb]
        for i, k in enumerate(grams_a):
            kk[i] += float(hsic_unbiased_gram(k, k))
            for j, l in enumerate(grams_b):
                num[i, j] += float(hsic_unbiased_gram(k, l))
        for j, l in enumerate(grams_b):
            ll[j] += float(hsic_unbiased_gram(l, l))
        for b in buf_a + buf_b:
            b.clear()
        filled = 0

    for e in examples:
        xa, xb = fa.get(e.id), fb.get(e.id)
        ia, ib = pair_indices(frame_count(xa), ua.info.hop, ua.info.frame_offset, frame_count(xb), ub.info.hop,
                              ub.info.frame_offset)
        for start in range(0, len(ia), batch):
            take = min(batch - filled, len(ia) - start)
            sel_a, sel_b = ia[start:start + take], ib[start:start + take]
            for i, x in enumerate(xa):
                buf_a[i].append(pick(x.numpy(), sel_a))
            for j, y in enumerate(xb):
                buf_b[j].append(pick(y.numpy(), sel_b))
            filled += take
            if filled >= batch:
                flush()
    flush()
    return num / np.sqrt(np.maximum(np.outer(kk, ll), 1e-300))


def cka_table(inputs: Inputs, options: CkaOptions) -> Table:
    """CKA in the mode the options choose (:attr:`CkaOptions.mode`): ``frames`` (every layer
    pair on at most ``max_samples`` frames, heatmap; with ``pwcca`` held-out PWCCA too and a
    ``.pwcca.png``), ``minibatch`` (every frame) or ``checkpoints`` (checkpoint x layer grid)."""
    if options.mode == "checkpoints":
        return _checkpoint_table(inputs, options)
    a = inputs.model(options.upstream, options.random_init)
    b = a if options.against is None else inputs.model(options.against)
    if options.mode == "minibatch":
        return _minibatch_table(inputs, a, b, options.minibatch)
    return _frames_table(inputs, a, b, options)


def _heatmap(values: list[dict], key: str, a: Model, b: Model, title: str) -> partial:
    """Layer x layer heatmap of ``key`` from rows ordered by (layer_a, layer_b): B's layers up."""
    grid = np.array([[r[key] for r in values if r["layer_a"] == i] for i in range(a.upstream.num_layers)]).T
    return partial(plot_heatmap, grid, a.info.layer_names, b.info.layer_names, title, xname=a.spec, yname=b.spec)


def _frames_table(inputs: Inputs, a: Model, b: Model, options: CkaOptions) -> Table:
    xa, xb = inputs.paired(a, b, options.max_samples, options.seed)
    rows = cka_rows(a.spec, a.info.layer_names, xa, b.spec, b.info.layer_names, xb, options.pwcca, options.seed)
    pictures = {}
    if options.pwcca:
        pictures[".pwcca.png"] = _heatmap(rows, "pwcca_heldout", a, b, f"held-out PWCCA ({len(xa[0])} frames)")
    pictures[".png"] = _heatmap(rows, "cka", a, b, f"linear CKA ({len(xa[0])} frames)")
    return Table(rows, pictures=pictures, listed=[("rows", ""), ("heatmap", ".png")])


def _minibatch_table(inputs: Inputs, a: Model, b: Model, batch: int) -> Table:
    ca = a.cache()
    cb = ca if b is a else b.cache()
    grid = minibatch_cka_grid(a.upstream, ca, b.upstream, cb, inputs.utterances.examples, batch)
    rows = [{"model_a": a.spec, "layer_a": i, "layer_a_name": a.info.layer_names[i], "model_b": b.spec,
             "layer_b": j, "layer_b_name": b.info.layer_names[j], "cka_minibatch": float(grid[i, j]),
             "batch": batch} for i in range(grid.shape[0]) for j in range(grid.shape[1])]
    draw = partial(plot_heatmap, grid.T, a.info.layer_names, b.info.layer_names,
                   f"mini-batch linear CKA (batches of {batch} frames)", xname=a.spec, yname=b.spec)
    return Table(rows, pictures={".png": draw}, listed=[("rows", ""), ("heatmap", ".png")])


def _checkpoint_table(inputs: Inputs, options: CkaOptions) -> Table:
    """Each checkpoint's layer l against the last checkpoint's layer l."""
    checkpoints = list(options.checkpoints)
    final = inputs.model(checkpoints[-1])
    rows, grid = [], []
    for ck in checkpoints:
        model = inputs.model(ck)
        xa, xb = inputs.paired(model, final, options.max_samples, options.seed)
        line = []
        for l in range(min(len(xa), len(xb))):
            r = cka_rows(ck, model.info.layer_names[l:l + 1], [xa[l]], checkpoints[-1],
                         final.info.layer_names[l:l + 1], [xb[l]])[0]
            r["layer_a"] = r["layer_b"] = l
            rows.append(r)
            line.append(r["cka"])
        grid.append(line)
    width = min(len(g) for g in grid)
    draw = partial(plot_heatmap, np.array([g[:width] for g in grid]), [str(i) for i in range(width)],
                   [Path(c).name for c in checkpoints], "CKA with the same layer of the last checkpoint",
                   xname="layer", yname="checkpoint")
    return Table(rows, pictures={".png": draw}, listed=[("rows", ""), ("heatmap", ".png")])
