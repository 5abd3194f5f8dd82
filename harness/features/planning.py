"""The plan before any work: what a run will write to the feature cache, and whether it fits.

Bytes come from the audio headers (no decoding): for the ``frames`` kind each needed layer
stores ``frames x dim`` values of the cache dtype plus 8 bytes of length per utterance;
for ``pooled`` one float32 vector per utterance and layer. Frames per utterance are
``samples // hop`` (the CNN front ends give one or two fewer; the estimate errs high).
Layers already in the cache cost nothing. The plan fits when the bytes still to write,
plus 10% and 1 GiB of headroom, are free on the cache's filesystem.

Times come from measurements here, never from constants: :func:`time_extraction` runs the
upstream over a sample of about 20 s of audio on the run's device and precision and keeps
the layers it computed, which the training estimate
(:mod:`harness.probing.estimate`) then feeds to the real probes. Rates print with two
significant figures.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.audio import SAMPLE_RATE, audio_length, read_audio
from harness.features.cache import SHARD_SIZE, cache_key
from harness.features.device import Placement, choose_device
from harness.features.extract import BATCH_SECONDS, iter_layers, significant
from harness.task import SPLITS, Example

HEADROOM_FRACTION = 0.10
HEADROOM_BYTES = 1 << 30


def audio_samples(examples: Sequence[Example]) -> list[int]:
    """Samples per file from the headers (soundfile reads no audio for this)."""
    return [audio_length(e.path, e.segment) for e in examples]


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


@dataclass
class SplitPlan:
    """One split of a cache plan: utterances, hours of audio, frames, bytes to store and already stored."""
    split: str
    utterances: int
    hours: float
    frames: int  # frame-level frames per layer
    bytes_total: int  # the needed layers, whole
    bytes_to_write: int  # minus what the cache already holds


@dataclass
class FeaturePlan:
    """What a cached run would extract and store, whether it fits on the disk, and how long it
    should take (from a timed sample); ``format()`` prints it for ``harness plan``.
    """
    upstream: str
    task: str
    layers: list[int]
    dims: list[int]
    kind: str  # frames | pooled
    dtype: str
    cache_root: Path
    splits: list[SplitPlan]
    free: int
    extraction_rate: float | None = None  # seconds of audio per second, measured on a sample
    extraction_device: str = ""  # where the rate was measured (Placement.describe())
    cache_mode: str = "disk"  # the run's --cache: disk, auto or none
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_to_write(self) -> int:
        """Bytes the run would add to the cache (what is missing)."""
        return sum(s.bytes_to_write for s in self.splits)

    @property
    def bytes_total(self) -> int:
        """Bytes of the whole entry once complete."""
        return sum(s.bytes_total for s in self.splits)

    @property
    def hours(self) -> float:
        """Hours of audio over all splits."""
        return sum(s.hours for s in self.splits)

    @property
    def needed_with_headroom(self) -> int:
        """Bytes to write plus 10% and 1 GB of headroom."""
        if self.bytes_to_write == 0:
            return 0
        return int(self.bytes_to_write * (1 + HEADROOM_FRACTION)) + HEADROOM_BYTES

    @property
    def fits(self) -> bool:
        """True when the bytes with headroom fit in the free space of the cache's disk."""
        return self.needed_with_headroom <= self.free

    @property
    def streamed(self) -> bool:
        """True when the upstream would run inside every step (``--cache none``, or a cache that
        does not fit: ``auto`` streams, ``disk`` refuses and names streaming as a way out)."""
        return self.cache_mode == "none" or not self.fits

    @property
    def extraction_seconds(self) -> float | None:
        """Estimated extraction time from the measured rate (None when not timed)."""
        if not self.extraction_rate:
            return None
        todo_hours = sum(s.hours for s in self.splits if s.bytes_to_write)
        return todo_hours * 3600 / self.extraction_rate

    def refusal(self) -> str:
        """The one-line error when the cache does not fit."""
        return (f"the feature cache needs {human_bytes(self.bytes_to_write)} for layer(s) {layer_list(self.layers)} "
                f"of {self.upstream} on {self.hours:.1f} h of audio ({human_bytes(self.needed_with_headroom)} with "
                f"headroom) but {self.cache_root} has {human_bytes(self.free)} free; ways out: fewer layers "
                f"(--layer N), --cache none (stream the upstream in every step, no disk), or another HARNESS_HOME")

    def format(self) -> str:
        """The plan as printed by ``harness plan``."""
        lines = [f"plan: {self.upstream} · {self.task} · layer(s) {layer_list(self.layers)} · {self.kind} cache "
                 f"({'float32' if self.kind == 'pooled' else self.dtype})",
                 f"{'split':<8}{'utterances':>12}{'hours':>9}{'frames/layer':>15}{'cache bytes':>14}{'to write':>14}"]
        for s in self.splits:
            lines.append(f"{s.split:<8}{s.utterances:>12,}{s.hours:>9.2f}{s.frames:>15,}{human_bytes(s.bytes_total):>14}"
                         f"{human_bytes(s.bytes_to_write):>14}")
        lines.append(f"{'total':<8}{sum(s.utterances for s in self.splits):>12,}{self.hours:>9.2f}"
                     f"{sum(s.frames for s in self.splits):>15,}{human_bytes(self.bytes_total):>14}"
                     f"{human_bytes(self.bytes_to_write):>14}")
        lines.append(f"cache: {self.cache_root} · free {human_bytes(self.free)} · needed with headroom "
                     f"{human_bytes(self.needed_with_headroom)} · {'fits' if self.fits else 'DOES NOT FIT'}")
        if self.cache_mode == "none":
            lines.append("mode: none (--cache none): the upstream runs inside every step; nothing is written")
        elif self.fits:
            lines.append("mode: disk (extract once, train from the cache)")
        else:
            lines.append("mode: none: stream the upstream inside every step (" +
                         ("--cache auto does)" if self.cache_mode == "auto" else "run with --cache none or --cache auto)"))
        if self.extraction_rate:
            where = f"measured on a sample on {self.extraction_device or 'this machine'}"
            if self.streamed:
                lines.append(f"upstream forward: {significant(self.extraction_rate)} s of audio per s, {where} "
                             "(it runs inside every training and evaluation step)")
            else:
                lines.append(f"extraction: {significant(self.extraction_rate)} s of audio per s, {where} -> about "
                             f"{human_seconds(self.extraction_seconds or 0.0)} for what is missing")
        lines += self.notes
        return "\n".join(lines)


