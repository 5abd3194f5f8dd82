"""Chance levels for ASR on a LibriSpeech-layout split: what WER/CER do outputs that
ignore the audio get? A probe is "above chance" only if it beats all of these.

    .venv/bin/python scripts/asr_chance.py [--data-root DIR] [--split test]

References and scoring are the asr task's own (its transcripts and jiwer-based WER/CER).
Baselines:
  empty            no output at all
  the              "THE" for every utterance
  the x half words "THE" repeated half the reference word count (knows the length)
  the x words      "THE" repeated the reference word count (knows the exact length)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.metrics import error_counts, error_rate
from harness.registry import load_task


def rates(refs: list[str], hyps: list[str]) -> tuple[float, float]:
    w = error_rate(*error_counts(refs, hyps, "word"))
    c = error_rate(*error_counts(refs, hyps, "char"))
    return w, c


def main() -> int:
    from harness.corpus.layout import embedded_corpus_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--split", default="test", choices=("train", "dev", "test"))
    args = ap.parse_args()
    root = args.data_root or embedded_corpus_dir()
    task_cls = load_task("asr")
    refs = [e.reference for e in task_cls(task_cls.default_config()).examples(root, args.split)]
    baselines = {
        "empty": ["" for _ in refs],
        "the": ["THE" for _ in refs],
        "the x half words": [" ".join(["THE"] * max(1, len(r.split()) // 2)) for r in refs],
        "the x words": [" ".join(["THE"] * len(r.split())) for r in refs],
    }
    print(f"{len(refs)} utterances of {args.split} in {root}")
    print(f"{'baseline':<18} {'WER':>6} {'CER':>6}")
    for name, hyps in baselines.items():
        w, c = rates(refs, hyps)
        print(f"{name:<18} {w:6.3f} {c:6.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
