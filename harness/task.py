"""What a task plugin provides, and the examples it hands the engine.

A task (one module in ``tasks/`` or in another package, registered in the ``harness.tasks``
entry-point group) reads its splits with the dataset readers, encodes targets, builds its
head for an input dimension, and turns head outputs into a loss, predictions and a metric
with per-utterance :class:`~harness.records.Outcomes`. Its defaults live in ``NAME.yaml``
beside the plugin's module; ``--set key=value`` overrides them, checked against
:attr:`Task.config_schema`.
"""

from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .config import Field
from .errors import HarnessError
from .heads import Head, UtteranceHead
from .metrics import accuracy
from .records import MetricSpec, Outcomes  # noqa: F401  (plugins import them from here)

SPLITS = ("train", "dev", "test")
#: what every task config holds, with types and bounds
BASE_SCHEMA: dict[str, Field] = {
    "lr": Field(float, above=0),
    "batch_size": Field(int, minimum=1),
    "max_steps": Field(int, minimum=1),
    "val_interval": Field(int, minimum=1),
    "layer_norm": Field(bool),
    "grad_clip": Field(float, above=0, nullable=True),
    "splits": Field(dict),
    "head": Field(dict),
}


@dataclass
class Example:
    """One utterance: where its audio is and what the head must predict.

    ``target``: utterance tasks -> tuple of class labels; frame tasks -> int array of
    10 ms labels; CTC tasks -> list of token ids. ``reference`` is the text (or phone
    string) used for error rates.
    """

    id: str
    path: Path
    target: Any
    reference: str | None = None
    #: (first sample, end sample) when the utterance is a part of ``path`` (e.g. one second of
    #: a background-noise recording for Speech Commands' _silence_ class)
    segment: tuple[int, int] | None = None


class Task(abc.ABC):
    """Base class of task plugins.

    A plugin sets the class attributes, implements :meth:`examples`, :meth:`build_head`,
    :meth:`loss`, :meth:`predict` and :meth:`score`, and ships ``NAME.yaml`` (its defaults)
    next to its module. See ``examples/plugins`` for a complete ~30-line task.
    """

    name: ClassVar[str]
    #: "utterance" (pooled classification), "frame" (per-frame labels) or "ctc"
    level: ClassVar[str]
    #: which corpus layout the task reads; tasks with the same ``dataset`` share cached features
    dataset: ClassVar[str]
    metric: MetricSpec
    #: types and bounds of config keys (dotted for nested keys); others follow their default's type
    config_schema: ClassVar[Mapping[str, Field]] = BASE_SCHEMA
    #: True when the head's first operation is linear and then a mean over frames, so per-layer
    #: utterance means can be cached instead of frames (exactly the same logits)
    poolable: ClassVar[bool] = False

    def __init__(self, config: dict) -> None:
        self.config = config

    @classmethod
    def default_config(cls) -> dict:
        """The defaults in ``NAME.yaml`` beside the module that defines the task class."""
        import yaml

        path = Path(inspect.getfile(cls)).with_name(f"{cls.name}.yaml")
        if not path.exists():
            raise HarnessError(f"task {cls.name}: its defaults file {path} is missing")
        return yaml.safe_load(path.read_text()) or {}

    # --- data ------------------------------------------------------------------
    @abc.abstractmethod
    def examples(self, data_root: Path, split: str) -> list[Example]:
        """Examples of ``split`` (one of train/dev/test), sorted by id."""

    def prepare(self, train: list[Example]) -> None:
        """Fit label vocabularies on the training examples (called before heads are built)."""

    # --- model -----------------------------------------------------------------
    @abc.abstractmethod
    def build_head(self, dim: int) -> Head:
        """A fresh head (a ``harness.heads.Head``) for input features of size ``dim``."""

    @abc.abstractmethod
    def loss(self, output: Any, batch: dict) -> torch.Tensor:
        """Training loss of a head ``output`` on ``batch`` (``batch["lengths"]``: the head's
        output frames per utterance, see ``Head.output_lengths``)."""

    @abc.abstractmethod
    def predict(self, output: Any, batch: dict) -> list[Any]:
        """One prediction per utterance of the batch (in batch order); ``batch`` as in ``loss``."""

    @abc.abstractmethod
    def score(self, predictions: dict[str, Any], examples: list[Example]) -> tuple[dict[str, float], Outcomes]:
        """(metrics, per-utterance outcomes) for a whole split.

        Metrics include ``self.metric.name``; the outcomes' ``value`` equals that metric
        (the report bootstraps them).
        """

    # --- helpers ---------------------------------------------------------------
    def batch_targets(self, examples: list[Example], frames: torch.Tensor | None, hop: int | None,
                      offset: int = 0) -> dict:
        """Collate targets of a batch; ``frames`` are the feature lengths, ``hop`` and
        ``offset`` place feature frame j at sample j * hop + offset (frame tasks)."""
        return {"targets": [e.target for e in examples]}


# ------------------------------------------------------- shared pieces of tasks
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
        from .corpus.layout import CorpusPaths
        from .data import read_ctm, read_librispeech
        from .data.librispeech import SPLITS as LIBRI_SPLITS
        from .levels import spans, to_spans

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
        from .levels import vocabulary

        self.labels = LabelMap(vocabulary((lab for e in train for *_, lab in e.target), int(self.config["top"])))

    def build_head(self, dim: int) -> Head:
        from .heads import SpanLinear

        return SpanLinear(dim, len(self.labels))

    def batch_targets(self, examples, frames, hop, offset=0):
        """Every scored span as (utterance in batch, first frame, end frame, class id): the frames
        whose centre (j * hop + offset) lies inside the span."""
        from .audio import SAMPLE_RATE

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
        from .heads import SpanLinear

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
        ids = [e.id for e in examples]
        correct = [predictions[i][0] for i in ids]
        total = [predictions[i][1] for i in ids]
        return {"accuracy": accuracy(correct, total)}, Outcomes.accuracy(ids, correct, total)


def task_config(task_cls: type[Task], overrides: dict | None = None, max_steps: int | None = None) -> dict:
    """The task's defaults with ``overrides`` merged and every value checked."""
    from .config import merge_config, validate

    defaults = task_cls.default_config()
    config = merge_config(defaults, overrides or {})
    if max_steps is not None:
        config["max_steps"] = max_steps
    return validate(config, defaults, task_cls.config_schema)
