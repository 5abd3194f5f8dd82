"""Metrics with per-utterance outcomes (what the reporter's bootstrap resamples).

Error rates use jiwer (a maintained implementation); corpus error rate is total edits
over total reference tokens, as in SUPERB, not a mean of per-utterance rates.
"""

from __future__ import annotations

from typing import Sequence


def error_counts(references: Sequence[str], hypotheses: Sequence[str], unit: str = "word") -> tuple[list[int], list[int]]:
    """Per-utterance (edits, reference length) for word (WER/PER on space-separated tokens)
    or character (CER) units."""
    import jiwer

    edits, lengths = [], []
    for ref, hyp in zip(references, hypotheses):
        if unit == "word":
            ref_tokens = ref.split()
            if not ref_tokens:
                edits.append(len(hyp.split()))
                lengths.append(0)
                continue
            out = jiwer.process_words(ref, hyp)
            n = len(ref_tokens)
        else:
            if not ref:
                edits.append(len(hyp))
                lengths.append(0)
                continue
            out = jiwer.process_characters(ref, hyp)
            n = len(ref)
        edits.append(out.substitutions + out.deletions + out.insertions)
        lengths.append(n)
    return edits, lengths


def error_rate(edits: Sequence[int], lengths: Sequence[int]) -> float:
    total = sum(lengths)
    return float(sum(edits)) / total if total else 0.0


def accuracy(correct: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Mean of ``correct`` (weighted by ``weights``, e.g. frames per utterance)."""
    if weights is None:
        return float(sum(correct)) / len(correct) if correct else 0.0
    total = sum(weights)
    return float(sum(correct)) / total if total else 0.0
