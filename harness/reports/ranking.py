"""Rank layers per (upstream, task) from result records, with bootstrap confidence.

Pure functions over records (``*.json``) and their per-utterance outcomes
(``*.outcomes.json``). The bootstrap resamples test utterances (paired across layers,
so layer differences are tested on the same resamples) and, when several seeds exist,
seeds too. Everything is seeded, so the same records give the same numbers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.errors import HarnessError
from harness.records import (
    Outcomes,
    ResultRecord,
    UpstreamRef,
    is_record_file,
    outcomes_path,
    read_outcomes,
    read_record,
    slug,
)

N_BOOTSTRAP = 1000
BOOTSTRAP_SEED = 20240


@dataclass
class Record:
    """A record file read back: the record, its outcomes and where it was."""

    path: Path
    record: ResultRecord
    outcomes: Outcomes

    @property
    def upstream(self) -> UpstreamRef:
        return self.record.upstream

    @property
    def task(self) -> str:
        return self.record.task


def load_records(results: Path, upstream: str | None = None, task: str | None = None) -> list[Record]:
    """Every result record under ``results`` (optionally of one upstream spec or label, one task).

    The same measurement stored twice (e.g. a final checkpoint also in a trajectory folder)
    counts once."""
    results = Path(results)
    if not results.is_dir():
        raise HarnessError(f"results directory {results} does not exist; run `harness run` first or pass --results")
    out = []
    seen: set[tuple] = set()
    for path in sorted(p for p in results.rglob("*.json") if is_record_file(p)):
        try:
            record = read_record(path)
        except ValueError:
            raise HarnessError(f"{path} is not valid JSON; delete it or re-run the job that wrote it") from None
        if record is None:
            continue
        if not outcomes_path(path).exists():
            raise HarnessError(f"{path} has no {outcomes_path(path).name}; the bootstrap needs per-utterance outcomes")
        if record.identity in seen:
            continue
        seen.add(record.identity)
        if upstream and upstream not in (record.upstream.spec, record.upstream.label):
            continue
        if task and task != record.task and not (task == "slu" and record.task == "ic"):
            continue
        out.append(Record(path, record, read_outcomes(path)))
    if not out:
        raise HarnessError(f"no result records under {results}" + (f" for {upstream}" if upstream else "")
                           + (f" / {task}" if task else ""))
    return out


def _stat(outcomes: Outcomes, idx: np.ndarray) -> np.ndarray:
    """Metric of bootstrap replicates: ``idx`` is ``[replicates, n]`` utterance (or trial) indices."""
    num, den = np.asarray(outcomes.numerator, float), np.asarray(outcomes.denominator, float)
    if outcomes.kind == "verification":  # EER of each resampled set of trials
        from harness.metrics import equal_error_rate

        out = np.empty(len(idx))
        for b, rows in enumerate(idx):
            labels = den[rows] > 0.5
            out[b] = equal_error_rate(num[rows], labels) if labels.any() and (~labels).any() else np.nan
        return out
    return num[idx].sum(-1) / np.maximum(den[idx].sum(-1), 1e-12)


@dataclass
class LayerScore:
    probe: str  # "layer_3" or "weighted..."
    layer: int | str
    name: str  # the upstream's name for the layer
    score: float
    ci_low: float
    ci_high: float
    seeds: int
    weights: list[float] | None = None
    not_worse: bool = False  # not significantly worse than the best single layer
    p_worse: float = 0.0  # bootstrap share of replicates where the best layer is not better
    lrs: tuple[float, ...] = ()  # learning-rate grid runs: the rate dev chose, per seed (seed order)


@dataclass
class Ranking:
    upstream: UpstreamRef
    task: str
    metric: str
    higher_is_better: bool
    setting: str
    setting_info: dict
    layers: list[LayerScore]  # single layers, in layer order
    weighted: list[LayerScore] = field(default_factory=list)
    test_utterances: int = 0

    @property
    def label(self) -> str:
        return self.upstream.label

    @property
    def best(self) -> LayerScore:
        sign = 1 if self.higher_is_better else -1
        return max(self.layers, key=lambda s: (sign * s.score, -int(s.layer)))

    def ranked(self) -> list[LayerScore]:
        sign = 1 if self.higher_is_better else -1
        return sorted(self.layers, key=lambda s: (-sign * s.score, int(s.layer)))


def rank(records: Sequence[Record], n_bootstrap: int = N_BOOTSTRAP) -> list[Ranking]:
    """One :class:`Ranking` per (upstream, setting)."""
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.upstream.label, r.record.setting_id)].append(r)
    out = []
    for (_, sid), recs in sorted(groups.items()):
        first = recs[0].record
        metric, hib = first.metric.name, first.metric.higher_is_better
        by_probe: dict[str, list[Record]] = defaultdict(list)
        for r in recs:
            by_probe[r.record.probe].append(r)
        ids = recs[0].outcomes.ids
        for r in recs:
            if r.outcomes.ids != ids:
                raise HarnessError(f"{r.path} was scored on different test utterances than {recs[0].path}")
        n = len(ids)
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        idx = rng.integers(0, n, size=(n_bootstrap, n))
        max_seeds = max(len(v) for v in by_probe.values())
        seed_draw = rng.integers(0, max_seeds, size=(n_bootstrap, max_seeds))
        replicates: dict[str, np.ndarray] = {}
        scores: dict[str, LayerScore] = {}
        for probe, rs in sorted(by_probe.items()):
            rs = sorted(rs, key=lambda r: r.record.seed)
            per_seed = np.stack([_stat(r.outcomes, idx) for r in rs])  # [seeds, B]
            pick = seed_draw[:, : len(rs)] % len(rs)
            reps = np.take_along_axis(per_seed.T, pick, axis=1).mean(1)  # [B]
            reps = np.where(np.isnan(reps), np.nanmean(reps), reps)  # a replicate with one trial class only
            replicates[probe] = reps
            point = float(np.mean([r.record.test[metric] for r in rs]))
            layer = rs[0].record.layer
            weights = rs[0].record.layer_weights
            if weights and len(rs) > 1:
                weights = list(np.mean([r.record.layer_weights for r in rs], axis=0))
            scores[probe] = LayerScore(probe, layer, rs[0].upstream.layer_name(layer), point,
                                       float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5)), len(rs),
                                       weights, lrs=tuple(r.record.lr for r in rs if r.record.lr is not None))
        singles = sorted((s for s in scores.values() if isinstance(s.layer, int)), key=lambda s: s.layer)
        weighted = [s for s in scores.values() if not isinstance(s.layer, int)]
        ranking = Ranking(first.upstream, first.task, metric, hib, sid, first.setting(), singles, weighted,
                          first.test_utterances or n)
        if singles:
            best = ranking.best
            sign = 1.0 if hib else -1.0
            for s in singles:
                diff = sign * (replicates[best.probe] - replicates[s.probe])  # > 0: best is better
                s.p_worse = float(np.mean(diff <= 0))
                s.not_worse = s is best or float(np.percentile(diff, 2.5)) <= 0.0
        out.append(ranking)
    return out


# ----------------------------------------------------------------------- output


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _lr(s: LayerScore) -> str:
    """The chosen learning rate(s) of a layer: one rate, or one per seed when they differ."""
    return f"{s.lrs[0]:g}" if len(set(s.lrs)) == 1 else ",".join(f"{x:g}" for x in s.lrs)


def _has_lr(r: Ranking) -> bool:
    return any(s.lrs for s in r.layers + r.weighted)


def rows(r: Ranking) -> list[dict]:
    """Flat rows: every single layer (ranked) then the weighted probes; rows of a learning-rate
    grid run also hold ``lr``, the rate chosen on dev (one per seed when they differ)."""
    best = r.best if r.layers else None
    out = []
    for pos, s in enumerate(r.ranked(), 1):
        out.append({"upstream": r.label, "task": r.task, "metric": r.metric, "probe": s.probe, "layer": s.layer,
                    "layer_name": s.name, "rank": pos, "score": round(s.score, 6), "ci_low": round(s.ci_low, 6),
                    "ci_high": round(s.ci_high, 6), "seeds": s.seeds, "best": s is best,
                    "not_significantly_worse": s.not_worse, "weights": None})
    for s in r.weighted:
        out.append({"upstream": r.label, "task": r.task, "metric": r.metric, "probe": s.probe, "layer": s.layer,
                    "layer_name": "weighted sum", "rank": None, "score": round(s.score, 6),
                    "ci_low": round(s.ci_low, 6), "ci_high": round(s.ci_high, 6), "seeds": s.seeds, "best": False,
                    "not_significantly_worse": None, "weights": [round(w, 4) for w in (s.weights or [])]})
    if _has_lr(r):
        scores = r.ranked() + r.weighted
        for row, s in zip(out, scores):
            row["lr"] = _lr(s) if s.lrs else None
    return out


def format_table(rankings: Sequence[Ranking], style: str = "table") -> str:
    """``table`` (terminal), ``markdown``, ``csv`` or ``json``."""
    if style == "json":
        return json.dumps([{"upstream": r.label, "task": r.task, "metric": r.metric,
                            "higher_is_better": r.higher_is_better, "setting": r.setting,
                            "setting_info": r.setting_info, "best_layer": r.best.layer if r.layers else None,
                            "layers_not_significantly_worse": [s.layer for s in r.layers if s.not_worse],
                            "rows": rows(r)} for r in rankings], indent=2, sort_keys=True, default=str) + "\n"
    if style == "csv":
        import csv
        import io

        buf = io.StringIO()
        fields = ["upstream", "task", "metric", "probe", "layer", "layer_name", "rank", "score", "ci_low", "ci_high",
                  "seeds", "best", "not_significantly_worse", "weights"] + (["lr"] if any(map(_has_lr, rankings)) else [])
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", restval="")
        w.writeheader()
        for r in rankings:
            for row in rows(r):
                row = dict(row)
                row["weights"] = " ".join(map(str, row["weights"])) if row["weights"] else ""
                w.writerow(row)
        return buf.getvalue()
    blocks = []
    for r in rankings:
        arrow = "higher is better" if r.higher_is_better else "lower is better"
        title = (f"{r.label} · {r.task} · test {r.metric} ({arrow}) · {r.test_utterances} utterances · "
                 f"setting {r.setting}")
        grid = _has_lr(r)
        header = ["rank", "layer", "name", r.metric, "95% CI", "", "seeds"] + (["lr"] if grid else [])
        body = []
        for row in rows(r):
            mark = "best" if row["best"] else ("~best" if row["not_significantly_worse"] else "")
            ci = f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
            body.append([str(row["rank"] or "-"), str(row["layer"]), row["layer_name"], _fmt(row["score"]), ci, mark,
                         str(row["seeds"])] + ([row["lr"] or "-"] if grid else []))
        notes = _notes(r)
        weights = [f"{s.probe}: " + " ".join(f"{w:.2f}" for w in (s.weights or [])) for s in r.weighted]
        if style == "markdown":
            lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(c for c in row) + " |" for row in body]
            lines += [""] + [f"Learned weights ({w})" for w in weights] + [f"{n[0].upper()}{n[1:]}." for n in notes]
            lines.append("\n`~best`: not significantly worse than the best layer (paired bootstrap, 95%).")
        else:
            widths = [max(len(x) for x in col) for col in zip(header, *body)]
            lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths))]
            lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
            lines += [f"learned weights, {w}" for w in weights] + notes
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _notes(r: Ranking) -> list[str]:
    """What the table's columns mean for grid and one-pass-seed settings (none otherwise)."""
    notes = []
    grid = (r.setting_info.get("config") or {}).get("lr_grid")
    if grid:
        notes.append("lr: the learning rate dev chose for the layer from the grid "
                     + ", ".join(f"{x:g}" for x in grid) + "; the score is that rate's test score")
    if r.setting_info.get("batch_seed") is not None:
        notes.append(f"seeds trained in one pass on the batch order of seed {r.setting_info['batch_seed']}: "
                     "they vary the head initialisation only")
    return notes


