"""Frame-level phone classification (s3prl ``phone_linear``): a linear layer per frame.

Labels are s3prl's 10 ms phone indices (``converted_aligned_phones.txt``); feature
frame j of an upstream takes the label at its centre sample j*hop + offset (offset =
half the receptive field: 200 samples for Kaldi fbank and wav2vec2-style CNNs).
Accuracy is over all valid frames of the split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from harness.tasks.families import FrameClassificationTask

from harness.config import Field
from harness.data import read_librispeech, read_phone_labels
from harness.data.librispeech import SPLITS as LIBRI_SPLITS
from harness.errors import HarnessError
from harness.task import BASE_SCHEMA, Example, require_examples, split_name


def _label_folder(data_root: Path, config: dict) -> Path:
    folder = Path(config["phone_labels"])
    return folder if folder.is_absolute() else Path(data_root) / folder


class PhoneClassification(FrameClassificationTask):
    """Frame-level phone classification on s3prl's 10 ms phone labels (``phone_linear``)."""
    name = "phone"
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

    @property
    def num_classes(self) -> int:
        """Phones in the label inventory."""
        return len(self.inventory)
