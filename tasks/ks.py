"""Keyword spotting on Speech Commands v0.01 (SUPERB KS): 12 classes, the ten keywords,
``_unknown_`` (every other word) and ``_silence_`` (one-second cuts of the background-noise
recordings). Head: Linear(D, 256) -> mean pool -> linear; accuracy.

Two recipes, chosen by config keys:

- ``quick`` (``ks.yaml``): the silence examples of each split come from its own part of every
  noise recording (the first 80% for train, the next 10% for dev, the last 10% for test),
  spread evenly, as many as ``silence_share`` of the split's clips; test = ``testing_list.txt``.
- ``superb`` (``ks.superb.yaml``, s3prl 0.4.18 ``downstream/speech_commands``):
  ``silence: noise_files``: each noise recording is one ``_silence_`` training example, read
  as a fresh random one-second crop every time it is drawn (``dataset.py``); on dev each
  recording is one fixed one-second crop (drawn once with seed 0; s3prl draws anew at every
  evaluation). ``balanced: true``: training draws with replacement, weighted by inverse
  class frequency (``expert.py``'s WeightedRandomSampler), and the dev checkpoint is chosen on
  class-balanced accuracy, the expected value of the accuracy s3prl measures on its
  weighted-resampled dev set, without the resampling noise. ``test_set: separate``: the test
  set is the separate archive ``speech_commands_test_set_v0.01/`` (one folder per class,
  ``_silence_`` and ``_unknown_`` included), beside the training archive.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf
from harness.tasks.families import UtteranceClassificationTask

from harness.audio import SAMPLE_RATE
from harness.config import Field
from harness.data import background_noise, read_speech_commands
from harness.data.speech_commands import SPLITS
from harness.errors import HarnessError
from harness.metrics import accuracy
from harness.task import (
    BASE_OPTIONAL,
    BASE_SCHEMA,
    Example,
    require_examples,
    split_name,
)

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
NOISE_PARTS = {"train": (0.0, 0.8), "dev": (0.8, 0.9), "test": (0.9, 1.0)}
TEST_SET_DIR = "speech_commands_test_set_v0.01"


def separate_test_root(data_root: Path) -> Path | None:
    """The separate v0.01 test archive beside the training archive (or under the data root)."""
    root = Path(data_root)
    for candidate in (root / TEST_SET_DIR, root.parent / TEST_SET_DIR, root / "speech_commands" / TEST_SET_DIR):
        if candidate.is_dir():
            return candidate
    return None


def read_separate_test_set(folder: Path) -> list[Example]:
    """Every ``CLASS/NAME.wav`` of the separate test archive: the folder names the class
    (keywords, ``_silence_``, ``_unknown_``; any other word counts as ``_unknown_``)."""
    out = []
    for path in sorted(Path(folder).glob("*/*.wav")):
        label = path.parent.name
        label = label if label in KEYWORDS or label in (SILENCE, UNKNOWN) else UNKNOWN
        out.append(Example(f"{TEST_SET_DIR}/{path.parent.name}/{path.stem}", path, (label,)))
    return out


class KeywordSpotting(UtteranceClassificationTask):
    """SUPERB KS: ten words, unknown and silence of Speech Commands v0.01, accuracy."""
    name = "ks"
    dataset = "speech_commands"
    config_schema = {**BASE_SCHEMA, "head.proj": Field(int, minimum=1),
                     "silence_share": Field(float, minimum=0, maximum=1),
                     "silence": Field(str, choices=("segments", "noise_files")),
                     "balanced": Field(bool), "test_set": Field(str, choices=("lists", "separate"))}
    optional_config = {**BASE_OPTIONAL, "silence": "segments", "balanced": False, "test_set": "lists"}

    def examples(self, data_root: Path, split: str) -> list[Example]:
        if split == "test" and self.option("test_set") == "separate":
            folder = separate_test_root(data_root)
            if folder is None:
                raise HarnessError(f"ks test_set: separate reads {TEST_SET_DIR}/ beside the training archive, not "
                                   f"found under {data_root}; add it or --set test_set=lists (testing_list.txt)")
            return require_examples(read_separate_test_set(folder), "Speech Commands separate test set", folder)
        clips = read_speech_commands(data_root, split_name(self.config, SPLITS, split))
        out = [Example(c.id, c.path, (c.word if c.word in KEYWORDS else UNKNOWN,)) for c in clips]
        if self.option("silence") == "noise_files":
            out += self._noise_files(data_root, split)
        else:
            out += self._silence(data_root, split, round(len(out) * float(self.config["silence_share"])))
        return require_examples(sorted(out, key=lambda e: e.id), f"Speech Commands {split}", data_root)

    @staticmethod
    def _noise_files(data_root: Path, split: str) -> list[Example]:
        """s3prl's silence: each noise recording once; training reads a fresh random second of it
        at every draw, evaluation one fixed second (seed 0)."""
        out = []
        for k, path in enumerate(background_noise(data_root)):
            if split == "train":
                out.append(Example(f"{SILENCE}/{path.stem}", path, (SILENCE,), crop=SAMPLE_RATE))
                continue
            total = int(sf.info(str(path)).frames)
            if total < SAMPLE_RATE:
                continue
            start = int(np.random.default_rng([0, k]).integers(0, total - SAMPLE_RATE + 1))
            out.append(Example(f"{SILENCE}/{path.stem}@{start}", path, (SILENCE,), segment=(start, start + SAMPLE_RATE)))
        return out

    @staticmethod
    def _silence(data_root: Path, split: str, n: int) -> list[Example]:
        if n <= 0:
            return []
        noises = background_noise(data_root)
        lo, hi = NOISE_PARTS[split]
        out = []
        for k in range(n):
            path = noises[k % len(noises)]
            total = int(sf.info(str(path)).frames)
            first, last = int(lo * total), int(hi * total) - SAMPLE_RATE
            if last < first:
                continue
            slot, slots = k // len(noises), (n + len(noises) - 1) // len(noises)
            start = int(np.round(first + (last - first) * (slot + 0.5) / slots))
            out.append(Example(f"{SILENCE}/{path.stem}@{start}", path, (SILENCE,), segment=(start, start + SAMPLE_RATE)))
        return out

    def sample_weights(self, train: list[Example]) -> list[float] | None:
        """Inverse class frequency (``balanced``), as s3prl's ``len(data) / class_count``."""
        if not self.option("balanced"):
            return None
        counts = Counter(e.target[0] for e in train)
        return [len(train) / counts[e.target[0]] for e in train]

    @property
    def selection_metric(self) -> str:
        """Class-balanced accuracy under ``balanced`` (s3prl's weighted dev resampling, in
        expectation), else accuracy."""
        return "balanced_accuracy" if self.option("balanced") else self.metric.name

    def score(self, predictions, examples):
        metrics, outcomes = super().score(predictions, examples)
        if self.option("balanced"):
            metrics["balanced_accuracy"] = balanced_accuracy(predictions, examples)
        return metrics, outcomes


def balanced_accuracy(predictions: dict, examples: list[Example]) -> float:
    """Mean over the classes present of each class's accuracy (macro-averaged recall)."""
    by_class: dict[str, list[int]] = {}
    for e in examples:
        by_class.setdefault(e.target[0], []).append(int(tuple(predictions[e.id]) == tuple(e.target)))
    return float(np.mean([accuracy(v) for v in by_class.values()])) if by_class else 0.0

