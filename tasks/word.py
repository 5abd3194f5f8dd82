"""Word identity (a level of harness.levels): each aligned LibriSpeech word, its frames
mean-pooled, classified among the most frequent training words; accuracy."""

from __future__ import annotations

from harness.tasks.families import SpanClassificationTask


class WordClassification(SpanClassificationTask):
    """The most frequent words classified from their pooled frames."""
    name = "word"
    span_level = "word"
