"""Task families shared by the SUPERB tasks: what a task plugin usually subclasses.

- :class:`CtcTask`: CTC over a token inventory on LibriSpeech (ASR, PR);
- :class:`UtteranceClassificationTask`: one or more class slots per utterance (IC, SID, KS, ER);
- :class:`FrameClassificationTask`: one class per 10 ms label frame (phone, word position);
- :class:`SpanClassificationTask`: aligned segments classified from pooled frames (syllables, words).

They live beside the plugins rather than in :mod:`harness.task` because some of them read
corpus layouts (:mod:`harness.data`, :mod:`harness.corpus`): the root contract imports
nothing above it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from harness.audio import SAMPLE_RATE
from harness.config import Field
from harness.corpus.layout import CorpusPaths
from harness.data import read_ctm, read_librispeech
from harness.data.librispeech import SPLITS as LIBRI_SPLITS
from harness.errors import HarnessError
from harness.heads import FrameLinear, Head, SpanLinear, UtteranceHead
from harness.levels import spans, to_spans, vocabulary
from harness.metrics import accuracy
from harness.task import (
    BASE_OPTIONAL,
    BASE_SCHEMA,
    Example,
    LabelMap,
    MetricSpec,
    Outcomes,
    Task,
    frame_targets,
    require_examples,
    split_name,
)


def training_crop(config: dict, split: str) -> int | None:
    """Samples of the random training crop ``crop_seconds`` asks for (s3prl's ``max_timestep``:
    128,000 samples = 8 s for SID and ASV), None outside training or without the key."""
    seconds = config.get("crop_seconds")
    return int(round(float(seconds) * SAMPLE_RATE)) if seconds and split == "train" else None


def counted_accuracy(predictions: dict, examples: list[Example]) -> tuple[dict[str, float], Outcomes]:
    """Accuracy over counted items when each prediction is ``(correct, total)`` for one
    utterance (frames or spans): ``sum(correct) / sum(total)``, per-utterance outcomes kept."""
    ids = [e.id for e in examples]
    correct = [predictions[i][0] for i in ids]
    total = [predictions[i][1] for i in ids]
    return {"accuracy": accuracy(correct, total)}, Outcomes.accuracy(ids, correct, total)


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
    poolable = True

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


class SpanClassificationTask(Task):
    """Segments of LibriSpeech utterances classified from their mean-pooled frames (a level of
    :mod:`harness.levels`: syllables, words). ``Example.target``: the utterance's spans
    ``(start_s, end_s, label)``; the classes are the ``top`` most frequent training labels
    (spans of other labels are not scored). Accuracy over spans."""

    level = "frame"
    dataset = "librispeech"
    metric = MetricSpec("accuracy", higher_is_better=True)
    config_schema = {**BASE_SCHEMA, "top": Field(int, minimum=2)}
    span_level: ClassVar[str]

    def examples(self, data_root: Path, split: str) -> list[Example]:
        name = split_name(self.config, LIBRI_SPLITS, split)
        paths = CorpusPaths(Path(data_root))
        phones, words = read_ctm(paths.ctm(name, "phones")), read_ctm(paths.ctm(name, "words"))
        out = []
        for u in read_librispeech(data_root, name):
            if u.id not in phones:
                raise HarnessError(f"no alignment for {u.id} in {paths.alignments}; the {self.name} task needs "
                                   "phone and word CTM files for every utterance")
            segs = spans(self.span_level, to_spans(phones[u.id]), to_spans(words.get(u.id, [])), u.id)
            out.append(Example(u.id, u.path, [(s.start, s.end, s.label) for s in segs]))
        return require_examples(out, f"LibriSpeech {split}", data_root)

    def prepare(self, train: list[Example]) -> None:
        self.labels = LabelMap(vocabulary((lab for e in train for *_, lab in e.target), int(self.config["top"])))

    def build_head(self, dim: int) -> Head:
        return SpanLinear(dim, len(self.labels))

    def batch_targets(self, examples, frames, hop, offset=0):
        """Every scored span as (utterance in batch, first frame, end frame, class id): the frames
        whose centre (j * hop + offset) lies inside the span."""
        utt, first, last, ids = [], [], [], []
        for b, (e, n) in enumerate(zip(examples, frames.tolist())):
            centres = (np.arange(n) * hop + offset) / SAMPLE_RATE
            for start, end, label in e.target:
                k = self.labels.encode(label)
                if k < 0:
                    continue
                inside = np.nonzero((centres >= start) & (centres < end))[0]
                if len(inside) == 0:
                    continue
                utt.append(b)
                first.append(int(inside[0]))
                last.append(int(inside[-1]) + 1)
                ids.append(k)
        as_long = lambda v: torch.tensor(v, dtype=torch.long)  # noqa: E731
        return {"span_utt": as_long(utt), "span_first": as_long(first), "span_last": as_long(last),
                "targets": as_long(ids)}

    def _span_logits(self, output, batch):
        return SpanLinear.pool(output, batch["span_utt"], batch["span_first"], batch["span_last"])

    def loss(self, output, batch):
        if len(batch["targets"]) == 0:
            return output.sum() * 0.0
        return F.cross_entropy(self._span_logits(output, batch), batch["targets"])

    def predict(self, output, batch):
        hits = (self._span_logits(output, batch).argmax(-1) == batch["targets"]).long()
        correct = torch.zeros(len(batch["examples"]), dtype=torch.long).index_add_(0, batch["span_utt"], hits)
        total = torch.zeros(len(batch["examples"]), dtype=torch.long).index_add_(
            0, batch["span_utt"], torch.ones_like(hits))
        return list(zip(correct.tolist(), total.tolist()))

    def score(self, predictions, examples):
        return counted_accuracy(predictions, examples)


def s3prl_frame_index(label_frames: int, feature_frames: int) -> np.ndarray:
    """For each 10 ms label frame, the feature frame s3prl's ``phone_linear`` scores it with:
    features are tiled ``round(labels / features)`` times when that is above 1 (a 50 Hz model
    covers two labels per frame), then cut to the labels' length or padded by repeating the last
    frame (``expert._match_length``). Returns ``[label_frames]`` indices into the features. The
    match is done per utterance here (s3prl matches the padded batch, so its shorter
    utterances' last labels can meet padding)."""
    if feature_frames <= 0:
        return np.zeros(label_frames, dtype=np.int64)
    factor = max(1, int(round(label_frames / feature_frames)))
    return np.minimum(np.arange(label_frames) // factor, feature_frames - 1).astype(np.int64)


class FrameClassificationTask(Task):
    """One class per 10 ms label frame of LibriSpeech utterances (s3prl ``phone_linear``,
    word position). ``Example.target``: int array of 10 ms labels. ``alignment``:

    - ``centre`` (the quick protocol's, neutral): feature frame j takes the label at its centre
      sample (:func:`harness.task.frame_targets`); accuracy over the feature frames that have one;
    - ``s3prl`` (``superb``): every label frame is scored, by the feature frame
      :func:`s3prl_frame_index` gives it (label j <-> frame j at 100 Hz; each frame twice at 50 Hz).

    Head: a linear layer per frame; accuracy over all labelled frames of a split.

    Subclasses set ``name`` and implement :meth:`examples` and :attr:`num_classes`.
    """

    level = "frame"
    dataset = "librispeech"
    metric = MetricSpec("accuracy", higher_is_better=True)
    config_schema = {**BASE_SCHEMA, "alignment": Field(str, choices=("centre", "s3prl"))}
    optional_config = {**BASE_OPTIONAL, "alignment": "centre"}

    @property
    def num_classes(self) -> int:
        """Number of frame classes (the head's output size)."""
        raise NotImplementedError

    def build_head(self, dim: int) -> Head:
        return FrameLinear(dim, self.num_classes)

    def batch_targets(self, examples, frames, hop, offset=0):
        if self.option("alignment") != "s3prl":
            return {"targets": frame_targets([e.target for e in examples], frames, hop, offset)}
        width = max(len(e.target) for e in examples)
        targets = torch.full((len(examples), width), -100, dtype=torch.long)
        index = torch.zeros((len(examples), width), dtype=torch.long)
        for i, (e, n) in enumerate(zip(examples, frames.tolist())):
            targets[i, : len(e.target)] = torch.as_tensor(np.asarray(e.target), dtype=torch.long)
            index[i, : len(e.target)] = torch.from_numpy(s3prl_frame_index(len(e.target), int(n)))
        return {"targets": targets, "frame_index": index}

    @staticmethod
    def _per_target(output: torch.Tensor, batch: dict) -> torch.Tensor:
        """The logits each target is scored with: ``[B, targets, classes]``."""
        y = batch["targets"]
        if "frame_index" in batch:
            index = batch["frame_index"].to(output.device)
            return output.gather(1, index[..., None].expand(-1, -1, output.shape[-1]))
        return output[:, : y.shape[1]]

    def loss(self, output, batch):
        y = batch["targets"]
        logits = self._per_target(output, batch)
        return F.cross_entropy(logits.reshape(-1, output.shape[-1]), y.reshape(-1), ignore_index=-100)

    def predict(self, output, batch):
        y = batch["targets"]
        hit = (self._per_target(output, batch).argmax(-1) == y) & (y >= 0)
        return [(int(h.sum()), int((t >= 0).sum())) for h, t in zip(hit.cpu(), y.cpu())]

    def score(self, predictions, examples):
        return counted_accuracy(predictions, examples)
