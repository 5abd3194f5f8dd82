"""The upstream interface: every layer of a model, with lengths and frame rate.

An upstream maps a padded batch of 16 kHz waveforms ``[batch, samples]`` and their
lengths ``[batch]`` to :class:`Layers`: one tensor ``[batch, frames, dim]`` per
layer, the valid frame count of each utterance per layer, the hop in samples and a
name per layer.

Layer 0 of a speech SSL model is the input to the first transformer layer (after
the CNN, the projection and the positional convolution), as in s3prl; layer i is the
output of transformer layer i, and the last layer is the encoder output (for
'stable layer norm' models such as the Large ones this includes the encoder's final
layer norm, again as in s3prl and in HuggingFace's ``hidden_states``). A Base model
has 13 layers, a Large one 25.

Backends live in ``upstreams/`` (imported as ``harness.upstreams``) and are found
through the ``harness.upstreams`` entry-point group; see :mod:`harness.registry`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from harness.audio import SAMPLE_RATE  # noqa: F401  (every upstream takes audio at this rate)
from harness.errors import HarnessError
from harness.registry import load_backend, parse_spec


@dataclass
class Layers:
    """All layers of one batch.

    ``hidden[l]``: ``[batch, frames_l, dim_l]`` float tensor (padding frames are
    arbitrary); ``lengths[l]``: ``[batch]`` valid frame counts; ``hop``: samples per
    frame of each layer (``None`` for utterance-level layers, which have one frame).
    """

    hidden: list[torch.Tensor]
    lengths: list[torch.Tensor]
    hops: list[int | None]
    names: list[str]

    def __len__(self) -> int:
        return len(self.hidden)

    @property
    def uniform(self) -> bool:
        """True when every layer has the same frames and dim (so :meth:`stack` works)."""
        shapes = {tuple(h.shape) for h in self.hidden}
        return len(shapes) == 1 and len(set(self.hops)) == 1

    def stack(self) -> torch.Tensor:
        """``[layers, batch, frames, dim]``; only for uniform layers."""
        if not self.uniform:
            raise ValueError("layers differ in frames or dim; use .hidden (a list)")
        return torch.stack(self.hidden)

    def utterance(self, i: int) -> list[torch.Tensor]:
        """The valid frames of utterance ``i`` in every layer: list of ``[frames, dim]``."""
        return [h[i, : int(n[i])] for h, n in zip(self.hidden, self.lengths)]


@dataclass
class UpstreamInfo:
    """What a loaded upstream is, for records and listings."""

    spec: str  # what the user asked for, e.g. "hf:/path/to/dir"
    backend: str
    source: str
    layer_names: list[str]
    dims: list[int]
    hop: int | None  # samples per frame of the frame-level layers
    weights_sha256: str | None  # of the weight files used; None for parameter-free features
    random_init: bool = False
    #: sample index of the centre of frame 0 (frame j is centred at j * hop + frame_offset)
    frame_offset: int = 0
    notes: dict = field(default_factory=dict)
    #: per layer: its hop, or None for an utterance-level layer (one vector per utterance, e.g. a
    #: speaker embedding); None here means every layer is frame-level at ``hop``
    layer_hops: list[int | None] | None = None
    #: the backend's extraction revision: bumped when a fix changes its numbers, so records made
    #: before the fix are not taken for finished runs (part of the identity when above 0)
    revision: int = 0
    #: the shortest input (samples) whose frames all come from the audio (not from padding): the
    #: receptive field of a CNN front end, an analysis window; 0 means twice ``frame_offset``
    min_samples: int = 0

    def shortest_input(self) -> int:
        """Samples an utterance needs for at least one frame computed from its own audio."""
        return self.min_samples or max(1, 2 * self.frame_offset)

    def hop_of(self, layer: int) -> int | None:
        """Samples per frame of ``layer`` (None for an utterance-level layer)."""
        return self.hop if self.layer_hops is None else self.layer_hops[layer]

    def is_frame_level(self, layer: int) -> bool:
        """True when ``layer`` has frames (not one vector per utterance)."""
        return self.hop_of(layer) is not None

    @property
    def frame_layers(self) -> list[int]:
        """Indices of the frame-level layers."""
        return [i for i in range(len(self.layer_names)) if self.is_frame_level(i)]


class Upstream(nn.Module, abc.ABC):
    """Base class of every backend (one module in ``upstreams/``, registered in the
    ``harness.upstreams`` entry-point group under its backend name).

    A backend implements :meth:`load` (build from a source string, offline or from its own
    cache) and :meth:`layers`; it may override :meth:`fetch` (download for later offline
    use) and set :attr:`padding_sensitive`. :meth:`load` sets :attr:`info`.

    Example (a two-layer toy backend)::

        class Energy(Upstream):
            @classmethod
            def load(cls, source, random_init=False, seed=0):
                up = cls()
                up.info = UpstreamInfo(spec=f"energy:{source}", backend="energy", source=source,
                                       layer_names=["log_energy", "delta"], dims=[1, 1], hop=160,
                                       weights_sha256=None)
                return up

            def layers(self, wavs, lengths):
                frames = wavs[:, : wavs.shape[1] // 160 * 160].reshape(len(wavs), -1, 160)
                e = frames.pow(2).mean(-1, keepdim=True).add(1e-8).log()
                n = lengths // 160
                return Layers([e, e.diff(dim=1, prepend=e[:, :1])], [n, n], [160, 160], self.info.layer_names)
    """

    info: UpstreamInfo
    #: True when padding changes the valid frames (e.g. group-norm CNN front ends); the
    #: batcher then only groups utterances of equal length.
    padding_sensitive: bool = False
    #: True when a long input may run in overlapping windows (frame-level layers on one hop,
    #: memory superlinear in length: transformers); see :mod:`harness.features.extract`.
    chunkable: bool = False
    #: True when :meth:`layers` scales each waveform to zero mean and unit variance first
    #: (wav2vec2-style ``do_normalize``); windows of a long file are then scaled by the whole
    #: file's statistics instead of their own.
    normalize: bool = False

    @classmethod
    @abc.abstractmethod
    def load(cls, source: str, random_init: bool = False, seed: int = 0) -> "Upstream":
        """Build the upstream named by ``source`` (the part after ``BACKEND:``).

        ``random_init``: the same architecture with weights drawn from ``seed``. Must not
        touch the network when the weights are cached; raise a one-line HarnessError
        naming what to fetch when they are not.
        """

    @classmethod
    def fetch(cls, source: str) -> str | None:
        """Download ``source``'s weights into the backend's cache (needs network); return a
        line saying where they went, or None when the backend has nothing to download."""
        return None

    @abc.abstractmethod
    def layers(self, wavs: torch.Tensor, lengths: torch.Tensor) -> Layers:
        """wavs ``[batch, samples]`` float32 at 16 kHz, zero-padded; lengths ``[batch]``."""

    def attentions(self, wav: torch.Tensor) -> list[torch.Tensor]:
        """Attention maps of one utterance ``[samples]``: per transformer layer ``[heads, T, T]``
        (rows: queries, summing to 1). Backends without self-attention, or that do not expose
        it, refuse in one line."""
        raise HarnessError(f"{self.info.spec}: the {self.info.backend} backend does not expose attention maps; "
                           "use a HuggingFace model (hf:...) for attention-level analyses")

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor) -> Layers:  # noqa: D401
        return self.layers(wavs, lengths)

    @property
    def num_layers(self) -> int:
        """Number of layers the upstream exposes (hidden states, CNN output included)."""
        return len(self.info.layer_names)

    def identity(self) -> dict:
        """The upstream by content, for run keys and feature-cache keys: its backend, layer
        names and weights hash; the source as well when there are no weights to hash
        (parameter-free features) or the weights are random (``--random-init``: the
        architecture and the seed build them); the backend's revision once a fix changed its
        numbers."""
        info = self.info
        ident = {"backend": info.backend, "layers": list(info.layer_names), "weights_sha256": info.weights_sha256}
        if info.weights_sha256 is None or info.random_init:
            ident["source"] = info.source
        if info.random_init:
            ident["init_seed"] = info.notes.get("init_seed", 0)
        if info.revision:
            ident["revision"] = info.revision
        return ident


def conv_frames(lengths: torch.Tensor, kernels: Sequence[int], strides: Sequence[int]) -> torch.Tensor:
    """Valid output frames of a stack of unpadded 1-D convolutions."""
    out = lengths.clone()
    for k, s in zip(kernels, strides):
        out = torch.div(out - k, s, rounding_mode="floor") + 1
    return out.clamp(min=0)


def receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Samples seen by one output frame of a stack of 1-D convolutions."""
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field += (k - 1) * jump
        jump *= s
    return field


def normalise_waveforms(wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero-mean, unit-variance per utterance over its valid samples (padding stays 0),
    as wav2vec2-style feature extractors with ``do_normalize`` do."""
    out = torch.zeros_like(wavs)
    for i, n in enumerate(lengths.tolist()):
        x = wavs[i, :n]
        out[i, :n] = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
    return out


def pad_batch(waves: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad 1-D waveforms into ``[batch, max_len]`` with their lengths."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    out = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
    for i, w in enumerate(waves):
        out[i, : len(w)] = torch.as_tensor(w, dtype=torch.float32)
    return out, lengths


def load_upstream(spec: str, random_init: bool = False, seed: int = 0) -> Upstream:
    """Build an upstream from a registry name or ``backend:source``.

    With ``random_init`` a registry name uses its card's offline ``architecture``
    spec, so the random-weights control needs no download.

    Raises HarnessError (one line) for an unknown name or backend, for weights that are not
    in the backend's cache, and when a card's model loads with another layer count.
    """
    backend, source, card = parse_spec(spec)
    if random_init and card is not None and card.architecture:
        backend, source = card.architecture.split(":", 1)
    cls = load_backend(backend)
    upstream = cls.load(source, random_init=random_init, seed=seed)
    upstream.info.spec = spec
    upstream.info.random_init = random_init
    if random_init:
        upstream.info.notes["init_seed"] = seed
    if card is not None and upstream.num_layers != card.layers:
        raise HarnessError(f"{spec} loaded with {upstream.num_layers} layers but its card says {card.layers}; "
                           "the checkpoint is not the model the card describes")
    return upstream


class UpstreamPool:
    """Loaded upstreams kept for reuse, so a benchmark loads each model once.

    >>> pool = UpstreamPool()
    >>> pool.get("fbank") is pool.get("fbank")
    True
    """

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, bool, int], Upstream] = {}

    def get(self, spec: str, random_init: bool = False, seed: int = 0) -> Upstream:
        """The loaded upstream for (spec, random_init, seed), loading it on first use."""
        key = (spec, random_init, seed if random_init else 0)
        if key not in self._loaded:
            self._loaded[key] = load_upstream(spec, random_init=random_init, seed=seed)
        return self._loaded[key]

    def release(self, spec: str, random_init: bool = False, seed: int = 0) -> None:
        """Forget a model (free its memory) once no later run needs it."""
        self._loaded.pop((spec, random_init, seed if random_init else 0), None)
