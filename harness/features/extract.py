"""Run an upstream over audio files with length-bucketed batching.

Utterances are sorted by length and batched so that padding stays small; for
padding-sensitive upstreams (group-norm CNNs, SpeechBrain models) only utterances
of identical length share a batch, so every utterance's layers equal what it gives
alone.

Long inputs run in bounded memory: self-attention costs memory quadratic in length (a
10-minute file took 2.75 GB with a 1.3 M-parameter model), so an utterance longer than
``LONG_SECONDS`` (150 s: longer than any utterance of LibriSpeech, FSC or VoxCeleb1, so
SUPERB corpora are never affected) given to a chunkable upstream (transformers) runs in
windows of ``CHUNK_SECONDS`` with ``CONTEXT_SECONDS`` of audio on each side, keeping each
window's centre frames on the file's own frame grid. Waveform normalisation uses the whole
file's statistics. What this changes, measured on a 200 s file: the CNN output (layer 0)
of layer-norm front ends is exact; transformer layers see 15 s of context instead of the
whole file and differ from a whole-file pass by up to 16% of the layer's range at the top
of the trained tiny HuBERT (0.6% for a random one), and group-norm front ends (Base models)
also change through their whole-file statistics (up to 41% of range for a random tiny
model). A model trained on crops of a few seconds has never seen a 200 s context either,
so neither output is the "true" one; the windows keep memory at a fixed ceiling.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from harness.audio import SAMPLE_RATE, read_audio
from harness.errors import HarnessError
from harness.fsutil import atomic_path
from harness.upstream import Upstream, normalise_waveforms, pad_batch


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


LONG_SECONDS = 150.0
CHUNK_SECONDS = 60.0
CONTEXT_SECONDS = 15.0


def chunked_layers(upstream: Upstream, wave: np.ndarray, wanted: set[int], chunk_s: float = CHUNK_SECONDS,
                   context_s: float = CONTEXT_SECONDS) -> list[np.ndarray | None]:
    """Layers of one long waveform from overlapping windows (see the module docstring).

    Window k keeps the frames whose index lies in its core [k*C, (k+1)*C) (in frames), so the
    stitched frames are exactly the whole file's frame grid; each window starts on a frame
    boundary, so its frame i is the file's frame (start / hop + i)."""
    hop = upstream.info.hop
    core = max(1, int(chunk_s * SAMPLE_RATE) // hop)  # frames per window core
    ctx = int(context_s * SAMPLE_RATE) // hop
    n = len(wave)
    pieces: list[list[np.ndarray]] = [[] for _ in range(upstream.num_layers)]
    normalize = upstream.normalize
    if normalize:  # the whole file's statistics, as the model would use them on the whole file
        wave = normalise_waveforms(torch.from_numpy(np.asarray(wave, np.float32))[None], torch.tensor([n]))[0].numpy()
        upstream.normalize = False
    try:
        return _windows(upstream, wave, wanted, core, ctx, hop, pieces)
    finally:
        upstream.normalize = normalize


def _windows(upstream: Upstream, wave: np.ndarray, wanted: set[int], core: int, ctx: int, hop: int,
             pieces: list[list[np.ndarray]]) -> list[np.ndarray | None]:
    n = len(wave)
    k = 0
    while True:
        first = max(0, k * core - ctx)  # first frame of the window
        start = first * hop
        stop = min(n, ((k + 1) * core + ctx) * hop + hop)
        x = torch.from_numpy(np.ascontiguousarray(wave[start:stop], dtype=np.float32))[None]
        out = upstream.layers(x, torch.tensor([x.shape[1]]))
        frames = int(out.lengths[min(wanted)][0])
        keep_from, keep_to = k * core - first, (k + 1) * core - first
        last = stop >= n
        for layer in wanted:
            h = out.hidden[layer][0, :frames].float().cpu().numpy()
            pieces[layer].append(h[keep_from: None if last else keep_to])
        if last:
            break
        k += 1
    return [np.concatenate(p) if layer in wanted else None for layer, p in enumerate(pieces)]


def iter_layers(upstream: Upstream, waves: Sequence[np.ndarray], max_samples: int = SAMPLE_RATE * 64,
                layers: Sequence[int] | None = None,
                long_seconds: float = LONG_SECONDS) -> Iterator[tuple[int, list[np.ndarray | None]]]:
    """Yield ``(index, [layer_0 [frames, dim], ...])`` for every waveform (float32 arrays);
    with ``layers``, only those are converted (the others are None)."""
    wanted = set(range(upstream.num_layers) if layers is None else layers)
    lengths = [len(w) for w in waves]
    long = {i for i, n in enumerate(lengths) if upstream.chunkable and n > long_seconds * SAMPLE_RATE}
    for i in sorted(long):
        yield i, chunked_layers(upstream, waves[i], wanted)
    rest = [i for i in range(len(waves)) if i not in long]
    for group in length_buckets([lengths[i] for i in rest], max_samples, upstream.padding_sensitive):
        batch = [rest[j] for j in group]
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
