"""s3prl's downstream training and evaluation loop, as ``s3prl/downstream/runner.py`` (0.4.18) runs it.

Built like the runner: seed (``random``, ``numpy``, ``torch``), the upstream from ``s3prl.hub``,
``s3prl.upstream.interfaces.Featurizer`` over its ``hidden_states`` (a softmax-weighted sum when
there is more than one), the task's ``DownstreamExpert`` given the config dict, and the optimizer
from ``s3prl.optimizers.get_optimizer`` over featurizer + expert. One training step = one
optimizer update: ``gradient_accumulate_steps`` batches, each loss divided by that number,
gradient norm clipped over featurizer + expert, the update skipped when the norm is NaN, the
representation SpecAugment-ed when the config has ``specaug`` (ASR). Before each evaluation the
seeds are reset to ``seed`` and every module is put in eval mode, as the runner does. Metrics are
what the expert's own ``log_records`` logs; per-utterance outcomes are read from the records its
``forward`` filled.
"""

from __future__ import annotations

import copy
import importlib
import math
import random
import time
from collections import defaultdict

import numpy as np
import torch

from .patches import ScalarLog, on_cpu
from .recipes import Recipe

WARMUP_STEPS = 3  # left out of the seconds-per-step mean


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_upstream(spec: str):
    """``fbank`` or ``NAME=CKPT`` (e.g. ``hf_hubert_custom=/path/to/hf_folder``) through ``s3prl.hub``."""
    from s3prl import hub  # ~18 s on first import

    name, _, ckpt = spec.partition("=")
    return getattr(hub, name)(ckpt=ckpt or None, model_config=None, refresh=False)


def _featurize(upstream, featurizer, wavs):
    wavs = [torch.FloatTensor(w) for w in wavs]
    with torch.no_grad():
        hidden = upstream(wavs)
    return featurizer(wavs, hidden)


def _loader(expert, split: str, recipe: Recipe, workers: int):
    if hasattr(expert, "corpus") and "num_workers" not in expert.corpus:
        expert.corpus["num_workers"] = workers  # ctc's load_dataset pops it, so a 2nd call would get 12
    return expert.get_dataloader(split)


def evaluate(upstream, featurizer, expert, recipe: Recipe, split: str, seed: int, step: int, workers: int):
    """(metric as logged by the expert, records, seconds) for one split."""
    set_seed(seed)
    modes = [(m, m.training) for m in (featurizer, expert)]
    for m, _ in modes:
        m.eval()
    start = time.perf_counter()
    loader = _loader(expert, recipe.splits[split], recipe, workers)
    records, batch_ids = defaultdict(list), []
    with torch.no_grad(), on_cpu():
        for batch_id, (wavs, *others) in enumerate(loader):
            features = _featurize(upstream, featurizer, wavs)
            expert(recipe.splits[split], features, *others, records=records, batch_id=batch_id)
            batch_ids.append(batch_id)
    log = ScalarLog()
    expert.log_records(recipe.splits[split], records=records, logger=log, global_step=step, batch_ids=batch_ids,
                       total_batch_num=len(loader))
    for m, training in modes:
        m.train(training)
    value = log.ending(f"{recipe.splits[split]}-{recipe.metric}")
    if recipe.metric == "wer":
        value /= 100.0  # the ASR expert logs percent
    return value, records, time.perf_counter() - start


def trainable_parameters(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)


