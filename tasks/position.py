"""Word position / boundary detection (a level of harness.levels): every frame labelled B (a
word's first 30 ms), I (inside), E (its last 30 ms) or sil (between words) from the word
alignments; a linear layer per frame; frame accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch.nn.functional as F

from harness.corpus.layout import CorpusPaths
from harness.data import read_ctm, read_librispeech
from harness.data.librispeech import SPLITS as LIBRI_SPLITS
from harness.errors import HarnessError
from harness.heads import FrameLinear
from harness.levels import frame_labels, to_spans
from harness.metrics import accuracy
from harness.task import (
    Example,
    MetricSpec,
    Outcomes,
    Task,
    frame_targets,
    require_examples,
    split_name,
)

CLASSES = ("sil", "B", "I", "E")


class WordPosition(Task):
    name = "position"
    level = "frame"
    dataset = "librispeech"
    metric = MetricSpec("accuracy", higher_is_better=True)

    def examples(self, data_root: Path, split: str) -> list[Example]:
        import soundfile as sf

        name = split_name(self.config, LIBRI_SPLITS, split)
        paths = CorpusPaths(Path(data_root))
        words = read_ctm(paths.ctm(name, "words"))
        out = []
        for u in read_librispeech(data_root, name):
            if u.id not in words:
                raise HarnessError(f"no word alignment for {u.id} in {paths.alignments}")
            seconds = sf.info(str(u.path)).frames / 16000
            labels = frame_labels(to_spans(words[u.id]), seconds)
            out.append(Example(u.id, u.path, np.array([CLASSES.index(x) for x in labels], dtype=np.int64)))
        return require_examples(out, f"LibriSpeech {split}", data_root)

    def build_head(self, dim: int):
        return FrameLinear(dim, len(CLASSES))

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
