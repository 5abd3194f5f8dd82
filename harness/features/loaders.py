"""Batches for the probes: cached features or raw audio, in a seeded order that resumes.

Training epochs are fixed windows of ``val_interval`` steps cut from an endless seeded
stream of shuffled indices, so the batches depend only on (seed, step) and a resumed run
sees the same ones. ``batch_size`` is global: under DDP each of the W processes takes
``batch_size / W`` items of every step's batch, so a step sees the same utterances
whatever the number of processes.
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


class StreamSampler(Sampler[int]):
    """Fixed-length epochs cut from an endless seeded stream of permutations.

    Epoch e covers stream positions [e*N, (e+1)*N), N = steps * batch_size; step s of the
    epoch is the global batch of positions [s*B, (s+1)*B), and rank r of W takes its
    contiguous share [s*B + r*B/W, s*B + (r+1)*B/W).
    """

    def __init__(self, n_items: int, batch_size: int, steps: int, seed: int, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise HarnessError(f"batch_size {batch_size} is not divisible by the {world_size} training processes; "
                               "the batch size is global, so choose a multiple of the world size")
        self.n, self.batch, self.steps, self.seed, self.world_size = n_items, batch_size, steps, seed, world_size
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
            perm = np.random.default_rng([self.seed, block]).permutation(self.n)
            out.extend(perm.tolist())
            block += 1
        stream = out[start % self.n: start % self.n + per_epoch]
        share = self.per_rank_batch
        mine: list[int] = []
        for s in range(self.steps):
            first = s * self.batch + rank * share
            mine.extend(stream[first:first + share])
        return iter(mine)


class FeatureDataset(Dataset):
    """Cached layers (frames or pooled means) of some examples."""

    def __init__(self, examples: list[Example], features) -> None:
        self.examples, self.features = examples, features

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        e = self.examples[i]
        return {"example": e, "hidden": self.features.get(e.id)}


class WaveDataset(Dataset):
    """Raw audio, for streamed runs where the upstream runs inside each step."""

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        e = self.examples[i]
        return {"example": e, "wave": torch.from_numpy(read_audio(e.path, segment=e.segment))}


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
                 workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """The training stream: ``val_interval`` steps per Lightning epoch, batches drawn by step from
    ``seed`` (so a resumed run sees the same batches), split over ``world_size`` processes;
    ``workers`` processes decode and collate, ``pin_memory`` (beside a GPU) lets Lightning copy
    the batches to it asynchronously.
    """
    sampler = StreamSampler(len(dataset), batch_size, val_interval, seed, world_size)
    return DataLoader(dataset, batch_size=sampler.per_rank_batch, sampler=sampler, collate_fn=collate,
                      drop_last=True, num_workers=workers, persistent_workers=workers > 0, pin_memory=pin_memory)


def eval_loader(dataset: Dataset, batch_size: int, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Every utterance of a split once, in order, ``batch_size`` at a time (``workers`` and
    ``pin_memory`` as in :func:`train_loader`)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=pin_memory)
