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
