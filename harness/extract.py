"""Run an upstream over audio files with length-bucketed batching.

Utterances are sorted by length and batched so that padding stays small; for
padding-sensitive upstreams (group-norm CNNs, SpeechBrain models) only utterances
of identical length share a batch, so every utterance's layers equal what it gives
alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .audio import SAMPLE_RATE, read_audio
from .errors import HarnessError
from .fsutil import atomic_path
from .upstream import Upstream, pad_batch


def length_buckets(lengths: Sequence[int], max_samples: int, exact: bool) -> list[list[int]]:
    """Group indices into batches of similar length.

    Each batch holds at most ``max_samples`` padded samples (at least one utterance);
    with ``exact`` only equal lengths share a batch. Order is deterministic.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]  # ascending order: the utterance being added is the longest so far
        same = not current or lengths[current[0]] == longest
        if current and ((longest * (len(current) + 1) > max_samples) or (exact and not same)):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def iter_layers(upstream: Upstream, waves: Sequence[np.ndarray], max_samples: int = SAMPLE_RATE * 64,
                layers: Sequence[int] | None = None) -> Iterator[tuple[int, list[np.ndarray | None]]]:
    """Yield ``(index, [layer_0 [frames, dim], ...])`` for every waveform (float32 arrays);
    with ``layers``, only those are converted (the others are None)."""
    wanted = set(range(upstream.num_layers) if layers is None else layers)
    lengths = [len(w) for w in waves]
    for batch in length_buckets(lengths, max_samples, upstream.padding_sensitive):
        wavs, lens = pad_batch([torch.from_numpy(np.asarray(waves[i], dtype=np.float32)) for i in batch])
        out = upstream.layers(wavs, lens)
        for k, i in enumerate(batch):
            yield i, [h.float().cpu().numpy() if l in wanted else None for l, h in enumerate(out.utterance(k))]


def streamed_layers(upstream: Upstream, waves: torch.Tensor, lengths: torch.Tensor, needed: Sequence[int],
                    ) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
    """Layers of a padded batch for a streamed run: ``(hidden, layer_lengths)``, with
    ``hidden[l]`` ``[B, T, D]`` and its frame counts for the needed layers (None for others).

    Padding-sensitive upstreams (group-norm CNNs, SpeechBrain models) never see padded
    frames: their utterances run in groups of equal length and are padded afterwards, so
    every utterance gets exactly what it gets alone."""
    upstream.eval()
    with torch.no_grad():
        if not upstream.padding_sensitive or bool((lengths == lengths.max()).all()):
            out = upstream.layers(waves, lengths)
            return ([h if i in needed else None for i, h in enumerate(out.hidden)],
                    [n if i in needed else None for i, n in enumerate(out.lengths)])
        per_utt: list[list[torch.Tensor]] = [None] * len(lengths)  # type: ignore[list-item]
        for group in length_buckets(lengths.tolist(), max_samples=int(lengths.max()) * len(lengths), exact=True):
            n = int(lengths[group[0]])
            out = upstream.layers(waves[group, :n], lengths[group])
            for k, i in enumerate(group):
                per_utt[i] = out.utterance(k)
    hidden: list[torch.Tensor | None] = [None] * len(per_utt[0])
    layer_lengths: list[torch.Tensor | None] = [None] * len(per_utt[0])
    for layer in needed:
        hidden[layer] = torch.nn.utils.rnn.pad_sequence([u[layer] for u in per_utt], batch_first=True)
        layer_lengths[layer] = torch.tensor([len(u[layer]) for u in per_utt])
    return hidden, layer_lengths


def extract_file(upstream: Upstream, wav_path: str | os.PathLike, out_path: str | os.PathLike) -> dict:
    """Write ``layer_0`` ... ``layer_{L-1}`` (float32 ``[frames, dim]``) of one file to an ``.npz``."""
    out_path = Path(out_path)
    if out_path.suffix != ".npz":
        raise HarnessError(f"--out must end in .npz (got {out_path.name})")
    wav = read_audio(wav_path)
    ((_, layers),) = list(iter_layers(upstream, [wav]))
    arrays = {f"layer_{i}": np.ascontiguousarray(a, dtype=np.float32) for i, a in enumerate(layers)}
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return {"layers": len(arrays), "shapes": [a.shape for a in arrays.values()], "names": upstream.info.layer_names}
