"""Shared pieces of the task plugins: split names, 10 ms label mapping, label maps, and the
two task families that several tasks share (CTC and utterance classification)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.config import Field
from harness.errors import HarnessError
from harness.heads import UtteranceHead
from harness.metrics import accuracy
from harness.task import BASE_SCHEMA, Example, MetricSpec, Outcomes, Task

LABEL_SHIFT = 160  # 10 ms label frames


def split_name(config: dict, mapping: dict, split: str) -> str:
    """The corpus's own name for a harness split; ``config['splits']`` may rename them."""
    names = dict(mapping)
    names.update(config.get("splits") or {})
    return names[split]


def frame_targets(labels: list[np.ndarray], frames: torch.Tensor, hop: int, offset: int) -> torch.Tensor:
    """Map 10 ms labels onto feature frames: frame j (centred at sample j*hop + offset, the
    middle of its receptive field) takes the label of the 10 ms frame holding that sample.
    Padding and frames past the labels get -100."""
    out = torch.full((len(labels), int(frames.max()) if len(frames) else 0), -100, dtype=torch.long)
    for i, (lab, n) in enumerate(zip(labels, frames.tolist())):
        idx = (np.arange(n) * hop + offset) // LABEL_SHIFT
        ok = idx < len(lab)
        out[i, : n][torch.from_numpy(ok)] = torch.from_numpy(np.asarray(lab)[idx[ok]]).long()
    return out


class LabelMap:
    """Sorted string labels <-> ids, fitted on training targets."""

    def __init__(self, labels) -> None:
        self.labels = sorted(set(labels))
        self.index = {l: i for i, l in enumerate(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, label: str) -> int:
        return self.index.get(label, -1)  # unseen in training: can never be predicted right


def require_examples(examples: list, what: str, root: Path) -> list:
    if not examples:
        raise HarnessError(f"no {what} examples under {root}; check --data-root")
    return examples


class CtcTask(Task):
    """Shared by the CTC tasks (ASR, PR): LibriSpeech data, token ids 1..V (0 = blank)."""

    level = "ctc"
    dataset = "librispeech"

    def __init__(self, config: dict, tokens: list[str]) -> None:
        super().__init__(config)
        self.tokens = tokens
        self.index = {t: i + 1 for i, t in enumerate(tokens)}

    def batch_targets(self, examples, frames, hop, offset=0):
        targets = [torch.tensor(e.target, dtype=torch.long) for e in examples]
        return {"targets": torch.cat(targets), "target_lengths": torch.tensor([len(t) for t in targets])}

    def loss(self, output, batch):
        return F.ctc_loss(output.transpose(0, 1), batch["targets"], batch["lengths"],
                          batch["target_lengths"], blank=0, zero_infinity=True)


class UtteranceClassificationTask(Task):
    """One or more classification slots per utterance (SUPERB IC, SID, KS, ER).

    ``Example.target`` is a tuple of labels, one per slot. Head: Linear(D, proj) -> mean
    pool -> one linear classifier per slot; the loss sums the slots' cross-entropies; an
    utterance is correct only when every slot is right (IC's rule; one slot for SID).
    """

    level = "utterance"
    metric = MetricSpec("accuracy", higher_is_better=True)
    config_schema = {**BASE_SCHEMA, "head.proj": Field(int, minimum=1)}

    def prepare(self, train: list[Example]) -> None:
        slots = len(train[0].target)
        self.label_maps = [LabelMap(e.target[k] for e in train) for k in range(slots)]

    def build_head(self, dim: int):
        return UtteranceHead(dim, [len(m) for m in self.label_maps], proj=self.config["head"]["proj"])

    def batch_targets(self, examples, frames, hop, offset=0):
        ids = [[m.encode(label) for m, label in zip(self.label_maps, e.target)] for e in examples]
        return {"targets": torch.tensor(ids, dtype=torch.long)}

    def loss(self, output, batch):
        y = batch["targets"]
        return sum(F.cross_entropy(logits, y[:, k], ignore_index=-1) for k, logits in enumerate(output))

    def predict(self, output, batch):
        preds = torch.stack([o.argmax(-1) for o in output], dim=1).cpu()
        return [tuple(m.labels[int(p[k])] for k, m in enumerate(self.label_maps)) for p in preds]

    def score(self, predictions, examples):
        ids = [e.id for e in examples]
        correct = [int(tuple(predictions[e.id]) == tuple(e.target)) for e in examples]
        return {"accuracy": accuracy(correct)}, Outcomes.accuracy(ids, correct)
