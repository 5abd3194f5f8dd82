"""The harness's side of issue 22's comparison with s3prl, and the side-by-side table.

    python bench/peer_harness.py --s3prl DIR [--tasks pr,sid,ic,ks,er] [--upstream fbank_superb]
        [--lexicon FILE] [--out DIR]
    python bench/peer_harness.py --s3prl DIR --show DIR      # the table of records already written

For each task with an s3prl record in ``--s3prl`` (``bench/peer_s3prl.py``'s ``<task>.json``),
runs ``harness run --protocol superb`` on the same corpus, upstream features and seed (``--layer
0`` when s3prl's side had one hidden state, ``--layer weighted`` over all of them otherwise, as
s3prl's featurizer), for the same number of optimizer updates, validated only at the end (s3prl's side scores
its final model), and writes ``<out>/<task>.json`` in the same format: head parameters
(trainable: featurizer + head), dev and test metric, a 95% percentile bootstrap over test
utterances (ASV: over the utterances behind the trials), seconds per optimizer update. Then
prints one row per task with both sides and whether the two test intervals overlap.

``fbank_superb`` is s3prl's ``fbank`` baseline (80 log-mel + deltas + delta-deltas, per-utterance
CMVN; 240 dims); ``--lexicon`` gives PR the lexicon s3prl's side used (its record's notes say
which).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.fsutil import default_home, write_text
from harness.heads import Featurizer, Probe
from harness.probing.engine import RunRequest, prepare, run
from harness.records import read_outcomes, read_record
from harness.reports.ranking import BOOTSTRAP_SEED, N_BOOTSTRAP, _stat, resampling

TASKS = ("pr", "sid", "ic", "ks", "er", "asv")


def head_parameters(plan) -> int:
    """Trainable parameters of the run's probe (featurizer + head), as s3prl counts its side."""
    spec = plan.probes[0]
    probe = Probe(Featurizer(spec.layers, spec.weighted, layer_norm=bool(plan.config["layer_norm"])),
                  plan.task.build_head(plan.upstream.info.dims[spec.layers[0]]))
    return sum(p.numel() for p in probe.parameters() if p.requires_grad)


def run_harness(task: str, peer: dict, upstream: str, data_root: Path, out: Path, lexicon: str | None) -> dict:
    """One task's harness record beside s3prl's record ``peer``."""
    steps, seed = int(peer["steps"]), int(peer["seed"])
    overrides = {"val_interval": steps}
    if task == "pr" and lexicon:
        overrides["lexicon"] = lexicon
    if task == "er":
        overrides["folds"] = [int(peer.get("er_fold", 1))]  # s3prl's side ran one fold
    if task == "ks" and not (Path(data_root) / "speech_commands_test_set_v0.01").is_dir():
        overrides["test_set"] = "lists"  # as s3prl's side did: its test folder was built from testing_list.txt
    # s3prl's featurizer takes a single hidden state as it is and learns softmax weights over several
    layer = "weighted" if int(peer.get("layers", 1)) > 1 else "0"
    req = RunRequest(upstream=upstream, task=task, layer=layer, data_root=data_root, out=out / "records", seed=seed,
                     max_steps=steps, overrides=overrides, protocol="superb", progress=False)
    start = time.perf_counter()
    plan = prepare(req)
    paths = run(req)
    record = read_record(paths[0])
    outcomes = read_outcomes(paths[0])
    metric = record.metric.name
    train_s = float(record.timing.get("train_s", 0.0))
    return {"task": task, "side": "harness", "upstream": upstream, "seed": seed, "steps": steps, "status": "ok",
            "metric": metric, "higher_is_better": record.metric.higher_is_better,
            "head_parameters": head_parameters(plan), "dev": record.dev.get(metric), "test": record.test[metric],
            "test_interval": interval(outcomes),
            "seconds_per_step": train_s / max(steps, 1), "wall_seconds": time.perf_counter() - start,
            "config": record.config, "records": str(paths[0].parent)}


def interval(outcomes) -> list[float]:
    """95% percentile bootstrap of ``outcomes`` (harness :class:`~harness.records.Outcomes`) over
    test utterances, as the harness's reports resample them (verification: the utterances behind
    the trials); replicates without a value (a trial set of one class) are left out."""
    reps = _stat(outcomes, resampling(outcomes, "utterance", np.random.default_rng(BOOTSTRAP_SEED), N_BOOTSTRAP))
    reps = reps[~np.isnan(reps)]
    return [float(np.percentile(reps, 2.5)), float(np.percentile(reps, 97.5))]


