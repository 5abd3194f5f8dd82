"""Probing across training checkpoints: the checkpoint x layer grid of a task's test metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.fsutil import write_text
from harness.records import read_record


def probe_trajectory(records: dict[str, list[Path]], out_csv: Path) -> tuple[Path, Path]:
    """Tidy rows (checkpoint, layer, metric, score) and a heatmap from each checkpoint's records.

    ``records`` maps each checkpoint spec (in training order) to its record paths.
    """
    from harness.analysis.plots import plot_heatmap
    from harness.analysis.tables import to_csv

    rows = []
    for ck, paths in records.items():
        for p in paths:
            r = read_record(Path(p))
            name = r.metric.name
            rows.append({"checkpoint": ck, "task": r.task, "layer": r.layer, "metric": name,
                         "score": r.score, "dev_score": float(r.dev[name])})
    write_text(out_csv, to_csv(rows))
    checkpoints = list(records)
    layers = sorted({r["layer"] for r in rows if isinstance(r["layer"], int)})
    grid = np.full((len(checkpoints), len(layers)), np.nan)
    for r in rows:
        if isinstance(r["layer"], int):
            grid[checkpoints.index(r["checkpoint"]), layers.index(r["layer"])] = r["score"]
    png = out_csv.with_suffix(".png")
    lo, hi = float(np.nanmin(grid)), float(np.nanmax(grid))
    plot_heatmap(grid, [str(l) for l in layers], [Path(c).name for c in checkpoints],
                 f"test {rows[0]['metric']} by checkpoint and layer", png, "layer", "checkpoint",
                 vmin=lo, vmax=hi if hi > lo else lo + 1e-9, annotate=True)
    return out_csv, png
