"""What a task plugin provides, and the examples it hands the engine.

A task (one module in ``tasks/`` or in another package, registered in the ``harness.tasks``
entry-point group) reads its splits with the dataset readers, encodes targets, builds its
head for an input dimension, and turns head outputs into a loss, predictions and a metric
with per-utterance :class:`~harness.records.Outcomes`. Its defaults live in ``NAME.yaml``
beside the plugin's module (the ``quick`` protocol); ``NAME.superb.yaml`` beside it overlays
s3prl's recipe (:mod:`harness.protocol`); ``--set key=value`` overrides either, checked against
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
import yaml

from harness.config import Field
from harness.errors import HarnessError
from harness.heads import Head
from harness.protocol import BASE_PROTOCOL, resolve_recipe
from harness.records import MetricSpec, Outcomes  # noqa: F401  (plugins import them from here)

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
    # optional keys (Task.optional_config): absent from NAME.yaml, set by a protocol or --set
    "optimizer": Field(str, choices=("adam", "adamw")),
    "weight_decay": Field(float, minimum=0),
    "eps": Field(float, above=0),
    "accumulate": Field(int, minimum=1),
    "selection": Field(str, choices=("dev", "test")),
    # random: fixed-size batches drawn at random; s3prl_asr / s3prl_ctc: the length-sorted buckets
    # of s3prl's ASR and CTC (PR, SF) loaders (harness.features.loaders.s3prl_*_buckets)
    "batching": Field(str, choices=("random", "s3prl_asr", "s3prl_ctc")),
}
#: neutral values of the optional keys every task takes: what a run does without them
#: (torch.optim.Adam's own settings, one batch per optimizer step, dev-set model selection,
#: random fixed-size batches)
BASE_OPTIONAL: dict[str, Any] = {"optimizer": "adam", "weight_decay": 0.0, "eps": 1.0e-8, "accumulate": 1,
                                 "selection": "dev", "batching": "random"}


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
    #: samples: in training, each time the example is drawn, a fresh random window of this many
    #: samples (frames of the same span from the cache), drawn from (seed, position in the
    #: training stream); None = the whole utterance. Evaluation always reads the whole utterance.
    crop: int | None = None


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
    #: keys a protocol or ``--set`` may add although ``NAME.yaml`` lacks them (dotted for nested
    #: keys), with their neutral value; a key at its neutral value is left out of the resolved
    #: config, so it never changes a run's identity (see :mod:`harness.protocol`)
    optional_config: ClassVar[Mapping[str, Any]] = BASE_OPTIONAL

    def __init__(self, config: dict) -> None:
        self.config = config
        #: utterances left out, counted by split (a task's own reason, e.g. PR's out-of-lexicon
        #: words, under the split's name) or by "split: reason" (the engine's, e.g. clips shorter
        #: than the upstream's shortest input); recorded with every result
        self.dropped: dict[str, int] = {}

    def option(self, key: str) -> Any:
        """The config's value of ``key`` (dotted for nested keys), or its neutral value when the
        key is optional and the config leaves it out (:attr:`optional_config`)."""
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if key in self.optional_config:
                    return self.optional_config[key]
                raise KeyError(key)
            node = node[part]
        return node

    @classmethod
    def default_config(cls) -> dict:
        """The defaults in ``NAME.yaml`` beside the module that defines the task class."""
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

    def identity(self) -> dict:
        """What defines the task's scoring beyond its config and its examples' audio and labels
        (e.g. a verification trial list), as JSON-able content; part of the run identity when
        not empty. Called after :meth:`examples` for every split."""
        return {}

    def sample_weights(self, train: list[Example]) -> list[float] | None:
        """Relative draw probability of each training example, or None for shuffled passes over
        the data (the default). Non-None: every draw is independent, with replacement (torch's
        WeightedRandomSampler; s3prl's KS uses inverse class frequencies)."""
        return None

    @property
    def selection_metric(self) -> str:
        """The metric model selection maximises (or minimises): the task's metric unless the
        task selects on another one of its scores (e.g. class-balanced accuracy)."""
        return self.metric.name

    def fold_overrides(self) -> list[dict] | None:
        """Cross-validation: one config override per fold, or None for a single run. A run
        with folds trains each fold as its own run and reports the mean over folds as one
        result (:mod:`harness.probing.folds`)."""
        return None

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
        """The id of ``label``, or -1 for a label never seen in training (it can never be predicted right)."""
        return self.index.get(label, -1)  # unseen in training: can never be predicted right


def require_examples(examples: list, what: str, root: Path) -> list:
    """``examples`` unchanged, or a one-line HarnessError naming ``what`` and the data root when empty."""
    if not examples:
        raise HarnessError(f"no {what} examples under {root}; check --data-root")
    return examples


def task_config(task_cls: type[Task], overrides: dict | None = None, max_steps: int | None = None,
                protocol: str | None = BASE_PROTOCOL) -> dict:
    """The task's config under ``protocol`` (default ``quick``: ``NAME.yaml``) with ``overrides``
    merged and every value checked (:func:`harness.protocol.resolve_recipe`)."""
    return resolve_recipe(task_cls, protocol, overrides, max_steps).config
