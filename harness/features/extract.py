"""Run an upstream over audio, batched by total audio duration, on the chosen device.

Batches: utterances are sorted by length and grouped so that each batch holds at most
``batch_seconds`` (64 s by default) of padded audio; for padding-sensitive upstreams
(group-norm CNNs, SpeechBrain models) only utterances of identical length share a batch, so
every utterance's layers equal what it gives alone. Each batch runs on the device and in the
precision :func:`~harness.features.device.choose_device` picked (autocast for the mixed
precisions, layers back in float32 or the cache's dtype); each layer comes back to the host
in one copy per batch.

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

For the feature cache, :class:`ShardAudio` decodes a shard's audio (in DataLoader worker
processes when there are any) straight into the padded batches the forward pass takes, so
decoding overlaps the forward pass and pinned batches reach the GPU asynchronously.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from harness.audio import SAMPLE_RATE, read_audio
from harness.errors import HarnessError
from harness.features.device import Placement, choose_device
from harness.fsutil import atomic_path
from harness.task import Example
from harness.upstream import Upstream, normalise_waveforms, pad_batch

#: padded seconds of audio per forward batch (the default of ``--batch-seconds``)
BATCH_SECONDS = 64.0
LONG_SECONDS = 150.0
CHUNK_SECONDS = 60.0
CONTEXT_SECONDS = 15.0


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


def plan_batches(lengths: Sequence[int], padding_sensitive: bool, chunkable: bool,
                 batch_seconds: float = BATCH_SECONDS,
                 long_seconds: float = LONG_SECONDS) -> tuple[list[list[int]], list[int]]:
    """``(batches, long)``: the forward batches of the ordinary utterances (indices into
    ``lengths``, in samples; at most ``batch_seconds`` of padded audio each, equal lengths only
    when ``padding_sensitive``) and the utterances that run alone in windows (longer than
    ``long_seconds`` for a ``chunkable`` upstream)."""
    if batch_seconds <= 0:
        raise HarnessError(f"--batch-seconds must be positive, got {batch_seconds}")
    long = [i for i, n in enumerate(lengths) if chunkable and n > long_seconds * SAMPLE_RATE]
    skip = set(long)
    rest = [i for i in range(len(lengths)) if i not in skip]
    groups = length_buckets([lengths[i] for i in rest], int(batch_seconds * SAMPLE_RATE), padding_sensitive)
    return [[rest[j] for j in g] for g in groups], long


def batch_layers(upstream: Upstream, wavs: torch.Tensor, lengths: torch.Tensor, wanted: set[int],
                 placement: Placement, dtype: torch.dtype = torch.float32) -> list[list[np.ndarray | None]]:
    """One padded batch (``wavs`` ``[B, samples]``, ``lengths`` ``[B]``, on the host, pinned or
    not) through the upstream on ``placement`` (already placed there); per utterance, each
    wanted layer's valid frames ``[frames, dim]`` as ``dtype`` host arrays (None for others).
    Each layer crosses to the host in one copy."""
    with torch.no_grad(), placement.autocast():
        out = upstream.layers(placement.to_device(wavs), placement.to_device(lengths))
    host = {layer: out.hidden[layer].to(dtype).cpu() for layer in wanted}
    frames = {layer: out.lengths[layer].cpu().tolist() for layer in wanted}
    return [[host[layer][k, : frames[layer][k]].numpy() if layer in wanted else None
             for layer in range(len(out.hidden))] for k in range(len(lengths))]


def chunked_layers(upstream: Upstream, wave: np.ndarray, wanted: set[int], chunk_s: float = CHUNK_SECONDS,
                   context_s: float = CONTEXT_SECONDS, placement: Placement | None = None,
                   dtype: torch.dtype = torch.float32) -> list[np.ndarray | None]:
    """Layers of one long waveform ``[samples]`` from overlapping windows (see the module
    docstring): per layer ``[frames, dim]`` (None for layers not wanted).

    Window k keeps the frames whose index lies in its core [k*C, (k+1)*C) (in frames), so the
    stitched frames are exactly the whole file's frame grid; each window starts on a frame
    boundary, so its frame i is the file's frame (start / hop + i)."""
    placement = placement or choose_device()
    hop = upstream.info.hop
    core = max(1, int(chunk_s * SAMPLE_RATE) // hop)  # frames per window core
    ctx = int(context_s * SAMPLE_RATE) // hop
    n = len(wave)
    normalize = upstream.normalize
    if normalize:  # the whole file's statistics, as the model would use them on the whole file
        wave = normalise_waveforms(torch.from_numpy(np.asarray(wave, np.float32))[None], torch.tensor([n]))[0].numpy()
        upstream.normalize = False
    pieces: list[list[np.ndarray]] = [[] for _ in range(upstream.num_layers)]
    try:
        with placement.placed(upstream):
            k = 0
            while True:
                first = max(0, k * core - ctx)  # first frame of the window
                start, stop = first * hop, min(n, ((k + 1) * core + ctx) * hop + hop)
                x = torch.from_numpy(np.ascontiguousarray(wave[start:stop], dtype=np.float32))[None]
                (out,) = batch_layers(upstream, x, torch.tensor([x.shape[1]]), wanted, placement, dtype)
                keep_from, keep_to = k * core - first, (k + 1) * core - first
                last = stop >= n
                for layer in wanted:
                    pieces[layer].append(out[layer][keep_from: None if last else keep_to])
                if last:
                    break
                k += 1
    finally:
        upstream.normalize = normalize
    return [np.concatenate(p) if layer in wanted else None for layer, p in enumerate(pieces)]


def iter_layers(upstream: Upstream, waves: Sequence[np.ndarray], batch_seconds: float = BATCH_SECONDS,
                layers: Sequence[int] | None = None, long_seconds: float = LONG_SECONDS,
                placement: Placement | None = None) -> Iterator[tuple[int, list[np.ndarray | None]]]:
    """Yield ``(index, [layer_0 [frames, dim], ...])`` for every waveform (float32 host arrays),
    long ones first, then by length; with ``layers``, only those are converted (the others
    are None). ``placement``: where and in what precision (default: :func:`choose_device`'s
    defaults, i.e. a GPU when there is one, float32)."""
    placement = placement or choose_device()
    wanted = set(range(upstream.num_layers) if layers is None else layers)
    batches, long = plan_batches([len(w) for w in waves], upstream.padding_sensitive, upstream.chunkable,
                                 batch_seconds, long_seconds)
    with placement.placed(upstream):
        for i in long:
            yield i, chunked_layers(upstream, waves[i], wanted, placement=placement)
        for batch in batches:
            wavs, lens = pad_batch([torch.from_numpy(np.asarray(waves[i], dtype=np.float32)) for i in batch])
            if placement.pin_memory:
                wavs = wavs.pin_memory()
            yield from zip(batch, batch_layers(upstream, wavs, lens, wanted, placement))


def streamed_layers(upstream: Upstream, waves: torch.Tensor, lengths: torch.Tensor, needed: Sequence[int],
                    placement: Placement | None = None) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
    """Layers of a padded batch for a streamed run (``waves`` ``[B, samples]`` and ``lengths``
    on the upstream's device): ``(hidden, layer_lengths)``, with ``hidden[l]`` ``[B, T, D]``
    float32 and its frame counts for the needed layers (None for others), the forward run in
    ``placement``'s precision.

    Padding-sensitive upstreams (group-norm CNNs, SpeechBrain models) never see padded
    frames: their utterances run in groups of equal length and are padded afterwards, so
    every utterance gets exactly what it gets alone."""
    upstream.eval()
    with torch.no_grad(), placement.autocast() if placement is not None else contextlib.nullcontext():
        if not upstream.padding_sensitive or bool((lengths == lengths.max()).all()):
            out = upstream.layers(waves, lengths)
            return ([h.float() if i in needed else None for i, h in enumerate(out.hidden)],
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
        hidden[layer] = torch.nn.utils.rnn.pad_sequence([u[layer].float() for u in per_utt], batch_first=True)
        layer_lengths[layer] = torch.tensor([len(u[layer]) for u in per_utt], device=waves.device)
    return hidden, layer_lengths


#: audio files a folder given to ``harness extract --wav`` contributes (what soundfile decodes)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def extraction_inputs(source: str | os.PathLike) -> list[tuple[Path, Path]]:
    """``(audio file, its .npz name relative to the output folder)`` for ``harness extract
    --wav``: one audio file; a folder (its audio files, recursively, in sorted order, named by
    their path inside it); or a text list (``.txt``/``.lst``: one path per line, relative
    paths from the list's folder, named by their file name). HarnessError when there is nothing
    to read."""
    source = Path(source)
    if not source.exists():
        raise HarnessError(f"--wav {source}: file or folder not found")
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if not files:
            raise HarnessError(f"--wav {source}: no {'/'.join(AUDIO_SUFFIXES)} files in this folder")
        return [(p, p.relative_to(source).with_suffix(".npz")) for p in files]
    if source.suffix.lower() in (".txt", ".lst"):
        lines = [line.strip() for line in source.read_text().splitlines() if line.strip() and not line.startswith("#")]
        if not lines:
            raise HarnessError(f"--wav {source}: the list is empty")
        files = [p if p.is_absolute() else source.parent / p for p in map(Path, lines)]
        names = [Path(p.name).with_suffix(".npz") for p in files]
        if len(set(names)) != len(names):
            raise HarnessError(f"--wav {source}: two listed files share a name; give a folder instead")
        return list(zip(files, names))
    return [(source, Path(source.name).with_suffix(".npz"))]


@dataclass
class ExtractSummary:
    """What ``harness extract`` wrote: the .npz files, those already there (skipped), the inputs
    shorter than the upstream's shortest input (left out), and the layer names and shapes of the
    first file written."""

    written: list[Path]
    existing: list[Path]
    too_short: list[Path]
    min_samples: int
    names: list[str]
    shapes: list[tuple[int, ...]]

    def format(self) -> str:
        """The lines ``harness extract`` prints."""
        lines = []
        if len(self.written) == 1 and not self.existing and not self.too_short:
            lines.append(f"{self.written[0]}: {len(self.shapes)} layers "
                         + ", ".join(f"{n} {s[0]}x{s[1]}" for n, s in zip(self.names, self.shapes)))
        else:
            lines.append(f"wrote {len(self.written)} file(s)" + (f", {len(self.existing)} already there"
                                                                  if self.existing else "")
                         + (f"; layers {', '.join(self.names)}" if self.names else ""))
        if self.too_short:
            lines.append(f"left out {len(self.too_short)} file(s) shorter than {self.min_samples} samples (the "
                         f"upstream's shortest input), first {self.too_short[0]}")
        return "\n".join(lines)


def extract_files(upstream: Upstream, source: str | os.PathLike, out: str | os.PathLike,
                  placement: Placement | None = None, resample: bool = False,
                  batch_seconds: float = BATCH_SECONDS, group: int = 64) -> ExtractSummary:
    """Write ``layer_0`` ... ``layer_{L-1}`` (float32 ``[frames, dim]``) of every input of
    ``source`` (:func:`extraction_inputs`) to ``.npz`` files: ``out`` is the file for a single
    input (it must end in ``.npz``), else a folder mirroring the inputs' names. Audio is read as
    mono (channels averaged) at 16 kHz; another rate is refused unless ``resample`` (then
    converted with torchaudio's resampler). Files are batched by length as the feature cache
    batches them, ``group`` files at a time; an output already there is kept (a rerun resumes),
    each written atomically. An input shorter than the upstream's shortest input is refused in
    one line when it is the only one, else left out and counted. Raises HarnessError for bad
    inputs, non-finite audio or an ``out`` of the wrong kind."""
    inputs = extraction_inputs(source)
    out = Path(out)
    single = len(inputs) == 1 and not Path(source).is_dir() and Path(source).suffix.lower() not in (".txt", ".lst")
    if single and out.suffix != ".npz":
        raise HarnessError(f"--out must end in .npz for one input file (got {out.name})")
    if not single and out.suffix == ".npz":
        raise HarnessError(f"--wav {source} names {len(inputs)} files: --out must be a folder, not {out.name}")
    targets = [out] if single else [out / name for _, name in inputs]
    need = upstream.info.shortest_input()
    summary = ExtractSummary([], [], [], need, list(upstream.info.layer_names), [])
    todo = []
    for (path, _), target in zip(inputs, targets):
        if target.exists() and not single:
            summary.existing.append(target)
        else:
            todo.append((path, target))
    for start in range(0, len(todo), group):
        chunk = todo[start:start + group]
        waves, kept = [], []
        for path, target in chunk:
            wave = read_audio(path, resample=resample)
            if len(wave) < need:
                if single:
                    raise HarnessError(f"{path} has {len(wave)} samples, shorter than {need} ({need / SAMPLE_RATE * 1000:.0f}"
                                       f" ms), the shortest input of {upstream.info.spec or 'this upstream'}")
                summary.too_short.append(path)
                continue
            waves.append(wave)
            kept.append(target)
        for i, layers in iter_layers(upstream, waves, batch_seconds=batch_seconds, placement=placement):
            arrays = {f"layer_{k}": np.ascontiguousarray(a, dtype=np.float32) for k, a in enumerate(layers)}
            kept[i].parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(kept[i]) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
            summary.written.append(kept[i])
            if not summary.shapes:
                summary.shapes = [a.shape for a in arrays.values()]
    summary.written.sort()
    return summary


# ------------------------------------------------------------ the cache's audio


class ShardAudio(Dataset):
    """Item k: shard ``shards[k]`` of a cache entry, decoded and cut into its forward batches.

    An item is ``{"shard", "skip", "samples", "batches", "long"}``: ``skip`` is True (and
    nothing is decoded) when the shard already holds ``layers``; ``samples``: per utterance of
    the shard, its length; ``batches``: ``(positions in the shard, wavs [B, samples],
    lengths [B])`` as :func:`plan_batches` groups them; ``long``: ``(position, wave)`` of the
    utterances that run in windows. Runs in DataLoader workers (pinning is the loader's).
    """

    def __init__(self, entry, examples: Sequence[Example], shards: Sequence[int], layers: Sequence[int],
                 padding_sensitive: bool, chunkable: bool, batch_seconds: float = BATCH_SECONDS) -> None:
        self.entry, self.examples, self.shards, self.layers = entry, examples, list(shards), list(layers)
        self.padding_sensitive, self.chunkable, self.batch_seconds = padding_sensitive, chunkable, batch_seconds

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, k: int) -> dict:
        return self.decode(self.shards[k])

    def decode(self, shard: int, check: bool = True) -> dict:
        """The item of shard ``shard`` (``check``: skip it when nothing is missing)."""
        if check and not self.entry.missing(shard, self.layers):
            return {"shard": shard, "skip": True}
        first = self.entry.manifest["shards"][shard]["first"]
        chunk = self.examples[first: first + self.entry.shard_count(shard)]
        waves = [read_audio(e.path, segment=e.segment) for e in chunk]
        lengths = [len(w) for w in waves]
        groups, long = plan_batches(lengths, self.padding_sensitive, self.chunkable, self.batch_seconds)
        batches = []
        for g in groups:
            wavs, lens = pad_batch([torch.from_numpy(waves[i]) for i in g])
            batches.append((g, wavs, lens))
        return {"shard": shard, "skip": False, "samples": lengths, "batches": batches,
                "long": [(i, torch.from_numpy(waves[i])) for i in long]}


# --------------------------------------------------------------------- progress


def significant(x: float, digits: int = 2) -> str:
    """``x`` to ``digits`` significant figures, thousands separated: 0.4321 -> ``0.43``,
    1.74 -> ``1.7``, 58.3 -> ``58``, 1234 -> ``1,200``."""
    if x == 0 or not np.isfinite(x):
        return f"{x:g}"
    magnitude = int(np.floor(np.log10(abs(x))))
    decimals = max(0, digits - 1 - magnitude)
    rounded = round(x, digits - 1 - magnitude)
    return f"{rounded:,.{decimals}f}"


class ExtractionProgress:
    """Per-utterance progress of an extraction: utterances and seconds of audio done, the rate
    in seconds of audio per second, and (when enabled) a bar on stderr whose ETA follows the
    utterances still to go."""

    def __init__(self, total: int, desc: str, enabled: bool = True) -> None:
        self.total, self.utterances, self.samples = total, 0, 0
        self.start = time.perf_counter()
        self.bar = tqdm(total=total, unit="utt", desc=desc, file=sys.stderr, disable=not enabled, dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} utt "
                                   "[{elapsed}<{remaining}{postfix}]")

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio extracted so far."""
        return self.samples / SAMPLE_RATE

    @property
    def rate(self) -> float:
        """Seconds of audio per wall second so far (0 before the first utterance)."""
        elapsed = time.perf_counter() - self.start
        return self.audio_seconds / elapsed if elapsed > 0 else 0.0

    def advance(self, samples: int = 0, utterances: int = 1) -> None:
        """``utterances`` more done, holding ``samples`` of audio (0 for ones another process did)."""
        self.utterances += utterances
        self.samples += samples
        if samples:
            self.bar.set_postfix_str(f"{significant(self.rate)} s of audio/s", refresh=False)
        self.bar.update(utterances)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()
