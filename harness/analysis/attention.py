"""Attention-level comparison of two models (or two checkpoints of one) on the same utterances.

For every pair of layers (layer i of A, layer j of B) and every pair of heads, a measure is
averaged over utterances: Jensen-Shannon similarity of attention rows (1 - mean JS
divergence, base 2), Pearson correlation of the maps, or Frobenius distance. Each head of A
is then matched to its best head in B's layer ("best match"), since heads have no fixed
order across models. Both models must have the same frame rate, so maps are T x T over the
same frames (refused otherwise).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError
from harness.analysis.measures import ATTENTION_MEASURES, best_match, head_scores


def attention_maps(upstream, examples, progress: bool = True) -> list[list[torch.Tensor]]:
    """Per utterance, per transformer layer ``[heads, T, T]``."""
    from tqdm import tqdm

    from harness.audio import read_audio

    out = []
    for e in tqdm(examples, desc=f"attention maps of {upstream.info.spec}", unit="utt", disable=not progress,
                  file=sys.stderr, leave=False):
        out.append(upstream.attentions(torch.from_numpy(read_audio(e.path))))
    return out


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


def run_attention(spec_a: str, spec_b: str | None, data_root: Path, split: str, out: Path, limit: int,
                  random_init: bool = False, progress: bool = True) -> Path:
    from harness.analysis.layerwise import load_utterances, plot_heatmap, to_csv
    from harness.fsutil import write_text
    from harness.upstream import load_upstream

    utts = load_utterances(data_root, split, limit)
    ua = load_upstream(spec_a, random_init=random_init)
    ub = ua if spec_b is None else load_upstream(spec_b)
    if ua.info.hop != ub.info.hop:
        raise HarnessError(f"attention maps of {spec_a} (hop {ua.info.hop}) and {spec_b} (hop {ub.info.hop}) cover "
                           "different frames; compare models with the same frame rate")
    maps_a = attention_maps(ua, utts.examples, progress)
    maps_b = maps_a if spec_b is None else attention_maps(ub, utts.examples, progress)
    rows = attention_rows(spec_a, maps_a, spec_b or spec_a, maps_b)
    out = Path(out)
    write_text(out, to_csv(rows))
    matrix = layer_matrix(rows, "js")
    plot_head_grid(rows, "js", out.with_name(out.stem + ".heads.png"))
    plot_heatmap(matrix.T, [str(i + 1) for i in range(matrix.shape[0])], [str(j + 1) for j in range(matrix.shape[1])],
                 f"attention: best-match JS similarity of heads ({len(utts.examples)} utterances)",
                 out.with_suffix(".png"), f"layer of {spec_a}", f"layer of {spec_b or spec_a}", annotate=True)
    return out


def plot_head_grid(rows: list[dict], measure: str, path: Path) -> None:
    """Head x head matrices of the same-index layer pairs (layer l of A vs layer l of B)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({r["layer_a"] for r in rows} & {r["layer_b"] for r in rows})
    if not layers:
        return
    fig, axes = plt.subplots(1, len(layers), figsize=(2.2 * len(layers), 2.4), dpi=100, squeeze=False)
    for ax, layer in zip(axes[0], layers):
        sel = sorted((r for r in rows if r["measure"] == measure and r["layer_a"] == layer and r["layer_b"] == layer),
                     key=lambda r: r["head_a"])
        m = np.array([[float(v) for v in r["scores"].split()] for r in sel])
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"layer {layer}", fontsize=8)
        ax.set_xlabel("head of B", fontsize=7)
        ax.set_ylabel("head of A", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{measure} similarity of heads, same layer", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)
