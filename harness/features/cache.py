"""Feature cache: the layers a run needs, extracted once per (upstream weights, corpus split, settings).

Two kinds:
- ``frames``: per-utterance ``[frames, dim]`` arrays (fp16 by default), for frame-level and
  CTC heads;
- ``pooled``: per-utterance means ``[dim]`` in float32, for utterance heads whose first
  operation is linear (projection then mean pool), where they are exact.

Layout of one entry ``$HARNESS_HOME/features/<key>/``::

    manifest.json                        what the entry is (ids, shards, layer names, dims)
    shards/NNNNN/layer_LL.npy            one layer of 64 utterances: frames concatenated
                                         [sum of frames, dim] (or [utterances, dim] pooled)
    shards/NNNNN/layer_LL.lengths.npy    frames per utterance (frames kind)
    locks/NNNNN.lock                     held while a process extracts that shard
    extraction.log                       one line per shard extracted: layers, host, pid, rank

Layer-selective: an entry holds whatever layers runs have asked for. A run that needs
layers the entry lacks extracts only those (one upstream pass per shard computes every
missing layer at once) and adds them; existing files are never rewritten.

Safe under concurrency: each layer file is written under a unique temporary name and
renamed (lengths first, data last, so a present data file means a complete layer); a
process extracts a shard only while holding its lock and re-checks what is missing after
taking it, so two runs sharing a ``HARNESS_HOME`` never compute a shard twice and never
see a partial one. Under torchrun or SLURM each rank first extracts its own share
(shard index modulo world size) and then waits for, or takes over, the rest; every rank
leaves only when the whole entry holds the layers it needs.

Verified: when opened, every layer file's shape is checked against the manifest and its
lengths; a damaged or half-written layer is deleted and extracted again, with one line
saying so.

The key hashes the upstream identity (weights sha256, or spec + seed for random weights),
the corpus content (manifest hashes when the corpus has a manifest, else sizes and
mtimes), the split's utterance list, the kind, the dtype, the extraction code version and
where the forward pass ran (:meth:`~harness.features.device.Placement.identity`: the device
type when not the CPU, the precision when not ``32-true``; nothing for the CPU in float32,
so entries made before those options existed keep their keys).

Extraction: shards are decoded (in DataLoader worker processes beside a GPU) into forward
batches of at most ``batch_seconds`` of padded audio, sorted by length
(:class:`~harness.features.extract.ShardAudio`), while the previous shard runs; the
progress bar advances per utterance with the rate in seconds of audio per second.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from harness.errors import HarnessError
from harness.features.device import Placement, choose_device, launcher_position
from harness.features.extract import (
    BATCH_SECONDS,
    ExtractionProgress,
    ShardAudio,
    batch_layers,
    chunked_layers,
)
from harness.fsutil import atomic_path, default_home, file_lock, file_stamp, write_json
from harness.task import Example
from harness.upstream import Upstream

#: bumped when extraction or the key's form changes (3: the upstream identity shared with run keys)
EXTRACTION_VERSION = 3
SHARD_SIZE = 64
KINDS = ("frames", "pooled")


@functools.lru_cache(maxsize=1 << 16)
def _real_path(path: str) -> Path:
    """``os.path.realpath`` once per process and path: a benchmark resolves the same corpus files
    for every upstream's runs (symbolic links changed during a process are not followed anew)."""
    return Path(os.path.realpath(path))


@functools.lru_cache(maxsize=4)
def _manifest_table(manifest: Path, stamp: tuple[int, int] | None) -> dict[str, str]:
    """``relative path -> sha256`` of one manifest.sha256, read once per (file, :func:`file_stamp`)."""
    table = {}
    for line in manifest.read_text().splitlines():
        h, _, rel = line.partition("  ")
        table[rel] = h
    return table


