"""Closed-set speaker identification on VoxCeleb1 (SUPERB SID).

Head: Linear(D, 256) -> mean pool -> linear over the training speakers; accuracy.

``crop_seconds`` (``superb``: 8 s, s3prl's ``max_timestep: 128000``): each time a training
utterance longer than that is drawn, a fresh random window of that length is used
(:attr:`harness.task.Example.crop`); dev and test utterances are whole.
"""

from __future__ import annotations

from pathlib import Path

from harness.tasks.families import UtteranceClassificationTask, training_crop

from harness.config import Field
from harness.data import read_voxceleb1
from harness.data.voxceleb import SPLITS
from harness.task import (
    BASE_OPTIONAL,
    Example,
    require_examples,
    split_name,
)


class SpeakerIdentification(UtteranceClassificationTask):
    """SUPERB SID: the speaker of a VoxCeleb1 utterance from a mean-pooled linear head, accuracy."""
    name = "sid"
    dataset = "voxceleb1"
    config_schema = {**UtteranceClassificationTask.config_schema, "crop_seconds": Field(float, above=0, nullable=True)}
    optional_config = {**BASE_OPTIONAL, "crop_seconds": None}

    def examples(self, data_root: Path, split: str) -> list[Example]:
        utts = read_voxceleb1(data_root, split_name(self.config, SPLITS, split))
        crop = training_crop(self.config, split)
        out = [Example(u.id, u.path, (u.speaker,), crop=crop) for u in utts]
        return require_examples(sorted(out, key=lambda e: e.id), f"VoxCeleb1 {split}", data_root)
