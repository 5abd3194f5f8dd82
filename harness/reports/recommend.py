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
    """The lowest single layer not significantly worse than the best (``tolerance`` None), or
    within ``tolerance`` of it, both on the split the ranking decides on (dev when its records
    kept dev outcomes)."""
    best = r.best
    sign = 1 if r.higher_is_better else -1
    for s in sorted(r.layers, key=lambda s: int(s.layer)):
        ok = s.not_worse if tolerance is None else \
            sign * (r.decisive(best) - r.decisive(s)) <= tolerance + 1e-12
        if ok:
            return s
    return best


@dataclass
class Cost:
    """Parameters, GFLOPs per second of audio and median CPU milliseconds per 10 s of audio."""
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


#: below this many resampled units (test utterances, or speakers) the recommendation says the
#: intervals are too wide to support a choice: at 100 utterances a 0.7 accuracy has a 95%
#: interval of about +-0.09, wider than most gaps between neighbouring layers
FEW_UNITS = 100


@dataclass
class Recommendation:
    """The layer to ship and why: the ranking it came from, the best layer, the chosen one, the
    rule that chose it, the costs of truncating there (None for backends without them), where a
    truncated model was exported, and notes (several settings, few test units)."""

    ranking: Ranking
    best: LayerScore
    pick: LayerScore
    rule: str
    costs: tuple[Cost, Cost] | None = None
    exported: Path | None = None
    notes: list[str] | None = None

    def format(self) -> str:
        """The lines ``harness recommend`` prints."""
        r, best, pick = self.ranking, self.best, self.pick

        def lr(s: LayerScore) -> str:  # learning-rate grid runs: the rate dev chose for the layer
            return f", lr {'/'.join(f'{x:g}' for x in dict.fromkeys(s.lrs))}" if s.lrs else ""

        lines = [f"note: {n}" for n in self.notes or []]
        lines.append(f"{r.label} · {r.task}: best layer {best.layer} ({best.name}) {r.metric} {best.score:.4f} "
                     f"[{best.ci_low:.4f}, {best.ci_high:.4f}]{lr(best)}")
        lines.append(f"recommended layer: {pick.layer} ({pick.name}) {r.metric} {pick.score:.4f} "
                     f"[{pick.ci_low:.4f}, {pick.ci_high:.4f}]{lr(pick)}: the lowest layer {self.rule}")
        if self.costs:
            full, cut = self.costs
            lines.append(f"{'':18}{'params':>12}{'GFLOPs/s audio':>16}{'CPU ms / 10 s':>15}")
            lines.append(f"{'full model':18}{full.params:>12,}{full.gflops_per_second:>16.2f}{full.latency_ms:>15.1f}")
            lines.append(f"{'truncated at ' + str(pick.layer):18}{cut.params:>12,}{cut.gflops_per_second:>16.2f}"
                         f"{cut.latency_ms:>15.1f}")
            lines.append(f"saves {1 - cut.params / full.params:.0%} of parameters, "
                         f"{1 - cut.gflops_per_second / full.gflops_per_second:.0%} of FLOPs, "
                         f"{1 - cut.latency_ms / full.latency_ms:.0%} of CPU time")
        else:
            lines.append("(cost comparison is available for hf: upstreams with pretrained weights)")
        if self.exported is not None:
            lines.append(f"exported the model truncated after layer {pick.layer} to {self.exported} "
                         f"(load it with --upstream hf:{self.exported})")
        return "\n".join(lines)


def recommend(rankings: list[Ranking], upstream: str, task: str, tolerance: float | None = None,
              random_init: bool = False, export_to: Path | None = None, measure_costs: bool = True,
              setting: str | None = None) -> Recommendation:
    """The recommendation for ``upstream`` on ``task`` from its rankings
    (:func:`harness.reports.ranking.rank` of its records): the lowest layer not significantly
    worse than the best (or within ``tolerance``), with the costs of truncating there and,
    with ``export_to``, the truncated model written. ``random_init`` picks the random-weights
    twin's records instead of the trained model's; ``setting`` (an id ``harness report`` shows)
    one of several settings, else the first by id with a note. Raises HarnessError when there
    are no single-layer results or no such setting.

    Example::

        rankings = rank(load_records(Path("results"), "tiny_hubert_it1", "phone"))
        print(recommend(rankings, "tiny_hubert_it1", "phone").format())
    """
    mine = [r for r in rankings if r.layers and bool(r.upstream.random_init) == random_init]
    if not mine:
        twin = " (random weights)" if random_init else ""
        raise HarnessError(f"no single-layer results for {upstream}{twin} / {task}; run `harness run --layer all` "
                           "first")
    notes = []
    if setting is not None:
        chosen = [r for r in mine if r.setting == setting]
        if not chosen:
            raise HarnessError(f"no setting {setting} of {mine[0].label} / {task}; found "
                               f"{', '.join(r.setting for r in mine)}")
        mine = chosen
    if len(mine) > 1:
        notes.append(f"{len(mine)} settings of {mine[0].label} found ({', '.join(r.setting for r in mine)}); "
                     f"using setting {mine[0].setting} (--setting to choose)")
    r = mine[0]
    if r.units < FEW_UNITS:
        notes.append(f"the intervals rest on {r.units} test {r.unit}s; with fewer than {FEW_UNITS} they are too wide "
                     "to separate most layers, so the recommendation is fragile (evaluate on more test data)")
    pick = choose(r, tolerance)
    rule = f"not significantly worse than the best (paired bootstrap on {r.chosen_on}, 95%)" if tolerance is None \
        else f"within {tolerance} {r.metric} of the best on {r.chosen_on}"
    if r.chosen_on == "test":
        notes.append("these records predate kept dev outcomes, so the layer is chosen on test (re-run them to choose "
                     "on dev)")
    pair = costs(r.upstream.spec, int(pick.layer)) if measure_costs and not r.upstream.random_init else None
    exported = export(r.upstream.spec, int(pick.layer), Path(export_to)) if export_to else None
    return Recommendation(r, r.best, pick, rule, pair, exported, notes)
