"""Levels of linguistic structure: their labels checked against the corpus alignments."""

from __future__ import annotations

import numpy as np

from harness.corpus.layout import CorpusPaths
from harness.data import read_ctm
from harness.levels import VOWELS, frame_labels, spans, syllabify, to_spans


def test_syllabification_puts_one_nucleus_in_each_syllable_and_maximal_onsets():
    cases = {
        ("k", "I", "d", "z"): [["k", "I", "d", "z"]],
        ("S", "oU", "I", "N"): [["S", "oU"], ["I", "N"]],
        ("v", "I", "Z", "u:", "@L"): [["v", "I"], ["Z", "u:"], ["@L"]],
        ("aI", "d", "i@"): [["aI"], ["d", "i@"]],
        ("E", "k", "s", "t", "r", "@"): [["E", "k"], ["s", "t", "r", "@"]],  # 'extra': s t r is a legal onset
        ("h", "3:", "m", "n", "@"): [["h", "3:", "m"], ["n", "@"]],  # m n is not: the split goes before n
        ("s", "t",): [["s", "t"]],  # no vowel: one syllable
    }
    for phones, expected in cases.items():
        groups = [[phones[i] for i in g] for g in syllabify(list(phones))]
        assert groups == expected, (phones, groups)


def test_every_level_agrees_with_the_alignments(tiny_corpus):
    paths = CorpusPaths(tiny_corpus)
    phones = read_ctm(paths.ctm("dev-clean", "phones"))
    words = read_ctm(paths.ctm("dev-clean", "words"))
    for utt in sorted(phones)[:8]:
        ph, wd = to_spans(phones[utt]), to_spans(words[utt])
        syllables = spans("syllable", ph, wd, utt)
        for w in wd:  # syllables tile each word: contiguous, from its first phone to its last
            inside = [s for s in syllables if w.start - 1e-6 <= s.start and s.end <= w.end + 1e-6]
            assert inside and abs(inside[0].start - w.start) < 1e-6 and abs(inside[-1].end - w.end) < 1e-6
            assert all(abs(a.end - b.start) < 1e-6 for a, b in zip(inside, inside[1:]))
            for s in inside:
                parts = s.label.split(".")
                assert sum(p in VOWELS for p in parts) <= 1  # at most one nucleus (words without a vowel: none)
        assert [s.label for s in spans("word", ph, wd, utt)] == [w.label for w in wd]
        assert all(s.label != "sil" for s in spans("phone", ph, wd, utt))
        (spk,) = spans("speaker", ph, wd, utt)
        assert spk.label == utt.split("-")[0]
        duration = ph[-1].end
        grid = frame_labels(wd, duration)
        for j, label in enumerate(grid):
            t = (j + 0.5) * 0.01
            word = next((w for w in wd if w.start <= t < w.end), None)
            if word is None:
                assert label == "sil"
            elif t < word.start + 0.03:
                assert label == "B"
            elif t >= word.end - 0.03:
                assert label == "E"
            else:
                assert label == "I"
        assert "B" in grid and "sil" in grid


def test_level_tasks_read_the_same_labels(tiny_corpus):
    from harness.registry import load_task

    syl = load_task("syllable")(load_task("syllable").default_config())
    ex = syl.examples(tiny_corpus, "dev")
    paths = CorpusPaths(tiny_corpus)
    phones, words = read_ctm(paths.ctm("dev-clean", "phones")), read_ctm(paths.ctm("dev-clean", "words"))
    e = ex[0]
    assert [t[2] for t in e.target] == [s.label for s in spans("syllable", to_spans(phones[e.id]),
                                                                to_spans(words[e.id]), e.id)]
    pos = load_task("position")(load_task("position").default_config())
    p = pos.examples(tiny_corpus, "dev")[0]
    assert set(np.unique(p.target)) <= {0, 1, 2, 3} and len(p.target) > 10
