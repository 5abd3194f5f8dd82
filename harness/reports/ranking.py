"""Rank layers per (upstream, task) from result records, with bootstrap confidence.

Pure functions over records (``*.json``) and their per-utterance outcomes
(``*.outcomes.npz``, or ``*.outcomes.json`` in older results). The bootstrap resamples test
utterances (paired across layers, so layer differences are tested on the same resamples) or,
on request, speakers; verification trials are resampled through their utterances (or
speakers), never as independent trials (:data:`BOOTSTRAP_UNITS`); when several seeds exist,
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
    find_outcomes,
    is_record_file,
    outcomes_path,
    read_dev_outcomes,
    read_outcomes,
    read_record,
    slug,
)
from harness.reports.figures import save_png

N_BOOTSTRAP = 1000
BOOTSTRAP_SEED = 20240


@dataclass
class Record:
    """A record file read back: the record, its outcomes and where it was."""

    path: Path
    record: ResultRecord
    outcomes: Outcomes
    dev_outcomes: Outcomes | None = None  # None for records written before dev outcomes were kept

    @classmethod
    def read(cls, path: Path) -> "Record":
        """The record file ``path`` with its test and (when kept) dev outcomes. Raises
        ValueError for unreadable files and FileNotFoundError without outcomes."""
        return cls(Path(path), read_record(path), read_outcomes(path), read_dev_outcomes(path))

    @property
    def upstream(self) -> UpstreamRef:
        """The record's upstream reference."""
        return self.record.upstream

    @property
    def task(self) -> str:
        """The record's task name."""
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
        if find_outcomes(path) is None:
            raise HarnessError(f"{path} has no {outcomes_path(path).name}; the bootstrap needs per-utterance outcomes")
        if record.identity in seen:
            continue
        seen.add(record.identity)
        if upstream and upstream not in (record.upstream.spec, record.upstream.label):
            continue
        if task and task != record.task and not (task == "slu" and record.task == "ic"):
            continue
        try:
            outcomes = read_outcomes(path)
            dev_outcomes = read_dev_outcomes(path)
        except ValueError as exc:
            raise HarnessError(f"{exc}; delete it and its record or re-run the job that wrote them") from None
        out.append(Record(path, record, outcomes, dev_outcomes))
    if not out:
        raise HarnessError(f"no result records under {results}" + (f" for {upstream}" if upstream else "")
                           + (f" / {task}" if task else ""))
    return out


#: what the bootstrap resamples (``harness report --unit``): test utterances (the default) or
#: speakers. A verification trial pairs two utterances, so there the unit is each side's
#: utterance (or speaker), and a replicate weighs each trial by the number of times both of its
#: sides were drawn: a two-sided cluster bootstrap, since the trials built from one utterance
#: are not independent of each other (Poh & Bengio 2007, "subset bootstrap" for biometric trials).
BOOTSTRAP_UNITS = ("utterance", "speaker")


def speaker_of(utterance_id: str) -> str:
    """The speaker of an utterance id: its first path part (VoxCeleb1's ``id10041/SESSION/00001``,
    the layout the speaker tasks read)."""
    return utterance_id.split("/", 1)[0]


@dataclass
class Resampling:
    """The bootstrap of one ranking: ``idx`` (``[replicates, n]`` draws of test items, the
    utterance bootstrap of utterance-level outcomes) or ``weights`` (``[replicates, n]`` how many
    times each item counts: cluster bootstraps), the unit and how many units there are."""

    unit: str
    units: int
    idx: np.ndarray | None = None
    weights: np.ndarray | None = None


