"""Batches for the probes: cached features or raw audio, in a seeded order that resumes.

Training epochs are fixed windows of ``val_interval`` steps cut from an endless seeded
stream of shuffled indices, so the batches depend only on (seed, step) and a resumed run
sees the same ones. ``batch_size`` is global: under DDP each of the W processes takes
``batch_size / W`` items of every step's batch, so a step sees the same utterances
whatever the number of processes.

With gradient accumulation (``accumulate`` k), a window holds ``val_interval * k`` batches:
``val_interval`` and the step budget count optimizer steps, as s3prl's ``eval_step`` and
``total_steps`` do.

Two training-only draws, both functions of (seed, position in the stream), so they resume
exactly: weighted sampling with replacement (a task's :meth:`~harness.task.Task.sample_weights`,
torch's WeightedRandomSampler in s3prl) and random crops (:attr:`harness.task.Example.crop`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from harness.audio import read_audio
from harness.errors import HarnessError
from harness.task import Example
from harness.upstream import pad_batch


def world() -> tuple[int, int]:
    """(rank, world size) of the current process (0, 1 outside torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class StreamSampler(Sampler):
    """Fixed-length epochs cut from an endless seeded stream of permutations.

    Epoch e covers stream positions [e*N, (e+1)*N), N = steps * batch_size; step s of the
    epoch is the global batch of positions [s*B, (s+1)*B), and rank r of W takes its
    contiguous share [s*B + r*B/W, s*B + (r+1)*B/W). ``steps`` counts batches (optimizer
    steps times the accumulation).

    ``weights``: instead of permutations, each block of n positions is n independent draws
    with probabilities proportional to the weights (with replacement). ``draws``: yield
    ``(index, seed, position)`` instead of the index, so the dataset can crop from them.
    """

    def __init__(self, n_items: int, batch_size: int, steps: int, seed: int, world_size: int = 1,
                 weights: list[float] | None = None, draws: bool = False) -> None:
        if batch_size % world_size:
            raise HarnessError(f"batch_size {batch_size} is not divisible by the {world_size} training processes; "
                               "the batch size is global, so choose a multiple of the world size")
        self.n, self.batch, self.steps, self.seed, self.world_size = n_items, batch_size, steps, seed, world_size
        self.p = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if len(w) != n_items or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise HarnessError(f"sample weights must be {n_items} finite non-negative numbers with a positive sum")
            self.p = w / w.sum()
        self.draws = draws
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at each window (epoch); the stream's order depends only on the step."""
        self.epoch = epoch

    @property
    def per_rank_batch(self) -> int:
        """Utterances per batch on one training process (the global batch over the world size)."""
        return self.batch // self.world_size

    def __len__(self) -> int:
        return self.steps * self.per_rank_batch

    def __iter__(self):
        rank, w = world()
        if w != self.world_size:
            raise HarnessError(f"this run was set up for {self.world_size} training process(es) but runs in {w}; "
                               "pass the same --devices/--num-nodes as the launcher")
        per_epoch = self.steps * self.batch
        start = self.epoch * per_epoch
        out: list[int] = []
        block = start // self.n
        while len(out) < per_epoch + (start % self.n):
            rng = np.random.default_rng([self.seed, block])
            out.extend((rng.permutation(self.n) if self.p is None else rng.choice(self.n, self.n, p=self.p)).tolist())
            block += 1
        offset = start % self.n
        stream = out[offset: offset + per_epoch]
        share = self.per_rank_batch
        mine: list = []
        for s in range(self.steps):
            first = s * self.batch + rank * share
            if self.draws:
                mine.extend((i, self.seed, start + first + k) for k, i in enumerate(stream[first:first + share]))
            else:
                mine.extend(stream[first:first + share])
        return iter(mine)


#: s3prl's ASR loader halves every full bucket whose longest utterance exceeds this many samples
#: (``downstream/asr/dataset.py``: ``HALF_BATCHSIZE_TIME = 2000``, compared with sample counts, so
#: in practice every full bucket: SUPERB's ASR trains on batches of 16, not 32)
S3PRL_ASR_HALF_ABOVE = 2000
#: s3prl's CTC loaders (PR, SF) keep the first half of a bucket whose first utterance is longer
#: (``downstream/ctc/data.py``: ``half_batch_size_wav_len=300000``)
S3PRL_CTC_HALF_ABOVE = 300_000


def s3prl_asr_buckets(lengths: list[int], size: int) -> list[list[int]]:
    """The training batches of s3prl's ASR loader (``downstream/asr/dataset.py``), as example indices.

    Utterances sorted by length in samples, longest first (ties in input order); consecutive
    groups of ``size``; a full group is split into two halves when ``size >= 2`` and its longest
    utterance has more than :data:`S3PRL_ASR_HALF_ABOVE` samples; a last, shorter group is kept
    whole when it has more than one utterance. Raises HarnessError for ``size < 1``."""
    if size < 1:
        raise HarnessError(f"batch_size {size}: a bucket needs at least one utterance")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    buckets = []
    for start in range(0, len(order) - len(order) % size, size):
        group = order[start:start + size]
        if size >= 2 and max(lengths[i] for i in group) > S3PRL_ASR_HALF_ABOVE:
            buckets += [group[: size // 2], group[size // 2:]]
        else:
            buckets.append(group)
    rest = order[len(order) - len(order) % size:]
    if len(rest) > 1:
        buckets.append(rest)
    return buckets


def s3prl_ctc_buckets(target_lengths: list[int], lengths: list[int], size: int) -> list[list[int]]:
    """The training batches of s3prl's CTC loaders (PR's ``libriphone``, SF's ``snips``:
    ``downstream/ctc/corpus/*.py`` and ``data.py``), as example indices: one bucket per utterance.

    Utterances sorted by target length, longest first (ties in input order); bucket ``i`` is the
    ``size`` consecutive utterances from ``min(n - size, i)`` (overlapping), cut to its first
    half when its first utterance has more than :data:`S3PRL_CTC_HALF_ABOVE` samples."""
    if size < 1:
        raise HarnessError(f"batch_size {size}: a bucket needs at least one utterance")
    n = len(target_lengths)
    order = sorted(range(n), key=lambda i: -target_lengths[i])
    buckets = []
    for i in range(n):
        start = max(0, min(n - size, i))
        group = order[start:start + size]
        if len(group) > 1 and lengths[group[0]] > S3PRL_CTC_HALF_ABOVE:
            group = group[: len(group) // 2]
        buckets.append(group)
    return buckets


class BucketSampler(Sampler):
    """Fixed buckets (:func:`s3prl_asr_buckets`, :func:`s3prl_ctc_buckets`) visited in a seeded
    permutation per pass over them, as an endless stream cut into windows like
    :class:`StreamSampler` (so a resumed run sees the same batches).

    A batch sampler: each item is one batch (a bucket's example indices). Window e holds stream
    positions [e*steps, (e+1)*steps); with W processes, rank r's batch at position p is the
    bucket at global position p*W + r (as s3prl's DistributedSampler over buckets gives each
    process its own). Pass p of the buckets is ``default_rng([seed, p]).permutation``.
    """

    def __init__(self, buckets: list[list[int]], steps: int, seed: int, world_size: int = 1) -> None:
        if not buckets:
            raise HarnessError("no training batch could be formed (too few utterances for the bucket size)")
        self.buckets, self.steps, self.seed, self.world_size = buckets, steps, seed, world_size
        self.epoch = 0
        self.sampler = self  # Lightning sets each window's epoch through ``batch_sampler.sampler``

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at each window (epoch); the stream's order depends only on the step."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        rank, w = world()
        if w != self.world_size:
            raise HarnessError(f"this run was set up for {self.world_size} training process(es) but runs in {w}; "
                               "pass the same --devices/--num-nodes as the launcher")
        n = len(self.buckets)
        passes: dict[int, np.ndarray] = {}
        for step in range(self.epoch * self.steps, (self.epoch + 1) * self.steps):
            position = step * w + rank
            p = position // n
            if p not in passes:
                passes[p] = np.random.default_rng([self.seed, p]).permutation(n)
            yield list(self.buckets[int(passes[p][position % n])])


def crop_window(total: int, size: int, seed: int, position: int) -> tuple[int, int]:
    """``(start, end)`` of a random window of ``size`` in ``total`` (samples or frames), uniform
    over the ``total - size + 1`` starts as s3prl's ``random.randint(0, total - size)``, drawn from
    (seed, stream position); the whole range when ``total <= size``."""
    if total <= size:
        return 0, total
    start = int(np.random.default_rng([seed, position, 0x63726F70]).integers(0, total - size + 1))
    return start, start + size


def _key(key) -> tuple[int, tuple[int, int] | None]:
    """A dataset key: a plain index, or ``(index, seed, position)`` from a sampler with draws."""
    if isinstance(key, tuple):
        return int(key[0]), (int(key[1]), int(key[2]))
    return int(key), None


class FeatureDataset(Dataset):
    """Cached layers (frames or pooled means) of some examples.

    A training draw of an example with a ``crop`` takes the frames of a random window of
    ``crop / hop`` frames (every frame-level layer the same window). That crops the features
    of the whole utterance, not features computed on the cropped audio as s3prl does: the
    upstream saw the utterance's context beyond the window (streamed runs crop the audio).
    """

    def __init__(self, examples: list[Example], features, hop: int | None = None) -> None:
        self.examples, self.features, self.hop = examples, features, hop

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key) -> dict:
        i, draw = _key(key)
        e = self.examples[i]
        hidden = self.features.get(e.id)
        if draw is not None and e.crop and self.hop:
            hidden = _crop_frames(hidden, max(1, round(e.crop / self.hop)), *draw)
        return {"example": e, "hidden": hidden}


def _crop_frames(hidden: list, size: int, seed: int, position: int) -> list:
    """The same window of ``size`` frames of every frame-level layer (one-frame layers kept)."""
    total = max((len(x) for x in hidden if x is not None and x.dim() == 2), default=0)
    if total <= size:
        return hidden
    start, end = crop_window(total, size, seed, position)
    return [x[start:end] if x is not None and x.dim() == 2 and len(x) == total else x for x in hidden]


class WaveDataset(Dataset):
    """Raw audio, for streamed runs where the upstream runs inside each step; a training draw
    of an example with a ``crop`` reads a random window of that many samples."""

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key) -> dict:
        i, draw = _key(key)
        e = self.examples[i]
        wave = read_audio(e.path, segment=e.segment)
        if draw is not None and e.crop:
            start, end = crop_window(len(wave), e.crop, *draw)
            wave = wave[start:end]
        return {"example": e, "wave": torch.from_numpy(np.ascontiguousarray(wave))}


def collate(items: list[dict]) -> dict:
    """A batch: ``examples``, and either padded ``waves``/``wave_lengths`` or per-layer
    ``hidden`` (``[B, T, D]`` padded, or ``[B, D]`` pooled; None for layers not loaded) with
    per-layer frame counts ``layer_lengths`` and the utterances' frame counts ``lengths``
    (the longest layer's, i.e. the frame-level layers'; None when everything is pooled)."""
    batch: dict[str, Any] = {"examples": [it["example"] for it in items]}
    if "wave" in items[0]:
        batch["waves"], batch["wave_lengths"] = pad_batch([it["wave"] for it in items])
        return batch
    n_layers = len(items[0]["hidden"])
    hidden: list[torch.Tensor | None] = [None] * n_layers
    layer_lengths: list[torch.Tensor | None] = [None] * n_layers
    for layer in range(n_layers):
        xs = [it["hidden"][layer] for it in items]
        if xs[0] is None:
            continue
        if xs[0].dim() == 1:  # pooled
            hidden[layer] = torch.stack(xs)
        else:
            layer_lengths[layer] = torch.tensor([len(x) for x in xs])
            hidden[layer] = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)
    batch["hidden"], batch["layer_lengths"] = hidden, layer_lengths
    batch["lengths"] = frame_lengths(layer_lengths)
    return batch


def frame_lengths(layer_lengths: list[torch.Tensor | None]) -> torch.Tensor | None:
    """Per utterance, the most frames any loaded layer has (frame-level layers all agree;
    utterance-level layers have one)."""
    known = [n for n in layer_lengths if n is not None]
    return torch.stack(known).max(0).values if known else None


def train_loader(dataset: Dataset, batch_size: int, val_interval: int, seed: int, world_size: int = 1,
                 workers: int = 0, pin_memory: bool = False, accumulate: int = 1,
                 weights: list[float] | None = None, draws: bool = False,
                 buckets: list[list[int]] | None = None) -> DataLoader:
    """The training stream: ``val_interval`` optimizer steps (of ``accumulate`` batches each) per
    Lightning epoch, batches drawn by step from ``seed`` (so a resumed run sees the same
    batches), split over ``world_size`` processes; ``weights`` and ``draws`` as in
    :class:`StreamSampler`; ``buckets``: s3prl's fixed batches instead (:class:`BucketSampler`;
    not with weights or draws); ``workers`` processes decode and collate, ``pin_memory`` (beside
    a GPU) lets Lightning copy the batches to it asynchronously.
    """
    if buckets is not None:
        if weights is not None or draws:
            raise HarnessError("bucketed batches cannot be combined with weighted sampling or random crops")
        batches = BucketSampler(buckets, val_interval * accumulate, seed, world_size)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=pin_memory)
    sampler = StreamSampler(len(dataset), batch_size, val_interval * accumulate, seed, world_size, weights, draws)
    return DataLoader(dataset, batch_size=sampler.per_rank_batch, sampler=sampler, collate_fn=collate,
                      drop_last=True, num_workers=workers, persistent_workers=workers > 0, pin_memory=pin_memory)


def eval_loader(dataset: Dataset, batch_size: int, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Every utterance of a split once, in order, ``batch_size`` at a time (``workers`` and
    ``pin_memory`` as in :func:`train_loader`)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=pin_memory)
