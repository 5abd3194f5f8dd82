"""Benchmark: what the feature cache costs at scale, measured side by side on the embedded corpus.

    python bench/scale.py [--upstream tiny_hubert_it1] [--split dev] [--steps 300] [--base-seconds 60]

Prints, from one run:
1. cache bytes per hour of audio per layer: measured on disk vs the planner's formula
   (frames per second x dim x 2 bytes for fp16, plus 8 bytes per utterance);
2. extraction throughput (seconds of audio per second) through the cache (read audio,
   forward, write fp16 shards) vs the same upstream's bare forward pass over the same audio
   in the same process (goal: >= 0.9x);
3. probe training step time reading memory-mapped shards vs the same features already in
   RAM (goal: <= 1.2x);
4. a cached `--layer all` run (extraction included) vs the same run streamed (`--cache none`);
5. bare forward throughput of a random-weights HuBERT Base and Large here, on
   ``--base-seconds`` of audio;
6. from those: disk and extraction time for LibriSpeech 100 h / 960 h and VoxCeleb1 with Base
   and Large models, one layer or all, and the mode the planner picks on a 1 TB disk.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def _forward_rate(upstream, waves) -> float:
    """Seconds of audio per second of a bare forward pass (batched as extraction batches)."""
    from harness.features.extract import iter_layers

    list(iter_layers(upstream, waves[:1]))  # warm-up
    t = time.perf_counter()
    for _ in iter_layers(upstream, waves):
        pass
    return sum(len(w) for w in waves) / 16000 / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", default="tiny_hubert_it1")
    ap.add_argument("--split", default="dev", help="LibriSpeech split of the embedded corpus to extract")
    ap.add_argument("--steps", type=int, default=300, help="training steps of the probe-step and sweep timings")
    ap.add_argument("--base-seconds", type=float, default=60.0, help="audio for the Base/Large forward timing")
    args = ap.parse_args()

    import numpy as np
    import torch

    from harness.audio import read_audio
    from harness.corpus.layout import require_embedded_corpus
    from harness.probing.engine import RunRequest, run
    from harness.features.cache import ensure_features
    from harness.registry import load_task
    from harness.upstream import load_upstream

    corpus = require_embedded_corpus()
    work = Path(tempfile.mkdtemp(prefix="harness-scale-"))
    os.environ["HARNESS_HOME"] = str(work / "home")
    torch.set_num_threads(torch.get_num_threads())
    task_cls = load_task("phone")
    task = task_cls(task_cls.default_config())
    examples = task.examples(corpus, args.split)
    waves = [read_audio(e.path) for e in examples]
    hours = sum(len(w) for w in waves) / 16000 / 3600
    up = load_upstream(args.upstream)
    print(f"upstream {args.upstream}: {up.num_layers} layers x {up.info.dims[0]} dims, hop {up.info.hop}; "
          f"{len(examples)} utterances of {args.split}, {hours * 3600:.0f} s of audio", flush=True)

    # 2. extraction through the cache vs the bare forward pass (same process, same audio)
    bare = _forward_rate(up, waves)
    t = time.perf_counter()
    feats = ensure_features(up, "librispeech", args.split, examples, layers=range(up.num_layers),
                            root=work / "cache", progress=False)
    cached = hours * 3600 / (time.perf_counter() - t)

    # 1. bytes per hour per layer, measured vs formula
    root = feats.entry.root
    per_layer = {}
    for layer in range(up.num_layers):
        per_layer[layer] = sum(p.stat().st_size for p in root.glob(f"shards/*/layer_{layer:02d}*.npy"))
    frames = sum(int(len(feats.get(e.id)[0])) for e in examples)
    formula = (frames * up.info.dims[0] * 2 + 8 * len(examples))  # what the planner counts for real frame counts
    rate_formula = 16000 / up.info.hop * up.info.dims[0] * 2 * 3600  # frames/s x dim x 2 B, per hour
    measured = per_layer[0] / hours
    print(f"\n1. cache bytes per hour per layer: measured {measured / 1e6:.1f} MB/h (npy headers included), "
          f"formula on the true frame counts {formula / hours / 1e6:.1f} MB/h, "
          f"nominal {up.info.dims[0]} dims x {16000 / up.info.hop:.0f} frames/s x 2 B = {rate_formula / 1e6:.1f} MB/h; "
          f"ratio measured/nominal {measured / rate_formula:.3f}")
    print(f"2. extraction: {cached:,.0f} s of audio per s through the cache vs {bare:,.0f} bare forward: "
          f"ratio {cached / bare:.2f}x (goal >= 0.9x)")

    # 3. probe steps: memory-mapped cache vs the same features in RAM
    from harness.features.loaders import FeatureDataset, collate
    from harness.heads import FrameLinear

    layer = up.num_layers // 2
    mm = feats.entry.open([layer])

    class InRam:
        def __init__(self, source) -> None:
            self.data = {e.id: source.get(e.id) for e in examples}

        def get(self, utt):
            return [None if x is None else x.clone() for x in self.data[utt]]

    ram = InRam(mm)
    task.prepare(examples)

    def steps(source) -> float:
        torch.manual_seed(0)
        ds = FeatureDataset(examples, source)
        head = FrameLinear(up.info.dims[layer], len(task.inventory))
        opt = torch.optim.Adam(head.parameters(), lr=1e-3)
        loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, collate_fn=collate,
                                             generator=torch.Generator().manual_seed(0))
        done, t0 = 0, time.perf_counter()
        while done < args.steps:
            for batch in loader:
                targets = task.batch_targets(batch["examples"], batch["lengths"], up.info.hop, up.info.frame_offset)
                out = head(batch["hidden"][layer])
                loss = task.loss(out, targets)
                opt.zero_grad()
                loss.backward()
                opt.step()
                done += 1
                if done >= args.steps:
                    break
        return (time.perf_counter() - t0) / args.steps

    steps(ram)  # warm-up
    t_ram, t_mm = steps(ram), steps(mm)
    print(f"3. probe step ({args.steps} steps, batch 16, layer {layer}): {t_mm * 1000:.2f} ms reading the "
          f"memory-mapped cache vs {t_ram * 1000:.2f} ms from RAM: ratio {t_mm / t_ram:.2f}x (goal <= 1.2x)")

    # 4. a cached --layer all run (extraction included) vs the same run streamed
    times = {}
    for cache in ("disk", "none"):
        os.environ["HARNESS_HOME"] = str(work / f"home-{cache}")
        req = RunRequest(upstream=args.upstream, task="phone", layer="all", out=work / f"out-{cache}", data_root=corpus,
                         max_steps=args.steps, overrides={"val_interval": args.steps}, cache=cache, progress=False,
                         protocol="quick")
        t = time.perf_counter()
        run(req)
        times[cache] = time.perf_counter() - t
    print(f"4. `--layer all` run of {args.steps} steps on phone: cached {times['disk']:.0f} s (extraction of all 3 "
          f"splits included) vs streamed {times['none']:.0f} s: streamed costs {times['none'] / times['disk']:.1f}x")

    # 5. bare forward rates of Base and Large architectures here (random weights, no download)
    rng = np.random.default_rng(0)
    sample, total = [], 0.0
    for i in rng.permutation(len(waves)):
        sample.append(waves[int(i)])
        total += len(waves[int(i)]) / 16000
        if total >= args.base_seconds:
            break
    rates = {}
    for name in ("hubert_base", "hubert_large_ll60k"):
        big = load_upstream(name, random_init=True)
        rates[name] = _forward_rate(big, sample)
        print(f"5. {name} (random weights) bare forward here: {rates[name]:.1f} s of audio per s "
              f"({torch.get_num_threads()} threads)")
        del big
    extrapolate(rates, measured / rate_formula)
    print(f"\n(scratch in {work})", file=sys.stderr)


#: hours of audio (train split + the dev and test splits a run also extracts) and utterances
CORPORA = {"LibriSpeech 100 h (train-clean-100 + dev/test-clean)": (100.6 + 5.4 + 5.4, 28539 + 2703 + 2620),
           "LibriSpeech 960 h (+ dev/test-clean)": (961.1 + 5.4 + 5.4, 281241 + 2703 + 2620),
           "VoxCeleb1 (dev + test)": (340.4 + 11.2, 148642 + 4874)}
MODELS = {"hubert_base": (13, 768), "hubert_large_ll60k": (25, 1024)}
TB = 1e12


def extrapolate(rates: dict[str, float], overhead: float) -> None:
    """Cache bytes from the formula (x the measured on-disk overhead) and extraction time at the
    measured CPU rate, per corpus, model and layer choice; the planner's mode on a 1 TB disk."""
    from harness.features.planning import HEADROOM_BYTES, HEADROOM_FRACTION, human_bytes, human_seconds

    print("\n6. extrapolation: frames caches (fp16, 50 frames/s, x the measured on-disk overhead) for frame and CTC "
          "tasks and asv; pooled caches (float32 utterance means) for utterance classification (ic, sid, ks, er); "
          "extraction time at the bare forward rate measured here (CPU)")
    print(f"{'corpus':<52}{'model':<20}{'layers':<8}{'frames':>10}{'pooled':>10}{'CPU here':>10}  planner on 1 TB (frames)")
    for corpus, (hours, utts) in CORPORA.items():
        for model, (layers, dim) in MODELS.items():
            for label, n in (("1", 1), ("all", layers)):
                frames = hours * 3600 * 50 * dim * 2 * n * overhead  # overhead: measured, headers included
                pooled = utts * dim * 4 * n
                fits = frames * (1 + HEADROOM_FRACTION) + HEADROOM_BYTES <= TB
                seconds = hours * 3600 / rates[model]
                print(f"{corpus:<52}{model:<20}{label:<8}{human_bytes(frames):>10}{human_bytes(pooled):>10}"
                      f"{human_seconds(seconds):>10}  {'disk' if fits else 'refused by --cache disk; auto streams'}")


if __name__ == "__main__":
    main()
