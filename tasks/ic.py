"""Intent classification on Fluent Speech Commands (SUPERB IC; alias ``slu``).

Head: Linear(D, 256) -> mean pool -> three slot classifiers (action, object,
location). Accuracy counts an utterance right only when all three slots are right.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from harness.data import read_fsc
from harness.heads import UtteranceHead
from harness.metrics import accuracy
from harness.task import Example, MetricSpec, Task

from ._common import FSC_SPLITS, LabelMap, require_examples, split_name


class IntentClassification(Task):
    name = "ic"
    level = "utterance"
    dataset = "fsc"
    metric = MetricSpec("accuracy", higher_is_better=True)

    def examples(self, data_root: Path, split: str) -> list[Example]:
        utts = read_fsc(data_root, split_name(self.config, FSC_SPLITS, split))
        out = [Example(u.id, u.path, u.intent, u.text) for u in utts]
        return require_examples(sorted(out, key=lambda e: e.id), f"FSC {split}", data_root)

    def prepare(self, train: list[Example]) -> None:
        self.slots = [LabelMap(e.target[k] for e in train) for k in range(3)]

    def build_head(self, dim: int):
        return UtteranceHead(dim, [len(s) for s in self.slots], proj=self.config["head"]["proj"])

    def batch_targets(self, examples, frames, hop, offset=0):
        ids = [[self.slots[k].encode(e.target[k]) for k in range(3)] for e in examples]
        return {"targets": torch.tensor(ids, dtype=torch.long)}

    def loss(self, output, batch):
        y = batch["targets"]
        return sum(F.cross_entropy(logits, y[:, k], ignore_index=-1) for k, logits in enumerate(output))

    def predict(self, output, batch):
        preds = torch.stack([o.argmax(-1) for o in output], dim=1).cpu()
        return [tuple(self.slots[k].labels[int(p[k])] for k in range(3)) for p in preds]

    def score(self, predictions, examples):
        ids = [e.id for e in examples]
        correct = [int(tuple(predictions[e.id]) == tuple(e.target)) for e in examples]
        return {"accuracy": accuracy(correct)}, {"ids": ids, "correct": correct, "total": [1] * len(ids)}
