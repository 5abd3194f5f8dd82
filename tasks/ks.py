"""Keyword spotting on Speech Commands v0.01 (SUPERB KS): 12 classes, the ten keywords,
``_unknown_`` (every other word) and ``_silence_`` (one-second cuts of the background-noise
recordings). Head: Linear(D, 256) -> mean pool -> linear; accuracy.

The silence examples of each split come from its own part of every noise recording (the
first 80% for train, the next 10% for dev, the last 10% for test), spread evenly, as many
as ``silence_share`` of the split's clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from harness.tasks.families import UtteranceClassificationTask

from harness.audio import SAMPLE_RATE
from harness.config import Field
from harness.data import background_noise, read_speech_commands
from harness.data.speech_commands import SPLITS
from harness.task import (
    BASE_SCHEMA,
    Example,
    require_examples,
    split_name,
)

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
NOISE_PARTS = {"train": (0.0, 0.8), "dev": (0.8, 0.9), "test": (0.9, 1.0)}


class KeywordSpotting(UtteranceClassificationTask):
    """SUPERB KS: ten words, unknown and silence of Speech Commands v0.01, accuracy."""
    name = "ks"
    dataset = "speech_commands"
    config_schema = {**BASE_SCHEMA, "head.proj": Field(int, minimum=1),
                     "silence_share": Field(float, minimum=0, maximum=1)}

    def examples(self, data_root: Path, split: str) -> list[Example]:
        clips = read_speech_commands(data_root, split_name(self.config, SPLITS, split))
        out = [Example(c.id, c.path, (c.word if c.word in KEYWORDS else UNKNOWN,)) for c in clips]
        out += self._silence(data_root, split, round(len(out) * float(self.config["silence_share"])))
        return require_examples(sorted(out, key=lambda e: e.id), f"Speech Commands {split}", data_root)

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