def peer_interval(record: dict) -> list[float] | None:
    """95% percentile bootstrap of an s3prl record's test outcomes over test utterances (the same
    resampling this side uses; ASV: the utterances behind the trials, a cluster bootstrap)."""
    from harness.records import Outcomes

    rows = record.get("test_outcomes") or []
    if not rows:
        return None
    if "enrol" in rows[0]:
        outcomes = Outcomes.verification([f"{r['enrol']}|{r['test']}" for r in rows], [r["score"] for r in rows],
                                         [int(r["label"]) for r in rows])
    elif "correct" in rows[0] or "errors" in rows[0]:
        ids = [str(r["id"]) for r in rows]
        outcomes = Outcomes.accuracy(ids, [r["correct"] for r in rows]) if "correct" in rows[0] else \
            Outcomes.error_rate(ids, [r["errors"] for r in rows], [r["length"] for r in rows])
    else:
        return None
    return interval(outcomes)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def table(pairs: list[tuple[dict, dict]]) -> str:
    """Markdown: per task, both sides' parameters, dev, test [interval], s/step, and overlap."""
    lines = ["| task | metric | params s3prl / harness | dev s3prl / harness | test s3prl [95%] | test harness [95%] "
             "| intervals overlap | s/step s3prl / harness |", "|" + "---|" * 8]
    for peer, ours in pairs:
        a, b = peer.get("test_interval") or [None, None], ours["test_interval"]
        overlap = a[0] is not None and a[0] <= b[1] and b[0] <= a[1]
        lines.append(f"| {ours['task']} | {ours['metric']} | {peer['head_parameters']:,} / {ours['head_parameters']:,} "
                     f"| {_fmt(peer.get('dev'))} / {_fmt(ours['dev'])} | {_fmt(peer['test'])} [{_fmt(a[0])}, "
                     f"{_fmt(a[1])}] | {_fmt(ours['test'])} [{_fmt(b[0])}, {_fmt(b[1])}] | "
                     f"{'yes' if overlap else '**no**'} | {peer['seconds_per_step']:.2f} / "
                     f"{ours['seconds_per_step']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--s3prl", type=Path, required=True, help="bench/peer_s3prl.py's output folder")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--upstream", default="fbank_superb")
    p.add_argument("--lexicon", help="PR's lexicon file (the one s3prl's side used)")
    p.add_argument("--data-root", type=Path, help="corpus root (default: the s3prl record's)")
    p.add_argument("--out", type=Path, help="default: $HARNESS_HOME/peer_harness/<upstream>")
    p.add_argument("--show", type=Path, help="only print the table of harness records in this folder")
    args = p.parse_args(argv)
    out = args.show or args.out or default_home() / "peer_harness" / args.upstream
    pairs = []
    for task in [t for t in args.tasks.split(",") if t]:
        peer_path = args.s3prl / f"{task}.json"
        if not peer_path.is_file():
            print(f"{task}: no s3prl record {peer_path}; skipped", file=sys.stderr)
            continue
        peer = json.loads(peer_path.read_text())
        if peer.get("status") == "ok":  # the same resampling as this side's (ASV: utterances, not trials)
            peer["test_interval"] = peer_interval(peer) or peer.get("test_interval")
        if peer.get("status") != "ok":
            print(f"{task}: s3prl's side could not run ({peer.get('reason')}); skipped", file=sys.stderr)
            continue
        mine = out / f"{task}.json"
        if args.show:
            if not mine.is_file():
                continue
            ours = json.loads(mine.read_text())
        else:
            print(f"[peer_harness] {task}: {peer['steps']} steps, seed {peer['seed']}", file=sys.stderr, flush=True)
            try:
                ours = run_harness(task, peer, args.upstream, args.data_root or Path(peer["data_root"]), out,
                                   args.lexicon)
            except HarnessError as exc:
                print(f"{task}: {exc}", file=sys.stderr)
                continue
            write_text(mine, json.dumps(ours, indent=2, default=str) + "\n")
        pairs.append((peer, ours))
    if not pairs:
        print("error: no task with records on both sides", file=sys.stderr)
        return 2
    print(table(pairs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
