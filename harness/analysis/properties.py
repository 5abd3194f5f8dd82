"""Property samples for CCA: per layer, the representation of each sample next to the
property's value at it, with a label to stratify folds by.

- ``mel``: every frame against the 80-bin log-mel (Kaldi fbank, 25 ms window, 10 ms hop)
  frame nearest its centre;
- ``position``: every frame against the one-hot of its word position (B, E, I; silence is
  the all-zero last class), from the word alignment at its centre;
- ``phone``: one sample per phone segment (silence excluded): the layer's mean over the
  middle third of the segment's frames, against the phone's one-hot;
- ``word``, ``syllable``: one sample per token of the ``top_words`` most frequent units
  (seen at least twice): the mean over its frames, against its one-hot;
- ``speaker``: one sample per utterance: its mean frame against the speaker's one-hot.
One-hot properties drop their last column (the centred one-hot covariance is otherwise
singular by construction). The levels are those of :mod:`harness.levels`; the protocol is
Pasad, Shi and Livescu's layer-wise analysis (2021, 2023).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from harness.analysis.frames import Utterances, first_frames, frame_centres, frame_count
from harness.audio import SAMPLE_RATE, read_audio
from harness.errors import HarnessError
from harness.levels import frame_labels, spans, to_spans
from harness.upstream import load_upstream

POSITIONS = ["B", "E", "I", "sil"]  # word-position classes; the last one is the all-zero one-hot


@dataclass(frozen=True)
class Sampling:
    """How property samples are drawn: at most ``max_samples`` frames for the frame-level
    properties (mel, position), the ``top_words`` most frequent words or syllables, at most
    ``per_label`` segments per label (drawn at random), all from ``seed``."""

    max_samples: int = 20000
    top_words: int = 500
    per_label: int = 200
    seed: int = 0


def property_samples(kind: str, upstream, utts: Utterances, frames: list[list[np.ndarray]], sampling: Sampling,
                     ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Samples of property ``kind`` for every layer of ``upstream``: (per layer ``X [n, d]``,
    property ``Y [n, p]`` float64, ``labels [n]`` int for stratification). ``frames``: per
    utterance of ``utts``, per layer ``[frames, dim]`` (:func:`~harness.analysis.frames.layer_frames`).
    Raises :class:`HarnessError` when fewer than two labels of a segment property occur."""
    rng = np.random.default_rng(sampling.seed)
    if kind == "mel":
        return _subsample(*_per_frame(upstream, utts, frames, _mel_target()), sampling.max_samples, rng)
    if kind == "position":
        return _subsample(*_per_frame(upstream, utts, frames, _position_target(upstream, utts)),
                          sampling.max_samples, rng)
    return _segment_samples(kind, upstream, utts, frames, sampling, rng)