def _corpus_fingerprints(examples: Sequence[Example]) -> list[str]:
    """Content hash of each audio file from the nearest manifest.sha256, else size+mtime.

    Each folder's manifest (or its absence) is looked up once per call and each manifest read
    once per process while unchanged: a benchmark resolving many runs' identities over the same
    corpus reads its 8,000-line manifest once, not once per run."""
    owner: dict[Path, Path | None] = {}  # folder -> folder holding its nearest manifest
    tables: dict[Path, dict[str, str]] = {}
    out = []
    for e in examples:
        path = _real_path(str(e.path))
        folder = path.parent
        if folder not in owner:
            owner[folder] = next((p for p in (folder, *folder.parents) if (p / "manifest.sha256").exists()), None)
        root = owner[folder]
        digest = None
        if root is not None:
            if root not in tables:
                manifest = root / "manifest.sha256"
                tables[root] = _manifest_table(manifest, file_stamp(manifest))
            digest = tables[root].get(path.relative_to(root).as_posix())
        if digest is None:
            st = path.stat()
            digest = f"{st.st_size}:{st.st_mtime_ns}"
        out.append(digest)
    return out


def cache_key(upstream: Upstream, dataset: str, split: str, examples: Sequence[Example], kind: str,
              dtype: str, placement: Placement | None = None) -> str:
    """The feature-cache entry's name: a hash of the extraction version, the upstream's identity
    (:meth:`~harness.upstream.Upstream.identity`) and notes, the dataset and split, every utterance's
    id and audio fingerprint, the kind (frames or pooled), the stored dtype and the placement's
    non-default fields (:meth:`~harness.features.device.Placement.identity`; ``None``: the CPU in
    float32, which adds nothing).
    """
    payload = {
        "version": EXTRACTION_VERSION, "upstream": upstream.identity(), "notes": upstream.info.notes,
        "dataset": dataset,
        "split": split, "kind": kind, "dtype": dtype,
        "utterances": [[e.id, fp] for e, fp in zip(examples, _corpus_fingerprints(examples))],
        **(placement.identity() if placement is not None else {}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _distributed_position() -> tuple[int, int]:
    """(rank, world size) of this process among the ones a launcher started together
    (torchrun, SLURM), before torch.distributed is initialised; (0, 1) otherwise."""
    rank, world, _ = launcher_position()
    return rank, world


# ----------------------------------------------------------------------- entry


@dataclass
class CacheEntry:
    """A cache entry folder and its manifest."""

    root: Path
    manifest: dict

    @property
    def kind(self) -> str:
        """``frames`` or ``pooled``."""
        return self.manifest["kind"]

    @property
    def store_dtype(self) -> np.dtype:
        """The dtype layer files are stored in (float16 frames by default, float32 pooled means)."""
        return np.dtype(self.manifest["dtype"])

    def shard_dir(self, index: int) -> Path:
        """Folder of shard ``index``."""
        return self.root / "shards" / f"{index:05d}"

    def data_file(self, shard: int, layer: int) -> Path:
        """The ``.npy`` holding one layer of one shard (frames concatenated, or one row per utterance)."""
        return self.shard_dir(shard) / f"layer_{layer:02d}.npy"

    def lengths_file(self, shard: int, layer: int) -> Path:
        """The ``.npy`` of frames per utterance for one layer of one shard (frames kind)."""
        return self.shard_dir(shard) / f"layer_{layer:02d}.lengths.npy"

    def shard_count(self, shard: int) -> int:
        """Utterances in shard ``shard``."""
        return self.manifest["shards"][shard]["count"]

    @property
    def num_shards(self) -> int:
        """Number of shards (utterances / SHARD_SIZE, rounded up)."""
        return len(self.manifest["shards"])

    def layer_ok(self, shard: int, layer: int) -> bool:
        """Is this layer of this shard present and consistent (shape, dtype, lengths)?"""
        data = self.data_file(shard, layer)
        if not data.exists():
            return False
        try:
            arr = np.load(data, mmap_mode="r")
            dim = self.manifest["dims"][layer]
            if arr.dtype != self.store_dtype or arr.ndim != 2 or arr.shape[1] != dim:
                return False
            if self.kind == "pooled":
                return arr.shape[0] == self.shard_count(shard)
            lengths = np.load(self.lengths_file(shard, layer))
            return lengths.shape == (self.shard_count(shard),) and int(lengths.sum()) == arr.shape[0]
        except (OSError, ValueError, EOFError):
            return False

    def missing(self, shard: int, layers: Sequence[int]) -> list[int]:
        """Those of ``layers`` that shard ``shard`` lacks or holds damaged (verified, see :meth:`layer_ok`)."""
        return [l for l in layers if not self.layer_ok(shard, l)]

    def discard(self, shard: int, layer: int) -> None:
        """Delete one layer's files of a shard (a half-written or damaged leftover), if present."""
        for f in (self.data_file(shard, layer), self.lengths_file(shard, layer)):
            try:
                f.unlink()
            except FileNotFoundError:
                pass

    def layers_present(self) -> list[int]:
        """Layers every shard holds (a quick look: file presence, not verification)."""
        return [l for l in range(self.manifest["num_layers"])
                if all(self.data_file(s, l).exists() for s in range(self.num_shards))]

    def open(self, layers: Sequence[int]) -> "CachedFeatures":
        """Memory-mapped access to ``layers`` of this entry (see :class:`CachedFeatures`)."""
        return CachedFeatures(self, list(layers))


class CachedFeatures:
    """Memory-mapped access to some layers of a cache entry (nothing is read until asked).

    Pickles as a reference to the files (spawned DDP workers and DataLoader workers reopen
    the memory maps instead of copying the data)."""

    def __init__(self, entry: CacheEntry, layers: list[int]) -> None:
        self.entry = entry
        self.layers = layers
        self.position = {u: i for i, u in enumerate(entry.manifest["ids"])}
        self._shards: list | None = None

    def __getstate__(self) -> dict:
        return {"entry": self.entry, "layers": self.layers, "position": self.position, "_shards": None}

    @property
    def shards(self) -> list:
        """Per shard, per opened layer: the memory-mapped arrays and lengths (opened on first use)."""
        if self._shards is None:
            entry, shards = self.entry, []
            for s in range(entry.num_shards):
                arrays = {l: np.load(entry.data_file(s, l), mmap_mode="r") for l in self.layers}
                offsets = {}
                if entry.kind == "frames":
                    for l in self.layers:
                        lengths = np.load(entry.lengths_file(s, l))
                        offsets[l] = np.concatenate([[0], np.cumsum(lengths)])
                shards.append((arrays, offsets))
            self._shards = shards
        return self._shards

    def get(self, utt_id: str) -> list[torch.Tensor | None]:
        """Per upstream layer: ``[frames, dim]`` (frames kind) or ``[dim]`` (pooled), float32;
        None for layers not opened."""
        i = self.position[utt_id]
        arrays, offsets = self.shards[i // SHARD_SIZE]
        j = i % SHARD_SIZE
        out: list[torch.Tensor | None] = [None] * self.entry.manifest["num_layers"]
        for l, arr in arrays.items():
            if self.entry.kind == "pooled":
                out[l] = torch.from_numpy(np.array(arr[j], dtype=np.float32))
            else:
                out[l] = torch.from_numpy(np.array(arr[offsets[l][j]: offsets[l][j + 1]], dtype=np.float32))
        return out


# ------------------------------------------------------------------ extraction


def _manifest(key: str, upstream: Upstream, dataset: str, split: str, examples: Sequence[Example], kind: str,
              dtype: str, placement: Placement) -> dict:
    n_shards = (len(examples) + SHARD_SIZE - 1) // SHARD_SIZE
    return {
        "key": key, "kind": kind, "dtype": "float32" if kind == "pooled" else dtype, "dataset": dataset,
        "split": split, "ids": [e.id for e in examples],
        "shards": [{"name": f"{s:05d}", "first": s * SHARD_SIZE,
                    "count": min(SHARD_SIZE, len(examples) - s * SHARD_SIZE)} for s in range(n_shards)],
        "num_layers": upstream.num_layers, "layer_names": list(upstream.info.layer_names),
        "dims": list(upstream.info.dims), "upstream": upstream.identity(),
        "extraction_version": EXTRACTION_VERSION, **placement.identity(),
    }


def entry_for(upstream: Upstream, dataset: str, split: str, examples: Sequence[Example], kind: str = "frames",
              dtype: str = "float16", root: Path | None = None, placement: Placement | None = None) -> CacheEntry:
    """The cache entry for these features extracted on ``placement`` (default:
    :func:`~harness.features.device.choose_device`'s defaults); its manifest written if new;
    no extraction."""
    if kind not in KINDS:
        raise ValueError(kind)
    placement = placement or choose_device()
    root = Path(root or default_home() / "features")
    key = cache_key(upstream, dataset, split, examples, kind, dtype, placement)
    folder = root / key
    manifest = _manifest(key, upstream, dataset, split, examples, kind, dtype, placement)
    path = folder / "manifest.json"
    if path.exists():
        try:
            on_disk = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            on_disk = None
        if on_disk != manifest:  # damaged, or written by another harness version: it is ours to rewrite
            write_json(path, manifest)
    else:
        write_json(path, manifest)  # deterministic: concurrent writers write the same bytes
    return CacheEntry(folder, manifest)


def _write_shard(entry: CacheEntry, shard: int, layers: Sequence[int], per_utt: list[list[np.ndarray]]) -> None:
    """Write the given layers of one shard: lengths first, data last, each atomically."""
    store = entry.store_dtype
    entry.shard_dir(shard).mkdir(parents=True, exist_ok=True)
    for l in layers:
        if entry.kind == "pooled":
            arr = np.stack([u[l].mean(axis=0) if len(u[l]) else np.zeros(u[l].shape[1], np.float32)
                            for u in per_utt]).astype(store)
        else:
            lengths = np.array([len(u[l]) for u in per_utt], dtype=np.int64)
            with atomic_path(entry.lengths_file(shard, l)) as tmp:
                np.save(tmp, lengths)
            arr = np.concatenate([u[l] for u in per_utt]).astype(store)
        with atomic_path(entry.data_file(shard, l)) as tmp:
            np.save(tmp, arr)


def ensure_features(upstream: Upstream, dataset: str, split: str, examples: Sequence[Example], kind: str = "frames",
                    dtype: str = "float16", layers: Sequence[int] | None = None, root: Path | None = None,
                    progress: bool = True, position: tuple[int, int] | None = None,
                    placement: Placement | None = None, batch_seconds: float = BATCH_SECONDS,
                    workers: int | None = None) -> CachedFeatures:
    """The cached ``layers`` (default: all) of these examples, extracting what is missing.

    ``position``: (rank, world size) among processes extracting together; by default read
    from the launcher's environment (torchrun, SLURM). ``placement``: where the upstream runs
    and in what precision (default: :func:`~harness.features.device.choose_device`'s
    defaults: a GPU when there is one, float32), part of the entry's key. ``batch_seconds``:
    padded audio per forward batch; ``workers``: DataLoader processes decoding audio (default:
    :meth:`~harness.features.device.Placement.workers`)."""
    placement = placement or choose_device()
    entry = entry_for(upstream, dataset, split, examples, kind, dtype, root, placement)
    layers = sorted(set(range(upstream.num_layers) if layers is None else layers))
    rank, world = position or _distributed_position()
    fill(entry, upstream, examples, layers, rank, world, progress and rank == 0, placement=placement,
         batch_seconds=batch_seconds, workers=workers)
    return entry.open(layers)


def fill(entry: CacheEntry, upstream: Upstream, examples: Sequence[Example], layers: Sequence[int], rank: int = 0,
         world: int = 1, progress: bool = True, placement: Placement | None = None,
         batch_seconds: float = BATCH_SECONDS, workers: int | None = None) -> dict:
    """Make every shard of ``entry`` hold ``layers``, extracting on ``placement`` (default:
    :func:`~harness.features.device.choose_device`'s defaults). Returns counts of what this
    process did: ``extracted_shards``, ``waited_shards`` (found done after taking the lock),
    ``utterances`` and ``audio_seconds`` extracted."""
    placement = placement or choose_device()
    todo = {s: entry.missing(s, layers) for s in range(entry.num_shards)}
    damaged = [(s, l) for s, ls in todo.items() for l in ls if entry.data_file(s, l).exists()]
    if damaged:  # replaced under the shard's lock below
        print(f"harness: feature cache {entry.root.name}: {len(damaged)} damaged layer file(s) found "
              f"(first: shard {damaged[0][0]}, layer {damaged[0][1]}); extracting them again", file=sys.stderr)
    pending = [s for s in range(entry.num_shards) if todo[s]]
    stats = {"extracted_shards": 0, "waited_shards": 0, "utterances": 0, "audio_seconds": 0.0}
    if not pending:
        return stats
    # own share first (under a launcher), then everything else: take it over or wait for its holder
    order = [s for s in pending if s % world == rank] + [s for s in pending if s % world != rank]
    bar = ExtractionProgress(sum(entry.shard_count(s) for s in pending), enabled=progress,
                             desc=f"extracting {entry.manifest['split']} ({entry.kind}, {len(layers)} "
                                  f"layer{'s' * (len(layers) > 1)}, {placement.device})")
    audio = ShardAudio(entry, examples, order, layers, upstream.padding_sensitive, upstream.chunkable, batch_seconds)
    n_workers = min(placement.workers(workers), len(order))
    loader = DataLoader(audio, batch_size=None, shuffle=False, num_workers=n_workers,
                        pin_memory=placement.pin_memory, prefetch_factor=2 if n_workers else None)
    deferred = []
    with placement.placed(upstream):
        for item in loader:
            if not _extract_shard(entry, upstream, item, layers, False, stats, bar, placement, audio):
                deferred.append(item["shard"])
        for s in deferred:  # held by another process: wait for it, then do whatever it left undone
            _extract_shard(entry, upstream, {"shard": s, "skip": False}, layers, True, stats, bar, placement, audio)
    bar.close()
    stats["audio_seconds"] = bar.audio_seconds
    still = [(s, l) for s in range(entry.num_shards) for l in entry.missing(s, layers)]
    if still:
        raise HarnessError(f"feature cache {entry.root}: shard {still[0][0]} layer {still[0][1]} is still missing "
                           "after extraction; delete that folder and re-run")
    return stats


def _extract_shard(entry: CacheEntry, upstream: Upstream, item: dict, layers: Sequence[int], blocking: bool,
                   stats: dict, bar: ExtractionProgress, placement: Placement, audio: ShardAudio) -> bool:
    """Extract the missing ``layers`` of the shard of ``item`` (a :class:`ShardAudio` item, or
    ``{"shard", "skip"}`` alone to decode it only once its lock is held) under the shard's lock,
    advancing ``bar`` per utterance. False if the lock was busy (non-blocking)."""
    shard = item["shard"]
    with file_lock(entry.root / "locks" / f"{shard:05d}.lock", blocking=blocking) as held:
        if not held:
            return False
        missing = [] if item["skip"] else entry.missing(shard, layers)
        if not missing:
            stats["waited_shards"] += 1
            bar.advance(utterances=entry.shard_count(shard))
            return True
        for l in missing:
            entry.discard(shard, l)  # a half-written leftover
        if "batches" not in item:
            item = audio.decode(shard, check=False)
        wanted = set(missing)
        dtype = torch.float32 if entry.kind == "pooled" else getattr(torch, entry.store_dtype.name)
        per_utt: list[list[np.ndarray]] = [None] * entry.shard_count(shard)  # type: ignore[list-item]
        samples = item["samples"]
        for i, wave in item["long"]:
            per_utt[i] = chunked_layers(upstream, wave.numpy(), wanted, placement=placement, dtype=dtype)
            bar.advance(samples[i])
        for positions, wavs, lens in item["batches"]:
            for i, out in zip(positions, batch_layers(upstream, wavs, lens, wanted, placement, dtype)):
                per_utt[i] = out
                bar.advance(samples[i])
        _write_shard(entry, shard, missing, per_utt)
        _journal(entry, shard, missing)
        stats["extracted_shards"] += 1
        stats["utterances"] += len(per_utt)
    return True


def _journal(entry: CacheEntry, shard: int, layers: Sequence[int]) -> None:
    """One line per shard extraction in ``extraction.log`` (who computed what, and when)."""
    rank, world = _distributed_position()
    line = (f"{time.strftime('%Y-%m-%dT%H:%M:%S')} shard {shard:05d} layers {','.join(map(str, layers))} "
            f"host {socket.gethostname()} pid {os.getpid()} rank {rank}/{world}\n")
    fd = os.open(entry.root / "extraction.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line.encode())  # one short O_APPEND write: lines of several processes never interleave
    finally:
        os.close(fd)


def wait_for(entry: CacheEntry, layers: Sequence[int], timeout_s: float = 24 * 3600, poll_s: float = 2.0) -> None:
    """Block until every shard holds ``layers`` (for processes that extract nothing themselves)."""
    deadline = time.time() + timeout_s
    while any(entry.missing(s, layers) for s in range(entry.num_shards)):
        if time.time() > deadline:
            raise HarnessError(f"timed out waiting for the feature cache {entry.root} to be filled")
        time.sleep(poll_s)
