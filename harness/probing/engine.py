"""One run: audio -> upstream -> layers -> (feature cache) -> probes -> metrics -> records.

:func:`run` is the pipeline, one step per function:

1. :func:`prepare` resolves the request (task, protocol and config, data, upstream, probes)
   and computes the run's identity, checking everything that can be checked before work;
2. :func:`finished_records` returns the records of an identical finished run, if any;
3. :func:`provide_features` builds the datasets: cached layers (extracting only the
   layers the probes need and only what is missing) or raw audio for streamed runs;
4. :func:`fit` trains every probe with Lightning (resumable at window ends), once per rate of
   a learning-rate grid (config ``lr_grid``) and per head seed (``seeds``) when given;
5. :func:`score` evaluates each probe's best dev state (of its dev-best grid point) on dev and
   test;
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch

from harness.config import parse_seeds
from harness.corpus.layout import require_embedded_corpus
from harness.errors import HarnessError
from harness.features.cache import ensure_features
from harness.features.device import DEFAULT_PRECISION, Placement, choose_device
from harness.features.extract import BATCH_SECONDS
from harness.features.loaders import (
    FeatureDataset,
    WaveDataset,
    eval_loader,
    train_loader,
)
from harness.features.planning import audio_samples, plan_features
from harness.fsutil import default_home, file_lock, require_writable_dir
from harness.probing import folds as fold_runs
from harness.probing.announce import LONG_SECONDS, announce, estimate_training
from harness.probing.identity import (
    corpus_identity,
    features_mode,
    finished_paths,
    run_identity,
    run_key,
)
from harness.probing.module import (
    ProbeModule,
    StepProgress,
    WindowCheckpoint,
    predict_all,
)
from harness.probing.probes import ProbeSpec, needed_layers, select_probes
from harness.probing.provenance import (
    describe,
    machine_fingerprint,
    package_versions,
    same_machine,
)
from harness.protocol import resolve_recipe
from harness.quiet import no_stdout, quiet_third_party
from harness.records import (
    MetricSpec,
    Outcomes,
    ResultRecord,
    UpstreamRef,
    portable_root,
    read_record,
    write_record,
)
from harness.registry import load_task
from harness.task import SPLITS, Example, Task
from harness.upstream import UpstreamPool

CACHE_MODES = ("disk", "auto", "none")


@dataclass
class RunRequest:
    """What the user asked for (``harness run`` arguments)."""

    upstream: str
    task: str
    layer: str = "all"
    data_root: Path | None = None
    out: Path = Path("results")
    seed: int = 0
    #: head-initialisation seeds trained in one pass (``--seeds 0,1,2``: a list or comma string,
    #: at least two); they share the batch order of ``seed``. None: one seed, ``seed``.
    seeds: Sequence[int] | str | None = None
    max_steps: int | None = None
    overrides: dict | None = None
    protocol: str | None = None  # None: superb where the task has it, else quick (harness.protocol)
    cache: str = "disk"  # disk (refused when it does not fit); auto: disk if it fits, else none; none: streamed
    no_cache: bool = False  # the old spelling of cache="none"
    random_init: bool = False
    init_seed: int = 0
    devices: str | int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    accelerator: str = "auto"  # as Lightning: a GPU when there is one (harness.features.device)
    precision: str = DEFAULT_PRECISION  # of the frozen upstream's forward pass; the probes train in float32
    cache_dtype: str = "float16"
    workers: int | None = None  # DataLoader worker processes (None: none on the CPU, a few beside a GPU)
    batch_seconds: float = BATCH_SECONDS  # padded audio per extraction batch
    progress: bool = True


@dataclass
class RunPlan:
    """A resolved request: everything the later steps need, and the run's identity."""

    request: RunRequest
    task: Task
    config: dict
    data_root: Path
    examples: dict[str, list[Example]]
    upstream: Any  # harness.upstream.Upstream
    probes: list[ProbeSpec]
    streamed: bool  # the upstream runs inside every step instead of reading the cache
    pooled: bool  # utterance means are cached instead of frames
    world_size: int
    identity: dict
    key: str
    placement: Placement = field(default_factory=lambda: Placement(torch.device("cpu")))
    protocol: str = "quick"  # the resolved protocol's name (recorded, never hashed)
    timing: dict = field(default_factory=dict)
    seeds: list[int] | None = None  # head-initialisation seeds of one pass (parsed request.seeds)

    @property
    def selection(self) -> str:
        """The split model selection scores: ``dev`` (default) or ``test`` (SUPERB's ASV choice)."""
        return str(self.config.get("selection", "dev"))

    def set_features(self, streamed: bool, pooled: bool) -> None:
        """How features reach the probes (part of the identity: fp16 frames, float32 means and
        streamed float32 layers give slightly different numbers)."""
        self.streamed, self.pooled = streamed, pooled
        self.identity["features"] = features_mode(streamed, pooled, self.request.cache_dtype)
        self.key = run_key(self.identity)

    @property
    def heads(self) -> list[tuple[ProbeSpec, int | None]]:
        """(probe, head seed) for every record the run writes; the head seed is None without
        ``seeds`` (the heads start from the run's own seed)."""
        return [(spec, seed) for seed in (self.seeds or [None]) for spec in self.probes]

    def record_seed(self, head_seed: int | None) -> int:
        """The seed a record of head seed ``head_seed`` carries (its file name's ``seedN``)."""
        return self.request.seed if head_seed is None else head_seed

    @property
    def layers(self) -> list[int]:
        """The layers the probes read (only those are extracted or streamed)."""
        return needed_layers(self.probes)

    @property
    def upstream_ref(self) -> UpstreamRef:
        """The upstream as records name it (spec, backend, weights hash, layer names, hop)."""
        info = self.upstream.info
        r = self.request
        return UpstreamRef(spec=r.upstream, backend=info.backend, source=info.source,
                           weights_sha256=info.weights_sha256, random_init=r.random_init,
                           init_seed=r.init_seed if r.random_init else None,
                           layer_names=tuple(info.layer_names), hop=info.hop)

    @property
    def out_dir(self) -> Path:
        """``OUT/UPSTREAM/TASK``: its setting folders hold the records."""
        return Path(self.request.out) / self.upstream_ref.folder / self.task.name

    @property
    def run_dir(self) -> Path:
        """``$HARNESS_HOME/runs/<key>``: the run's checkpoints and lock."""
        return default_home() / "runs" / self.key


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
    pooled = task.poolable and not config["layer_norm"] and not streamed and not _crops(examples["train"])
    identity = run_identity(
        upstream=upstream.identity(), task=task.name, config=config, probes=[p.key for p in probes], seed=req.seed,
        corpus=corpus_identity(data_root, [e for s in SPLITS for e in examples[s]]), world_size=world_size,
        features=features_mode(streamed, pooled, req.cache_dtype), task_content=task.identity(),
        compute=placement.identity(), init_seeds=seeds)
    plan = RunPlan(req, task, config, data_root, examples, upstream, probes, streamed, pooled, world_size, identity, "",
                   placement, recipe.protocol, seeds=seeds)
    plan.set_features(streamed, pooled)
    return plan


