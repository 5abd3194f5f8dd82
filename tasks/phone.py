"""Frame-level phone classification (s3prl ``phone_linear``): a linear layer per frame.

Labels are s3prl's 10 ms phone indices (``converted_aligned_phones.txt``). Two settings:

- ``quick`` (the committed records'): labels for every LibriSpeech split in ``libri_phone``,
  the splits are LibriSpeech's (train-clean-100, dev-clean, test-clean), and feature frame j
  takes the label at its centre sample j*hop + offset (``alignment: centre``);
- ``superb``: s3prl's own files, which cover train-clean-100 only (``libri_phone_s3prl`` in the
  embedded corpus, or ``--set phone_labels=DIR`` with the real ones): ``label_splits: s3prl``
  takes train and dev from ``train_split.txt`` (shuffled with Python's ``random`` seeded 1337,
  the first 90% train, the rest dev, as s3prl's ``PhoneDataset``) and test from
  ``test_split.txt``; ``alignment: s3prl`` scores every label frame the way s3prl does
  (:func:`harness.tasks.families.s3prl_frame_index`).

Accuracy is over all scored frames of the split.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from harness.tasks.families import FrameClassificationTask

from harness.config import Field
from harness.data import read_librispeech, read_phone_labels
from harness.data.librispeech import SPLITS as LIBRI_SPLITS
from harness.errors import HarnessError
from harness.task import Example, require_examples, split_name


def _label_folder(data_root: Path, config: dict) -> Path:
    folder = Path(config["phone_labels"])
    return folder if folder.is_absolute() else Path(data_root) / folder


#: s3prl's PhoneDataset: train_dev_seed and the train share of train_split.txt
TRAIN_DEV_SEED, TRAIN_SHARE = 1337, 0.9


def s3prl_split_ids(folder: Path, split: str) -> list[str]:
    """The utterance ids of ``split`` by s3prl's ``phone_linear`` lists in ``folder``: train and
    dev are the first 90% and the rest of ``train_split.txt`` after ``random.seed(1337);
    random.shuffle`` of its lines; test is ``test_split.txt``. HarnessError if a list is missing."""
    name = "test_split.txt" if split == "test" else "train_split.txt"
    path = Path(folder) / name
    if not path.is_file():
        raise HarnessError(f"missing {path}: label_splits=s3prl needs s3prl's split lists beside the labels")
    lines = path.read_text().splitlines(keepends=True)  # s3prl shuffles the lines as read (newlines kept)
    if split == "test":
        return [line.strip() for line in lines if line.strip()]
    random.Random(TRAIN_DEV_SEED).shuffle(lines)
    cut = int(len(lines) * TRAIN_SHARE)
    return [line.strip() for line in (lines[:cut] if split == "train" else lines[cut:]) if line.strip()]


class PhoneClassification(FrameClassificationTask):
    """Frame-level phone classification on s3prl's 10 ms phone labels (``phone_linear``)."""
    name = "phone"
    config_schema = {**FrameClassificationTask.config_schema, "phone_labels": Field(str),
                     "label_splits": Field(str, choices=("librispeech", "s3prl"))}
    optional_config = {**FrameClassificationTask.optional_config, "label_splits": "librispeech"}

    def examples(self, data_root: Path, split: str) -> list[Example]:
        folder = _label_folder(data_root, self.config)
        labels, inventory = read_phone_labels(folder)
        self.inventory = inventory
        if self.option("label_splits") == "s3prl":
            audio = {u.id: u for u in read_librispeech(data_root, LIBRI_SPLITS["train"])}
            ids = s3prl_split_ids(folder, split)
            missing = [i for i in ids if i not in audio or i not in labels]
            if missing:
                raise HarnessError(f"{missing[0]} (in {folder}'s split lists) has no "
                                   f"{'audio in ' + LIBRI_SPLITS['train'] if missing[0] not in audio else 'labels'}")
            utterances = [audio[i] for i in ids]
        else:
            utterances = read_librispeech(data_root, split_name(self.config, LIBRI_SPLITS, split))
        out = []
        for u in utterances:
            if u.id not in labels:
                raise HarnessError(f"no phone labels for {u.id} in {folder}")
            out.append(Example(u.id, u.path, np.asarray(labels[u.id], dtype=np.int64)))
        return require_examples(out, f"LibriSpeech {split}", data_root)

    @property
    def num_classes(self) -> int:
        """Phones in the label inventory."""
        return len(self.inventory)