def resampling(outcomes: Outcomes, unit: str, rng: np.random.Generator, n_bootstrap: int) -> Resampling:
    """The replicates of a ranking whose records were scored on ``outcomes.ids``, resampling
    ``unit`` (:data:`BOOTSTRAP_UNITS`) with ``rng``. Raises HarnessError for an unknown unit, or
    speakers asked of ids that carry none."""
    if unit not in BOOTSTRAP_UNITS:
        raise HarnessError(f"bootstrap unit {unit!r}: choose from {', '.join(BOOTSTRAP_UNITS)}")
    ids = list(outcomes.ids)
    n = len(ids)
    verification = outcomes.kind == "verification"
    if unit == "utterance" and not verification:
        return Resampling(unit, n, idx=rng.integers(0, n, size=(n_bootstrap, n)))
    sides = [i.split("|", 1) if verification else [i] for i in ids]
    if verification and any(len(x) != 2 for x in sides):
        raise HarnessError("verification outcomes need trial ids 'ENROL|TEST' to resample utterances or speakers")
    if unit == "speaker":
        if not all("/" in u for x in sides for u in x):
            raise HarnessError("these outcomes' utterance ids carry no speaker (SPEAKER/...); use --unit utterance")
        sides = [[speaker_of(u) for u in x] for x in sides]
    names = sorted({u for x in sides for u in x})
    index = {u: k for k, u in enumerate(names)}
    draws = rng.integers(0, len(names), size=(n_bootstrap, len(names)))
    counts = np.zeros((n_bootstrap, len(names)), dtype=np.int64)
    np.add.at(counts, (np.arange(n_bootstrap)[:, None], draws), 1)
    weights = np.ones((n_bootstrap, n), dtype=np.int64)
    for side in range(len(sides[0]) if sides else 0):
        weights *= counts[:, [index[x[side]] for x in sides]]
    return Resampling(unit, len(names), weights=weights)


def _stat(outcomes: Outcomes, resample: Resampling | np.ndarray) -> np.ndarray:
    """Metric of bootstrap replicates: ``resample`` is a :class:`Resampling` or an ``idx`` array
    ``[replicates, n]`` of utterance (or trial) indices."""
    if isinstance(resample, np.ndarray):
        resample = Resampling("utterance", len(outcomes.ids), idx=resample)
    num, den = np.asarray(outcomes.numerator, float), np.asarray(outcomes.denominator, float)
    if outcomes.kind == "verification":  # EER of each resampled set of trials
        weights = resample.weights
        if weights is None:
            weights = np.zeros((len(resample.idx), len(num)), dtype=np.int64)
            np.add.at(weights, (np.arange(len(resample.idx))[:, None], resample.idx), 1)
        return _bootstrap_eer(num, den > 0.5, weights)
    if resample.idx is not None:
        return num[resample.idx].sum(-1) / np.maximum(den[resample.idx].sum(-1), 1e-12)
    w = resample.weights.astype(float)
    return (w * num).sum(-1) / np.maximum((w * den).sum(-1), 1e-12)


def _record_stat(r: Record, resample: Resampling) -> np.ndarray:
    """:func:`_stat` of one record; outcomes it cannot score (a NaN verification score) are one
    line naming the record."""
    try:
        return _stat(r.outcomes, resample)
    except ValueError as exc:
        raise HarnessError(f"{r.path}: {exc}") from None


_BLOCK = 1 << 21  # trials x replicates per block (memory: a few arrays of this many values)


