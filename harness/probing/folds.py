"""Cross-validated runs reported as one result (SUPERB ER: five leave-one-session-out folds).

Each fold is an ordinary run (its own identity, checkpoints and records, kept under
``$HARNESS_HOME/folds``); this module turns the folds' records into one record per probe:

- the metric is the **mean over folds** of each fold's test metric (SUPERB reports the mean
  of the five fold accuracies), ``<metric>_fold<k>`` keeps each fold's value;
- ``<metric>_ci_low`` / ``<metric>_ci_high``: a 95% percentile bootstrap interval of that
  mean, 1,000 replicates (seed 20240) that resample test utterances **within each fold**
  (stratified: every replicate keeps each fold's size), so fold-to-fold differences in size
  never leak into the interval;
- the per-utterance outcomes of all folds, each utterance weighted by 1 / (its fold's
  denominator) so that ``sum(numerator) / sum(denominator)`` is exactly the mean over folds,
  with ``extra["fold"]`` naming each utterance's fold (a stratified bootstrap can use it);
- dev metrics averaged the same way; ``best_step_fold<k>`` in ``dev`` keeps each fold's
  selected step (``best_step`` is the latest of them); ``dev_curve`` holds every fold's curve,
  each point marked with its fold; learned layer weights are averaged over folds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.config import merge_config
from harness.errors import HarnessError
from harness.records import (
    Outcomes,
    ResultRecord,
    read_outcomes,
    read_record,
    write_record,
)

N_BOOTSTRAP = 1000
BOOTSTRAP_SEED = 20240
COMBINE = "mean over folds; 95% percentile bootstrap resampling test utterances within each fold"


def merged(overrides: dict | None, fold: dict) -> dict:
    """The user's overrides with a fold's (the fold's keys win)."""
    base = dict(overrides or {})
    for key, value in fold.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = merge_config(base[key], value)
        else:
            base[key] = value
    return base


def identity(parent: dict, fold_keys: Sequence[str]) -> dict:
    """The combined run's identity: its folds' run keys (each hashes its whole experiment) and
    how they are combined."""
    return {"task": parent["task"], "folds": list(fold_keys), "combine": COMBINE}


def fold_mean_interval(outcomes: Sequence[Outcomes], n: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
                       level: float = 0.95) -> tuple[float, float, float]:
    """(mean over folds of each fold's value, low, high): the percentile interval of the mean
    over ``n`` replicates that resample each fold's utterances with replacement."""
    rng = np.random.default_rng(seed)
    point = float(np.mean([o.value for o in outcomes]))
    reps = np.zeros(n)
    for o in outcomes:
        if o.kind == "verification":
            raise HarnessError("folds combine accuracies and error rates, not verification trials")
        num, den = np.asarray(o.numerator, float), np.asarray(o.denominator, float)
        idx = rng.integers(0, len(num), size=(n, len(num)))
        reps += num[idx].sum(1) / np.maximum(den[idx].sum(1), 1e-12)
    reps /= len(outcomes)
    lo, hi = np.quantile(reps, [(1 - level) / 2, 1 - (1 - level) / 2])
    return point, float(lo), float(hi)


def weighted_outcomes(outcomes: Sequence[Outcomes], folds: Sequence[int]) -> Outcomes:
    """All folds' outcomes, each utterance weighted by 1 / its fold's denominator, so the value
    is the mean over folds; ``extra["fold"]`` names the fold of each utterance."""
    ids, num, den, fold_of = [], [], [], []
    for k, o in zip(folds, outcomes):
        total = float(sum(o.denominator)) or 1.0
        ids += list(o.ids)
        num += [float(v) / total for v in o.numerator]
        den += [float(v) / total for v in o.denominator]
        fold_of += [k] * len(o.ids)
    return Outcomes(ids, num, den, outcomes[0].kind, {"fold": fold_of})


def _mean_metrics(per_fold: Sequence[dict], folds: Sequence[int]) -> dict:
    out = {}
    for name in per_fold[0]:
        values = [float(m[name]) for m in per_fold if name in m]
        if len(values) == len(per_fold):
            out[name] = float(np.mean(values))
            out.update({f"{name}_fold{k}": v for k, v in zip(folds, values)})
    return out


def _combined_corpus(records: Sequence[ResultRecord]) -> dict:
    parts = [r.corpus for r in records]
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    head = {k: v for k, v in parts[0].items() if k not in ("examples", "content_sha256")}
    return {**head, "examples": sum(int(p.get("examples", 0)) for p in parts), "content_sha256": digest,
            "folds": len(parts)}


def write_combined(out: Path, config: dict, key: str, protocol: str, per_fold: Sequence[Sequence[Path]]) -> list[Path]:
    """One combined record per probe from every fold's record paths (same probes in the same
    order in every fold); returns the paths written under ``out``."""
    if not per_fold or not all(per_fold):
        return []  # a rank > 0 of a distributed run: rank 0 writes
    folds = [int(read_record(paths[0]).config.get("test_session", i + 1)) for i, paths in enumerate(per_fold)]
    written = []
    for j in range(len(per_fold[0])):
        records = [read_record(paths[j]) for paths in per_fold]
        outcomes = [read_outcomes(paths[j]) for paths in per_fold]
        first = records[0]
        name = first.metric.name
        test = _mean_metrics([r.test for r in records], folds)
        point, lo, hi = fold_mean_interval(outcomes)
        test.update({name: point, f"{name}_ci_low": lo, f"{name}_ci_high": hi})
        dev = _mean_metrics([r.dev for r in records], folds)
        dev.update({f"best_step_fold{k}": float(r.best_step) for k, r in zip(folds, records)})
        weights = None
        if first.layer_weights is not None:
            weights = np.mean([r.layer_weights for r in records], axis=0).tolist()
        timing: dict = {}
        for r in records:
            for k, v in r.timing.items():
                timing[k] = round(timing.get(k, 0.0) + float(v), 1)
        record = ResultRecord(
            upstream=first.upstream, task=first.task, metric=first.metric, probe=first.probe, layer=first.layer,
            layers=list(first.layers), layer_weights=weights, dev=dev, test=test,
            best_step=max(r.best_step for r in records), steps=first.steps, seed=first.seed, config=config,
            corpus=_combined_corpus(records), run_key=key, test_utterances=sum(r.test_utterances for r in records),
            versions=first.versions, dev_curve=[{"fold": k, **p} for k, r in zip(folds, records) for p in r.dev_curve],
            no_cache=first.no_cache, pooled_cache=first.pooled_cache, world_size=first.world_size,
            dropped_utterances={f"fold{k}": dict(r.dropped_utterances) for k, r in zip(folds, records)
                                if r.dropped_utterances},
            data_root=first.data_root, wall_time_s=round(sum(r.wall_time_s or 0.0 for r in records), 1), timing=timing,
            peak_rss_mb=max((r.peak_rss_mb or 0.0) for r in records), protocol=protocol, selection=first.selection,
        )
        written.append(write_record(out, record, weighted_outcomes(outcomes, folds)))
    return written