def run(recipe: Recipe, upstream_spec: str, steps: int, seed: int, expdir, eval_step: int | None = None,
        workers: int = 0, log=print) -> dict:
    """Train ``steps`` optimizer updates, evaluate; returns the record's measured fields."""
    from s3prl.optimizers import get_optimizer
    from s3prl.upstream.interfaces import Featurizer

    config = recipe.config
    set_seed(seed)
    upstream = build_upstream(upstream_spec).eval()
    featurizer = Featurizer(upstream=upstream, feature_selection="hidden_states", upstream_device="cpu",
                            layer_selection=None, normalize=False)
    expert_cls = importlib.import_module(f"s3prl.downstream.{recipe.folder}.expert").DownstreamExpert
    expert = expert_cls(upstream_dim=featurizer.output_dim, upstream_rate=featurizer.downsample_rate,
                        expdir=str(expdir), seed=seed, **copy.deepcopy(config))
    modules = [featurizer, expert]
    for m in modules:
        m.train()
    params = [p for m in modules for p in m.parameters()]
    optimizer = get_optimizer(modules, config["runner"]["total_steps"], config["optimizer"])
    specaug = None
    if config.get("specaug"):
        from s3prl.downstream.specaug import SpecAug

        specaug = SpecAug(**config["specaug"])
    accumulate = config["runner"]["gradient_accumulate_steps"]
    clip = config["runner"]["gradient_clipping"]
    select = "dev" if "dev" in recipe.splits else "test"  # SUPERB ASV: best test EER over checkpoints
    better = (lambda a, b: a > b) if recipe.higher_is_better else (lambda a, b: a < b)
    best = None  # (value, step, state, records)
    step, backward, epoch, nan_steps, losses, times, batches = 0, 0, 0, 0, [], [], 0
    train_start = tick = time.perf_counter()
    while step < steps:
        for wavs, *others in _loader(expert, "train", recipe, workers):
            if step >= steps:
                break
            with on_cpu():
                features = _featurize(upstream, featurizer, wavs)
                if specaug:
                    features, _ = specaug(features)
                loss = expert("train", features, *others, records=defaultdict(list))
            (loss / accumulate).backward()
            losses.append(loss.item())
            batches += 1
            backward += 1
            if backward % accumulate:
                continue
            norm = torch.nn.utils.clip_grad_norm_(params, clip)
            if math.isnan(norm):
                nan_steps += 1
            else:
                optimizer.step()
            optimizer.zero_grad()
            step += 1
            now = time.perf_counter()
            times.append(now - tick)
            if step % 25 == 0 or step == steps:
                log(f"  [{recipe.task}] step {step}/{steps}  loss {np.mean(losses[-25 * accumulate:]):.4f}  "
                    f"{np.mean(times[-25:]):.2f} s/step")
            if eval_step and step % eval_step == 0 and step < steps:
                value, records, _ = evaluate(upstream, featurizer, expert, recipe, select, seed, step, workers)
                log(f"  [{recipe.task}] step {step}: {select} {recipe.metric} {value:.4f}")
                if best is None or better(value, best[0]):
                    best = (value, step, _state(modules), records)
            tick = time.perf_counter()
        epoch += 1
    train_seconds = time.perf_counter() - train_start
    value, records, seconds = evaluate(upstream, featurizer, expert, recipe, select, seed, step, workers)
    if best is None or not better(best[0], value):
        best = (value, step, None, records)
    elif best[2] is not None:
        for m, state in zip(modules, best[2]):
            m.load_state_dict(state)
    results = {select: {"metric": best[0], "step": best[1], "records": best[3], "seconds": seconds}}
    for split in recipe.splits:
        if split != select:
            value, records, seconds = evaluate(upstream, featurizer, expert, recipe, split, seed, best[1], workers)
            results[split] = {"metric": value, "step": best[1], "records": records, "seconds": seconds}
    timed = times[WARMUP_STEPS:] or times
    return {
        "results": results, "expert": expert,
        "head_parameters": trainable_parameters(featurizer, expert),
        "featurizer_parameters": trainable_parameters(featurizer),
        "upstream_dim": featurizer.output_dim, "upstream_rate": featurizer.downsample_rate,
        "layers": getattr(featurizer, "layer_num", 1),
        "train_items": len(expert.train_dataset) if hasattr(expert, "train_dataset") else None,
        "steps": step, "loader_passes": epoch, "batches": batches, "nan_steps": nan_steps,
        "seconds_per_step": float(np.mean(timed)), "seconds_per_step_median": float(np.median(timed)),
        "train_seconds": train_seconds, "final_loss": float(np.mean(losses[-10 * accumulate:])) if losses else None,
    }


def _state(modules):
    return [copy.deepcopy(m.state_dict()) for m in modules]
