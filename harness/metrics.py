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
    """Total edits over total reference length (WER/CER/PER from :func:`error_counts`), as SUPERB
    and sclite compute a corpus error rate. With no reference tokens at all the rate is 0.0 when
    the hypotheses are empty too, and infinite when they insert anything (no finite rate exists).
    """
    total, errors = sum(lengths), sum(edits)
    if total == 0:
        return 0.0 if errors == 0 else float("inf")
    return float(errors) / total


def accuracy(correct: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Mean of ``correct`` (weighted by ``weights``, e.g. frames per utterance)."""
    if weights is None:
        return float(sum(correct)) / len(correct) if correct else 0.0
    total = sum(weights)
    return float(sum(correct)) / total if total else 0.0


def detection_errors(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Miss and false-alarm rates at every distinct threshold (accept when score >= threshold):
    ``(p_miss, p_fa)``, each ``[k + 1]`` for ``k`` distinct scores, from accepting nothing to
    accepting all.

    Trials with equal scores are accepted or rejected together: an operating point inside a
    block of tied scores does not exist (no threshold separates them), so none is returned and
    the result does not depend on the order of the trials. Raises ValueError without both target
    and non-target trials, or with a score that is not finite.
    """
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be 1-D of equal length")
    if not np.isfinite(scores).all():
        raise ValueError("detection errors need finite scores (a NaN score means an embedding of zero norm)")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, lab = scores[order], labels[order]
    targets, nontargets = lab.sum(), (~lab).sum()
    if targets == 0 or nontargets == 0:
        raise ValueError("detection errors need both target and non-target trials")
    # the last trial of each block of equal scores: thresholds fall between blocks only
    ends = np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))
    accepted_targets = np.concatenate([[0], np.cumsum(lab)[ends]])
    accepted_nontargets = np.concatenate([[0], np.cumsum(~lab)[ends]])
    return 1 - accepted_targets / targets, accepted_nontargets / nontargets


def equal_error_rate(scores, labels) -> float:
    """EER: the rate where miss and false-alarm rates are equal, linearly interpolated between
    the two neighbouring operating points (of :func:`detection_errors`) whose difference changes
    sign. Tied scores form one operating point, so ``equal_error_rate([0.5] * 4, [1, 1, 0, 0])``
    is 0.5 in any trial order. Raises ValueError as :func:`detection_errors`.

    >>> equal_error_rate([1.0, 1.0, 0.0], [1, 0, 0])  # doctest: +ELLIPSIS
    0.333...
    """
    p_miss, p_fa = detection_errors(scores, labels)
    diff = p_miss - p_fa  # decreasing from 1 to -1 as more trials are accepted
    k = int(np.argmax(diff <= 0))  # first point where false alarms reach misses
    if k == 0:
        return float(p_fa[0])
    d0, d1 = diff[k - 1], diff[k]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(p_miss[k - 1] + w * (p_miss[k] - p_miss[k - 1]))


def min_dcf(scores, labels, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Minimum normalised detection cost (NIST SRE 2010 definition, SUPERB ASV's setting by default):
    ``min over thresholds of (c_miss p_target p_miss + c_fa (1 - p_target) p_fa)`` divided by the
    cost of the best trivial system ``min(c_miss p_target, c_fa (1 - p_target))``; 1.0 means no
    better than always accepting or always rejecting. Thresholds as :func:`detection_errors`."""
    p_miss, p_fa = detection_errors(scores, labels)
    cost = c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa
    return float(np.min(cost) / min(c_miss * p_target, c_fa * (1 - p_target)))
