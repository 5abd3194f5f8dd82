"""Steps 4 and 5 of a run (:mod:`harness.probing.engine`): train every probe with Lightning,
then score each probe's best dev state on dev and test.

Kept apart from the engine because importing Lightning costs about 5 s on a CPU: a run that is
found finished (its records already written) never imports this module, so a second
``harness benchmark`` of finished runs only reads records.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from harness.features.loaders import (
    eval_loader,
    s3prl_asr_buckets,
    s3prl_ctc_buckets,
    train_loader,
)
from harness.features.planning import audio_samples
from harness.probing.module import (
    ProbeModule,
    StepProgress,
    WindowCheckpoint,
    predict_all,
)
from harness.probing.plan import RunPlan, draws_crops
from harness.quiet import no_stdout, quiet_third_party
from harness.records import Outcomes

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
                         weights=plan.task.sample_weights(plan.examples["train"]),
                         draws=draws_crops(plan.examples["train"]), buckets=training_buckets(plan))
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


def training_buckets(plan: RunPlan) -> list[list[int]] | None:
    """s3prl's fixed training batches when the config's ``batching`` asks for them (``s3prl_asr``:
    by audio length; ``s3prl_ctc``: by target length, halved by audio length), else None.
    Lengths come from the audio headers and the encoded targets."""
    batching = plan.task.option("batching")
    if batching == "random":
        return None
    train = plan.examples["train"]
    lengths = audio_samples(train)
    size = int(plan.config["batch_size"])
    if batching == "s3prl_asr":
        return s3prl_asr_buckets(lengths, size)
    return s3prl_ctc_buckets([len(e.target) for e in train], lengths, size)


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