def _bootstrap_eer(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`harness.metrics.equal_error_rate` of every replicate b, the trials counted
    ``weights[b]`` times each (``[replicates, trials]`` non-negative integers): the same floats as
    calling it on each replicate's trial list (NaN for a replicate without both target and
    non-target trials), without sorting each replicate.

    That function's operating points are the ends of blocks of equal scores, so a replicate's
    detection curve only depends on how many target and non-target trials it holds per distinct
    score: the scores are sorted once and each replicate sums its weights per block; the rates
    and the interpolation are then the same operations on the same integers. Raises
    ValueError for a score that is not finite, as that function does."""
    if not np.isfinite(scores).all():
        raise ValueError("detection errors need finite scores (a NaN score means an embedding of zero norm)")
    order = np.argsort(-scores, kind="stable")
    ordered = scores[order]
    block = np.empty(len(order), dtype=np.int64)  # each trial's block of equal scores, best first
    block[order] = np.concatenate([[0], np.cumsum(ordered[1:] != ordered[:-1])]) if len(order) else []
    blocks = int(block.max()) + 1 if len(order) else 0
    key = block * 2 + labels.astype(np.int64)  # (block, is_target) of each trial
    out = []
    step = max(1, _BLOCK // max(weights.shape[1], 1))
    for i in range(0, len(weights), step):
        rows = weights[i:i + step]
        # held trials per (row, block, label): one weighted count per bin (row * blocks * 2 + key)
        bins = (key[None, :] + (np.arange(len(rows)) * blocks * 2)[:, None]).ravel()
        held = np.bincount(bins, weights=rows.ravel(), minlength=len(rows) * blocks * 2)
        held = np.rint(held).astype(np.int64).reshape(len(rows), blocks, 2)
        zero = np.zeros((len(rows), 1), dtype=np.int64)
        out.append(_eer_curves(np.concatenate([zero, np.cumsum(held[:, :, 1], axis=1)], axis=1),
                               np.concatenate([zero, np.cumsum(held[:, :, 0], axis=1)], axis=1)))
    return np.concatenate(out) if out else np.empty(0)


def _eer_curves(at: np.ndarray, an: np.ndarray) -> np.ndarray:
    """``equal_error_rate`` of each row of accepted target and non-target counts at successive
    thresholds (``[rows, points]``, from 0 to all). A block no draw fell in repeats the point
    before it, which moves no crossing; NaN for a row without both classes."""
    targets, nontargets = at[:, -1:], an[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        p_miss = 1 - at / targets
        p_fa = an / nontargets
        diff = p_miss - p_fa
        k = np.argmax(diff <= 0, axis=1)[:, None]
        km = np.maximum(k - 1, 0)
        d0, d1 = np.take_along_axis(diff, km, axis=1), np.take_along_axis(diff, k, axis=1)
        w = np.where(d0 != d1, d0 / (d0 - d1), 0.0)
        m0, m1 = np.take_along_axis(p_miss, km, axis=1), np.take_along_axis(p_miss, k, axis=1)
        eer = np.where(k == 0, p_fa[:, :1], m0 + w * (m1 - m0))
    return np.where((targets > 0) & (nontargets > 0), eer, np.nan)[:, 0]


@dataclass
class LayerScore:
    """One probe's test score with its 95% interval, seeds, dev score and (weighted sums) learned weights."""
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
    inputs: list[int] = field(default_factory=list)  # the layers a weighted sum is over, in weight order
    lrs: tuple[float, ...] = ()  # learning-rate grid runs: the rate dev chose, per seed (seed order)
    dev: float | None = None  # dev score (mean over seeds)


@dataclass
class Ranking:
    """Every probe of one (upstream, setting) ranked, with where the choice was made and what the bootstrap resampled."""
    upstream: UpstreamRef
    task: str
    metric: str
    higher_is_better: bool
    setting: str
    setting_info: dict
    layers: list[LayerScore]  # single layers, in layer order
    weighted: list[LayerScore] = field(default_factory=list)
    test_utterances: int = 0
    unit: str = "utterance"  # what the bootstrap resampled (BOOTSTRAP_UNITS)
    units: int = 0  # how many of them the test set has
    clustered: bool = False  # the intervals resample clusters (speakers, or the utterances behind trials)
    chosen_on: str = "test"  # the split best and ~best are decided on: dev, or test for older records

    @property
    def label(self) -> str:
        """The upstream's display label (with ``(random init)`` for random twins)."""
        return self.upstream.label

    def decisive(self, s: LayerScore) -> float:
        """The score the choice is made on: dev when the records kept dev outcomes, else test."""
        return s.dev if self.chosen_on == "dev" else s.score

    @property
    def best(self) -> LayerScore:
        """The best single layer on :attr:`chosen_on` (a tie goes to the lower layer)."""
        sign = 1 if self.higher_is_better else -1
        return max(self.layers, key=lambda s: (sign * self.decisive(s), -int(s.layer)))

    def ranked(self) -> list[LayerScore]:
        """Single layers from best to worst on :attr:`chosen_on`."""
        sign = 1 if self.higher_is_better else -1
        return sorted(self.layers, key=lambda s: (-sign * self.decisive(s), int(s.layer)))


