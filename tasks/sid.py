"""Closed-set speaker identification on VoxCeleb1 (SUPERB SID).

Head: Linear(D, 256) -> mean pool -> linear over the training speakers; accuracy.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from harness.data import read_voxceleb1
from harness.heads import UtteranceHead
from harness.metrics import accuracy
from harness.task import Example, MetricSpec, Task

from ._common import VOX_SPLITS, LabelMap, require_examples, split_name


class SpeakerIdentification(Task):
    name = "sid"
    level = "utterance"
    dataset = "voxceleb1"
    metric = MetricSpec("accuracy", higher_is_better=True)

    def examples(self, data_root: Path, split: str) -> list[Example]:
        utts = read_voxceleb1(data_root, split_name(self.config, VOX_SPLITS, split))
        out = [Example(u.id, u.path, u.speaker) for u in utts]
        return require_examples(sorted(out, key=lambda e: e.id), f"VoxCeleb1 {split}", data_root)

    def prepare(self, train: list[Example]) -> None:
        self.speakers = LabelMap(e.target for e in train)

    def build_head(self, dim: int):
        return UtteranceHead(dim, [len(self.speakers)], proj=self.config["head"]["proj"])

    def batch_targets(self, examples, frames, hop, offset=0):
        return {"targets": torch.tensor([self.speakers.encode(e.target) for e in examples], dtype=torch.long)}

    def loss(self, output, batch):
        return F.cross_entropy(output[0], batch["targets"], ignore_index=-1)

    def predict(self, output, batch):
        return [self.speakers.labels[int(i)] for i in output[0].argmax(-1).cpu()]

    def score(self, predictions, examples):
        ids = [e.id for e in examples]
        correct = [int(predictions[e.id] == e.target) for e in examples]
        return {"accuracy": accuracy(correct)}, {"ids": ids, "correct": correct, "total": [1] * len(ids)}
