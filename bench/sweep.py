"""Benchmark: rank every layer the s3prl way (L+1 sequential --no-cache runs) versus one
cached `--layer all` sweep, same task, heads, steps and seed, measured side by side.

    python bench/sweep.py [--task phone] [--steps 100] [--layers 12] [--data-root DIR]

The upstream is a small randomly initialised HuBERT (L transformer layers -> L+1 hidden
states) built here, so the benchmark needs no download. Prints both wall times, their
ratio and every probe's test metric for both ways, so equal quality is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def build_model(folder: Path, layers: int) -> Path:
    import torch
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=64, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=128,
                       conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    HubertModel(cfg).save_pretrained(folder)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="phone")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--layers", type=int, default=12, help="transformer layers of the benchmark model")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()

    from harness.engine import RunRequest, run

    from harness.cli import embedded_corpus_dir

    data_root = Path(args.data_root) if args.data_root else embedded_corpus_dir()
    if not (data_root / "corpus.json").exists() and not args.data_root:
        sys.exit(f"build the embedded corpus first: harness corpus build  (looked in {data_root})")
    work = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    os.environ["HARNESS_HOME"] = str(work / "home")  # cold cache: extraction is part of the sweep's cost
    model = build_model(work / "model", args.layers)
    spec = f"hf:{model}"
    overrides = {"val_interval": max(1, args.steps // 2)}

    def one(layer: str, no_cache: bool, out: Path):
        req = RunRequest(upstream=spec, task=args.task, layer=layer, data_root=data_root, out=out,
                         max_steps=args.steps, overrides=overrides, no_cache=no_cache, progress=False)
        return [json.loads(p.read_text()) for p in run(req)]

    t0 = time.time()
    sweep = one("all", False, work / "cached")
    t_sweep = time.time() - t0

    sequential = []
    t0 = time.time()
    for i in range(args.layers + 1):
        sequential += one(str(i), True, work / "live")
    sequential += one("weighted", True, work / "live")
    t_seq = time.time() - t0
    t_single = t_seq / (args.layers + 2)

    metric = sweep[0]["metric"]["name"]
    live = {r["probe"]: r["test"][metric] for r in sequential}
    print(f"task {args.task}, {args.layers + 1} layers + weighted sum, {args.steps} steps each, test {metric}")
    print(f"{'probe':<10}{'cached sweep':>14}{'sequential':>12}")
    for r in sweep:
        print(f"{r['probe']:<10}{r['test'][metric]:>14.4f}{live[r['probe']]:>12.4f}")
    print(f"sequential --no-cache runs: {t_seq:8.1f} s  ({args.layers + 2} runs, {t_single:.1f} s per run)")
    print(f"one cached --layer all:     {t_sweep:8.1f} s  (extraction included)")
    print(f"speed-up {t_seq / t_sweep:.1f}x; the sweep costs {t_sweep / t_single:.2f} single runs")


if __name__ == "__main__":
    sys.exit(main())
