"""Benchmark: rank every layer the s3prl way (L+1 sequential --no-cache runs) versus one
cached `--layer all` sweep, same task, heads, steps and seed, measured side by side; or
(``--grid``) a learning-rate grid in the same cached sweep versus the single-lr sweep.

    python bench/sweep.py [--task phone] [--steps N] [--layers 12] [--sequential all|K] [--data-root DIR]
    python bench/sweep.py --grid 1e-4,1e-3,1e-2 [--tasks phone,ic] [--steps N] [--layers 12]

The upstream is a small randomly initialised HuBERT (L transformer layers -> L+1 hidden
states, group-norm CNN as in HuBERT Base, so extraction runs utterance by utterance)
built here, so the benchmark needs no download. Prints both wall times, their ratio and
every probe's test metric for both ways, so equal quality is visible.

``--steps`` defaults to the task's own max_steps: the sweep pays one extraction pass up
front while a --no-cache run pays the upstream forward on every step, so the ratio
depends on run length (very short runs are the sweep's worst case; try --steps 100).
``--sequential K`` times K evenly spaced single-layer runs instead of all L+1 + weighted
(each no-cache run costs the same whatever the layer: the whole upstream runs every
step); the L+1 total is then the measured mean times L+2 and is labelled as such.

``--grid``: for each of ``--tasks`` (default phone, a frame task, and ic, an utterance
task), with the task's own config (validation interval included: every grid point is
validated), one cached ``--layer all`` sweep with the task's lr and one with the grid
(``--lr-grid``), each from a cold feature cache (its own HARNESS_HOME), one after the other.
Prints both wall times and their ratio, and the ratio of the heads' share alone (training
and evaluation, from the records' timing: what a grid costs once features are cached), next
to what s3prl would run: one full run per (grid point, layer), 3 x (L+2) for a 3-point grid.
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


def grid_vs_single(args, data_root: Path, work: Path, spec: str) -> None:
    """The ``--grid`` measurement (module docstring): per task, a single-lr and a grid sweep, each
    from a cold cache; prints wall times, the grid/single ratios and the probes' test metrics."""
    from harness.config import parse_lr_grid
    from harness.probing.engine import RunRequest, run
    from harness.registry import load_task

    grid = parse_lr_grid(args.grid)
    probes = args.layers + 2
    print(f"learning-rate grid {', '.join(f'{x:g}' for x in grid)} vs one lr: {args.layers + 1} layers + weighted "
          f"sum, cached features, each sweep from a cold cache")
    for task in args.tasks.split(","):
        steps = args.steps or int(load_task(task).default_config()["max_steps"])  # NAME.yaml: the quick protocol

        def sweep(name: str, extra: dict):
            os.environ["HARNESS_HOME"] = str(work / f"home-{task}-{name}")  # a cold feature cache for each
            req = RunRequest(upstream=spec, task=task, layer="all", data_root=data_root, out=work / f"out-{name}",
                             max_steps=steps, overrides=extra, progress=False, protocol="quick")
            t0 = time.time()
            records = [json.loads(p.read_text()) for p in run(req)]
            return time.time() - t0, records

        t_one, one = sweep("single", {})
        t_grid, gridded = sweep("grid", {"lr_grid": grid})
        heads = lambda rs: rs[0]["timing"]["train_s"] + rs[0]["timing"]["evaluate_s"]  # noqa: E731
        metric = one[0]["metric"]["name"]
        lr = one[0]["config"]["lr"]
        print(f"\ntask {task}, {steps} steps, test {metric}: single lr {lr:g} vs the grid (chosen lr per probe)")
        print(f"{'probe':<10}{'single lr':>11}{'grid':>9}{'chosen lr':>11}")
        for a, b in zip(one, gridded):
            print(f"{a['probe']:<10}{a['test'][metric]:>11.4f}{b['test'][metric]:>9.4f}{b['lr']:>11g}")
        print(f"one lr:   {t_one:7.1f} s  (extraction {one[0]['timing']['extract_s']:.1f} s, heads {heads(one):.1f} s)")
        print(f"the grid: {t_grid:7.1f} s  (extraction {gridded[0]['timing']['extract_s']:.1f} s, heads "
              f"{heads(gridded):.1f} s)")
        print(f"grid / single wall time {t_grid / t_one:.2f}x (goal <= 2x); heads alone {heads(gridded) / heads(one):.2f}x; "
              f"s3prl: {len(grid)} x {probes} = {len(grid) * probes} full runs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="phone")
    ap.add_argument("--grid", help="instead: a learning-rate grid (e.g. 1e-4,1e-3,1e-2) vs one lr, cached sweeps")
    ap.add_argument("--tasks", default="phone,ic", help="with --grid: the tasks to measure (default phone,ic)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per run (default: the task's max_steps)")
    ap.add_argument("--sequential", default="all", help="all, or K evenly spaced single-layer runs to time")
    ap.add_argument("--layers", type=int, default=12, help="transformer layers of the benchmark model")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()

    from harness.probing.engine import RunRequest, run

    from harness.corpus.layout import embedded_corpus_dir

    data_root = Path(args.data_root) if args.data_root else embedded_corpus_dir()
    if not (data_root / "corpus.json").exists() and not args.data_root:
        sys.exit(f"build the embedded corpus first: harness corpus build  (looked in {data_root})")
    work = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    os.environ["HARNESS_HOME"] = str(work / "home")  # cold cache: extraction is part of the sweep's cost
    model = build_model(work / "model", args.layers)
    spec = f"hf:{model}"
    if args.grid:
        return grid_vs_single(args, data_root, work, spec)
    if args.steps is None:
        from harness.registry import load_task

        args.steps = int(load_task(args.task).default_config()["max_steps"])
    overrides = {"val_interval": max(1, args.steps // 2)}
    probes = [str(i) for i in range(args.layers + 1)] + ["weighted"]
    if args.sequential != "all":
        k = int(args.sequential)
        if not 1 <= k <= len(probes):
            sys.exit(f"--sequential must be 'all' or 1..{len(probes)}")
        picks = sorted({round(j * args.layers / max(1, k - 1)) for j in range(k)}) if k > 1 else [args.layers // 2]
        probes = [str(i) for i in picks]

    def one(layer: str, no_cache: bool, out: Path):
        req = RunRequest(upstream=spec, task=args.task, layer=layer, data_root=data_root, out=out,
                         max_steps=args.steps, overrides=overrides, no_cache=no_cache, progress=False,
                         protocol="quick")
        return [json.loads(p.read_text()) for p in run(req)]

    t0 = time.time()
    sweep = one("all", False, work / "cached")
    t_sweep = time.time() - t0

    sequential = []
    t0 = time.time()
    for probe in probes:
        sequential += one(probe, True, work / "live")
    t_measured = time.time() - t0
    t_single = t_measured / len(probes)
    full = args.layers + 2
    t_seq = t_single * full

    metric = sweep[0]["metric"]["name"]
    live = {r["probe"]: r["test"][metric] for r in sequential}
    print(f"task {args.task}, {args.layers + 1} layers + weighted sum, {args.steps} steps each, test {metric}")
    print(f"{'probe':<10}{'cached sweep':>14}{'sequential':>12}")
    for r in sweep:
        other = f"{live[r['probe']]:>12.4f}" if r["probe"] in live else f"{'-':>12}"
        print(f"{r['probe']:<10}{r['test'][metric]:>14.4f}{other}")
    if len(probes) == full:
        print(f"sequential --no-cache runs: {t_seq:8.1f} s  ({full} runs, {t_single:.1f} s per run)")
    else:
        print(f"sequential --no-cache runs: {t_measured:8.1f} s measured for {len(probes)} runs ({t_single:.1f} s per "
              f"run); {full} runs = {t_seq:.1f} s")
    print(f"one cached --layer all:     {t_sweep:8.1f} s  (extraction included)")
    print(f"speed-up {t_seq / t_sweep:.1f}x; the sweep costs {t_sweep / t_single:.2f} single runs")


if __name__ == "__main__":
    sys.exit(main())
