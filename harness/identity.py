"""What makes two runs the same experiment: content, never locations.

A run's key hashes everything that changes its numbers (upstream weights, task and config,
probes, seed, corpus content, how features reach the probes, the number of training
processes, the harness version) and nothing that does not (where the corpus or the
results sit, the step budget: a longer run continues a shorter one through identical
windows). The same experiment therefore gets the same key on every machine.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from .corpus.layout import MANIFEST_NAME, METADATA_NAME
from .task import Example


def corpus_identity(root: Path, examples: Sequence[Example] = ()) -> dict:
    """The corpus a run read, by content.

    A harness-built corpus is identified by the hash of its manifest (which lists every
    file's sha256). Any other corpus (real LibriSpeech, VoxCeleb1 ...) by the relative paths
    and sizes of the audio files the run reads: hashing hundreds of GB of audio to start a
    run is not an option, and sizes catch a different release or a truncated copy.
    """
    root = Path(root)
    meta = root / METADATA_NAME
    if meta.exists():
        m = json.loads(meta.read_text())
        manifest = root / MANIFEST_NAME
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else None
        return {"kind": "harness-embedded", "profile": m.get("profile"), "seed": m.get("seed"), "manifest_sha256": digest}
    h = hashlib.sha256()
    resolved = root.resolve()
    for e in sorted(examples, key=lambda e: e.id):
        path = Path(e.path).resolve()
        try:
            rel = path.relative_to(resolved).as_posix()
        except ValueError:
            rel = path.name
        h.update(f"{e.id}\t{rel}\t{path.stat().st_size}\n".encode())
    return {"kind": "external", "files": len(examples), "content_sha256": h.hexdigest()}


def run_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
