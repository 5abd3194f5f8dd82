"""Benchmark: what the accelerator does for extraction, streaming and probe training, side by side.

    python bench/gpu.py            # whatever device is here: random-weights HuBERT Base and Large, 30 min of audio
    python bench/gpu.py --small    # CI and CPUs: random-weights DistilHuBERT on 60 s of audio (about a minute)

On the device :func:`harness.features.device.choose_device` picks (``--accelerator``, default
auto), for each upstream and precision (``32-true`` and ``bf16-mixed``; ``16-mixed`` on GPUs
without bfloat16), prints seconds of audio per second of

(a) the bare upstream forward pass: audio already decoded, padded and on the device, batched
    as extraction batches it (by length, ``--batch-seconds`` of padded audio), timed on a second
    pass over the batches (the first picks kernels for every batch shape);
(b) extraction through the feature cache (decoding in DataLoader workers, forward, copies
    back, fp16 shards written) into a fresh cache, keeping one layer (the last) or all;
(c) streamed training (``--cache none``): the real probe module with the upstream inside every
    step, one layer's probe or every layer's probes plus the weighted sum;

then probe training steps per second from the cache (d), the ratios (b)/(a) and (c)/(a) from
the same run, and the largest difference of each layer from the fp32 forward (relative to that
layer's range) for the mixed precisions. Audio: seeded noise of LibriSpeech-like lengths
(2-16 s) written as FLAC to a temporary folder; labels for the phone task's probes are seeded
random classes (throughput only: nothing is learned). ``--check`` exits 1 when an extraction
ratio is below 0.9.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from pytorch_lightning.utilities import move_data_to_device

from harness.audio import SAMPLE_RATE, read_audio
from harness.features.cache import ensure_features
from harness.features.device import choose_device
from harness.features.extract import BATCH_SECONDS, iter_layers, plan_batches, significant
from harness.features.loaders import FeatureDataset, WaveDataset, train_loader
from harness.probing.module import ProbeModule
from harness.probing.probes import select_probes
from harness.registry import load_task
from harness.task import Example
from harness.upstream import load_upstream, pad_batch

PHONES = 40


def synth_examples(folder: Path, seconds: float, seed: int = 0) -> list[Example]:
    """Seeded noise utterances of 2-16 s (LibriSpeech-like) totalling about ``seconds``, written as
    FLAC, each with random 10 ms phone labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out, total, i = [], 0.0, 0
    while total < seconds:
        n = int(rng.uniform(2.0, 16.0) * SAMPLE_RATE)
        path = folder / f"utt{i:05d}.flac"
        sf.write(path, (0.1 * rng.standard_normal(n)).clip(-1, 1).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        out.append(Example(f"utt{i:05d}", path, rng.integers(0, PHONES, n // 160 + 1).astype(np.int64)))
        total += n / SAMPLE_RATE
        i += 1
    return out


def phone_task(batch: int, steps: int):
    """The phone task (a linear probe per frame) with a fixed inventory for synthetic labels."""
    cls = load_task("phone")
    config = cls.default_config()
    config.update({"batch_size": batch, "val_interval": steps, "max_steps": steps})
    task = cls(config)
    task.inventory = [f"p{i}" for i in range(PHONES)]
    return task


def bare_rate(up, waves: list[np.ndarray], placement, batch_seconds: float) -> float:
    """(a): seconds of audio per second of ``up.layers`` alone on ready device batches."""
    groups, long = plan_batches([len(w) for w in waves], up.padding_sensitive, up.chunkable, batch_seconds)
    assert not long
    batches = []
    for g in groups:
        wavs, lens = pad_batch([torch.from_numpy(waves[i]) for i in g])
        batches.append((wavs.to(placement.device), lens.to(placement.device)))
    with placement.placed(up), torch.no_grad(), placement.autocast():
        for wavs, lens in batches:  # warm-up over every batch shape: cuDNN picks kernels per new shape
            up.layers(wavs, lens)
        placement.synchronize()
        t = time.perf_counter()
        for wavs, lens in batches:
            up.layers(wavs, lens)
        placement.synchronize()
        took = time.perf_counter() - t
    return sum(len(w) for w in waves) / SAMPLE_RATE / took


def cache_rate(up, examples, placement, layers, root: Path, batch_seconds: float):
    """(b): seconds of audio per second of :func:`ensure_features` into an empty cache; and the features."""
    t = time.perf_counter()
    feats = ensure_features(up, "bench", "train", examples, layers=layers, root=root, progress=False,
                            placement=placement, batch_seconds=batch_seconds)
    placement.synchronize()
    return audio_seconds(examples) / (time.perf_counter() - t), feats


def audio_seconds(examples) -> float:
    """Seconds of audio in the examples (from the FLAC headers)."""
    return sum(sf.info(str(e.path)).frames for e in examples) / SAMPLE_RATE


def _train(module, loader, placement, steps: int, budget_s: float | None = None) -> tuple[int, float, float]:
    """Run optimizer steps of ``module`` on ``loader``'s batches: (steps, seconds, seconds of audio)."""
    optimizer = module.configure_optimizers()
    module.train()
    done, audio, t = 0, 0.0, None
    it = iter(loader)
    while done < steps:
        batch = move_data_to_device(next(it), placement.device)
        optimizer.zero_grad()
        module.loss(batch).backward()
        module.on_before_optimizer_step(optimizer)
        optimizer.step()
        placement.synchronize()
        if t is None:  # the first step warms up
            t = time.perf_counter()
        else:
            done += 1
            audio += float(batch["wave_lengths"].sum()) / SAMPLE_RATE if "wave_lengths" in batch else 0.0
            if budget_s is not None and time.perf_counter() - t > budget_s and done >= 3:
                break
    return done, time.perf_counter() - t, audio


def streamed_rate(up, task, examples, placement, layer_arg: str, batch: int) -> float:
    """(c): seconds of audio per second of training steps with the upstream inside each step."""
    probes = select_probes(layer_arg, up.info, task.level)
    module = ProbeModule(task, probes, list(up.info.dims), up.info.hop, task.config, examples, upstream=up,
                         offset=up.info.frame_offset, placement=placement)
    batch = min(batch, len(examples))
    steps = max(2, math.ceil(len(examples) / batch))  # every utterance about once, at least 2 timed steps
    loader = train_loader(WaveDataset(examples), batch, steps + 1, 0, workers=placement.workers(None),
                          pin_memory=placement.pin_memory)
    with placement.placed(module):
        _, took, audio = _train(module, loader, placement, steps)
    return audio / took


def probe_steps(up, task, examples, feats, placement, layer_arg: str, batch: int, budget_s: float) -> float:
    """(d): probe training steps per second reading the cache (the run's loader and module)."""
    probes = select_probes(layer_arg, up.info, task.level)
    module = ProbeModule(task, probes, list(up.info.dims), up.info.hop, task.config, examples,
                         offset=up.info.frame_offset)
    loader = train_loader(FeatureDataset(examples, feats), batch, 10_000, 0, workers=0, pin_memory=placement.pin_memory)
    with placement.placed(module):
        done, took, _ = _train(module, loader, placement, 200, budget_s)
    return done / took


def precision_gap(up, waves, placement) -> float:
    """Largest |layer(precision) - layer(fp32)| over every layer and frame, relative to that layer's range."""
    fp32 = dict(iter_layers(up, waves, placement=choose_device(placement.device.type, 1, "32-true")))
    mixed = dict(iter_layers(up, waves, placement=placement))
    worst = 0.0
    for i in fp32:
        for a, b in zip(fp32[i], mixed[i]):
            worst = max(worst, float(np.abs(a - b).max() / max(float(a.max() - a.min()), 1e-12)))
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="DistilHuBERT (random weights) on 60 s: CI, CPUs")
    ap.add_argument("--upstreams", help="comma list of registry names, run with random weights "
                                        "(default: hubert_base,hubert_large_ll60k; --small: distilhubert)")
    ap.add_argument("--seconds", type=float, help="seconds of audio (default 1800; --small: 60)")
    ap.add_argument("--accelerator", default="auto", help="auto (default), cpu, gpu")
    ap.add_argument("--precisions", help="comma list (default: 32-true and bf16-mixed, or 16-mixed on a GPU "
                                         "without bfloat16)")
    ap.add_argument("--batch", type=int, default=8, help="utterances per training batch (default 8)")
    ap.add_argument("--batch-seconds", type=float, default=BATCH_SECONDS, help="padded audio per extraction batch")
    ap.add_argument("--check", action="store_true", help="exit 1 when extraction is below 0.9x the bare forward")
    ap.add_argument("--out", help="also write the table (markdown) to this file")
    args = ap.parse_args()

    specs = (args.upstreams or ("distilhubert" if args.small else "hubert_base,hubert_large_ll60k")).split(",")
    seconds = args.seconds or (60.0 if args.small else 1800.0)
    first = choose_device(args.accelerator)
    if args.precisions:
        precisions = args.precisions.split(",")
    else:
        half = "bf16-mixed" if first.device.type != "cuda" or torch.cuda.is_bf16_supported() else "16-mixed"
        precisions = ["32-true", half]
    work = Path(tempfile.mkdtemp(prefix="harness-gpu-bench-"))
    os.environ["HARNESS_HOME"] = str(work / "home")
    examples = synth_examples(work / "audio", seconds)
    waves = [read_audio(e.path) for e in examples]
    audio = sum(len(w) for w in waves) / SAMPLE_RATE
    print(f"device {first.describe().rsplit(',', 1)[0]}; torch {torch.__version__}; {len(examples)} utterances, "
          f"{audio:.0f} s of audio; {os.cpu_count()} CPUs", flush=True)
    task = phone_task(args.batch, 10_000)
    head = ("| upstream | precision | layers kept | (a) bare forward | (b) extraction via cache | (b)/(a) | "
            "(c) streamed training | (c)/(a) | (d) probe steps/s from cache | max layer diff vs fp32 |")
    rows = [head, "|" + " --- |" * 10]
    worst = math.inf
    for spec in specs:
        up = load_upstream(spec, random_init=True)
        task.prepare(examples)
        for precision in precisions:
            placement = choose_device(args.accelerator, 1, precision)
            bare = bare_rate(up, waves, placement, args.batch_seconds)
            gap = precision_gap(up, waves[:4], placement) if precision != "32-true" else 0.0
            for label, layers, layer_arg in (("last", [up.num_layers - 1], str(up.num_layers - 1)),
                                             (f"all {up.num_layers}", None, "all")):
                cached, feats = cache_rate(up, examples, placement, layers, work / "cache" / f"{spec}-{precision}-"
                                           f"{label.split()[0]}", args.batch_seconds)
                streamed = streamed_rate(up, task, examples, placement, layer_arg, args.batch)
                steps = probe_steps(up, task, examples, feats, placement, layer_arg, args.batch, budget_s=3.0)
                worst = min(worst, cached / bare)
                rows.append(f"| {spec} (random) | {precision} | {label} | {significant(bare)} | {significant(cached)} | "
                            f"{cached / bare:.2f} | {significant(streamed)} | {streamed / bare:.2f} | "
                            f"{significant(steps)} | {'-' if precision == '32-true' else f'{gap:.2g}'} |")
                print(rows[-1], flush=True)
        del up
        if first.device.type == "cuda":
            torch.cuda.empty_cache()
    table = "\n".join(rows)
    print("\nseconds of audio per second on " + first.describe().rsplit(",", 1)[0] + ":\n" + table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    if args.check and worst < 0.9:
        print(f"extraction through the cache ran at {worst:.2f}x the bare forward pass (< 0.9x)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
