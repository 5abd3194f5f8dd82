"""Closed-set speaker identification on VoxCeleb1 (SUPERB SID).

Head: Linear(D, 256) -> mean pool -> linear over the training speakers; accuracy.
"""

from __future__ import annotations

from pathlib import Path

from harness.tasks.families import UtteranceClassificationTask

from harness.data import read_voxceleb1
from harness.data.voxceleb import SPLITS
from harness.task import (
    Example,
    require_examples,
    split_name,
)


class SpeakerIdentification(UtteranceClassificationTask):
    """SUPERB SID: the speaker of a VoxCeleb1 utterance from a mean-pooled linear head, accuracy."""
    name = "sid"
    dataset = "voxceleb1"

    def examples(self, data_root: Path, split: str) -> list[Example]:
        utts = read_voxceleb1(data_root, split_name(self.config, SPLITS, split))
        out = [Example(u.id, u.path, (u.speaker,)) for u in utts]
        return require_examples(sorted(out, key=lambda e: e.id), f"VoxCeleb1 {split}", data_root)
