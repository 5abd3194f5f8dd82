"""Many runs in one process from one YAML file: ``harness benchmark CONFIG.yaml``.

A config lists jobs; each job is a grid of upstreams x tasks (or a checkpoint series on one
task) with shared options. Runs go upstream by upstream, so each model is loaded once and
released after its last run; finished runs are found by their identity and skipped, so a
second invocation only reads records. At the end the leaderboard of every results folder
the config wrote to is regenerated, and the best layer of each (upstream, task) is printed
(:mod:`harness.reports.suite` does those; this module parses configs and makes the runs).

Example (``benchmarks/quick.yaml``)::

    out: results
    jobs:
      - upstreams: [tiny_hubert_it1, fbank, mfcc]
        tasks: [phone, ic, sid]
      - checkpoints: [tiny_hubert_it1_step600, tiny_hubert_it1]
        task: phone
        out: results/trajectory

Job keys: ``upstreams`` (list) or ``checkpoints`` (list, in training order), ``tasks`` (list)
or ``task``, and optionally ``layer`` (default all), ``seed``, ``random_init``,
``init_seed``, ``max_steps``, ``set`` (task config overrides, e.g. ``{lr: 0.01}``),
``protocol`` (``superb`` or ``quick``; default: the config's top-level ``protocol``, else
superb where the task has it, as ``harness run``), ``lr_grid`` (learning rates trained in the
same pass, each probe keeping its dev-best one, e.g. ``[1.0e-4, 1.0e-3, 1.0e-2]``; as ``harness
run --lr-grid``), ``seeds`` (head seeds trained in the same pass, as ``--seeds``),
``data_root``, ``cache``, ``accelerator`` (default auto), ``precision`` (default 32-true) and
``out`` (default: the config's ``out``). Relative paths are relative to the current directory,
as on the command line. Every config in ``benchmarks/`` names ``protocol: quick``, the CPU
budget its committed records were made with.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.config import parse_lr_grid, parse_overrides, parse_seeds
from harness.errors import HarnessError
from harness.probing.engine import RunRequest, run
from harness.protocol import choose_protocol
from harness.registry import load_task, parse_spec, resolve_checkpoints, task_names
from harness.upstream import UpstreamPool

JOB_KEYS = {"upstreams", "checkpoints", "tasks", "task", "layer", "seed", "random_init", "init_seed", "max_steps",
            "set", "data_root", "cache", "out", "accelerator", "precision", "protocol", "lr_grid", "seeds"}


@dataclass
class Job:
    """One job of a benchmark config: a grid of upstreams x tasks (or a checkpoint series on tasks)
    with the options its runs share.
    """
    upstreams: list[str]
    tasks: list[str]
    out: Path
    trajectory: bool = False  # a checkpoint series: its checkpoint x layer grid is written afterwards
    layer: str = "all"
    seed: int = 0
    random_init: bool = False
    init_seed: int = 0
    max_steps: int | None = None
    overrides: dict = field(default_factory=dict)
    data_root: Path | None = None
    cache: str = "disk"
    accelerator: str = "auto"
    precision: str = "32-true"
    protocol: str | None = None  # None: superb where the task has it, else quick
    seeds: list[int] | None = None  # head seeds trained in one pass


def load_config(path: Path) -> list[Job]:
    """Parse and check a benchmark file (names of upstreams and tasks included) before any work."""

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise HarnessError(f"cannot read benchmark config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list) or not data["jobs"]:
        raise HarnessError(f"{path}: a benchmark config is a mapping with a non-empty 'jobs' list")
    unknown = set(data) - {"out", "jobs", "study", "protocol"}
    if unknown:
        raise HarnessError(f"{path}: unknown top-level key(s) {sorted(unknown)}; known: out, jobs, study, protocol")
    default_out = Path(data.get("out", "results"))
    default_protocol = data.get("protocol")
    known_tasks = task_names()
    jobs = []
    for n, body in enumerate(data["jobs"], 1):
        where = f"{path} job {n}"
        if not isinstance(body, dict):
            raise HarnessError(f"{where}: a job is a mapping")
        bad = set(body) - JOB_KEYS
        if bad:
            raise HarnessError(f"{where}: unknown key(s) {sorted(bad)}; known: {', '.join(sorted(JOB_KEYS))}")
        if ("upstreams" in body) == ("checkpoints" in body):
            raise HarnessError(f"{where}: give exactly one of upstreams or checkpoints")
        ups = body.get("upstreams") or body.get("checkpoints")
        tasks = body.get("tasks") or ([body["task"]] if "task" in body else None)
        if not isinstance(ups, list) or not ups or not isinstance(tasks, list) or not tasks:
            raise HarnessError(f"{where}: needs a non-empty list of upstreams (or checkpoints) and of tasks (or a task)")
        for t in tasks:
            if t not in known_tasks:
                raise HarnessError(f"{where}: unknown task {t!r}; available: {', '.join(known_tasks)}")
        protocol = body.get("protocol", default_protocol)
        for t in tasks:
            choose_protocol(load_task(t), None if protocol is None else str(protocol))
        if "checkpoints" in body:
            ups = resolve_checkpoints([str(u) for u in ups])
        for u in ups:
            parse_spec(str(u))
        overrides = body.get("set") or {}
        if not isinstance(overrides, dict):
            raise HarnessError(f"{where}: 'set' is a mapping of config keys to values")
        dotted = [f"{k}={v}" for k, v in overrides.items() if not isinstance(v, dict) and k != "lr_grid"]
        nested = {k: v for k, v in overrides.items() if isinstance(v, dict)}
        grid = body.get("lr_grid", overrides.get("lr_grid"))
        try:
            if grid is not None:
                nested["lr_grid"] = parse_lr_grid(grid)
            seeds = parse_seeds(body.get("seeds"))
        except HarnessError as exc:
            raise HarnessError(f"{where}: {exc}") from None
        jobs.append(Job(
            upstreams=[str(u) for u in ups], tasks=[str(t) for t in tasks], out=Path(body.get("out", default_out)),
            trajectory="checkpoints" in body, layer=str(body.get("layer", "all")), seed=int(body.get("seed", 0)),
            random_init=bool(body.get("random_init", False)), init_seed=int(body.get("init_seed", 0)),
            max_steps=body.get("max_steps"), overrides={**parse_overrides(dotted), **nested},
            data_root=Path(body["data_root"]) if body.get("data_root") else None, cache=str(body.get("cache", "disk")),
            accelerator=str(body.get("accelerator", "auto")), precision=str(body.get("precision", "32-true")),
            protocol=None if protocol is None else str(protocol), seeds=seeds,
        ))
    return jobs


@dataclass
class Outcome:
    """One run of a benchmark: its record paths, how long it took, and whether it was found finished."""
    job: Job
    upstream: str
    task: str
    paths: list[Path]
    seconds: float
    reused: bool


def run_benchmark(jobs: list[Job], progress: bool = True) -> list[Outcome]:
    """Run every (upstream, task) of every job; return what each produced."""
    runs = [(job, up, task) for job in jobs for up in job.upstreams for task in job.tasks]
    last_use: dict[tuple, int] = {}
    for i, (job, up, _) in enumerate(runs):
        last_use[(up, job.random_init, job.init_seed)] = i
    pool = UpstreamPool()
    results: list[Outcome] = []
    t_start = time.time()
    for i, (job, up, task) in enumerate(runs):
        label = f"{up}{' --random-init' if job.random_init else ''} · {task} · layer {job.layer}"
        if progress:
            print(f"[{i + 1}/{len(runs)}] {label}", file=sys.stderr, flush=True)
        req = RunRequest(upstream=up, task=task, layer=job.layer, data_root=job.data_root, out=job.out,
                         seed=job.seed, max_steps=job.max_steps, overrides=job.overrides, random_init=job.random_init,
                         init_seed=job.init_seed, cache=job.cache, accelerator=job.accelerator,
                         precision=job.precision, progress=progress, protocol=job.protocol, seeds=job.seeds)
        before = time.time()
        paths = run(req, upstreams=pool)
        took = time.time() - before
        reused = all(p.stat().st_mtime < before for p in paths)
        results.append(Outcome(job, up, task, paths, took, reused))
        if progress:
            done = i + 1
            elapsed = time.time() - t_start
            print(f"    {'found finished' if reused else 'done'} in {took:.0f} s; {done}/{len(runs)} runs, "
                  f"{elapsed / 60:.1f} min so far", file=sys.stderr, flush=True)
        if last_use[(up, job.random_init, job.init_seed)] == i:
            pool.release(up, job.random_init, job.init_seed)
    return results