def _per_frame(upstream, utts: Utterances, frames: list[list[np.ndarray]],
               target: Callable) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Every frame of every utterance against ``target(example, centres) -> (Y [n, p], labels [n])``."""
    hop, offset = upstream.info.hop, upstream.info.frame_offset
    xs: list[list[np.ndarray]] = [[] for _ in range(upstream.num_layers)]
    ys, labels = [], []
    for e, layers in zip(utts.examples, frames):
        n = frame_count(layers)
        y, lab = target(e, frame_centres(n, hop, offset))
        for l in range(upstream.num_layers):
            xs[l].append(first_frames(layers[l], n))
        ys.append(y)
        labels.append(lab)
    return [np.concatenate(x) for x in xs], np.concatenate(ys), np.concatenate(labels)


def _subsample(xs: list[np.ndarray], y: np.ndarray, labels: np.ndarray, max_samples: int,
               rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """At most ``max_samples`` samples drawn at random, kept in their order."""
    if len(y) > max_samples:
        keep = np.sort(rng.choice(len(y), size=max_samples, replace=False))
        xs, y, labels = [x[keep] for x in xs], y[keep], labels[keep]
    return xs, y, labels


def _mel_target() -> Callable:
    """Log-mel frame (fbank: 25 ms window, 10 ms hop, so frame k is centred at sample
    ``160 k + 200``) nearest each centre; one label for all."""
    fbank = load_upstream("fbank")

    def target(e, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wav = torch.from_numpy(read_audio(e.path))
        mel = fbank.layers(wav[None], torch.tensor([len(wav)])).hidden[0][0].numpy()
        idx = np.clip(np.round((centres - 200) / 160).astype(int), 0, len(mel) - 1)
        return mel[idx], np.zeros(len(centres), dtype=int)

    return target


def _position_target(upstream, utts: Utterances) -> Callable:
    """One-hot word position (10 ms grid of :func:`harness.levels.frame_labels`) at each centre."""
    hop, offset = upstream.info.hop, upstream.info.frame_offset

    def target(e, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(centres)
        grid = frame_labels(to_spans(utts.words.get(e.id, [])), (n * hop + offset) / SAMPLE_RATE + 0.02)
        centre_frames = np.minimum((centres / SAMPLE_RATE / 0.01).astype(int), len(grid) - 1)
        lab = np.array([POSITIONS.index(grid[j]) for j in centre_frames])
        one = np.zeros((n, len(POSITIONS) - 1))
        one[lab < len(POSITIONS) - 1, lab[lab < len(POSITIONS) - 1]] = 1.0
        return one, lab

    return target


def _segment_samples(kind: str, upstream, utts: Utterances, frames: list[list[np.ndarray]], sampling: Sampling,
                     rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """One sample per labelled span (phone, syllable, word, speaker): the mean of its frames."""
    hop, offset = upstream.info.hop, upstream.info.frame_offset
    items = []  # (utt index, label, first frame, last frame)
    for u, (e, layers) in enumerate(zip(utts.examples, frames)):
        centres = frame_centres(frame_count(layers), hop, offset)
        for seg in spans(kind, to_spans(utts.phones.get(e.id, [])), to_spans(utts.words.get(e.id, [])), e.id):
            s, t = seg.start * SAMPLE_RATE, seg.end * SAMPLE_RATE
            inside = np.nonzero((centres >= s) & (centres < t))[0]
            if len(inside) == 0:
                continue
            if kind == "phone" and len(inside) >= 3:
                k = len(inside)
                inside = inside[k // 3: k - k // 3]
            items.append((u, seg.label, int(inside[0]), int(inside[-1]) + 1))
    counts = Counter(label for _, label, _, _ in items)
    if kind in ("word", "syllable"):  # the most frequent ones, as the published word CCA does
        allowed = {w for w, _ in counts.most_common(sampling.top_words) if counts[w] >= 2}
        items = [it for it in items if it[1] in allowed]
    by_label = defaultdict(list)
    for it in items:
        by_label[it[1]].append(it)
    chosen = []
    for label in sorted(by_label):
        group = by_label[label]
        order = rng.permutation(len(group))[:sampling.per_label]
        chosen += [group[i] for i in sorted(order)]
    classes = sorted(by_label)
    if len(classes) < 2:
        raise HarnessError(f"fewer than two {kind} labels in the alignments; cannot run CCA")
    index = {c: i for i, c in enumerate(classes)}
    xs: list[list[np.ndarray]] = [[] for _ in range(upstream.num_layers)]
    ys, labels = [], []
    for u, label, a, b in chosen:
        for l in range(upstream.num_layers):
            x = frames[u][l]
            xs[l].append(x[0] if len(x) == 1 else x[a:b].mean(0))  # utterance-level layers: the vector itself
        one = np.zeros(len(classes) - 1, dtype=np.float64)  # last class = all zeros
        if index[label] < len(classes) - 1:
            one[index[label]] = 1.0
        ys.append(one)
        labels.append(index[label])
    return [np.stack(x) for x in xs], np.stack(ys), np.asarray(labels)


def frame_phone_labels(upstream, utts: Utterances, frames: list[list[np.ndarray]], max_samples: int, seed: int,
                       ) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Frame-level phone identity: per layer ``[n, d]`` frames and the phone index at each
    frame's centre (silence left out), at most ``max_samples`` frames drawn at random
    (``seed``); with the phone inventory the indices point into."""
    hop, offset = upstream.info.hop, upstream.info.frame_offset
    xs: list[list[np.ndarray]] = [[] for _ in range(upstream.num_layers)]
    names: list[str] = []
    for e, layers in zip(utts.examples, frames):
        n = frame_count(layers)
        centres = frame_centres(n, hop, offset) / SAMPLE_RATE
        segs = utts.phones.get(e.id, [])
        ends = np.array([s.start + s.duration for s in segs])
        idx = np.minimum(np.searchsorted(ends, centres, side="right"), len(segs) - 1)
        keep = np.array([segs[i].label != "sil" for i in idx], dtype=bool)
        for l in range(upstream.num_layers):
            xs[l].append(first_frames(layers[l], n)[keep])
        names += [segs[i].label for i, k in zip(idx, keep) if k]
    inventory = sorted(set(names))
    labels = np.array([inventory.index(p) for p in names])
    x_all = [np.concatenate(x) for x in xs]
    if len(labels) > max_samples:
        pick = np.sort(np.random.default_rng(seed).choice(len(labels), size=max_samples, replace=False))
        x_all, labels = [x[pick] for x in x_all], labels[pick]
    return x_all, labels, inventory
