"""What a task plugin provides, and the examples it hands the engine.

A task (one module in ``tasks/``, registered in the ``harness.tasks`` entry-point
group) reads its splits with the dataset readers, encodes targets, builds its head
for an input dimension, and turns head outputs into a loss, predictions and a metric.
Its SUPERB-style defaults live in ``tasks/<name>.yaml``; ``--set key=value``
overrides them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .errors import HarnessError
from .heads import Head

SPLITS = ("train", "dev", "test")


@dataclass
class Example:
    """One utterance: where its audio is and what the head must predict.

    ``target``: utterance tasks -> tuple of class ids; frame tasks -> int array of
    10 ms labels; CTC tasks -> list of token ids. ``reference`` is the text (or phone
    string) used for error rates.
    """

    id: str
    path: Path
    target: Any
    reference: str | None = None


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool


class Task(abc.ABC):
    """Base class of task plugins."""

    name: str
    #: "utterance" (pooled classification), "frame" (per-frame labels) or "ctc"
    level: str
    #: which corpus layout the task reads; tasks with the same ``dataset`` share cached features
    dataset: str
    metric: MetricSpec

    def __init__(self, config: dict) -> None:
        self.config = config

    @classmethod
    def default_config(cls) -> dict:
        import yaml

        text = resources.files("harness.tasks").joinpath(f"{cls.name}.yaml").read_text()
        return yaml.safe_load(text) or {}

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
    def score(self, predictions: dict[str, Any], examples: list[Example]) -> tuple[dict[str, float], dict[str, Any]]:
        """(metrics, per-utterance outcomes) for a whole split.

        Metrics include ``self.metric.name``. Outcomes hold what a bootstrap over
        utterances needs: ``{"ids": [...], "correct": [...]}`` for accuracies, or
        ``{"ids": [...], "errors": [...], "lengths": [...]}`` for error rates.
        """

    # --- helpers ---------------------------------------------------------------
    def batch_targets(self, examples: list[Example], frames: torch.Tensor | None, hop: int | None,
                      offset: int = 0) -> dict:
        """Collate targets of a batch; ``frames`` are the feature lengths, ``hop`` and
        ``offset`` place feature frame j at sample j * hop + offset (frame tasks)."""
        return {"targets": [e.target for e in examples]}


def parse_overrides(pairs: list[str]) -> dict:
    """``["lr=0.01", "head.hidden=256"]`` -> nested dict with YAML-typed values."""
    import yaml

    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HarnessError(f"--set expects key=value, got {pair!r}")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def merge_config(base: dict, override: dict, path: str = "") -> dict:
    """Deep-merge ``override`` into ``base``; unknown keys are an error (typos hurt)."""
    out = dict(base)
    for key, value in override.items():
        if key not in base:
            raise HarnessError(f"unknown config key {path + key!r}; known: {', '.join(sorted(base))}")
        if isinstance(value, dict) and isinstance(base[key], dict):
            out[key] = merge_config(base[key], value, path + key + ".")
        else:
            out[key] = value
    return out
