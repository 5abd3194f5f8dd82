"""Which layer to fine-tune from or truncate at, and what truncating there saves.

The recommendation is the lowest layer whose score is within the tolerance of the best
single layer: by default "not significantly worse" (paired bootstrap, see
:mod:`harness.reports.ranking`), or within an absolute metric difference ``--tolerance``.
Costs (parameters, FLOPs per second of audio, measured CPU latency) compare the model
truncated after that layer with the full model; ``export`` writes the truncated model
in its backend's own format (a HuggingFace directory with fewer layers).
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.audio import SAMPLE_RATE
from harness.errors import HarnessError
from harness.reports.ranking import LayerScore, Ranking


def choose(r: Ranking, tolerance: float | None = None) -> LayerScore:
    best = r.best
    sign = 1 if r.higher_is_better else -1
    for s in sorted(r.layers, key=lambda s: int(s.layer)):
        ok = s.not_worse if tolerance is None else sign * (best.score - s.score) <= tolerance + 1e-12
        if ok:
            return s
    return best


@dataclass
class Cost:
    params: int
    gflops_per_second: float
    latency_ms: float  # median CPU time for 10 s of audio


def _truncated_hf(model, keep: int):
    """A copy of a HF wav2vec2-family model with only the first ``keep`` transformer layers."""
    m = copy.deepcopy(model)
    m.encoder.layers = m.encoder.layers[:keep]
    m.config.num_hidden_layers = keep
    return m


def _cost(model, seconds: float = 10.0, repeats: int = 5) -> Cost:
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval()
    params = sum(p.numel() for p in model.parameters())
    one = torch.zeros(1, SAMPLE_RATE)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(one)
    flops = counter.get_total_flops()
    x = torch.randn(1, int(SAMPLE_RATE * seconds)) * 0.1
    times = []
    with torch.no_grad():
        model(x)  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t) * 1000)
    return Cost(params, flops / 1e9, statistics.median(times))


def costs(spec: str, layer: int) -> tuple[Cost, Cost] | None:
    """(full, truncated after ``layer``) for HF upstreams; None for other backends."""
    from harness.upstream import load_upstream

    up = load_upstream(spec)
    if up.info.backend != "hf":
        return None
    full = up.model
    keep = max(0, int(layer))
    return _cost(full), _cost(_truncated_hf(full, keep))


def export(spec: str, layer: int, out: Path) -> Path:
    """Save the model truncated after ``layer`` as a HF directory loadable with ``hf:<out>``."""
    from harness.upstream import load_upstream

    up = load_upstream(spec)
    if up.info.backend != "hf":
        raise HarnessError(f"--export supports hf: upstreams (got backend {up.info.backend}); "
                           "load the model through its HuggingFace checkpoint")
    if up.info.notes.get("stable_layer_norm") and int(layer) < up.num_layers - 1:
        raise HarnessError("this model applies a final layer norm to its encoder output (stable layer norm), so a "
                           "truncated HF model would change the kept top layer; export is exact only for post-norm models")
    model = _truncated_hf(up.model, int(layer))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    source = Path(up.info.source)
    pre = source / "preprocessor_config.json"
    if pre.exists():
        (out / "preprocessor_config.json").write_text(pre.read_text())
    return out