def _crops(examples: list[Example]) -> bool:
    """Whether training draws crops (then utterance means cannot be cached: each draw differs)."""
    return any(e.crop for e in examples)


def cache_plan(plan: RunPlan):
    """What a cached run would write (:class:`~harness.features.planning.FeaturePlan`)."""
    return plan_features(plan.upstream, plan.task, plan.examples, plan.layers,
                         plan.task.poolable and not plan.config["layer_norm"] and not _crops(plan.examples["train"]),
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


# -------------------------------------------------------------------- 4. fit


@dataclass
class Fitted:
    """The trained module (each probe's best dev state inside), the steps taken, and whether this
    process is rank 0 (only rank 0 scores and writes records).
    """
    module: Any  # harness.probing.module.ProbeModule, holding each probe's best dev state
    steps: int
    is_global_zero: bool


def fit(plan: RunPlan, datasets: dict[str, Any]) -> Fitted:
    """Train every probe.

    Windows of ``val_interval`` optimizer steps end with validation and a checkpoint in the run
    folder, so re-running resumes from the last window end. A run whose last step falls inside
    a window gets one more validation at that step, so every run ends validated.

    ``accumulate`` k (Lightning's ``accumulate_grad_batches``): an optimizer step sums the
    gradients of k batches of ``batch_size`` (each loss divided by k, as s3prl does), then clips
    and steps; ``max_steps`` and ``val_interval`` count optimizer steps, so a window is
    ``val_interval * k`` batches. ``selection: test`` validates on the test split instead of dev.
    """

    quiet_third_party(dependency_warnings=False)
    req, config, placement = plan.request, plan.config, plan.placement
    batch_size, val_interval = int(config["batch_size"]), int(config["val_interval"])
    workers = placement.workers(req.workers)
    accumulate = int(config.get("accumulate", 1))
    train = train_loader(datasets["train"], batch_size, val_interval, req.seed, plan.world_size, workers,
                         placement.pin_memory, accumulate=accumulate,
                         weights=plan.task.sample_weights(plan.examples["train"]), draws=_crops(plan.examples["train"]))
    dev = eval_loader(datasets[plan.selection], batch_size, workers, placement.pin_memory)
    pl.seed_everything(req.seed, workers=True, verbose=False)
    module = ProbeModule(plan.task, plan.probes, list(plan.upstream.info.dims), plan.upstream.info.hop, config,
                         plan.examples[plan.selection], upstream=plan.upstream if plan.streamed else None,
                         offset=plan.upstream.info.frame_offset, placement=placement, seeds=plan.seeds)
    last = _checkpoint_for_budget(plan.run_dir, int(config["max_steps"]))
    callbacks = [WindowCheckpoint(last, val_interval)] + ([StepProgress(plan.task.metric.name)] if req.progress else [])
    trainer = pl.Trainer(
        max_steps=int(config["max_steps"]), max_epochs=-1, accelerator=placement.accelerator, devices=req.devices,
        num_nodes=req.num_nodes, strategy=req.strategy, deterministic=True, num_sanity_val_steps=0,
        check_val_every_n_epoch=1, callbacks=callbacks, enable_checkpointing=False, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(plan.run_dir),
        use_distributed_sampler=False, accumulate_grad_batches=accumulate,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    gloo = plan.world_size > 1 and placement.accelerator == "cpu"
    with no_stdout() if gloo else contextlib.nullcontext():
        try:
            trainer.fit(module, train, dev, ckpt_path=str(last) if last.exists() else None, weights_only=True)
        except SystemExit:
            # Lightning turns Ctrl-C during fit into a quiet sys.exit(1); the user gets the harness's
            # one line and exit 130, as everywhere else (the last window's checkpoint resumes it)
            if trainer.interrupted:
                raise KeyboardInterrupt from None
            raise
    steps = max(int(trainer.global_step), module.steps_done)  # spawned workers: only the module comes back
    if steps != module.last_validated_step:
        module.validate_now(dev, steps, placement.device)
    return Fitted(module, steps, trainer.is_global_zero)


def _checkpoint_for_budget(run_dir: Path, max_steps: int) -> Path:
    """Where this run's window checkpoint lives. Normally one per experiment, which any run
    of it with a budget at least as long continues. If an earlier run of the same experiment
    already went past this budget, its states cannot give this budget's numbers (and must not
    be overwritten), so this budget trains on its own, beside it."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists():
        # memory-mapped: only the step counter is read here, Lightning loads the state itself
        done = int(torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))
        if done > max_steps:
            return run_dir / f"budget_{max_steps}" / "last.ckpt"
    return last


# ------------------------------------------------------------------ 5. score


@dataclass
class ProbeScores:
    """One probe's dev and test metrics and its per-test-utterance outcomes."""
    dev: dict[str, float]
    test: dict[str, float]
    outcomes: Outcomes  # per test utterance
    dev_outcomes: Outcomes | None = None  # per dev utterance: what reports choose the layer on


def score(plan: RunPlan, module, datasets: dict[str, Any]) -> dict[str, ProbeScores]:
    """Every probe (and head seed) with its best dev state, on dev and test, in one pass per split;
    with a learning-rate grid, only the grid point dev chose (:meth:`ProbeModule.chosen`) is
    scored, so test never sees the others. Keyed by member key."""
    module.load_best()
    batch_size = int(plan.config["batch_size"])
    keys = [module.chosen(spec.key, seed).key for spec, seed in plan.heads]
    results = {}
    workers, placement = plan.placement.workers(plan.request.workers), plan.placement
    per_split = {s: predict_all(module, eval_loader(datasets[s], batch_size, workers, placement.pin_memory), keys,
                                placement.device) for s in ("dev", "test")}
    for key in keys:
        dev_metrics, dev_outcomes = plan.task.score(per_split["dev"][key], plan.examples["dev"])
        test_metrics, outcomes = plan.task.score(per_split["test"][key], plan.examples["test"])
        results[key] = ProbeScores(dev_metrics, test_metrics, outcomes, dev_outcomes)
    return results


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
