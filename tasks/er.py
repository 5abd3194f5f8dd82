"""Emotion recognition on IEMOCAP (SUPERB ER): four classes (neutral, happy with excited merged
in, sad, angry; other labels left out), leave-one-session-out folds. Head: Linear(D, 256) ->
mean pool -> linear; accuracy.

``test_session`` (1-5) is the fold's test session; the next session (5 -> 1) is its dev set
and the other three train, so the five folds together test every session once.

On the embedded corpus the 'emotions' are speaking styles synthesised with distinct prosody
(rate, pitch level and range, loudness) from otherwise identical text and voices: a
classifier can only use prosody, so this measures prosodic style, not emotion.
"""

from __future__ import annotations

from pathlib import Path

from harness.tasks.families import UtteranceClassificationTask

from harness.config import Field
from harness.data import read_iemocap
from harness.task import (
    BASE_SCHEMA,
    Example,
    require_examples,
)

CLASSES = {"neu": "neu", "hap": "hap", "exc": "hap", "sad": "sad", "ang": "ang"}


class EmotionRecognition(UtteranceClassificationTask):
    """SUPERB ER: four classes from a mean-pooled linear head on the IEMOCAP layout, accuracy."""
    name = "er"
    dataset = "iemocap"
    config_schema = {**BASE_SCHEMA, "head.proj": Field(int, minimum=1),
                     "test_session": Field(int, minimum=1, maximum=5)}

    def examples(self, data_root: Path, split: str) -> list[Example]:
        test = int(self.config["test_session"])
        dev = test % 5 + 1
        sessions = {"test": (test,), "dev": (dev,), "train": tuple(s for s in range(1, 6) if s not in (test, dev))}
        utts = read_iemocap(data_root)  # every session must be there
        out = [Example(u.id, u.path, (CLASSES[u.label],)) for u in utts
               if u.session in sessions[split] and u.label in CLASSES]
        return require_examples(out, f"IEMOCAP {split} (sessions {sessions[split]})", data_root)