def rank(records: Sequence[Record], n_bootstrap: int = N_BOOTSTRAP, unit: str = "utterance") -> list[Ranking]:
    """One :class:`Ranking` per (upstream, setting): every probe's test score with a 95% interval
    from ``n_bootstrap`` replicates resampling ``unit`` (:data:`BOOTSTRAP_UNITS`; every probe of
    a ranking on the same replicates, so differences between layers are paired), and each
    single layer marked ``not_worse`` when the best layer's paired advantage over it has a 95%
    interval reaching 0. Seeds of a probe are resampled too. Raises HarnessError when records of
    one setting were scored on different test items, or for an unusable unit."""
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
        resample = resampling(recs[0].outcomes, unit, rng, n_bootstrap)
        dev_ids = recs[0].dev_outcomes.ids if recs[0].dev_outcomes is not None else None
        on_dev = dev_ids is not None and all(r.dev_outcomes is not None and r.dev_outcomes.ids == dev_ids
                                             for r in recs)
        # drawn after the test replicates, so rankings of records without dev outcomes keep their numbers
        dev_resample = resampling(recs[0].dev_outcomes, unit, np.random.default_rng(BOOTSTRAP_SEED + 1),
                                  n_bootstrap) if on_dev else None
        dev_replicates: dict[str, np.ndarray] = {}
        max_seeds = max(len(v) for v in by_probe.values())
        seed_draw = rng.integers(0, max_seeds, size=(n_bootstrap, max_seeds))
        replicates: dict[str, np.ndarray] = {}
        scores: dict[str, LayerScore] = {}
        for probe, rs in sorted(by_probe.items()):
            rs = sorted(rs, key=lambda r: r.record.seed)
            per_seed = np.stack([_record_stat(r, resample) for r in rs])  # [seeds, B]
            pick = seed_draw[:, : len(rs)] % len(rs)
            reps = np.take_along_axis(per_seed.T, pick, axis=1).mean(1)  # [B]
            reps = np.where(np.isnan(reps), np.nanmean(reps), reps)  # a replicate with one trial class only
            replicates[probe] = reps
            if on_dev:
                dev_seed = np.stack([_stat(r.dev_outcomes, dev_resample) for r in rs])
                dev_reps = np.take_along_axis(dev_seed.T, pick, axis=1).mean(1)
                dev_replicates[probe] = np.where(np.isnan(dev_reps), np.nanmean(dev_reps), dev_reps)
            dev_point = [r.record.dev.get(metric) for r in rs]
            point = float(np.mean([r.record.test[metric] for r in rs]))
            layer = rs[0].record.layer
            weights = rs[0].record.layer_weights
            if weights and len(rs) > 1:
                weights = list(np.mean([r.record.layer_weights for r in rs], axis=0))
            scores[probe] = LayerScore(probe, layer, rs[0].upstream.layer_name(layer), point,
                                       float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5)), len(rs),
                                       weights, inputs=list(rs[0].record.layers),
                                       lrs=tuple(r.record.lr for r in rs if r.record.lr is not None),
                                       dev=float(np.mean(dev_point)) if None not in dev_point else None)
        singles = sorted((s for s in scores.values() if isinstance(s.layer, int)), key=lambda s: s.layer)
        weighted = [s for s in scores.values() if not isinstance(s.layer, int)]
        ranking = Ranking(first.upstream, first.task, metric, hib, sid, first.setting(), singles, weighted,
                          first.test_utterances or n, resample.unit, resample.units,
                          resample.weights is not None, "dev" if on_dev else "test")
        if singles:
            best = ranking.best
            sign = 1.0 if hib else -1.0
            decide = dev_replicates if on_dev else replicates
            for s in singles:
                diff = sign * (decide[best.probe] - decide[s.probe])  # > 0: best is better
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


def _resampled(r: Ranking) -> str:
    """'bootstrap over 8 speakers · ' where the intervals resample something other than the
    scored utterances themselves (clusters, or the utterances behind verification trials)."""
    if not r.clustered:
        return ""
    return f"bootstrap over {r.units} {r.unit}s · "


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
    scores = r.ranked() + r.weighted
    if r.chosen_on == "dev":  # the score the choice was made on, beside the reported test score
        for row, s in zip(out, scores):
            row["dev"] = None if s.dev is None else round(s.dev, 6)
    if _has_lr(r):
        for row, s in zip(out, scores):
            row["lr"] = _lr(s) if s.lrs else None
    return out


