"""Word position / boundary detection (a level of harness.levels): every frame labelled B (a
word's first 30 ms), I (inside), E (its last 30 ms) or sil (between words) from the word
alignments; a linear layer per frame; frame accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from harness.tasks.families import FrameClassificationTask

from harness.audio import SAMPLE_RATE
from harness.corpus.layout import CorpusPaths
from harness.data import read_ctm, read_librispeech
from harness.data.librispeech import SPLITS as LIBRI_SPLITS
from harness.errors import HarnessError
from harness.levels import frame_labels, to_spans
from harness.task import Example, require_examples, split_name

CLASSES = ("sil", "B", "I", "E")


class WordPosition(FrameClassificationTask):
    """Every frame labelled sil, B, I or E by its place in a word (word boundary detection)."""
    name = "position"
    num_classes = len(CLASSES)

    def examples(self, data_root: Path, split: str) -> list[Example]:
        name = split_name(self.config, LIBRI_SPLITS, split)
        paths = CorpusPaths(Path(data_root))
        words = read_ctm(paths.ctm(name, "words"))
        out = []
        for u in read_librispeech(data_root, name):
            if u.id not in words:
                raise HarnessError(f"no word alignment for {u.id} in {paths.alignments}")
            seconds = sf.info(str(u.path)).frames / SAMPLE_RATE
            labels = frame_labels(to_spans(words[u.id]), seconds)
            out.append(Example(u.id, u.path, np.array([CLASSES.index(x) for x in labels], dtype=np.int64)))
        return require_examples(out, f"LibriSpeech {split}", data_root)
