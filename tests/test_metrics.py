"""Error counts against an independent Levenshtein distance, written here."""

from __future__ import annotations

import numpy as np

from harness.metrics import error_counts, error_rate


def _levenshtein(a, b) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


def test_error_counts_match_a_reference_levenshtein():
    rng = np.random.default_rng(0)
    refs, hyps = [], []
    for _ in range(50):
        refs.append(" ".join(rng.choice(list("abcde"), size=rng.integers(1, 8))))
        hyps.append(" ".join(rng.choice(list("abcdef"), size=rng.integers(0, 8))))
    errors, lengths = error_counts(refs, hyps, "word")
    assert errors == [_levenshtein(r.split(), h.split()) for r, h in zip(refs, hyps)]
    assert lengths == [len(r.split()) for r in refs]
    cerr, clen = error_counts(refs, hyps, "char")
    assert cerr == [_levenshtein(list(r), list(h)) for r, h in zip(refs, hyps)]
    # corpus-level rate: total edits over total reference tokens, not a mean of per-utterance rates
    assert error_rate([1, 0], [1, 9]) == 0.1


def _brute_force_eer(scores, labels):
    """EER from first principles: sweep every threshold (accept score >= t), find where the miss
    rate and the false-alarm rate cross, interpolate linearly between the two neighbours."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    thresholds = np.concatenate([[np.inf], np.sort(scores)[::-1]])
    points = []
    for t in thresholds:
        accept = scores >= t
        points.append(((~accept & labels).sum() / labels.sum(), (accept & ~labels).sum() / (~labels).sum()))
    for (m0, f0), (m1, f1) in zip(points, points[1:]):
        if m0 - f0 > 0 >= m1 - f1:
            w = (m0 - f0) / ((m0 - f0) - (m1 - f1))
            return m0 + w * (m1 - m0)
    return points[0][1]


def test_equal_error_rate_and_min_dcf_match_first_principles():
    from harness.metrics import equal_error_rate, min_dcf

    rng = np.random.default_rng(3)
    labels = rng.random(400) < 0.5
    scores = rng.normal(0, 1, 400) + 1.2 * labels
    assert abs(equal_error_rate(scores, labels) - _brute_force_eer(scores, labels)) <= 1e-12
    # known answers: perfect separation, and complete overlap of identical scores
    assert equal_error_rate([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 0.0
    assert equal_error_rate([0.9, 0.8, 0.7, 0.6], [0, 0, 1, 1]) == 1.0
    # minDCF: min over thresholds of (0.01 p_miss + 0.99 p_fa) / 0.01, written out here
    best = min((0.01 * ((scores < t) & labels).sum() / labels.sum()
                + 0.99 * ((scores >= t) & ~labels).sum() / (~labels).sum()) / 0.01
               for t in np.concatenate([[np.inf], np.sort(scores)]))
    assert abs(min_dcf(scores, labels) - best) <= 1e-12
