"""Frame-level phone classification (s3prl ``phone_linear``): a linear layer per frame.

Labels are s3prl's 10 ms phone indices (``converted_aligned_phones.txt``); feature
frame j of an upstream takes the label at its centre sample j*hop + offset (offset =
half the receptive field: 200 samples for Kaldi fbank and wav2vec2-style CNNs).
Accuracy is over all valid frames of the split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch.nn.functional as F

from harness.config import Field
from harness.data import read_librispeech, read_phone_labels
from harness.data.librispeech import SPLITS as LIBRI_SPLITS
from harness.errors import HarnessError
from harness.heads import FrameLinear
from harness.metrics import accuracy
from harness.task import (
    BASE_SCHEMA,
    Example,
    MetricSpec,
    Outcomes,
    Task,
    frame_targets,
    require_examples,
    split_name,
)


def _label_folder(data_root: Path, config: dict) -> Path:
    folder = Path(config["phone_labels"])
    return folder if folder.is_absolute() else Path(data_root) / folder


class PhoneClassification(Task):
    name = "phone"
    level = "frame"
    dataset = "librispeech"
    metric = MetricSpec("accuracy", higher_is_better=True)
    config_schema = {**BASE_SCHEMA, "phone_labels": Field(str)}

    def examples(self, data_root: Path, split: str) -> list[Example]:
        labels, inventory = read_phone_labels(_label_folder(data_root, self.config))
        self.inventory = inventory
        out = []
        for u in read_librispeech(data_root, split_name(self.config, LIBRI_SPLITS, split)):
            if u.id not in labels:
                raise HarnessError(f"no phone labels for {u.id} in {_label_folder(data_root, self.config)}")
            out.append(Example(u.id, u.path, np.asarray(labels[u.id], dtype=np.int64)))
        return require_examples(out, f"LibriSpeech {split}", data_root)

    def build_head(self, dim: int):
        return FrameLinear(dim, len(self.inventory))

    def batch_targets(self, examples, frames, hop, offset=0):
        return {"targets": frame_targets([e.target for e in examples], frames, hop, offset)}

    def loss(self, output, batch):
        y = batch["targets"]
        return F.cross_entropy(output[:, : y.shape[1]].reshape(-1, output.shape[-1]), y.reshape(-1), ignore_index=-100)

    def predict(self, output, batch):
        y = batch["targets"]
        hit = (output[:, : y.shape[1]].argmax(-1) == y) & (y >= 0)
        return [(int(h.sum()), int((t >= 0).sum())) for h, t in zip(hit.cpu(), y.cpu())]

    def score(self, predictions, examples):
        ids = [e.id for e in examples]
        correct = [predictions[i][0] for i in ids]
        total = [predictions[i][1] for i in ids]
        return {"accuracy": accuracy(correct, total)}, Outcomes.accuracy(ids, correct, total)
