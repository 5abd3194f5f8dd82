"""``harness plan``: what a run will write and how long it will take, measured here first.

:func:`plan_run` resolves the run exactly as ``harness run`` does (same identity, same
device) and reports:

- the feature-cache plan (bytes per split, free space, the mode; :mod:`harness.features.planning`);
- the extraction rate in seconds of audio per second, from a forward pass over about 20 s
  of dev audio on the run's device and precision, and the time for what is missing (for a
  streamed run, the forward pass that every step repeats);
- the training time, from a few timed optimizer steps of the run's real probes (every head
  of ``--layer all`` in one module, as the run trains them) on a batch of the run's batch
  size built from the layers that forward pass produced, plus a timed prediction pass for
  the validations every ``val_interval`` steps and the final dev and test scoring. A
  streamed run adds the upstream's forward over each batch's audio at the measured rate.

Every figure says which device it was measured on and has two significant figures: it
comes from seconds of measurement. Each timed step collates its batch and moves it to the
device as the run does; reading the memory-mapped cache and Lightning's own per-step
bookkeeping are not included (on the quick benchmark's phone run the estimate was 0.6x the
measured training time: see ``docs/gpu.md``). Under DDP a step is timed on one process's
share of the batch (the gradient all-reduce is not included).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from pytorch_lightning.utilities import move_data_to_device

from harness.features.extract import significant
from harness.features.loaders import collate
from harness.features.planning import (
    ExtractionTiming,
    FeaturePlan,
    human_seconds,
    time_extraction,
)
from harness.probing.announce import announce
from harness.probing.engine import (
    RunPlan,
    RunRequest,
    cache_plan,
    finished_records,
    prepare,
)
from harness.probing.module import ProbeModule


@dataclass
class TrainingTiming:
    """Measured training cost of a run: seconds per optimizer step of every probe together
    (``step_s``, plus ``upstream_step_s`` of upstream forward per step when streamed),
    seconds per utterance of a prediction pass (``eval_utt_s``, plus ``upstream_eval_s`` of
    forward over all evaluated audio when streamed), the run's steps and validations, the
    utterances of each pass, and where it was measured."""

    step_s: float
    upstream_step_s: float
    eval_utt_s: float
    upstream_eval_s: float
    steps: int
    validations: int
    dev_utterances: int
    test_utterances: int
    probes: int
    batch: int
    timed_steps: int
    device: str

    @property
    def train_s(self) -> float:
        """Seconds of training steps."""
        return self.steps * (self.step_s + self.upstream_step_s)

    @property
    def eval_s(self) -> float:
        """Seconds of validations (one dev pass each) and the final dev and test scoring."""
        utterances = (self.validations + 1) * self.dev_utterances + self.test_utterances
        return utterances * self.eval_utt_s + self.upstream_eval_s

    @property
    def total_s(self) -> float:
        """Training and evaluation, in seconds."""
        return self.train_s + self.eval_s

    def format(self) -> str:
        """The training lines of ``harness plan``."""
        per_step = f"{significant(self.step_s)} s per step of {self.probes} probe{'s' * (self.probes > 1)}"
        if self.upstream_step_s:
            per_step += f" + {significant(self.upstream_step_s)} s of upstream forward"
        return (f"training: {per_step} (batch {self.batch}, {self.timed_steps} timed steps on {self.device}) -> about "
                f"{human_seconds(self.train_s)} for {self.steps:,} steps; {self.validations} validation"
                f"{'s' * (self.validations != 1)} and the final scoring ({self.dev_utterances:,} dev, "
                f"{self.test_utterances:,} test utterances) about {human_seconds(self.eval_s)}; in all about "
                f"{human_seconds(self.total_s)}")


def time_training(plan: RunPlan, features: FeaturePlan, sample: ExtractionTiming, min_steps: int = 3,
                  budget_s: float = 5.0) -> TrainingTiming:
    """Time the run's probes on ``plan.placement``: one warm-up step, then at least ``min_steps``
    steps (more, up to 20, while under ``budget_s``), and one prediction pass, on a batch of the
    run's per-process batch size cycled from ``sample``'s utterances and layers (pooled when
    the run caches utterance means). Returns the per-step and per-utterance costs with the
    run's counts (:class:`TrainingTiming`)."""
    placement, config, info = plan.placement, plan.config, plan.upstream.info
    streamed = features.streamed
    pooled = plan.pooled and not streamed
    items = [{"example": e, "hidden": [None if a is None else torch.from_numpy(a.mean(0) if pooled else a)
                                       for a in layers]}
             for e, layers in zip(sample.examples, sample.layers)]
    per_rank = plan.per_rank_batch
    torch.manual_seed(plan.request.seed)
    module = ProbeModule(plan.task, plan.probes, list(info.dims), info.hop, config, plan.examples["dev"],
                         offset=info.frame_offset).to(placement.device)
    optimizer = module.configure_optimizers()

    def batch(k: int) -> dict:  # collated and moved as the run's loader and Lightning do, every step
        return move_data_to_device(collate([items[(k * per_rank + i) % len(items)] for i in range(per_rank)]),
                                   placement.device)

    def step(k: int) -> None:
        optimizer.zero_grad()
        module.loss(batch(k)).backward()
        module.on_before_optimizer_step(optimizer)
        optimizer.step()
        placement.synchronize()

    module.train()
    step(0)  # warm-up
    n, t = 0, time.perf_counter()
    while n < min_steps or (n < 20 and time.perf_counter() - t < budget_s):
        n += 1
        step(n)
    step_s = (time.perf_counter() - t) / n
    module.eval()
    with torch.no_grad():
        t = time.perf_counter()
        module.predictions(batch(0))
        placement.synchronize()
        eval_utt_s = (time.perf_counter() - t) / per_rank

    steps, interval = int(config["max_steps"]), int(config["val_interval"])
    validations = steps // interval + (1 if steps % interval else 0)
    split = {s.split: s for s in features.splits}
    upstream_step_s = upstream_eval_s = 0.0
    if streamed and sample.rate:
        train = split["train"]
        upstream_step_s = per_rank * train.hours * 3600 / max(train.utterances, 1) / sample.rate
        upstream_eval_s = ((validations + 1) * split["dev"].hours + split["test"].hours) * 3600 / sample.rate
    return TrainingTiming(step_s, upstream_step_s, eval_utt_s, upstream_eval_s, steps, validations,
                          split["dev"].utterances, split["test"].utterances, len(plan.probes), per_rank, n,
                          placement.describe())


