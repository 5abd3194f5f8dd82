"""What a learning-rate grid changes in the layer rankings (issue 25; the table of docs/lr-grid.md).

    python bench/lr_grid_effect.py [--grid results/lr_grid] [--single results] [--format markdown|table]

For every (upstream, task) with grid records under ``--grid`` (``harness run --layer all
--lr-grid ...``), the single-lr records of the same setting without the grid are looked up under
``--single`` (same corpus, config but ``lr_grid``, steps, seed, harness version), both are ranked
as ``harness report`` ranks them (95% bootstrap intervals over test utterances, ``~best`` from
the paired bootstrap; both on test, because the single-lr records predate kept dev outcomes: the
grid itself is still chosen per layer on dev), and one row is printed: the best layer and ``~best`` set with one lr and
with the grid (with the lr dev chose for that layer), whether the best layer moved and by how
many layers, and the weighted-sum minus best-single-layer gap with one lr, with the grid, and
its change, each with a 95% interval from one paired bootstrap over test utterances (the same
resamples for every probe of both runs; positive: the weighted sum is better). It also checks
that the grid point at the single run's lr trained exactly as the single run did (dev curves
equal, bit for bit), so the two columns differ only by the grid's other points.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from harness.reports.ranking import BOOTSTRAP_SEED, N_BOOTSTRAP, Record, _stat, load_records, rank


def _setting_without_grid(record) -> dict:
    out = record.setting()
    out["config"] = {k: v for k, v in out["config"].items() if k != "lr_grid"}
    return out


def pairs(grid_root: Path, single_root: Path) -> list[tuple[list[Record], list[Record]]]:
    """(grid records, single-lr records of the same setting) per (upstream, task), seed 0."""
    # both sides decide best and ~best on the same split: the committed single-lr records predate
    # kept dev outcomes, so the grid records' dev outcomes are set aside and both rank on test
    grid = [replace(r, dev_outcomes=None) for r in load_records(grid_root)
            if r.record.config.get("lr_grid") and r.record.batch_seed is None]
    single = [r for r in load_records(single_root) if not r.record.config.get("lr_grid") and
              r.record.batch_seed is None]
    by_setting = defaultdict(list)
    for r in single:
        by_setting[(r.upstream.label, repr(sorted(_setting_without_grid(r.record).items())))].append(r)
    groups = defaultdict(list)
    for r in grid:
        groups[(r.upstream.label, r.task)].append(r)
    out = []
    for (label, task), recs in sorted(groups.items()):
        match = by_setting.get((label, repr(sorted(_setting_without_grid(recs[0].record).items()))))
        if match:
            out.append((recs, match))
        else:
            print(f"no single-lr records for {label} / {task} in {single_root}; skipped", file=sys.stderr)
    return out


def _replicates(records: list[Record], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {r.record.probe: _stat(r.outcomes, idx) for r in records if r.record.seed == 0}


def _ci(x: np.ndarray) -> str:
    return f"[{np.percentile(x, 2.5):+.3f}, {np.percentile(x, 97.5):+.3f}]"


def compare(grid: list[Record], single: list[Record]) -> dict:
    """One row of the table (module docstring)."""
    g, s = rank(grid)[0], rank(single)[0]
    ids = grid[0].outcomes.ids
    assert all(r.outcomes.ids == ids for r in grid + single), "grid and single runs scored different utterances"
    idx = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(ids), size=(N_BOOTSTRAP, len(ids)))
    sign = 1.0 if g.higher_is_better else -1.0
    rg, rs = _replicates(grid, idx), _replicates(single, idx)

    def gap(r, reps):  # weighted sum minus the best single layer, positive = the weighted sum is better
        w = next((x for x in r.weighted if x.probe == "weighted"), None)
        if w is None:
            return None, None
        return sign * (w.score - r.best.score), sign * (reps[w.probe] - reps[r.best.probe])

    gap_s, reps_s = gap(s, rs)
    gap_g, reps_g = gap(g, rg)
    lr_single = single[0].record.config["lr"]
    same = [r.record.probe for r in grid
            if any(p["lr"] == lr_single and p["dev_curve"] == next(x.record.dev_curve for x in single
                                                                   if x.record.probe == r.record.probe)
                   for p in r.record.grid)]
    chosen = [x for s_ in g.layers + g.weighted for x in s_.lrs]
    return {
        "upstream": g.label, "task": g.task, "metric": g.metric, "lr": lr_single,
        "grid": grid[0].record.config["lr_grid"],
        "single_best": s.best, "grid_best": g.best,
        "single_near": [x.layer for x in s.layers if x.not_worse], "grid_near": [x.layer for x in g.layers if x.not_worse],
        "moved": g.best.layer != s.best.layer, "move": abs(int(g.best.layer) - int(s.best.layer)),
        "near_changed": [x.layer for x in s.layers if x.not_worse] != [x.layer for x in g.layers if x.not_worse],
        "gap_single": gap_s, "gap_single_ci": None if reps_s is None else _ci(reps_s),
        "gap_grid": gap_g, "gap_grid_ci": None if reps_g is None else _ci(reps_g),
        "gap_change": None if gap_g is None or gap_s is None else gap_g - gap_s,
        "gap_change_ci": None if reps_g is None or reps_s is None else _ci(reps_g - reps_s),
        "gap_change_significant": None if reps_g is None or reps_s is None else
        bool(np.percentile(reps_g - reps_s, 2.5) > 0 or np.percentile(reps_g - reps_s, 97.5) < 0),
        "chosen_lrs": {lr: chosen.count(lr) for lr in sorted(set(chosen))},
        "same_point": f"{len(same)}/{len(grid)}",
    }


def _score(x) -> str:
    return f"{x.score:.3f} [{x.ci_low:.3f}, {x.ci_high:.3f}]"


def table(rows: list[dict]) -> str:
    """The markdown table and a summary of moves and gap changes."""
    lines = ["| upstream | task (metric) | one lr: best layer, score [95% CI] | ~best | grid: best layer (its lr), "
             "score [95% CI] | ~best | best moved | WS − best, one lr | WS − best, grid | change [95% CI] | lr chosen "
             "(probes) |", "|" + "---|" * 11]
    for r in rows:
        s, g = r["single_best"], r["grid_best"]
        gap = lambda v, ci: "-" if v is None else f"{v:+.3f} {ci}"  # noqa: E731
        lines.append(
            f"| {r['upstream']} | {r['task']} ({r['metric']}) | {s.layer}: {_score(s)} | "
            f"{','.join(map(str, r['single_near']))} | {g.layer} ({','.join(f'{x:g}' for x in dict.fromkeys(g.lrs))}): "
            f"{_score(g)} | {','.join(map(str, r['grid_near']))} | "
            f"{'**' + str(r['move']) + ' layer(s)**' if r['moved'] else 'no'} | {gap(r['gap_single'], r['gap_single_ci'])} | "
            f"{gap(r['gap_grid'], r['gap_grid_ci'])} | {gap(r['gap_change'], r['gap_change_ci'])} | "
            + ", ".join(f"{lr:g}: {n}" for lr, n in r["chosen_lrs"].items()) + " |")
    moved = [r for r in rows if r["moved"]]
    near = [r for r in rows if r["near_changed"]]
    gaps = [r for r in rows if r["gap_change"] is not None]
    sig = [r for r in gaps if r["gap_change_significant"]]
    summary = (f"Best layer moved in {len(moved)} of {len(rows)} (upstream, task) pairs"
               + (f" (by {', '.join(str(r['move']) for r in moved)} layer(s))" if moved else "")
               + f"; the ~best set changed in {len(near)} of {len(rows)}")
    if gaps:
        summary += (f"; the weighted-sum gap changed significantly (95% paired bootstrap) in {len(sig)} of {len(gaps)}, "
                    f"mean change {np.mean([r['gap_change'] for r in gaps]):+.3f}")
    lines += ["", summary + ".", "",
              "Grid point at the single run's lr with the single run's dev curve, bit for bit (probes): "
              + ", ".join(f"{r['upstream']}/{r['task']} {r['same_point']}" for r in rows) + "."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="results/lr_grid", help="folder of the grid records (default results/lr_grid)")
    ap.add_argument("--single", default="results", help="folder of the single-lr records (default results)")
    args = ap.parse_args()
    rows = [compare(g, s) for g, s in pairs(Path(args.grid), Path(args.single))]
    if not rows:
        sys.exit("no (upstream, task) with both grid and single-lr records")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
