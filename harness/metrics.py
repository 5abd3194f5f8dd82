"""Metrics with per-utterance outcomes (what the reporter's bootstrap resamples).

Error rates use jiwer (a maintained implementation); corpus error rate is total edits
over total reference tokens, as in SUPERB, not a mean of per-utterance rates.
"""

from __future__ import annotations

from typing import Sequence

import jiwer
import numpy as np


def error_counts(references: Sequence[str], hypotheses: Sequence[str], unit: str = "word") -> tuple[list[int], list[int]]:
    """Per-utterance (edits, reference length) for word (WER/PER on space-separated tokens)
    or character (CER) units."""
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
    """Total edits over total reference length (WER/CER/PER from :func:`error_counts`); 0.0 when
    the references are empty (nothing to get wrong).
    """
    total = sum(lengths)
    return float(sum(edits)) / total if total else 0.0


def accuracy(correct: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Mean of ``correct`` (weighted by ``weights``, e.g. frames per utterance)."""
    if weights is None:
        return float(sum(correct)) / len(correct) if correct else 0.0
    total = sum(weights)
    return float(sum(correct)) / total if total else 0.0


def detection_errors(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Miss and false-alarm rates at every threshold between sorted scores (accept when score >=
    threshold): ``(p_miss, p_fa)``, each ``[n + 1]``, from accepting nothing to accepting all."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    order = np.argsort(-scores, kind="stable")
    lab = labels[order]
    targets, nontargets = lab.sum(), (~lab).sum()
    if targets == 0 or nontargets == 0:
        raise ValueError("detection errors need both target and non-target trials")
    accepted_targets = np.concatenate([[0], np.cumsum(lab)])
    accepted_nontargets = np.concatenate([[0], np.cumsum(~lab)])
    return 1 - accepted_targets / targets, accepted_nontargets / nontargets


def equal_error_rate(scores, labels) -> float:
    """EER: the rate where miss and false-alarm rates are equal, linearly interpolated between
    the two operating points whose difference changes sign."""
    p_miss, p_fa = detection_errors(scores, labels)
    diff = p_miss - p_fa  # decreasing from 1 to -1 as more trials are accepted
    k = int(np.argmax(diff <= 0))  # first point where false alarms reach misses
    if k == 0:
        return float(p_fa[0])
    d0, d1 = diff[k - 1], diff[k]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(p_miss[k - 1] + w * (p_miss[k] - p_miss[k - 1]))


def min_dcf(scores, labels, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Minimum normalised detection cost (NIST SRE), SUPERB ASV's setting by default."""
    p_miss, p_fa = detection_errors(scores, labels)
    cost = c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa
    return float(np.min(cost) / min(c_miss * p_target, c_fa * (1 - p_target)))
