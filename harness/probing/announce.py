"""The line a run prints before it trains: protocol, step budget and a timed estimate.

:func:`estimate_training` times a handful of real training steps of the run's probes on this
device (the same heads, optimizer and loss, on batches of the run's own training examples:
synthetic features of their median length for cached runs, real audio through the
upstream for streamed runs) and one no-grad pass, then scales them to the recipe's step
budget, accumulation and validations, in a second or two, so every run can afford it.
:func:`announce` is the one line a run prints before training. ``harness plan`` measures
more carefully on real features (:mod:`harness.probing.estimate`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np
import torch

from harness.features.loaders import WaveDataset, collate
from harness.features.planning import audio_samples, human_seconds
from harness.probing.module import ProbeModule, make_optimizer
from harness.protocol import budget_line

TIMED_STEPS = 3
TIMING_BUDGET_S = 10.0  # stop timing once this much is spent (a big head's step can take a minute on a CPU)
SAMPLE_EXAMPLES = 64
LONG_SECONDS = 3600.0  # beyond this the announcement names --protocol quick


@dataclass
class TrainingEstimate:
    """Seconds per training batch and per evaluation batch as measured here, and the total."""

    step_s: float
    eval_s: float
    seconds: float
    device: str


def _batch(plan, examples: list, streamed: bool) -> dict:
    """A training batch of ``examples``: real audio when streamed, else features of the
    examples' median length (zeros: the cost of a step does not depend on the values)."""
    if streamed:
        ds = WaveDataset(examples)
        return collate([ds[i] for i in range(len(examples))])
    info = plan.upstream.info
    samples = float(np.median(audio_samples(examples)))
    crop = min((e.crop for e in examples if e.crop), default=None)
    if crop:
        samples = min(samples, crop)
    items = []
    for e in examples:
        hidden = []
        for layer, dim in enumerate(info.dims):
            if layer not in plan.layers:
                hidden.append(None)
            elif plan.pooled:
                hidden.append(torch.zeros(dim))
            else:
                hop = info.hop_of(layer)
                hidden.append(torch.zeros(max(1, int(samples // hop)) if hop else 1, dim))
        items.append({"example": e, "hidden": hidden})
    return collate(items)


def estimate_training(plan) -> TrainingEstimate:
    """Time ``TIMED_STEPS`` training steps (after one warm-up) and one evaluation pass of the
    run's probes here, and scale them: steps x accumulation x batch time, plus every
    validation and the final dev and test scoring. Timing stops early once ``TIMING_BUDGET_S``
    is spent (a step that long is its own measurement: the warm-up's extra cost is small
    beside it), so ASR's 42 M-parameter head on a CPU costs one step here, not four.
    Leaves every random generator as it was."""
    config = plan.config
    batch = min(plan.per_rank_batch, len(plan.examples["train"]))
    rng = np.random.default_rng(0)
    pool = plan.examples["train"]
    chosen = [pool[i] for i in rng.choice(len(pool), min(len(pool), SAMPLE_EXAMPLES), replace=False)]
    examples = chosen[:batch] if len(chosen) >= batch else (chosen * batch)[:batch]
    state = (random.getstate(), np.random.get_state())
    with torch.random.fork_rng(devices=[]):
        module = ProbeModule(plan.task, plan.probes, list(plan.upstream.info.dims), plan.upstream.info.hop, config,
                             plan.examples["dev"], upstream=plan.upstream if plan.streamed else None,
                             offset=plan.upstream.info.frame_offset)
        optimizer = make_optimizer(list(module.probes.parameters()), config)
        data = _batch(plan, examples, plan.streamed)
        times = []
        for _ in range(TIMED_STEPS + 1):
            t0 = time.perf_counter()
            hidden, b = module.prepared(data)
            loss = sum(plan.task.loss(*probe.outputs(hidden, b)) for probe in module.probes.values())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            times.append(time.perf_counter() - t0)
            if sum(times) > TIMING_BUDGET_S:
                break
        t0 = time.perf_counter()
        module.eval()
        with torch.no_grad():
            module.predictions(data)
        eval_s = time.perf_counter() - t0
    random.setstate(state[0])
    np.random.set_state(state[1])
    step_s = float(np.median(times[1:] or times))
    steps = int(config["max_steps"])
    batches = steps * int(config.get("accumulate", 1) or 1)
    validations = -(-steps // int(config["val_interval"]))
    select = plan.examples["test" if config.get("selection") == "test" else "dev"]
    per_pass = -(-len(select) // max(1, batch))
    final = -(-(len(plan.examples["dev"]) + len(plan.examples["test"])) // max(1, batch))
    total = batches * step_s + (validations * per_pass + final) * eval_s
    return TrainingEstimate(step_s, eval_s, total, "cpu" if not torch.cuda.is_available() else "this device")


def announce(plan, estimate: TrainingEstimate | None) -> str:
    """The line a run prints before training: protocol, step budget and the time estimate; names
    ``--protocol quick`` when the estimate is over an hour."""
    line = f"harness: {plan.task.name} · protocol {plan.protocol} · {budget_line(plan.config)}"
    if estimate is not None:
        line += (f" · estimated training {human_seconds(estimate.seconds)} here "
                 f"({estimate.step_s * 1000:.0f} ms per batch, timed)")
        if estimate.seconds > LONG_SECONDS and plan.protocol != "quick":
            line += "; `--protocol quick` is the CPU budget for the embedded corpus"
    return line
