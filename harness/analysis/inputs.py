"""The shared loader: what an analysis reads, loaded in one place.

:class:`Inputs` holds the utterances of one split (read on first use) and hands out, per
model, its layers' frames (through the feature cache), frames of two models paired by time,
property samples and attention maps. Analyses take everything from it and load nothing
themselves; :func:`harness.analysis.runner.run_analysis` builds it from the options.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from harness.analysis.frames import (
    Utterances,
    aligned_frames,
    cached_layers,
    layer_frames,
    load_utterances,
)
from harness.analysis.properties import Sampling, frame_phone_labels, property_samples
from harness.audio import read_audio
from harness.upstream import Upstream, UpstreamInfo, load_upstream


class Model:
    """One loaded upstream (``spec``, with random weights if ``random_init``) over the
    inputs' utterances; its frames are extracted (or read from the cache) on first use and
    kept while the model is."""

    def __init__(self, spec: str, upstream: Upstream, inputs: Inputs):
        self.spec, self.upstream, self._inputs = spec, upstream, inputs

    @property
    def info(self) -> UpstreamInfo:
        """The upstream's :class:`~harness.upstream.UpstreamInfo` (layer names, dims, hop)."""
        return self.upstream.info

    @functools.cached_property
    def frames(self) -> list[list[np.ndarray]]:
        """Per utterance, per layer ``[frames, dim]`` float32 (in memory)."""
        return layer_frames(self.upstream, self._inputs.utterances, self._inputs.progress)

    def cache(self):
        """The memory-mapped feature cache of the utterances: ``.get(id)`` -> per layer ``[frames, dim]``."""
        return cached_layers(self.upstream, self._inputs.utterances, self._inputs.progress)


class Inputs:
    """Utterances of ``split`` under ``data_root`` (the first ``limit``) and what analyses
    read from them; ``progress``: progress bars and notes on stderr."""

    def __init__(self, data_root: Path, split: str = "dev", limit: int | None = None, progress: bool = True):
        self.data_root, self.split, self.limit, self.progress = Path(data_root), split, limit, progress

    @functools.cached_property
    def utterances(self) -> Utterances:
        """The utterances every model of the analysis runs on (loaded once, then reused)."""
        return load_utterances(self.data_root, self.split, self.limit)

    def model(self, spec: str, random_init: bool = False) -> Model:
        """Load the upstream ``spec`` (registry name or ``BACKEND:SOURCE``)."""
        return Model(spec, load_upstream(spec, random_init=random_init), self)

    def paired(self, a: Model, b: Model, max_frames: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Frames of ``a`` and ``b`` paired by time (:func:`~harness.analysis.frames.aligned_frames`):
        per layer ``[n, d]``, at most ``max_frames`` pairs drawn with ``seed``."""
        return aligned_frames(a.frames, a.info.hop, b.frames, b.info.hop, max_frames, seed, a.info.frame_offset,
                              b.info.frame_offset)

    def properties(self, model: Model, kind: str, sampling: Sampling) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Property samples (:func:`~harness.analysis.properties.property_samples`): per layer
        ``X [n, d]``, property ``Y [n, p]``, labels ``[n]``."""
        return property_samples(kind, model.upstream, self.utterances, model.frames, sampling)

    def phone_frames(self, model: Model, max_samples: int, seed: int) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
        """Frames with the phone at their centre (:func:`~harness.analysis.properties.frame_phone_labels`)."""
        return frame_phone_labels(model.upstream, self.utterances, model.frames, max_samples, seed)

    def attention(self, model: Model) -> list[list[torch.Tensor]]:
        """Per utterance, per transformer layer ``[heads, T, T]`` (rows sum to 1). Raises
        :class:`~harness.errors.HarnessError` for a model that does not expose attention."""
        out = []
        for e in tqdm(self.utterances.examples, desc=f"attention maps of {model.info.spec}", unit="utt",
                      disable=not self.progress, file=sys.stderr, leave=False):
            out.append(model.upstream.attentions(torch.from_numpy(read_audio(e.path))))
        return out
