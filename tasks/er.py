"""Emotion recognition on IEMOCAP (SUPERB ER): four classes (neutral, happy with excited merged
in, sad, angry; other labels left out), leave-one-session-out folds. Head: Linear(D, 256) ->
mean pool -> linear; accuracy.

``test_session`` (1-5) is the fold's test session. Its dev set (``dev_split``):

- ``next_session`` (``quick``): the next session (5 -> 1) is dev and the other three train,
  so the five folds together test every session once;
- ``random`` (``superb``, s3prl 0.4.18 ``downstream/emotion/expert.py``): the other four
  sessions' utterances, sorted by id, are split at random into ``1 - dev_ratio`` train and
  ``dev_ratio`` dev (``torch.randperm`` with a generator seeded 0, as s3prl's
  ``torch.manual_seed(0); random_split``; s3prl's order is its metadata files', so the
  membership differs from s3prl's while the rule is the same).

``folds`` (``superb``: ``[1, 2, 3, 4, 5]``): each listed session is the test session of one
fold, each fold a run of its own, and the reported number is the mean over the folds as one
result (:mod:`harness.probing.folds`).

On the embedded corpus the 'emotions' are speaking styles synthesised with distinct prosody
(rate, pitch level and range, loudness) from otherwise identical text and voices: a
classifier can only use prosody, so this measures prosodic style, not emotion.
"""

from __future__ import annotations

from pathlib import Path

import torch
from harness.tasks.families import UtteranceClassificationTask

from harness.config import Field
from harness.data import read_iemocap
from harness.errors import HarnessError
from harness.task import (
    BASE_OPTIONAL,
    BASE_SCHEMA,
    Example,
    require_examples,
)

CLASSES = {"neu": "neu", "hap": "hap", "exc": "hap", "sad": "sad", "ang": "ang"}
SESSIONS = (1, 2, 3, 4, 5)


class EmotionRecognition(UtteranceClassificationTask):
    """SUPERB ER: four classes from a mean-pooled linear head on the IEMOCAP layout, accuracy."""
    name = "er"
    dataset = "iemocap"
    config_schema = {**BASE_SCHEMA, "head.proj": Field(int, minimum=1),
                     "test_session": Field(int, minimum=1, maximum=5),
                     "folds": Field(list, nullable=True),
                     "dev_split": Field(str, choices=("next_session", "random")),
                     "dev_ratio": Field(float, above=0, maximum=0.5)}
    optional_config = {**BASE_OPTIONAL, "folds": None, "dev_split": "next_session", "dev_ratio": 0.2}

    def fold_overrides(self) -> list[dict] | None:
        """One ``{test_session: k}`` per session in ``folds`` (None without folds); one-line
        HarnessError unless they are distinct sessions 1-5."""
        folds = self.option("folds")
        if not folds:
            return None
        if any(isinstance(k, bool) or not isinstance(k, int) or k not in SESSIONS for k in folds) \
                or len(set(folds)) != len(folds):
            raise HarnessError(f"config folds must be distinct IEMOCAP sessions 1-5, got {folds!r}")
        return [{"test_session": int(k), "folds": None} for k in folds]

    def examples(self, data_root: Path, split: str) -> list[Example]:
        test = int(self.config["test_session"])
        utts = [u for u in read_iemocap(data_root) if u.label in CLASSES]  # every session must be there
        if self.option("dev_split") == "random":
            if split == "test":
                chosen, where = [u for u in utts if u.session == test], f"session {test}"
            else:
                rest = sorted((u for u in utts if u.session != test), key=lambda u: u.id)
                order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(0)).tolist()
                n_train = int((1 - float(self.option("dev_ratio"))) * len(rest))
                keep = order[:n_train] if split == "train" else order[n_train:]
                chosen, where = [rest[i] for i in sorted(keep)], f"{split} part of the sessions other than {test}"
        else:
            dev = test % 5 + 1
            sessions = {"test": (test,), "dev": (dev,), "train": tuple(s for s in SESSIONS if s not in (test, dev))}
            chosen, where = [u for u in utts if u.session in sessions[split]], f"sessions {sessions[split]}"
        out = [Example(u.id, u.path, (CLASSES[u.label],)) for u in chosen]
        return require_examples(out, f"IEMOCAP {split} ({where})", data_root)