def plot(r: Ranking, path: Path) -> Path:
    """Metric vs layer with the 95% CI band (and the weighted sum), plus learned weights as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_weights = any(s.weights for s in r.weighted)
    fig, axes = plt.subplots(1, 2 if has_weights else 1, figsize=(9 if has_weights else 5.5, 3.4), dpi=100,
                             squeeze=False)
    ax = axes[0, 0]
    xs = [s.layer for s in r.layers]
    if len(xs) == 1:  # a single-layer upstream: a point with its interval
        s0 = r.layers[0]
        ax.errorbar(xs, [s0.score], yerr=[[s0.score - s0.ci_low], [s0.ci_high - s0.score]], fmt="o", capsize=6,
                    color="#1f5fa8", label="95% CI")
        ax.set_xlim(-1, 1)
    else:
        ax.plot(xs, [s.score for s in r.layers], marker="o", color="#1f5fa8", label="single layer")
        ax.fill_between(xs, [s.ci_low for s in r.layers], [s.ci_high for s in r.layers], color="#1f5fa8", alpha=0.2,
                        label="95% CI")
    for s in r.weighted:
        ax.axhline(s.score, color="#c2410c", linestyle="--", label=f"{s.probe}")
    if r.layers:
        b = r.best
        ax.plot([b.layer], [b.score], marker="*", markersize=14, color="#15803d", linestyle="none", label="best")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel(f"test {r.metric} ({'higher' if r.higher_is_better else 'lower'} is better)")
    ax.set_title(f"{r.label} · {r.task}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if has_weights:
        s = next(s for s in r.weighted if s.weights)
        ax2 = axes[0, 1]
        ax2.bar(range(len(s.weights)), s.weights, color="#c2410c")
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_xlabel("layer")
        ax2.set_ylabel("learned weight")
        ax2.set_title(f"{s.probe}: softmax weights", fontsize=9)
        ax2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    from harness.fsutil import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def plot_name(r: Ranking) -> str:
    return f"{r.task}__{slug(r.label)}__{r.setting}.png"
