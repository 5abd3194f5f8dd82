"""s3prl 0.4.18 itself on SUPERB's recipes, on the embedded corpus: the s3prl side of issue 22.

    python bench/peer_s3prl.py [--tasks pr,sid,ic,ks,er,asv,asr] [--steps 200] [--asr-steps 50]
        [--task-steps asv=200,asr=5] [--seed 0] [--upstream fbank] [--eval-step N] [--er-fold K]
        [--data-root DIR] [--out DIR]
    python bench/peer_s3prl.py --show DIR      # the table of records already written

For each task it builds s3prl's own ``DownstreamExpert`` (``s3prl.downstream.<folder>.expert``)
with the config dict of SUPERB's published ``config.yaml`` (``bench/peer/recipes.py``), the
upstream through ``s3prl.hub`` (``fbank`` by default; ``hf_hubert_custom=<HF folder>`` for a tiny
HuBERT) and s3prl's ``Featurizer`` over all its hidden states, trains it on the CPU with s3prl's
optimizer settings for ``--steps`` optimizer updates (one update = the recipe's gradient
accumulation x batch size utterances), then evaluates dev and test with the expert's own scoring
(``bench/peer/loop.py``: the runner's loop). Without ``--eval-step`` the final model is scored;
with it, dev is scored every N steps and test uses the best dev checkpoint, as SUPERB does (ASV:
the best test EER over the checkpoints, SUPERB's own rule).

Writes ``<out>/<task>.json`` per task: head parameter count (featurizer + expert, trainable),
dev and test metric, per-utterance test outcomes (per trial for ASV), seconds per training step
(mean over the run after the first 3 steps), seed, the exact config, the patches applied, the
versions; prints a table. Where s3prl cannot run a task on this data the record and the table
say why in one line. ``run_s3prl(task, data_root, steps, seed, out)`` is the per-task entry point
for putting the harness side beside it.

Patches (all in this process, none in site-packages; details in ``bench/peer/patches.py``):
1. pysox and catalyst are not installed: stub modules for the two names the experts import and
   never call here (``sox.Transformer``; ``catalyst.data.sampler.DistributedSamplerWrapper``).
2. No libsox: ``apply_effects_file`` in the KS and ASV datasets is replaced by a tensor
   re-implementation of the effects they use (channels 1, rate 16000, gain -3 dB = x 10^(-3/20);
   ASV also sox's ``silence 1 0.1 0.1% -1 0.1 0.1%`` voice-activity trimming).
3. ASV's expert calls ``.cuda()`` on its masks: ``Tensor.cuda`` is the identity during the run.
4. ASV's trimmed-length pass uses ``joblib.Parallel(n_jobs=12)``: run in-process instead, so
   the patched effects apply (same numbers).
5. SID's file-list cache and ASV's length cache live in the package folder: redirected to the
   run folder.
6. SID's output size is fixed at 1,251 speakers: set to the corpus's speaker count, so the head
   has the size a head for these speakers has.
7. The wheel lacks ``downstream/ctc/corpus/libriphone.py`` (PR's dataset), every lexicon,
   vocabulary, ``char.dict``, ``len_for_bucket`` csv and IEMOCAP metadata: ``bench/peer/``
   writes them (lexicon: the corpus's ``LibriSpeech/librispeech-lexicon.txt``, else CMUdict;
   IEMOCAP metadata by s3prl's own ``IEMOCAP_preprocess.preprocess``).
8. ``downstream/runner.py`` imports ``HfFolder``/``Repository`` (gone from huggingface_hub) and
   ``tensorboardX`` (absent): it is not used; its loop is re-run by ``bench/peer/loop.py`` and the
   experts log into a ``ScalarLog``.
Corpus adapters (symlink views, never writes into the corpus): VoxCeleb1 ``dev/wav`` and
``test/wav`` for ASV (the trial speakers are the test side); Speech Commands without the files of
``testing_list.txt`` for s3prl's hash split, and a test folder built from ``testing_list.txt``
when ``speech_commands_test_set_v0.01/`` is absent.
Needs pandas and editdistance (s3prl's IC/ASR and PR/ASR code), not in the project's lock.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer import patches, recipes  # noqa: E402

DEFAULT_STEPS = 200
DEFAULT_ASR_STEPS = 50


def _versions() -> dict:
    import s3prl
    import torch
    import torchaudio

    return {"s3prl": s3prl.__version__, "torch": torch.__version__, "torchaudio": torchaudio.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads()}


def _missing_modules() -> list[str]:
    import importlib.util

    return [m for m in ("pandas", "editdistance", "s3prl") if importlib.util.find_spec(m) is None]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def run_s3prl(task: str, data_root, steps: int, seed: int, out, upstream: str = "fbank",
              eval_step: int | None = None, num_workers: int = 0, er_fold: int = 1, log=print) -> dict:
    """Train and score s3prl's own expert for ``task``; writes and returns ``<out>/<task>.json``
    (ER with ``er_fold`` k > 1: ``er<k>.json``).

    The record has ``status`` "ok" or "cannot run" (with ``reason``, one line). Metrics are
    fractions (accuracy, PER, WER, EER); ``test_outcomes`` are per utterance (ASV: per trial).
    """
    out = Path(out)
    name = task if task != "er" or er_fold == 1 else f"er{er_fold}"  # the record is <out>/<name>.json
    record = {"task": task, "side": "s3prl", "upstream": upstream, "seed": seed, "steps_requested": steps,
              "data_root": str(data_root), "eval_step": eval_step, "num_workers": num_workers}
    if task == "er":
        record["er_fold"] = er_fold
    start = time.perf_counter()
    try:
        missing = _missing_modules()
        if missing:
            raise RuntimeError(f"python modules missing: {', '.join(missing)} (pip install {' '.join(missing)})")
        record["versions"] = _versions()
        workdir = out / f"{name}.work"
        recipe = recipes.build(task, Path(data_root), workdir, num_workers, er_fold)
        notes = patches.apply(task, workdir, recipe.speaker_count) + recipe.notes
        from peer import libriphone, loop, outcomes

        measured = loop.run(recipe, upstream, steps, seed, workdir, eval_step, num_workers, log)
        results = measured.pop("results")
        expert = measured.pop("expert")
        if libriphone.DROPPED and task == "pr":
            notes.append(f"utterances dropped for out-of-lexicon words: {libriphone.DROPPED}")
        record.update(status="ok", metric=recipe.metric, higher_is_better=recipe.higher_is_better,
                      config=recipe.config, notes=notes, **measured)
        for split, r in results.items():
            record[split] = r["metric"]
            record[f"{split}_step"] = r["step"]
            record[f"{split}_eval_seconds"] = r["seconds"]
        record["test_outcomes"] = outcomes.outcomes(recipe.folder, results["test"]["records"], expert)
        record["test_interval"] = outcomes.interval(record)  # 95% percentile bootstrap, 1000 resamples
        record.setdefault("dev", None)
    except Exception as exc:  # one line per task that cannot run; the traceback goes to the work folder
        record.update(status="cannot run", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        (out / f"{name}.work").mkdir(parents=True, exist_ok=True)
        (out / f"{name}.work" / "traceback.txt").write_text(traceback.format_exc())
    record["wall_seconds"] = time.perf_counter() - start
    _write_json(out / f"{name}.json", record)
    return record


def _fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def table(records: list[dict]) -> str:
    lines = ["| task | metric | head params | dev | test [95% bootstrap] | s/step | steps | wall s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        if r["status"] != "ok":
            lines.append(f"| {r['task']} | cannot run: {r['reason']} | | | | | | {r['wall_seconds']:.0f} |")
            continue
        lo_hi = r.get("test_interval")
        test = _fmt(r["test"]) + (f" [{_fmt(lo_hi[0])}, {_fmt(lo_hi[1])}]" if lo_hi else "")
        lines.append(f"| {r['task']} | {r['metric']} | {r['head_parameters']:,} | {_fmt(r['dev'])} | {test} "
                     f"| {r['seconds_per_step']:.2f} | {r['steps']} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines)


def _default_root() -> Path:
    from harness.corpus.layout import require_embedded_corpus

    return require_embedded_corpus()


def _default_out(upstream: str) -> Path:
    from harness.fsutil import default_home

    return default_home() / "peer_s3prl" / upstream.split("=")[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(recipes.TASKS))
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimizer updates per task")
    p.add_argument("--asr-steps", type=int, default=DEFAULT_ASR_STEPS, help="optimizer updates for asr")
    p.add_argument("--task-steps", default="", help="per-task overrides, e.g. asv=200,asr=8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--upstream", default="fbank", help="s3prl.hub name, or NAME=CKPT (hf_hubert_custom=DIR)")
    p.add_argument("--eval-step", type=int, default=None, help="score dev every N steps, test on the best")
    p.add_argument("--er-fold", type=int, default=1, choices=range(1, 6), help="ER test session")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (recipes: 6-24)")
    p.add_argument("--data-root", type=Path, default=None, help="corpus root (default: the embedded corpus)")
    p.add_argument("--out", type=Path, default=None, help="default: $HARNESS_HOME/peer_s3prl/<upstream>")
    p.add_argument("--show", type=Path, default=None, help="only print the table of the records in this folder")
    args = p.parse_args(argv)
    if args.show:
        from peer.outcomes import interval

        order = {t: i for i, t in enumerate(recipes.TASKS)}
        shown = sorted((json.loads(f.read_text()) for f in args.show.glob("*.json")),
                       key=lambda r: (order.get(r.get("task"), 99), r.get("er_fold", 1)))
        for r in shown:
            if r.get("status") == "ok" and "test_interval" not in r:
                r["test_interval"] = interval(r)  # records written before intervals were stored
        if not shown:
            print(f"error: no records (*.json) in {args.show}", file=sys.stderr)
            return 2
        print(table(shown))
        return 0
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in recipes.TASKS]
    if unknown:
        print(f"error: unknown task(s) {unknown}; choose from {','.join(recipes.TASKS)}", file=sys.stderr)
        return 2
    try:
        data_root = args.data_root or _default_root()
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or _default_out(args.upstream)
    try:
        overrides = {k.strip(): int(v) for k, v in (kv.split("=") for kv in args.task_steps.split(",") if kv.strip())}
    except ValueError:
        print(f"error: --task-steps wants TASK=N[,TASK=N], got {args.task_steps!r}", file=sys.stderr)
        return 2
    records, start = [], time.perf_counter()
    for task in tasks:
        steps = overrides.get(task, args.asr_steps if task == "asr" else args.steps)
        print(f"[peer_s3prl] {task}: {steps} steps, seed {args.seed}, upstream {args.upstream}", flush=True)
        r = run_s3prl(task, data_root, steps, args.seed, out, args.upstream, args.eval_step, args.num_workers,
                      args.er_fold)
        print(f"[peer_s3prl] {task}: {r['status']} {r.get('reason', '')} ({r['wall_seconds']:.0f} s)", flush=True)
        records.append(r)
    print(table(records))
    print("s/step: seconds per optimizer update (accumulation included), mean after the first 3; "
          "interval: percentile bootstrap over test utterances (ASV: trials)")
    print(f"total wall time {time.perf_counter() - start:.0f} s; records in {out}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
