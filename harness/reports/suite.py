"""A benchmark config from start to finish: the runs, then everything that reads them.

:func:`run_suite` is what ``harness benchmark CONFIG.yaml`` does: every run of the config
(:mod:`harness.probing.benchmark`), the checkpoint x layer grid of each checkpoint series,
the leaderboard of every results folder written to, the study page when the config has a
``study`` section, and a summary of the best layers. :func:`run_series` is ``harness run
--checkpoints``: one run per checkpoint, then the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml

from harness.probing.benchmark import Outcome, load_config, run_benchmark
from harness.probing.engine import RunRequest, run
from harness.reports.leaderboard import build as build_leaderboard
from harness.reports.ranking import Record
from harness.reports.stored import rank_stored
from harness.reports.study import StudySpec
from harness.reports.study import build as build_study
from harness.reports.trajectory import probe_trajectory
from harness.upstream import UpstreamPool


def load_study(path: Path) -> StudySpec | None:
    """The config's ``study`` section, or None."""
    data = yaml.safe_load(Path(path).read_text())
    return StudySpec.from_config(data["study"], f"{path} study") if isinstance(data, dict) and "study" in data else None


@dataclass
class SuiteResult:
    """What one benchmark config produced."""

    outcomes: list[Outcome]
    leaderboards: list[Path] = field(default_factory=list)
    grids: list[Path] = field(default_factory=list)
    study_page: Path | None = None

    def format(self) -> str:
        """The lines ``harness benchmark`` prints: the run summary, then the leaderboards, grids and study page written."""
        lines = [summary(self.outcomes)]
        lines += [f"leaderboard: {p} (and {p.with_name('index.html')})" for p in self.leaderboards]
        lines += [f"checkpoint x layer grid: {p}" for p in self.grids]
        if self.study_page is not None:
            lines.append(f"study: {self.study_page} (and {self.study_page.with_name('index.html')})")
        reused = sum(o.reused for o in self.outcomes)
        lines.append(f"{len(self.outcomes)} runs ({reused} already finished, {len(self.outcomes) - reused} trained)")
        return "\n".join(lines)


def run_suite(config: Path, progress: bool = True) -> SuiteResult:
    """Run a benchmark config (checked whole before any work) and regenerate what reads it."""
    jobs = load_config(Path(config))
    study = load_study(Path(config))
    outcomes = run_benchmark(jobs, progress=progress)
    result = SuiteResult(outcomes)
    for job in jobs:
        if job.trajectory:
            for task in job.tasks:
                records = {o.upstream: o.paths for o in outcomes if o.job is job and o.task == task}
                result.grids.append(probe_trajectory(records, Path(job.out) / f"trajectory_{task}.csv")[0])
    for root in sorted({Path(o.job.out) for o in outcomes if not o.job.trajectory}):
        result.leaderboards.append(build_leaderboard(root, root)[0])
    if study is not None:
        labels = {f"{u} (random init)" if job.random_init else u for job in jobs for u in job.upstreams}
        result.study_page = build_study(study, Path(jobs[0].out), jobs[0].data_root, progress=progress, labels=labels,
                                        records=[p for o in outcomes for p in o.paths])
    return result


@dataclass
class SeriesResult:
    """The records of a checkpoint series and its checkpoint x layer grid."""

    checkpoints: int
    grid: tuple[Path, Path] | None

    def format(self) -> str:
        """The lines printed for a checkpoint series: the grid's CSV and heatmap paths."""
        if self.grid is None:
            return f"{self.checkpoints} checkpoints"
        return f"{self.checkpoints} checkpoints; checkpoint x layer grid: {self.grid[0]} and {self.grid[1]}"


def run_series(request: RunRequest, specs: Sequence[str]) -> SeriesResult:
    """One run per checkpoint (``request`` with each spec as its upstream), then the grid."""
    from dataclasses import replace

    pool = UpstreamPool()
    records = {spec: run(replace(request, upstream=spec), pool) for spec in specs}
    grid = probe_trajectory(records, Path(request.out) / f"trajectory_{request.task}.csv") \
        if any(records.values()) else None
    return SeriesResult(len(specs), grid)


def summary(outcomes: list[Outcome]) -> str:
    """Best layer per (upstream, task) of the runs just made, with the 95% interval."""
    recs = [Record.read(p) for o in outcomes for p in o.paths]
    lines = [f"{'task':<7}{'upstream':<36}{'metric':<10}{'best layer':<20}{'score':>8}  95% CI"]
    for r in sorted(rank_stored(recs), key=lambda r: (r.task, -r.best.score if r.higher_is_better else r.best.score)
                    if r.layers else (r.task, 0)):
        if not r.layers:
            continue
        b = r.best
        lines.append(f"{r.task:<7}{r.label[:35]:<36}{r.metric:<10}{f'{b.layer} ({b.name})'[:19]:<20}{b.score:>8.4f}  "
                     f"[{b.ci_low:.4f}, {b.ci_high:.4f}]")
    return "\n".join(lines)