def human_bytes(n: float) -> str:
    """Bytes in kB/MB/GB/TB (decimal units)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} PB"


def human_seconds(s: float) -> str:
    """Seconds as s, min or h, two significant figures (``45 s``, ``5.0 min``, ``2.4 h``, ``600 h``)."""
    if s < 90:
        return f"{significant(s)} s"
    if s < 5400:
        return f"{significant(s / 60)} min"
    return f"{significant(s / 3600)} h"


def layer_list(layers: Sequence[int]) -> str:
    """Layer indices compactly, e.g. ``0-12`` or ``1, 4, 7``."""
    layers = list(layers)
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def plan_features(upstream, task, examples: dict[str, list[Example]], layers: Sequence[int], pooled: bool,
                  dtype: str, cache_root: Path, samples: dict[str, list[int]] | None = None,
                  placement: Placement | None = None) -> FeaturePlan:
    """The cache plan for a run (reads only audio headers and the cache's folder names);
    ``placement`` names the entries (see :func:`~harness.features.cache.cache_key`)."""
    kind = "pooled" if pooled else "frames"
    info = upstream.info
    itemsize = 4 if pooled else np.dtype(dtype).itemsize
    splits = []
    for split in SPLITS:
        ex = examples[split]
        n_samples = samples[split] if samples is not None else audio_samples(ex)
        frames = sum(max(1, n // info.hop) for n in n_samples) if info.hop else len(ex)
        present = _present_layers(Path(cache_root) / cache_key(upstream, task.dataset, split, ex, kind, dtype,
                                                               placement), len(ex))
        total = write = 0
        for layer in layers:
            if pooled:
                b = len(ex) * info.dims[layer] * itemsize
            else:
                rows = frames if info.is_frame_level(layer) else len(ex)
                b = rows * info.dims[layer] * itemsize + 8 * len(ex)
            total += b
            write += 0 if layer in present else b
        splits.append(SplitPlan(split, len(ex), sum(n_samples) / SAMPLE_RATE / 3600, frames, total, write))
    return FeaturePlan(info.spec, task.name, list(layers), list(info.dims), kind, dtype, Path(cache_root), splits,
                       free_bytes(cache_root))


def _present_layers(folder: Path, utterances: int) -> set[int]:
    """Layers whose data file is in every shard of an existing entry (a quick look)."""
    shards = folder / "shards"
    if not shards.is_dir():
        return set()
    n = (utterances + SHARD_SIZE - 1) // SHARD_SIZE
    present = None
    for s in range(n):
        d = shards / f"{s:05d}"
        have = {int(p.name[6:8]) for p in d.glob("layer_??.npy")} if d.is_dir() else set()
        present = have if present is None else present & have
    return present or set()


@dataclass
class ExtractionTiming:
    """A timed forward pass over a sample: the rate in seconds of audio per wall second, where
    it was measured (:meth:`~harness.features.device.Placement.describe`), the sampled
    examples and, per example, its length in samples and the layers asked for (float32
    ``[frames, dim]``, None for others) for the training estimate."""
    rate: float
    device: str
    examples: list[Example]
    samples: list[int]
    layers: list[list[np.ndarray | None]]


def time_extraction(upstream, examples: Sequence[Example], placement: Placement | None = None,
                    layers: Sequence[int] | None = None, seconds: float = 20.0,
                    batch_seconds: float = BATCH_SECONDS) -> ExtractionTiming:
    """Seconds of audio per wall second for this upstream on ``placement`` (default:
    :func:`~harness.features.device.choose_device`'s defaults), from a forward pass over a
    seeded sample of about ``seconds`` of audio batched as extraction batches it (after one
    warm-up utterance); the sample's ``layers`` (default: all) come back with the rate."""
    placement = placement or choose_device()
    if not examples:
        return ExtractionTiming(0.0, placement.describe(), [], [], [])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(examples))
    waves, picked, total = [], [], 0
    for i in order:
        e = examples[int(i)]
        w = read_audio(e.path, segment=e.segment)
        waves.append(w)
        picked.append(e)
        total += len(w)
        if total >= seconds * SAMPLE_RATE:
            break
    list(iter_layers(upstream, waves[:1], layers=layers, placement=placement))  # warm-up
    out: list[list[np.ndarray | None]] = [None] * len(waves)  # type: ignore[list-item]
    placement.synchronize()
    t = time.perf_counter()
    for i, got in iter_layers(upstream, waves, batch_seconds, layers=layers, placement=placement):
        out[i] = got
    placement.synchronize()
    rate = total / SAMPLE_RATE / max(time.perf_counter() - t, 1e-9)
    return ExtractionTiming(rate, placement.describe(), picked, [len(w) for w in waves], out)
