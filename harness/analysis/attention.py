"""Attention-level comparison of two models (or two checkpoints of one) on the same utterances.

For every pair of layers (layer i of A, layer j of B) and every pair of heads, a measure is
averaged over utterances: Jensen-Shannon similarity of attention rows (1 - mean JS
divergence, base 2), Pearson correlation of the maps, or Frobenius distance. Each head of A
is then matched to its best head in B's layer ("best match"), since heads have no fixed
order across models. Both models must have the same frame rate, so maps are T x T over the
same frames (refused otherwise).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from harness.analysis.inputs import Inputs
from harness.analysis.measures import ATTENTION_MEASURES, best_match, head_scores
from harness.analysis.options import AttentionOptions
from harness.analysis.plots import plot_head_grid, plot_heatmap
from harness.analysis.tables import Table
from harness.errors import HarnessError


def attention_rows(name_a: str, maps_a: list[list[torch.Tensor]], name_b: str, maps_b: list[list[torch.Tensor]],
                   measures: tuple[str, ...] = ("js", "pearson", "frobenius")) -> list[dict]:
    """Tidy rows: (layer_a, head_a, layer_b, measure) -> the best-matching head of B and its score,
    plus the full head x head matrix entries."""
    rows = []
    layers_a, layers_b = len(maps_a[0]), len(maps_b[0])
    for i in range(layers_a):
        for j in range(layers_b):
            per_a = [m[i] for m in maps_a]
            per_b = [m[j] for m in maps_b]
            for measure in measures:
                higher = ATTENTION_MEASURES[measure][1]
                scores = head_scores(per_a, per_b, measure)
                best = best_match(scores, higher)
                match = scores.argmax(1) if higher else scores.argmin(1)
                for h in range(scores.shape[0]):
                    rows.append({"model_a": name_a, "layer_a": i + 1, "head_a": h, "model_b": name_b, "layer_b": j + 1,
                                 "measure": measure, "best_head_b": int(match[h]), "best_score": float(best[h]),
                                 "scores": " ".join(f"{v:.4f}" for v in scores[h])})
    return rows


def layer_matrix(rows: list[dict], measure: str) -> np.ndarray:
    """``[layers_a, layers_b]``: mean over A's heads of the best-match score."""
    la = max(r["layer_a"] for r in rows)
    lb = max(r["layer_b"] for r in rows)
    out = np.zeros((la, lb))
    count = np.zeros((la, lb))
    for r in rows:
        if r["measure"] == measure:
            out[r["layer_a"] - 1, r["layer_b"] - 1] += r["best_score"]
            count[r["layer_a"] - 1, r["layer_b"] - 1] += 1
    return out / np.maximum(count, 1)


def attention_table(inputs: Inputs, options: AttentionOptions) -> Table:
    """Every head of ``upstream`` against every head of ``against`` (or of itself), layer pair
    by layer pair, on the first ``limit`` utterances: rows per (layer pair, head of A,
    measure), a layer x layer heatmap of the best-match JS similarity and the head x head
    grids of same-index layers (``.heads.png``). Raises :class:`HarnessError` when the two
    models' frame rates differ or a model exposes no attention."""
    a = inputs.model(options.upstream, options.random_init)
    b = a if options.against is None else inputs.model(options.against)
    if a.info.hop != b.info.hop:
        raise HarnessError(f"attention maps of {a.spec} (hop {a.info.hop}) and {b.spec} (hop {b.info.hop}) cover "
                           "different frames; compare models with the same frame rate")
    maps_a = inputs.attention(a)
    maps_b = maps_a if b is a else inputs.attention(b)
    rows = attention_rows(a.spec, maps_a, b.spec, maps_b)
    matrix = layer_matrix(rows, "js")
    draw = partial(plot_heatmap, matrix.T, [str(i + 1) for i in range(matrix.shape[0])],
                   [str(j + 1) for j in range(matrix.shape[1])],
                   f"attention: best-match JS similarity of heads ({len(inputs.utterances.examples)} utterances)",
                   xname=f"layer of {a.spec}", yname=f"layer of {b.spec}", annotate=True)
    return Table(rows, pictures={".heads.png": partial(plot_head_grid, rows, "js"), ".png": draw},
                 listed=[("rows", ""), ("layer x layer heatmap", ".png"), ("heads", ".heads.png")])
