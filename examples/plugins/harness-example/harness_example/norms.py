"""Analysis plugin example: the mean Lp norm of each layer's frames (a scale check).

Registered as ``norms`` in the ``harness.analyses`` entry-point group, so it runs as
``harness analyze norms --upstream fbank [--order 1]``. Imported when the ``harness`` parser
is built: it needs no numpy import, the frames it is given are numpy arrays already.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.analysis.base import Analysis, AnalysisOptions, option
from harness.analysis.tables import Table


@dataclass(frozen=True, kw_only=True)
class NormOptions(AnalysisOptions):
    order: float = option(2.0, type=float, help="p of the Lp norm (default 2: Euclidean)")


class FrameNorms(Analysis):
    name = "norms"
    help = "mean Lp norm of each layer's frames (before comparing layers of different scale)"
    options = NormOptions

    def run(self, inputs, options: NormOptions) -> Table:
        model = inputs.model(options.upstream, options.random_init)
        rows = []
        for l, layer in enumerate(model.info.layer_names):
            norms = [(abs(u[l].astype("float64")) ** options.order).sum(1) ** (1 / options.order) for u in model.frames]
            frames = sum(len(n) for n in norms)
            rows.append({"upstream": model.spec, "layer": l, "layer_name": layer, "order": options.order,
                         "frames": frames, "mean_norm": float(sum(n.sum() for n in norms)) / frames})
        return Table(rows, lines=[f"{r['layer_name']:<20}{r['mean_norm']:>12.4f}" for r in rows])
