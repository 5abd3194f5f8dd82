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


def test_tied_scores_form_one_operating_point_in_any_order():
    """Operating points exist only between blocks of equal scores (the values written here are
    worked out by hand: one threshold accepts a whole block of ties)."""
    from harness.metrics import equal_error_rate, min_dcf

    assert equal_error_rate([0.5] * 4, [1, 1, 0, 0]) == 0.5
    assert equal_error_rate([0.5] * 4, [0, 0, 1, 1]) == 0.5
    # accepting the block {1.0, 1.0} takes the target and one of two non-targets: miss 0, fa 1/2;
    # between (miss 1, fa 0) and that point the rates cross at 1/3
    assert abs(equal_error_rate([1.0, 1.0, 0.0], [1, 0, 0]) - 1 / 3) <= 1e-12
    assert abs(equal_error_rate([1.0, 1.0, 0.0], [0, 1, 0]) - 1 / 3) <= 1e-12
    assert min_dcf([0.5] * 4, [1, 1, 0, 0]) == 1.0
    assert min_dcf([0.5] * 4, [0, 0, 1, 1]) == 1.0


def test_ties_match_first_principles_and_ignore_trial_order():
    from harness.metrics import equal_error_rate, min_dcf

    rng = np.random.default_rng(7)
    for trial in range(20):
        n = int(rng.integers(4, 60))
        labels = rng.random(n) < 0.4
        labels[0], labels[1] = True, False
        scores = np.round(rng.normal(0, 1, n) + labels, int(rng.integers(0, 2)))  # heavy ties
        eer = equal_error_rate(scores, labels)
        assert abs(eer - _brute_force_eer(scores, labels)) <= 1e-12, trial
        perm = rng.permutation(n)
        assert equal_error_rate(scores[perm], labels[perm]) == eer
        assert min_dcf(scores[perm], labels[perm]) == min_dcf(scores, labels)


def test_constant_scores_are_chance_and_degenerate_trials_are_refused():
    import pytest

    from harness.metrics import equal_error_rate, min_dcf

    for targets in (1, 3, 7):
        labels = [1] * targets + [0] * 5
        assert equal_error_rate([0.2] * len(labels), labels) == 0.5
        assert min_dcf([0.2] * len(labels), labels) == 1.0
    with pytest.raises(ValueError, match="both target and non-target"):
        equal_error_rate([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="both target and non-target"):
        min_dcf([], [])
    with pytest.raises(ValueError, match="finite"):
        equal_error_rate([0.1, float("nan")], [1, 0])
    with pytest.raises(ValueError, match="equal length"):
        equal_error_rate([0.1, 0.2, 0.3], [1, 0])


def test_error_counts_and_rates_on_empty_references_and_hypotheses():
    errors, lengths = error_counts(["a b", "", "", "c"], ["", "x y", "", "c"], "word")
    assert errors == [2, 2, 0, 0] and lengths == [2, 0, 0, 1]
    errors, lengths = error_counts(["ab", ""], ["", "xy"], "char")
    assert errors == [2, 2] and lengths == [2, 0]
    assert error_rate([2, 2, 0, 0], [2, 0, 0, 1]) == 4 / 3  # insertions on empty references still count
    assert error_rate([], []) == 0.0 and error_rate([0, 0], [0, 0]) == 0.0
    assert error_rate([1], [0]) == float("inf")  # no reference tokens, something inserted
