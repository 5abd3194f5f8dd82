"""Syllable identity (a level of harness.levels): each syllable of an aligned LibriSpeech word,
its frames mean-pooled, classified among the most frequent training syllables; accuracy."""

from __future__ import annotations

from harness.tasks.families import SpanClassificationTask


class SyllableClassification(SpanClassificationTask):
    """Syllables (maximal onset over the lexicon's phones) classified from their pooled frames."""
    name = "syllable"
    span_level = "syllable"