def format_table(rankings: Sequence[Ranking], style: str = "table") -> str:
    """``table`` (terminal), ``markdown``, ``csv`` or ``json``."""
    if style == "json":
        return json.dumps([{"upstream": r.label, "task": r.task, "metric": r.metric,
                            "higher_is_better": r.higher_is_better, "setting": r.setting,
                            "setting_info": r.setting_info, "best_layer": r.best.layer if r.layers else None,
                            "bootstrap_unit": r.unit, "bootstrap_units": r.units,
                            "layers_not_significantly_worse": [s.layer for s in r.layers if s.not_worse],
                            "rows": rows(r)} for r in rankings], indent=2, sort_keys=True, default=str) + "\n"
    if style == "csv":
        import csv
        import io

        buf = io.StringIO()
        fields = ["upstream", "task", "metric", "probe", "layer", "layer_name", "rank", "score", "ci_low", "ci_high",
                  "seeds", "best", "not_significantly_worse", "weights"] + (["lr"] if any(map(_has_lr, rankings)) else []) \
            + (["dev"] if any(r.chosen_on == "dev" for r in rankings) else [])
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
                 f"{_resampled(r)}setting {r.setting}" + (" · layer chosen on dev" if r.chosen_on == "dev" else ""))
        grid = _has_lr(r)
        on_dev = r.chosen_on == "dev"
        header = ["rank", "layer", "name"] + ([f"dev {r.metric}"] if on_dev else []) + \
            [(f"test {r.metric}" if on_dev else r.metric), "95% CI", "", "seeds"] + (["lr"] if grid else [])
        body = []
        for row in rows(r):
            mark = "best" if row["best"] else ("~best" if row["not_significantly_worse"] else "")
            ci = f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
            dev = [("-" if row["dev"] is None else _fmt(row["dev"]))] if on_dev else []
            body.append([str(row["rank"] or "-"), str(row["layer"]), row["layer_name"]] + dev +
                        [_fmt(row["score"]), ci, mark, str(row["seeds"])] + ([row["lr"] or "-"] if grid else []))
        notes = _notes(r)
        weights = [f"{s.probe}: " + " ".join(f"{w:.2f}" for w in (s.weights or [])) for s in r.weighted]
        if style == "markdown":
            lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(c for c in row) + " |" for row in body]
            lines += [""] + [f"Learned weights ({w})" for w in weights] + [f"{n[0].upper()}{n[1:]}." for n in notes]
            lines.append("\n`~best`: not significantly worse than the best layer (paired bootstrap, 95%"
                         + (", on dev; the test score is reported)." if on_dev else
                            ", on test: these records predate kept dev outcomes)."))
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


def figure(r: Ranking):
    """Metric vs layer with the 95% CI band (and the weighted sum), plus learned weights as bars
    at the layers they weigh: a ``matplotlib.figure.Figure`` (no pyplot state to close)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    has_weights = any(s.weights for s in r.weighted)
    fig = Figure(figsize=(9 if has_weights else 5.5, 3.4), dpi=100)
    axes = fig.subplots(1, 2 if has_weights else 1, squeeze=False)
    ax = axes[0, 0]
    xs = [s.layer for s in r.layers]
    if len(xs) == 1:  # one layer (a single-layer upstream, or `--layer 9`): a point with its interval
        s0 = r.layers[0]
        ax.errorbar(xs, [s0.score], yerr=[[s0.score - s0.ci_low], [s0.ci_high - s0.score]], fmt="o", capsize=6,
                    color="#1f5fa8", label="95% CI")
        ax.set_xlim(s0.layer - 1, s0.layer + 1)
    else:
        ax.plot(xs, [s.score for s in r.layers], marker="o", color="#1f5fa8", label="single layer")
        ax.fill_between(xs, [s.ci_low for s in r.layers], [s.ci_high for s in r.layers], color="#1f5fa8", alpha=0.2,
                        label="95% CI")
    for s in r.weighted:
        ax.axhline(s.score, color="#c2410c", linestyle="--", label=f"{s.probe}")
    if r.layers:
        b = r.best
        ax.plot([b.layer], [b.score], marker="*", markersize=14, color="#15803d", linestyle="none", label="best")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel(f"test {r.metric} ({'higher' if r.higher_is_better else 'lower'} is better)")
    ax.set_title(f"{r.label} · {r.task}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if has_weights:
        s = next(s for s in r.weighted if s.weights)
        ax2 = axes[0, 1]
        at = s.inputs if len(s.inputs) == len(s.weights) else list(range(len(s.weights)))  # a subset: its layers
        ax2.bar(at, s.weights, color="#c2410c")
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_xlabel("layer")
        ax2.set_ylabel("learned weight")
        ax2.set_title(f"{s.probe}: softmax weights", fontsize=9)
        ax2.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def plot(r: Ranking, path: Path) -> Path:
    """:func:`figure` as a compact PNG at ``path`` (written atomically)."""
    return save_png(figure(r), path)


def plot_name(r: Ranking) -> str:
    """The plot's file name: ``TASK__UPSTREAM__SETTING.png``."""
    return f"{r.task}__{slug(r.label)}__{r.setting}.png"
