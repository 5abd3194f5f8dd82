"""Feature cache: every layer extracted once per (upstream weights, corpus split, settings).

Two kinds:
- ``frames``: per-utterance ``[frames, dim]`` arrays of every layer (fp16 by default),
  for frame-level and CTC heads;
- ``pooled``: per-utterance, per-layer means ``[dim]`` in float32, for utterance heads
  whose first operation is linear (projection then mean pool), where they are exact.

Layout of one cache entry ``$HARNESS_HOME/features/<key>/``: ``shards/NNNNN/`` folders
(``layer_LL.npy``, ``offsets.npy``), each written under a temporary name and renamed
when complete, and ``manifest.json`` written last. A crashed extraction resumes at the
first missing shard; a shard is never half-written. The key hashes the upstream
identity (weights sha256, or spec + seed for random weights), the corpus content
(manifest hashes when the corpus has a manifest, else sizes and mtimes), the split's
utterance list, the kind, the dtype and the extraction code version.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .audio import read_audio
from .errors import HarnessError
from .extract import iter_layers
from .fsutil import atomic_dir, default_home, write_json
from .task import Example
from .upstream import Upstream

EXTRACTION_VERSION = 1
SHARD_SIZE = 64


def _corpus_fingerprints(examples: Sequence[Example]) -> list[str]:
    """Content hash of each audio file from the nearest manifest.sha256, else size+mtime."""
    manifests: dict[Path, dict[str, str]] = {}
    out = []
    for e in examples:
        path = Path(e.path).resolve()
        digest = None
        for parent in path.parents:
            if parent in manifests or (parent / "manifest.sha256").exists():
                if parent not in manifests:
                    table = {}
                    for line in (parent / "manifest.sha256").read_text().splitlines():
                        h, _, rel = line.partition("  ")
                        table[rel] = h
                    manifests[parent] = table
                digest = manifests[parent].get(path.relative_to(parent).as_posix())
                break
        if digest is None:
            st = path.stat()
            digest = f"{st.st_size}:{st.st_mtime_ns}"
        out.append(digest)
    return out


def upstream_identity(upstream: Upstream) -> dict:
    info = upstream.info
    return {"backend": info.backend, "source": info.source if info.weights_sha256 is None else None,
            "weights_sha256": info.weights_sha256, "random_init": info.random_init,
            "init_seed": info.notes.get("init_seed"), "layers": info.layer_names, "notes": info.notes}


def cache_key(upstream: Upstream, dataset: str, split: str, examples: Sequence[Example], kind: str,
              dtype: str) -> str:
    payload = {
        "version": EXTRACTION_VERSION, "upstream": upstream_identity(upstream), "dataset": dataset,
        "split": split, "kind": kind, "dtype": dtype,
        "utterances": [[e.id, fp] for e, fp in zip(examples, _corpus_fingerprints(examples))],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class CacheEntry:
    """A complete cache entry: index of utterance id -> (shard, start, end)."""

    root: Path
    manifest: dict

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def open(self, layers: Sequence[int]) -> "CachedFeatures":
        return CachedFeatures(self, list(layers))


class CachedFeatures:
    """Memory-mapped access to some layers of a cache entry."""

    def __init__(self, entry: CacheEntry, layers: list[int]) -> None:
        self.entry = entry
        self.layers = layers
        m = entry.manifest
        self.ids = m["ids"]
        self.position = {u: i for i, u in enumerate(self.ids)}
        self.shards = []
        for s in m["shards"]:
            folder = entry.root / "shards" / s["name"]
            arrays = {l: np.load(folder / f"layer_{l:02d}.npy", mmap_mode="r") for l in layers}
            offsets = np.load(folder / "offsets.npy")
            self.shards.append((s["first"], arrays, offsets))

    def get(self, utt_id: str) -> list[torch.Tensor | None]:
        """Per upstream layer: ``[frames, dim]`` (frames kind) or ``[dim]`` (pooled); None if not loaded."""
        i = self.position[utt_id]
        k = i // SHARD_SIZE
        first, arrays, offsets = self.shards[k]
        j = i - first
        out: list[torch.Tensor | None] = [None] * self.entry.manifest["num_layers"]
        for l, arr in arrays.items():
            if self.entry.kind == "pooled":
                out[l] = torch.from_numpy(np.array(arr[j], dtype=np.float32))
            else:
                out[l] = torch.from_numpy(np.array(arr[offsets[l, j]: offsets[l, j + 1]], dtype=np.float32))
        return out


def ensure_cache(upstream: Upstream, dataset: str, split: str, examples: Sequence[Example], kind: str = "frames",
                 dtype: str = "float16", root: Path | None = None, progress: bool = True) -> CacheEntry:
    """Return the complete cache entry, extracting whatever shards are missing."""
    if kind not in ("frames", "pooled"):
        raise ValueError(kind)
    root = Path(root or default_home() / "features")
    key = cache_key(upstream, dataset, split, examples, kind, dtype)
    folder = root / key
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        return CacheEntry(folder, json.loads(manifest_path.read_text()))
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    store = np.float32 if kind == "pooled" else np.dtype(dtype)
    n_shards = (len(examples) + SHARD_SIZE - 1) // SHARD_SIZE
    done = {p.name for p in (folder / "shards").iterdir() if p.is_dir() and not p.name.startswith(".")}
    from tqdm import tqdm

    bar = tqdm(total=len(examples), unit="utt", desc=f"extracting {split} ({kind})", disable=not progress,
               file=sys.stderr, initial=sum(min(SHARD_SIZE, len(examples) - int(n) * SHARD_SIZE) for n in done))
    shards = []
    for s in range(n_shards):
        name = f"{s:05d}"
        chunk = examples[s * SHARD_SIZE: (s + 1) * SHARD_SIZE]
        shards.append({"name": name, "first": s * SHARD_SIZE, "count": len(chunk)})
        if name in done:
            continue
        waves = [read_audio(e.path) for e in chunk]
        per_utt: list[list[np.ndarray]] = [None] * len(chunk)  # type: ignore[list-item]
        for i, layers in iter_layers(upstream, waves):
            per_utt[i] = layers
            bar.update(1)
        with atomic_dir(folder / "shards" / name) as tmp:
            n_layers = len(per_utt[0])
            offsets = np.zeros((n_layers, len(chunk) + 1), dtype=np.int64)
            for l in range(n_layers):
                if kind == "pooled":
                    arr = np.stack([u[l].mean(axis=0) if len(u[l]) else np.zeros(u[l].shape[1], np.float32)
                                    for u in per_utt]).astype(store)
                else:
                    offsets[l, 1:] = np.cumsum([len(u[l]) for u in per_utt])
                    arr = np.concatenate([u[l] for u in per_utt]).astype(store)
                np.save(tmp / f"layer_{l:02d}.npy", arr)
            np.save(tmp / "offsets.npy", offsets)
    bar.close()
    manifest = {
        "key": key, "kind": kind, "dtype": "float32" if kind == "pooled" else dtype, "dataset": dataset, "split": split,
        "ids": [e.id for e in examples], "shards": shards, "num_layers": upstream.num_layers,
        "layer_names": upstream.info.layer_names, "upstream": upstream_identity(upstream),
        "extraction_version": EXTRACTION_VERSION,
    }
    write_json(manifest_path, manifest)
    return CacheEntry(folder, manifest)


def check_utterance_level(upstream: Upstream, layers: Sequence[int]) -> None:
    """Frame-level tasks cannot use utterance-level layers (e.g. a speaker embedding)."""
    bad = [upstream.info.layer_names[l] for l in layers if upstream.info.layer_names[l] in ("pooling", "embedding")]
    if bad:
        raise HarnessError(f"layer(s) {', '.join(bad)} of {upstream.info.spec} are utterance-level; "
                           "frame-level and CTC tasks need frame-level layers")
