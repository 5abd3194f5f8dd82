"""Training audio, batches, crops and masks shared by the pretraining recipes.

Everything random here draws from a ``torch.Generator`` it is given (or one seeded from its
arguments), never from the global generator, so a step's batch, crops and mask depend only
on (seed, step) and a resumed run takes the same steps as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from harness.audio import SAMPLE_RATE, read_audio
from harness.corpus.layout import CorpusPaths
from harness.data.alignments import read_ctm
from harness.data.fsc import read_fsc
from harness.data.librispeech import SPLITS as LIBRI_SPLITS
from harness.data.librispeech import read_librispeech
from harness.data.voxceleb import read_voxceleb1
from harness.errors import HarnessError
from harness.upstream import conv_frames, normalise_waveforms

# HuBERT's waveform CNN: 400-sample receptive field, 320-sample hop (50 Hz frames)
CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)
LABEL_RATE_HOP = 320  # model frame hop in samples


@dataclass
class Audio:
    """The training audio of a corpus, in a fixed order."""

    ids: list[str]
    waves: list[np.ndarray]  # float32 at 16 kHz
    phone_ctm: dict  # LibriSpeech train utterance -> CTM phone segments (target quality only)


def load_train_audio(corpus: Path, layouts: Sequence[str], progress: bool = True) -> Audio:
    """Every train-split utterance of the chosen layouts (``librispeech``, ``fsc``,
    ``voxceleb1``) of a harness corpus, in a fixed order, as float32 waveforms at 16 kHz;
    with the LibriSpeech train phone alignments when the corpus has them.

    Raises HarnessError for an unknown layout or a corpus without training audio."""
    paths = CorpusPaths(Path(corpus))
    items: list[tuple[str, Path]] = []
    phone_ctm: dict = {}
    for layout in layouts:
        if layout == "librispeech":
            utts = read_librispeech(paths.librispeech, LIBRI_SPLITS["train"])
            items += [(u.id, u.path) for u in utts]
            ctm = paths.ctm(LIBRI_SPLITS["train"], "phones")
            if ctm.exists():
                phone_ctm = read_ctm(ctm)
        elif layout == "fsc":
            items += [(f"fsc/{u.id}", u.path) for u in read_fsc(paths.fsc, "train")]
        elif layout == "voxceleb1":
            items += [(f"vox/{u.id}", u.path) for u in read_voxceleb1(paths.voxceleb1, "train")]
        else:
            raise HarnessError(f"unknown pretraining layout {layout!r}; choose from librispeech, fsc, voxceleb1")
    if not items:
        raise HarnessError(f"no training audio found in {corpus}")
    waves = [read_audio(p) for _, p in tqdm(items, desc="reading audio", unit="utt", disable=not progress,
                                              leave=False)]
    return Audio([i for i, _ in items], waves, phone_ctm)


def model_frames(samples: int) -> int:
    """Frames (50 Hz) of the HuBERT/wav2vec 2.0 waveform CNN for ``samples`` input samples."""
    return int(conv_frames(torch.tensor([samples]), CONV_KERNEL, CONV_STRIDE)[0])


def span_mask(batch: int, frames: int, start_prob: float, span: int, g: torch.Generator) -> torch.Tensor:
    """``[batch, frames]`` bool: spans of ``span`` frames from ``round(start_prob * frames)``
    random starts per row (at least one), as in wav2vec 2.0 / HuBERT masking (p, M)."""
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    starts_n = max(1, round(start_prob * frames))
    room = max(frames - span + 1, 1)
    for b in range(batch):
        starts = torch.randperm(room, generator=g)[:starts_n]
        for s in starts.tolist():
            mask[b, s:s + span] = True
    return mask


def epoch_batches(lengths: Sequence[int], batch_seconds: float, max_crop: float, seed: int, epoch: int,
                  ) -> list[list[int]]:
    """Utterances grouped by (jittered) length so cropping to the shortest wastes little;
    each batch holds at most ``batch_seconds`` of cropped audio (crops of at most
    ``max_crop`` seconds; ``lengths`` in samples). Order shuffled per epoch."""
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    jitter = 1.0 + 0.1 * (torch.rand(len(lengths), generator=g) - 0.5)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i] * float(jitter[i]), i))
    batches, current, shortest = [], [], 0
    for i in order:
        crop = min(shortest if current else lengths[i], lengths[i], int(max_crop * SAMPLE_RATE))
        if current and crop * (len(current) + 1) > batch_seconds * SAMPLE_RATE:
            batches.append(current)
            current = []
        shortest = min(shortest, lengths[i]) if current else lengths[i]
        current.append(i)
    if current:
        batches.append(current)
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[p] for p in perm]


class StepBatches:
    """Step number -> batch (utterance indices): the epochs of `epoch_batches` laid end to
    end, stable across restarts."""

    def __init__(self, lengths: Sequence[int], batch_seconds: float, max_crop: float, seed: int) -> None:
        self.args = (list(lengths), batch_seconds, max_crop, seed)
        self.epochs: list[list[list[int]]] = []

    def __getitem__(self, step: int) -> list[int]:
        total = 0
        for batches in self._ensure(step):
            if step < total + len(batches):
                return batches[step - total]
            total += len(batches)
        raise AssertionError("unreachable")

    def _ensure(self, step: int) -> list[list[list[int]]]:
        while sum(len(b) for b in self.epochs) <= step:
            lengths, seconds, crop, seed = self.args
            self.epochs.append(epoch_batches(lengths, seconds, crop, seed, len(self.epochs)))
        return self.epochs


@dataclass
class Crops:
    """Equal-length crops of a batch of utterances."""

    wav: torch.Tensor  # [batch, samples], each row normalised to zero mean and unit variance
    starts: list[int]  # first model frame (50 Hz) of each crop in its utterance
    samples: int  # crop length in samples
    frames: int  # model frames of a crop


def random_crops(waves: Sequence[np.ndarray], idx: Sequence[int], max_crop_seconds: float,
                 g: torch.Generator) -> Crops:
    """Crop the utterances ``idx`` of ``waves`` to the shortest of them (at most
    ``max_crop_seconds``), each from a random frame boundary (one draw from ``g`` per
    utterance, in order), and normalise each crop as the upstreams do."""
    crop = min(min(len(waves[i]) for i in idx), int(max_crop_seconds * SAMPLE_RATE))
    starts, wavs = [], []
    for i in idx:
        first = int(torch.randint((len(waves[i]) - crop) // LABEL_RATE_HOP + 1, (1,), generator=g))
        starts.append(first)
        wavs.append(torch.from_numpy(waves[i][first * LABEL_RATE_HOP:first * LABEL_RATE_HOP + crop]))
    wav = normalise_waveforms(torch.stack(wavs), torch.full((len(idx),), crop))
    return Crops(wav, starts, crop, model_frames(crop))
