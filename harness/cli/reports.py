"""``harness report``, ``leaderboard``, ``recommend`` and ``trajectory``: reading records."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _report(args: argparse.Namespace) -> int:
    from harness.fsutil import write_text
    from harness.reports.ranking import (
        format_table,
        load_records,
        plot,
        plot_name,
        rank,
    )

    rankings = rank(load_records(Path(args.results), args.upstream, args.task), unit=args.unit)
    text = format_table(rankings, args.format)
    if args.output:
        write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        print(text, end="")
    if args.plots:
        for r in rankings:
            if r.layers:
                plot(r, Path(args.plots) / plot_name(r))
        print(f"plots in {args.plots}", file=sys.stderr)
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from harness.reports.leaderboard import build

    paths = build(Path(args.results), Path(args.out or args.results))
    print("wrote " + ", ".join(str(p) for p in paths[:3]) + f" and {len(paths) - 3} plots")
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from harness.reports.ranking import load_records, rank
    from harness.reports.recommend import recommend

    rankings = rank(load_records(Path(args.results), args.upstream, args.task), unit=args.unit)
    print(recommend(rankings, args.upstream, args.task, args.tolerance, args.random_init, args.export,
                    setting=args.setting).format())
    return 0


def _trajectory(args: argparse.Namespace) -> int:
    from harness.analysis.tables import to_csv
    from harness.errors import HarnessError
    from harness.fsutil import write_text

    out = Path(args.out)
    if args.action == "emergence":
        from harness.reports.emergence import emergence_rows, plot_emergence

        series = {}
        for item in args.series:
            name, sep, folder = item.partition("=")
            if not sep or not Path(folder).is_dir():
                raise HarnessError(f"--series takes NAME=RESULTS_FOLDER (an existing folder), got {item!r}")
            series[name] = Path(folder)
        rows = emergence_rows(series, args.tasks, args.bootstrap)
        write_text(out, to_csv(rows))
        plot_emergence(rows, out.with_suffix(".png"))
        print(f"{'objective':<12}{'task':<10}{'layer':>6}{'t50':>9}{'95% CI':>22}{'start':>8}{'plateau':>9}  direction")
        for r in rows:
            interval = f"[{r['t50_low']:.0f}, {r['t50_high']:.0f}]"
            print(f"{r['objective']:<12}{r['task']:<10}{r['layer']:>6}{r['t50']:>9.0f}{interval:>22}"
                  f"{r['start']:>8.4f}{r['plateau']:>9.4f}  {r['direction']}")
        print(f"rows: {out}; figure: {out.with_suffix('.png')}")
        return 0
    import csv

    from harness.reports.emergence import autoencoder_rows

    def read(path: str) -> list[dict]:
        try:
            return list(csv.DictReader(open(path)))
        except OSError as exc:
            raise HarnessError(f"cannot read {path}: {exc.strerror}") from None

    rows = autoencoder_rows(read(args.mel), read(args.word))
    write_text(out, to_csv(rows))
    for r in rows:
        print(f"{Path(str(r['checkpoint'])).name:<28} top layer {r['top_layer']}: mel {r['mel_top']:.3f} "
              f"(rebound {r['mel_rebound']:+.3f}, peak layer {r['mel_peak_layer']}), words {r['word_top']:.3f} "
              f"(drop {r['word_drop']:+.3f}, peak layer {r['word_peak_layer']})")
    print(f"rows: {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's commands to the ``harness`` parser."""
    rp = sub.add_parser("report", help="rank layers per upstream and task with 95%% confidence intervals",
                        description="Rank layers by test metric with bootstrap CIs over test utterances (and seeds), "
                                    "mark the layers not significantly worse than the best, show the weighted sum.")
    rp.add_argument("--results", default="results", help="records folder (default: results)")
    rp.add_argument("--upstream", help="only this upstream spec")
    rp.add_argument("--task", help="only this task")
    rp.add_argument("--format", choices=["table", "csv", "json", "markdown"], default="table")
    rp.add_argument("--output", help="write to this file instead of the terminal")
    rp.add_argument("--plots", help="also write metric-vs-layer PNGs to this folder")
    rp.add_argument("--unit", choices=["utterance", "speaker"], default="utterance",
                    help="what the bootstrap resamples: test utterances (default; for verification trials, the "
                         "utterances they pair) or speakers (clusters of utterances)")
    rp.set_defaults(func=_report)

    lb = sub.add_parser("leaderboard", help="regenerate LEADERBOARD.md, leaderboard.csv and index.html",
                        description="Regenerate the leaderboard from the records alone (byte-identical for the same records).")
    lb.add_argument("--results", default="results", help="records folder (default: results)")
    lb.add_argument("--out", help="output folder (default: the results folder)")
    lb.set_defaults(func=_leaderboard)

    rc = sub.add_parser("recommend", help="the layer to fine-tune from or truncate at, and what it saves",
                        description="Lowest layer within tolerance of the best; parameters, FLOPs and CPU latency of "
                                    "the truncated vs the full model; optional export of the truncated model.")
    rc.add_argument("--results", default="results")
    rc.add_argument("--upstream", required=True)
    rc.add_argument("--task", required=True)
    rc.add_argument("--tolerance", type=float, help="max metric difference from the best (default: not significantly worse)")
    rc.add_argument("--export", help="write the truncated model here (HF directory)")
    rc.add_argument("--random-init", action="store_true", help="the random-weights twin's records instead")
    rc.add_argument("--setting", help="the setting id to use when several exist (as `harness report` shows them)")
    rc.add_argument("--unit", choices=["utterance", "speaker"], default="utterance",
                    help="what the bootstrap resamples (as in harness report)")
    rc.set_defaults(func=_recommend)

    tr = sub.add_parser("trajectory", help="emergence of each level over pretraining checkpoints (sigmoid fits), "
                        "and the top layers' drift back toward the input",
                        description="emergence: fit a sigmoid to each (series, task, layer) curve of test scores "
                                    "over checkpoints (step 0 = the random-weights run) with bootstrap intervals; "
                                    "autoencoder: compare CCA with mel and with words per checkpoint.")
    trs = tr.add_subparsers(dest="action", metavar="ACTION")
    em = trs.add_parser("emergence", help="fitted emergence steps per level and layer (CSV + figure)")
    em.add_argument("--series", nargs="+", required=True, metavar="NAME=FOLDER",
                    help="checkpoint series: records folders of `harness run --checkpoints` plus a --random-init run")
    em.add_argument("--tasks", nargs="+", required=True, help="the levels' tasks, e.g. phone syllable word position")
    em.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates over test items (default 200)")
    em.add_argument("--out", required=True, help="tidy CSV (a PNG is written next to it)")
    em.set_defaults(func=_trajectory)
    ae = trs.add_parser("autoencoder", help="top layers' CCA with mel vs with words, per checkpoint")
    ae.add_argument("--mel", required=True, help="summary CSV of `harness analyze cca --checkpoints ... --property mel`")
    ae.add_argument("--word", required=True, help="summary CSV of the same with --property word")
    ae.add_argument("--out", required=True, help="tidy CSV")
    ae.set_defaults(func=_trajectory)

