"""``harness run``, ``harness plan`` and ``harness benchmark``: probing runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def _check_names(args: argparse.Namespace) -> None:
    """Upstream and task names resolved before any heavy import (a typo costs milliseconds)."""
    from harness.errors import HarnessError
    from harness.registry import parse_spec, task_names

    if bool(args.upstream) == bool(args.checkpoints):
        raise HarnessError("give exactly one of --upstream or --checkpoints")
    if args.task not in task_names():
        raise HarnessError(f"unknown task {args.task!r}; available: {', '.join(task_names())}")
    if args.upstream:
        parse_spec(args.upstream)
    if args.data_root and not Path(args.data_root).is_dir():
        raise HarnessError(f"--data-root {args.data_root} does not exist or is not a directory")
    # config values checked with the task class alone (a bad --set costs seconds, not a model load)
    from harness.config import parse_overrides
    from harness.registry import load_task
    from harness.task import task_config

    task_config(load_task(args.task), parse_overrides(args.set or []), args.max_steps)


def _request(args: argparse.Namespace, spec: str):
    from harness.config import parse_overrides
    from harness.probing.engine import RunRequest

    devices: str | int = args.devices
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    overrides = parse_overrides(args.set or [])
    if args.lr_grid is not None:
        overrides["lr_grid"] = args.lr_grid  # parsed and checked with the task config
    return RunRequest(
        upstream=spec, task=args.task, layer=args.layer, data_root=Path(args.data_root) if args.data_root else None,
        out=Path(args.out), seed=args.seed, seeds=args.seeds, max_steps=args.max_steps, overrides=overrides,
        protocol=args.protocol,
        cache="none" if args.no_cache else args.cache, random_init=args.random_init, init_seed=args.init_seed,
        devices=devices, num_nodes=args.num_nodes, strategy=args.strategy, accelerator=args.accelerator,
        precision=args.precision, workers=args.workers, batch_seconds=args.batch_seconds, progress=not args.quiet,
    )


def _run(args: argparse.Namespace) -> int:
    _check_names(args)
    from harness.probing.engine import run
    from harness.records import format_records

    if args.checkpoints:
        from harness.registry import resolve_checkpoints
        from harness.reports.suite import run_series

        print(run_series(_request(args, ""), resolve_checkpoints(args.checkpoints)).format())
        return 0
    paths = run(_request(args, args.upstream))
    if paths:
        print(format_records(paths))
    return 0


def _plan(args: argparse.Namespace) -> int:
    """What `harness run` with the same arguments would extract, store and take, without doing it."""
    _check_names(args)
    if args.checkpoints:
        from harness.errors import HarnessError

        raise HarnessError("harness plan takes --upstream (plan one checkpoint at a time)")
    from harness.probing.estimate import plan_run

    print(plan_run(_request(args, args.upstream), timing=not args.no_timing).format())
    return 0


def _config(args: argparse.Namespace) -> int:
    """The resolved recipe of a task under a protocol, with overrides."""
    from harness.config import parse_overrides
    from harness.protocol import recipe

    print(recipe(args.task, args.protocol, parse_overrides(args.set or []), args.max_steps).format())
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from harness.reports.suite import run_suite

    print(run_suite(Path(args.config), progress=not args.quiet).format())
    return 0


def _add_run_arguments(rn: argparse.ArgumentParser) -> None:
    from harness.registry import (
        task_names,  # entry-point metadata only: cheap at parser build time
    )

    rn.add_argument("--upstream", help="registry name or BACKEND:SOURCE")
    rn.add_argument("--checkpoints", nargs="+", help="instead of --upstream: several checkpoints of one model (paths, "
                    "globs or names); writes a checkpoint x layer grid (CSV + heatmap) of the test metric")
    rn.add_argument("--task", required=True, help=f"one of {', '.join(task_names())} (registered tasks, plugins "
                    "included)")
    rn.add_argument("--layer", default="all", help="N | weighted | A-B | 1,4,7 | all (every layer + weighted; default)")
    rn.add_argument("--data-root", help="corpus root (default: the embedded corpus)")
    rn.add_argument("--out", default="results", help="records go to OUT/UPSTREAM/TASK/ (default: ./results, which in a "
                    "clone of the harness is the committed results folder; records of other experiments never "
                    "overwrite those)")
    rn.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    _add_recipe_arguments(rn)
    rn.add_argument("--lr-grid", metavar="LR,LR,...", help="train every probe once per learning rate in the same "
                    "pass (e.g. 1e-4,1e-3,1e-2) and keep, per probe, the rate with the best dev score; the records "
                    "hold the chosen rate and every rate's dev curve (same as --set lr_grid=...)")
    rn.add_argument("--seeds", metavar="S,S,...", help="head-initialisation seeds trained in the same pass (e.g. "
                    "0,1,2), one record each; they share the batch order of --seed, so they vary the head "
                    "initialisation only")
    rn.add_argument("--cache", choices=["disk", "auto", "none"], default="disk",
                    help="disk: extract the needed layers once and train from the cache, refused when it would not "
                         "fit (default); auto: disk when it fits, else none; none: run the upstream inside every "
                         "step (no disk)")
    rn.add_argument("--no-cache", action="store_true", help="same as --cache none (as s3prl does)")
    rn.add_argument("--random-init", action="store_true", help="the upstream's architecture with random weights")
    rn.add_argument("--init-seed", type=int, default=0, help="seed of --random-init weights (default 0)")
    rn.add_argument("--devices", default="1", help="training processes per node, passed to Lightning (default 1)")
    rn.add_argument("--num-nodes", type=int, default=1, help="nodes, passed to Lightning (default 1)")
    rn.add_argument("--strategy", default="auto", help="passed to Lightning, e.g. ddp, ddp_spawn")
    rn.add_argument("--accelerator", default="auto", help="where the upstream runs and the probes train, as in "
                    "Lightning: auto (a GPU when there is one; default), cpu, gpu, mps")
    rn.add_argument("--precision", default="32-true", help="of the frozen upstream's forward pass, Lightning's names: "
                    "32-true (default), bf16-mixed, 16-mixed (GPU only); the probes train in float32")
    rn.add_argument("--batch-seconds", type=float, default=64.0, help="padded seconds of audio per extraction batch "
                    "(default 64; utterances sorted by length)")
    rn.add_argument("--workers", type=int, default=None, help="DataLoader processes decoding audio (default: none on "
                    "the CPU, up to 4 beside a GPU)")
    rn.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", help="superb: s3prl's published SUPERB recipe (the default for every task SUPERB "
                        "has: hundreds of thousands of steps); quick: the CPU budget for the embedded corpus (the "
                        "task's YAML, the default for other tasks); `harness config` prints either")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (default: the protocol's)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config value of the protocol's recipe (repeatable)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the ``harness`` parser."""
    rn = sub.add_parser("run", help="train task heads on one layer, a weighted sum, or every layer",
                        description="Train SUPERB-style heads on cached features of an upstream and write one "
                                    "JSON record per layer setting. Re-running resumes from the last checkpoint.")
    _add_run_arguments(rn)
    rn.set_defaults(func=_run)

    pl_ = sub.add_parser("plan", help="what `harness run` with these arguments would extract and store",
                         description="Print the run's feature-cache plan without doing anything: hours and "
                                     "utterances per split, cache bytes per split and in total, the free space, "
                                     "whether it fits, the chosen mode, and extraction- and training-time estimates "
                                     "from timing a small sample and a few steps of the real probes on the run's "
                                     "device. Takes the arguments of `harness run`.")
    _add_run_arguments(pl_)
    pl_.add_argument("--no-timing", action="store_true", help="skip timing the extraction and training on a sample")
    pl_.set_defaults(func=_plan)

    cf = sub.add_parser("config", help="the resolved recipe of a task under a protocol",
                        description="Print every config value a run of TASK would use under --protocol (with "
                                    "--set and --max-steps applied), where each comes from (the task's YAML, the "
                                    "protocol's overlay, --set, or a neutral default), and the step budget.")
    cf.add_argument("--task", required=True, help="a task name (harness config --task sid --protocol superb)")
    _add_recipe_arguments(cf)
    cf.set_defaults(func=_config)

    bm = sub.add_parser("benchmark", help="many runs in one process from a YAML file (e.g. benchmarks/quick.yaml)",
                        description="Run every (upstream, task) listed in a benchmark config in one process, "
                                    "loading each upstream once and skipping finished runs; then regenerate the "
                                    "leaderboard and print the best layers. The format: harness/probing/benchmark.py's docstring.")
    bm.add_argument("config", help="benchmark YAML (benchmarks/quick.yaml: the default main job; "
                    "benchmarks/full.yaml: every committed result)")
    bm.add_argument("--quiet", action="store_true", help="no progress bars (one line per run is still printed)")
    bm.set_defaults(func=_benchmark)

