"""One run: audio -> upstream -> layers -> (feature cache) -> probes -> metrics -> records.

:func:`run` is the pipeline, one step per function:

1. :func:`prepare` resolves the request (task, protocol and config, data, upstream, probes)
   and computes the run's identity, checking everything that can be checked before work;
2. :func:`finished_records` returns the records of an identical finished run, if any;
3. :func:`provide_features` builds the datasets: cached layers (extracting only the
   layers the probes need and only what is missing) or raw audio for streamed runs;
4. :func:`~harness.probing.training.fit` trains every probe with Lightning (resumable at
   window ends), once per rate of a learning-rate grid (config ``lr_grid``) and per head seed
   (``seeds``) when given;
5. :func:`~harness.probing.training.score` evaluates each probe's best dev state (of its
   dev-best grid point) on dev and test;
6. :func:`write_records` writes one record (plus per-utterance outcomes) per probe and head
   seed, with the chosen rate and every grid point's dev curve.

Before training a run prints one line (:func:`harness.probing.announce.announce`): its
protocol, step budget and a time estimate measured here. A task with folds (ER under
``superb``) runs each fold as a run of its own and writes the mean over folds as one
result (:mod:`harness.probing.folds`).
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harness.config import parse_seeds
from harness.corpus.layout import require_embedded_corpus
from harness.errors import HarnessError
from harness.features.cache import ensure_features
from harness.features.device import choose_device
from harness.features.loaders import FeatureDataset, WaveDataset
from harness.features.planning import audio_samples, plan_features
from harness.fsutil import default_home, file_lock, require_writable_dir
from harness.probing import folds as fold_runs
from harness.probing.identity import (
    corpus_identity,
    features_mode,
    finished_paths,
    run_identity,
    run_key,
)
from harness.probing.plan import CACHE_MODES, RunPlan, RunRequest, draws_crops
from harness.probing.probes import select_probes
from harness.probing.provenance import (
    describe,
    machine_fingerprint,
    package_versions,
    same_machine,
)
from harness.protocol import resolve_recipe
from harness.records import (
    MetricSpec,
    ResultRecord,
    portable_root,
    read_record,
    write_record,
)
from harness.registry import load_task
from harness.task import SPLITS
from harness.upstream import UpstreamPool

if TYPE_CHECKING:  # imported where used: Lightning is slow to import (see run)
    from harness.probing.training import Fitted, ProbeScores

# ------------------------------------------------------------------ 1. prepare


def world_size_of(devices: str | int, num_nodes: int, accelerator: str) -> int:
    """The number of training processes Lightning will start for these settings."""
    if isinstance(devices, str):
        d = devices.strip()
        if d in ("auto", "-1"):
            if accelerator in ("gpu", "cuda", "auto"):
                n = torch.cuda.device_count() if torch.cuda.is_available() else 1
            else:
                n = 1
        elif d.isdigit():
            n = int(d)
        elif all(p.strip().isdigit() for p in d.strip(",").split(",")):
            n = len([p for p in d.split(",") if p.strip()])
        else:
            raise HarnessError(f"--devices {devices!r} is not a number, a comma list of device ids, or auto")
    else:
        n = int(devices)
    if n < 1 or num_nodes < 1:
        raise HarnessError("--devices and --num-nodes must be at least 1")
    return n * num_nodes


def prepare(req: RunRequest, upstreams=None) -> RunPlan:
    """Resolve the request; every check that can be made before work is made here, the
    device first (:func:`~harness.features.device.choose_device`: ``--accelerator gpu``
    without a GPU fails in one line before anything is read).

    ``upstreams``: an :class:`~harness.upstream.UpstreamPool` to share loaded models
    between runs (``harness benchmark``); a fresh one otherwise."""
    placement = choose_device(req.accelerator, req.devices, req.precision)
    cache = "none" if req.no_cache else req.cache
    if cache not in CACHE_MODES:
        raise HarnessError(f"--cache {cache!r}: choose from {', '.join(CACHE_MODES)}")
    if req.batch_seconds <= 0:
        raise HarnessError(f"--batch-seconds must be positive, got {req.batch_seconds}")
    placement.workers(req.workers)  # checks the value
    task_cls = load_task(req.task)
    recipe = resolve_recipe(task_cls, req.protocol, req.overrides, req.max_steps)
    config = recipe.config
    seeds = parse_seeds(req.seeds)
    world_size = world_size_of(req.devices, req.num_nodes, placement.accelerator)
    if config["batch_size"] % world_size:
        raise HarnessError(f"batch_size {config['batch_size']} is not divisible by the {world_size} training processes "
                           "(the batch size is global); --set batch_size to a multiple of it")
    require_writable_dir(Path(req.out), "--out")
    require_writable_dir(default_home(), "HARNESS_HOME")
    if req.data_root is not None:
        data_root = Path(req.data_root)
        if not data_root.is_dir():
            raise HarnessError(f"--data-root {data_root} does not exist or is not a directory")
    else:
        data_root = require_embedded_corpus()
    task = task_cls(config)
    examples = {split: task.examples(data_root, split) for split in SPLITS}
    task.prepare(examples["train"])
    pool = upstreams if upstreams is not None else UpstreamPool()
    upstream = pool.get(req.upstream, random_init=req.random_init, seed=req.init_seed)
    probes = select_probes(req.layer, upstream.info, task.level)
    streamed = cache == "none"
    pooled = task.poolable and not config["layer_norm"] and not streamed and not draws_crops(examples["train"])
    identity = run_identity(
        upstream=upstream.identity(), task=task.name, config=config, probes=[p.key for p in probes], seed=req.seed,
        corpus=corpus_identity(data_root, [e for s in SPLITS for e in examples[s]]), world_size=world_size,
        features=features_mode(streamed, pooled, req.cache_dtype), task_content=task.identity(),
        compute=placement.identity(), init_seeds=seeds)
    plan = RunPlan(req, task, config, data_root, examples, upstream, probes, streamed, pooled, world_size, identity, "",
                   placement, recipe.protocol, seeds=seeds)
    plan.set_features(streamed, pooled)
    return plan


def cache_plan(plan: RunPlan):
    """What a cached run would write (:class:`~harness.features.planning.FeaturePlan`)."""
    pooled = plan.task.poolable and not plan.config["layer_norm"] and not draws_crops(plan.examples["train"])
    return plan_features(plan.upstream, plan.task, plan.examples, plan.layers, pooled,
                         plan.request.cache_dtype, default_home() / "features", placement=plan.placement)


def choose_features(plan: RunPlan) -> RunPlan:
    """Disk or streaming, before any work: ``--cache disk`` refuses (one line, with the numbers
    and the ways out) when the cache would not fit; ``--cache auto`` streams instead."""
    cache = "none" if plan.request.no_cache else plan.request.cache
    if plan.streamed:
        return plan
    fp = cache_plan(plan)
    if fp.fits:
        return plan
    if cache == "disk":
        raise HarnessError(fp.refusal())
    print(f"harness: the feature cache would need {fp.needed_with_headroom / 1e9:.1f} GB with headroom and "
          f"{fp.free / 1e9:.1f} GB are free: streaming the upstream in every step instead (--cache auto)",
          file=sys.stderr)
    plan.set_features(streamed=True, pooled=False)
    return plan


def drop_short_clips(plan: RunPlan) -> RunPlan:
    """Leave out utterances shorter than the upstream's shortest input
    (:meth:`~harness.upstream.UpstreamInfo.shortest_input`: the CNN's receptive field, an
    analysis window), which would give no frame or frames computed from padding. Each split's
    count goes into the task's ``dropped`` (and so into every record), with one line on stderr.
    Lengths come from the audio headers; the run's identity is unchanged (the drop follows from
    the data and the upstream, both in it)."""
    need = plan.upstream.info.shortest_input()
    for split in SPLITS:
        examples = plan.examples[split]
        lengths = audio_samples(examples)
        kept = [e for e, n in zip(examples, lengths) if n >= need]
        if len(kept) == len(examples):
            continue
        if not kept:
            raise HarnessError(f"every {split} utterance is shorter than {need} samples, the shortest input of "
                               f"{plan.request.upstream}")
        first = next(e for e, n in zip(examples, lengths) if n < need)
        print(f"harness: {len(examples) - len(kept)} {split} utterance(s) shorter than {need} samples "
              f"({need / 16000 * 1000:.0f} ms, the shortest input of {plan.request.upstream}) left out, "
              f"first {first.path}; counted in the record", file=sys.stderr)
        plan.examples[split] = kept
        plan.task.dropped[f"{split}: shorter than {need} samples"] = len(examples) - len(kept)
    return plan


# ---------------------------------------------------------- 2. finished runs


def finished_records(plan: RunPlan) -> list[Path] | None:
    """The record paths if every probe (and head seed) of this run already has a record at this
    step count."""
    steps = int(plan.config["max_steps"])
    found = []
    for spec, head_seed in plan.heads:
        paths = finished_paths(plan.out_dir, [spec.key], plan.record_seed(head_seed), plan.key, steps)
        if paths is None:
            return None
        found.extend(paths)
    return found


def say_if_from_another_machine(plan: RunPlan, paths: list[Path]) -> None:
    """One line when a finished run's records were made on a machine with another fingerprint: they
    are reused as that machine's result (the same experiment, numbers that may differ in the last
    bits here; see :mod:`harness.probing.provenance`). Records without a fingerprint say nothing."""
    made_on = read_record(paths[0]).machine
    here = machine_fingerprint(plan.request.accelerator)
    if made_on and not same_machine(made_on, here):
        print(f"harness: {plan.upstream_ref.folder}/{plan.task.name}: reusing records made on {describe(made_on)}; "
              f"this machine is {describe(here)}, where the numbers may differ slightly (delete the records to "
              "measure here)", file=sys.stderr)


# --------------------------------------------------------------- 3. features


def provide_features(plan: RunPlan) -> dict[str, Any]:
    """A dataset per split: cached layers (only those the probes need, extracted on the plan's
    device and precision) or raw audio."""
    if plan.streamed:
        return {s: WaveDataset(plan.examples[s]) for s in SPLITS}

    kind = "pooled" if plan.pooled else "frames"
    req = plan.request
    return {s: FeatureDataset(plan.examples[s], ensure_features(
        plan.upstream, plan.task.dataset, s, plan.examples[s], kind=kind, dtype=req.cache_dtype,
        layers=plan.layers, progress=req.progress, placement=plan.placement, batch_seconds=req.batch_seconds,
        workers=req.workers), hop=plan.upstream.info.hop) for s in SPLITS}


# ------------------------------------------------------------------ 6. records


def write_records(plan: RunPlan, fitted: Fitted, scores: dict[str, ProbeScores]) -> list[Path]:
    """One :class:`~harness.records.ResultRecord` (plus its per-utterance outcomes) per probe and head
    seed, under ``OUT/UPSTREAM/TASK/SETTING/``; returns their paths. Records of runs measured
    differently never overwrite each other. With a grid, a record holds the chosen grid point's
    numbers, its ``lr`` and every grid point's dev curve (``grid``); with ``seeds``, its ``seed``
    is the head seed and ``batch_seed`` the run's seed.
    """
    module = fitted.module
    versions = package_versions()
    metric: MetricSpec = plan.task.metric
    grid = "lr_grid" in plan.config
    paths = []
    for spec, head_seed in plan.heads:
        member = module.chosen(spec.key, head_seed)
        chosen = module.selection(member.key)
        s = scores[member.key]
        record = ResultRecord(
            upstream=plan.upstream_ref, task=plan.task.name, metric=metric, probe=spec.key, layer=spec.mode,
            layers=list(spec.layers), layer_weights=chosen.layer_weights,
            dev=s.dev, test=s.test, best_step=chosen.best_step, steps=fitted.steps,
            seed=plan.record_seed(head_seed), batch_seed=None if head_seed is None else plan.request.seed,
            lr=member.lr if grid else None, grid=module.grid_points(spec.key, head_seed) if grid else [],
            config=plan.config, corpus=plan.identity["corpus"], run_key=plan.key,
            test_utterances=len(plan.examples["test"]), versions=versions, dev_curve=chosen.dev_curve,
            no_cache=plan.streamed, pooled_cache=plan.pooled, world_size=plan.world_size,
            dropped_utterances=dict(plan.task.dropped), data_root=portable_root(plan.data_root),
            wall_time_s=round(sum(plan.timing.values()), 1), timing=dict(plan.timing),
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            machine=machine_fingerprint(plan.request.accelerator),
            protocol=plan.protocol, selection=plan.selection,
        )
        # runs measured differently (corpus, config, steps, version) never overwrite each other
        paths.append(write_record(plan.request.out, record, s.outcomes, s.dev_outcomes))
    return paths


# -------------------------------------------------------------------- the run


def run(req: RunRequest, upstreams=None) -> list[Path]:
    """Train and evaluate; write one record per probe; return their paths ([] on ranks > 0).
    A task with folds runs every fold, then writes the mean over folds (:func:`run_folds`)."""
    t0 = time.time()
    pool = upstreams if upstreams is not None else UpstreamPool()
    plan = prepare(req, pool)
    if plan.task.fold_overrides():
        return run_folds(plan, pool)
    done = finished_records(plan)
    if done is not None:
        say_if_from_another_machine(plan, done)
        return done
    # Lightning (under the probe module, the estimate and training) takes about 5 s to import on
    # a CPU; a run found finished above never needs it
    from harness.probing.announce import LONG_SECONDS, announce, estimate_training
    from harness.probing.training import fit, score

    plan = drop_short_clips(choose_features(plan))
    estimate = estimate_training(plan)
    if (req.progress or estimate.seconds > LONG_SECONDS) and os.environ.get("RANK", "0") == "0":  # once per launch
        print(announce(plan, estimate), file=sys.stderr, flush=True)
    with _experiment_lock(plan):
        done = finished_records(plan)  # another process may have finished it while we waited
        if done is not None:
            return done
        t1 = time.time()
        datasets = provide_features(plan)
        t2 = time.time()
        fitted = fit(plan, datasets)
        if not fitted.is_global_zero:
            return []
        t3 = time.time()
        scores = score(plan, fitted.module, datasets)
        plan.timing = {"prepare_s": round(t1 - t0, 1), "extract_s": round(t2 - t1, 1), "train_s": round(t3 - t2, 1),
                       "evaluate_s": round(time.time() - t3, 1)}
        return write_records(plan, fitted, scores)


def run_folds(plan: RunPlan, pool: UpstreamPool) -> list[Path]:
    """Cross-validation: every fold (the task's :meth:`~harness.task.Task.fold_overrides`) is a run
    of its own, its records kept under ``$HARNESS_HOME/folds`` (resumable, found finished like any
    run, out of the leaderboards); then one record per probe in ``--out`` holds the mean over
    folds with a bootstrap interval that resamples test utterances within each fold."""
    req = plan.request
    sub = [replace(req, overrides=fold_runs.merged(req.overrides, o), out=default_home() / "folds")
           for o in plan.task.fold_overrides()]
    plans = [prepare(r, pool) for r in sub]
    key = run_key(fold_runs.identity(plan.identity, [p.key for p in plans]))
    found = finished_paths(plan.out_dir, [p.key for p in plan.probes], req.seed, key, int(plan.config["max_steps"]))
    if found is not None:
        return found
    per_fold = [run(r, pool) for r in sub]
    return fold_runs.write_combined(req.out, plan.config, key, plan.protocol, per_fold)


@contextlib.contextmanager
def _experiment_lock(plan: RunPlan):
    """One process at a time trains a given experiment in a given HARNESS_HOME: a second one
    waits, then finds the records (same --out) or resumes the finished checkpoint. Skipped
    under a distributed launch, whose ranks share the run on purpose."""
    if plan.world_size > 1:
        yield
        return
    lock = plan.run_dir / "run.lock"
    with file_lock(lock, blocking=False) as held:
        if held:
            yield
            return
    print(f"harness: another process is running this experiment ({plan.run_dir.name}); waiting for it",
          file=sys.stderr, flush=True)
    with file_lock(lock, blocking=True):
        yield
