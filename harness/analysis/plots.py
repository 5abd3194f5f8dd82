"""Pictures of analysis tables: layer curves, heatmaps, the neuron-ranking check and the
head x head grids of attention. Each writes one PNG (no timestamp in its metadata, so the
same numbers give the same file)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)
from matplotlib.ticker import MaxNLocator  # noqa: E402


def save_figure(fig, path: Path) -> None:
    """Lay out, write ``path`` (PNG, creating its folder) and close the figure."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None})
    plt.close(fig)


def plot_lines(summary: list[dict], title: str, path: Path, ylabel: str = "PWCCA (held-out folds)") -> None:
    """One line per (checkpoint, property) over layers from summary rows (``checkpoint``,
    ``property``, ``layer``, ``mean``, ``std``), with a mean +/- std band."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    by = defaultdict(list)
    for r in summary:
        by[(r["checkpoint"], r["property"])].append(r)
    for (ck, prop), rs in sorted(by.items()):
        rs = sorted(rs, key=lambda r: r["layer"])
        xs = [r["layer"] for r in rs]
        m = np.array([r["mean"] for r in rs])
        s = np.array([r["std"] for r in rs])
        label = prop if len({k[0] for k in by}) == 1 else f"{Path(ck).name} {prop}"
        ax.plot(xs, m, marker="o", label=label)
        ax.fill_between(xs, m - s, m + s, alpha=0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_heatmap(matrix: np.ndarray, xlabels: list[str], ylabels: list[str], title: str, path: Path,
                 xname: str, yname: str, vmin: float = 0.0, vmax: float = 1.0, annotate: bool = False) -> None:
    """``matrix [len(ylabels), len(xlabels)]`` as a PNG; ``annotate`` writes each value in its cell."""
    fig, ax = plt.subplots(figsize=(1.6 + 0.45 * len(xlabels), 1.4 + 0.4 * len(ylabels)), dpi=100)
    im = ax.imshow(matrix, origin="lower", cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    if annotate:
        middle = (vmin + vmax) / 2
        for (i, j), v in np.ndenumerate(matrix):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if v > middle else "white")
    ax.set_xticks(range(len(xlabels)), xlabels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=7)
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax)
    save_figure(fig, path)


def plot_ranking_check(rows: list[dict], title: str, path: Path) -> None:
    """Held-out accuracy per layer of probes on the top, random and bottom k ranked neurons
    (rows: ``layer``, ``k``, ``selection``, ``accuracy``), against all neurons."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    layers = sorted({r["layer"] for r in rows})
    for selection, style in (("top", "-o"), ("random", "--s"), ("bottom", ":^")):
        for k in sorted({r["k"] for r in rows if r["selection"] == selection}):
            ys = [next((r["accuracy"] for r in rows if r["layer"] == l and r["k"] == k and r["selection"] == selection),
                       np.nan) for l in layers]
            ax.plot(layers, ys, style, label=f"{selection} {k}", markersize=3)
    ax.plot(layers, [next(r["accuracy"] for r in rows if r["layer"] == l and r["selection"] == "all") for l in layers],
            "k-", label="all neurons")
    ax.set_xlabel("layer")
    ax.set_ylabel("held-out frame accuracy")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    save_figure(fig, path)


def plot_head_grid(rows: list[dict], measure: str, path: Path) -> None:
    """Head x head matrices of the same-index layer pairs (layer l of A vs layer l of B), from
    attention rows (``layer_a``, ``layer_b``, ``head_a``, ``measure``, ``scores``); nothing
    is written when the two models share no layer index."""
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
    save_figure(fig, path)