@dataclass
class RunEstimate:
    """What ``harness plan`` prints: the feature plan (with the measured extraction rate), the
    measured training time (None without timing) and the records of a finished identical run."""

    features: FeaturePlan
    training: TrainingTiming | None = None
    finished: Path | None = None
    recipe: str = ""  # protocol and step budget (:func:`harness.probing.announce.announce`)

    def format(self) -> str:
        """The plan as printed by ``harness plan``."""
        lines = [self.features.format()]
        if self.recipe:
            lines.append(self.recipe)
        if self.training is not None:
            lines.append(self.training.format())
        if self.finished is not None:
            lines.append(f"this run is already finished: its records are in {self.finished}")
        return "\n".join(lines)


def plan_run(req: RunRequest, timing: bool = True) -> RunEstimate:
    """The plan of ``harness run`` with these arguments, without running it: the cache plan and
    (``timing``) the extraction and training times measured on the run's device. Writes no
    feature and no record; raises what :func:`~harness.probing.engine.prepare` raises."""
    plan = prepare(req)
    features = cache_plan(plan)
    features.cache_mode = "none" if req.no_cache else req.cache
    estimate = RunEstimate(features, recipe=announce(plan, None).removeprefix("harness: "))
    if timing:
        sample = time_extraction(plan.upstream, plan.examples["dev"], plan.placement, layers=plan.layers,
                                 batch_seconds=req.batch_seconds)
        features.extraction_rate, features.extraction_device = sample.rate, sample.device
        if sample.examples:
            estimate.training = time_training(plan, features, sample)
    done = finished_records(plan)
    if done:
        estimate.finished = done[0].parent
    return estimate
