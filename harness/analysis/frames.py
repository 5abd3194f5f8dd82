"""Frames for the analyses: the aligned utterances of one LibriSpeech split, every layer's
frames through the feature cache, and the frames of two models paired by time.

Frame ``j`` of a layer with hop ``h`` samples and offset ``o`` is centred at sample
``j * h + o`` (16 kHz); utterance-level layers (one vector per utterance) are repeated to
the frame count of the utterance's frame-level layers where frames are needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.corpus.layout import ALIGNMENT_DIR, CorpusPaths
from harness.data import read_ctm, read_librispeech
from harness.data.librispeech import SPLITS as LIBRI_SPLITS
from harness.errors import HarnessError
from harness.features.cache import ensure_features
from harness.task import Example


@dataclass
class Utterances:
    """Utterances with phone and word alignments (CTM segments per utterance id)."""

    examples: list[Example]
    phones: dict  # utt -> CTM segments
    words: dict
    split: str = "dev"  # harness split name: the feature cache is shared with the probing tasks


def load_utterances(data_root: Path, split: str, limit: int | None = None) -> Utterances:
    """The utterances of a LibriSpeech ``split`` (harness name or LibriSpeech folder name)
    that have alignments, the first ``limit`` of them if given. ``data_root``: a corpus root
    or the LibriSpeech folder itself. Raises :class:`HarnessError` when none is aligned."""
    name = LIBRI_SPLITS.get(split, split)
    utts = read_librispeech(data_root, name)
    if limit:
        utts = utts[:limit]
    ali = CorpusPaths(Path(data_root)).alignments
    if not ali.exists():  # data_root may be the LibriSpeech folder itself
        ali = Path(data_root) / ALIGNMENT_DIR
    phones, words = read_ctm(ali / f"{name}.phones.ctm"), read_ctm(ali / f"{name}.words.ctm")
    examples = [Example(u.id, u.path, None) for u in utts if u.id in phones]
    if not examples:
        raise HarnessError(f"no utterance of {name} has alignments in {ali}")
    return Utterances(examples, phones, words, split)


def cached_layers(upstream, utts: Utterances, progress: bool = True):
    """The feature cache of these utterances (every layer), memory-mapped: ``.get(id)``
    gives per layer a ``[frames, dim]`` tensor, extracting what is missing first."""
    return ensure_features(upstream, "librispeech", utts.split, utts.examples, kind="frames", progress=progress)


def layer_frames(upstream, utts: Utterances, progress: bool = True) -> list[list[np.ndarray]]:
    """Per utterance, per layer ``[frames, dim]`` float32, through the feature cache (in memory)."""
    feats = cached_layers(upstream, utts, progress)
    return [[t.numpy() for t in feats.get(e.id)] for e in utts.examples]


def frame_centres(n: int, hop: int, offset: int | None = None) -> np.ndarray:
    """Centre sample of each of n frames (frame j at j*hop + offset; offset defaults to hop/2)."""
    return np.arange(n) * hop + (hop // 2 if offset is None else offset)


def frame_count(layers: list) -> int:
    """Frames of one utterance: the shortest frame-level layer (1 if every layer is
    utterance-level)."""
    frame_level = [len(l) for l in layers if len(l) > 1]
    return min(frame_level) if frame_level else 1


def first_frames(x: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` frames of a layer ``[frames, dim]``, or its one vector repeated n times."""
    return np.repeat(x, n, 0) if len(x) == 1 else x[:n]


def pair_indices(na: int, hop_a: int, off_a: int, nb: int, hop_b: int, off_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices pairing two frame grids of one utterance by time (each frame of the
    coarser grid with the finer grid's frame nearest its centre)."""
    if hop_a >= hop_b:
        ia = np.arange(na)
        ib = np.clip(np.round((frame_centres(na, hop_a, off_a) - off_b) / hop_b).astype(int), 0, nb - 1)
    else:
        ib = np.arange(nb)
        ia = np.clip(np.round((frame_centres(nb, hop_b, off_b) - off_a) / hop_a).astype(int), 0, na - 1)
    return ia, ib


def pick(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Frames ``index`` of a layer, or its one (utterance-level) vector repeated as often."""
    return x[index] if len(x) > 1 else np.repeat(x, len(index), 0)


def aligned_frames(a_frames: list[list[np.ndarray]], hop_a: int, b_frames: list[list[np.ndarray]], hop_b: int,
                   max_frames: int, seed: int, off_a: int = 0, off_b: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pair frames of two models by time: each frame of the coarser model with the finer
    model's frame nearest its centre. ``*_frames``: per utterance, per layer ``[frames, dim]``;
    hops and offsets in samples. Returns per-layer ``[n, d]`` arrays, at most ``max_frames``
    pairs drawn at random (``seed``) in time order."""
    xa: list[list[np.ndarray]] = [[] for _ in a_frames[0]]
    xb: list[list[np.ndarray]] = [[] for _ in b_frames[0]]
    for la, lb in zip(a_frames, b_frames):
        na, nb = frame_count(la), frame_count(lb)
        ia, ib = pair_indices(na, hop_a, off_a, nb, hop_b, off_b)
        ok = (ia < na) & (ib < nb)
        for l, x in enumerate(la):
            xa[l].append(pick(x, ia[ok]))
        for l, x in enumerate(lb):
            xb[l].append(pick(x, ib[ok]))
    a = [np.concatenate(x) for x in xa]
    b = [np.concatenate(x) for x in xb]
    n = len(a[0])
    if n > max_frames:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_frames, replace=False))
        a, b = [x[keep] for x in a], [x[keep] for x in b]
    return a, b
