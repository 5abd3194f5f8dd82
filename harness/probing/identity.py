"""What makes two runs the same experiment: content, never locations.

A run's key hashes everything that changes its numbers (upstream weights, task and config,
probes, seed, corpus content, how features reach the probes, the number of training
processes, where the upstream ran and in what precision, the harness version) and nothing
that does not (where the corpus or the results sit, the step budget: a longer run continues
a shorter one through identical windows; how extraction is batched or how many workers
decode). The same experiment therefore gets the same key on every machine of a kind.

Fields with defaults are left out when at their default, so that keys made before those
options existed stay valid: the device type (``device``) appears only when it is not
``cpu`` and the precision (``precision``) only when it is not ``32-true``
(:meth:`harness.features.device.Placement.identity`); every committed record under
``results/`` was made on the CPU in float32 and keeps its key. Any field added later must
follow the same rule.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from harness import __version__
from harness.corpus.layout import MANIFEST_NAME, METADATA_NAME
from harness.features.cache import _corpus_fingerprints
from harness.records import find_outcomes, read_record
from harness.task import Example


def _target_digest(target) -> str:
    """A stable text form of a label (tuple of classes, token list or a 10 ms label array)."""
    if hasattr(target, "tobytes"):
        return hashlib.sha256(target.tobytes()).hexdigest()[:16] + str(getattr(target, "dtype", ""))
    return repr(target)


def corpus_identity(root: Path, examples: Sequence[Example] = ()) -> dict:
    """The data a run read, by content: each example's audio and its label, nothing else.

    In a harness-built corpus each audio file's content hash comes from the manifest; in
    any other corpus (real LibriSpeech, VoxCeleb1 ...) from its relative path and size
    (hashing hundreds of GB of audio to start a run is not an option; sizes catch another
    release or a truncated copy). Labels are hashed as the task encoded them. Files a run
    does not read (other layouts, other splits) never change its identity, so adding data
    to a corpus leaves earlier results valid.
    """
    root = Path(root)
    meta = root / METADATA_NAME
    embedded = meta.exists() and (root / MANIFEST_NAME).exists()
    h = hashlib.sha256()
    ordered = sorted(examples, key=lambda e: e.id)
    fingerprints = _corpus_fingerprints(ordered) if embedded else None
    resolved = root.resolve()
    for i, e in enumerate(ordered):
        if embedded:
            audio = fingerprints[i]
        else:
            path = Path(e.path).resolve()
            try:
                rel = path.relative_to(resolved).as_posix()
            except ValueError:
                rel = path.name
            audio = f"{rel}:{path.stat().st_size}"
        part = f"\t{e.segment}" if e.segment else ""  # absent for whole files: earlier identities stay valid
        part += f"\tcrop {e.crop}" if e.crop else ""  # likewise absent without training crops
        h.update(f"{e.id}\t{audio}\t{_target_digest(e.target)}\t{e.reference}{part}\n".encode())
    if embedded:
        m = json.loads(meta.read_text())
        return {"kind": "harness-embedded", "profile": m.get("profile"), "seed": m.get("seed"),
                "examples": len(ordered), "content_sha256": h.hexdigest()}
    return {"kind": "external", "examples": len(ordered), "content_sha256": h.hexdigest()}


def features_mode(streamed: bool, pooled: bool, cache_dtype: str) -> str:
    """How features reach the probes, as the identity names it: ``streamed`` (the upstream runs in
    every step, float32), ``pooled`` (cached float32 utterance means) or ``frames-<dtype>`` (cached
    frames, float16 by default). Each gives slightly different numbers."""
    return "streamed" if streamed else ("pooled" if pooled else f"frames-{cache_dtype}")


def run_identity(*, upstream: dict, task: str, config: dict, probes: Sequence[str], seed: int, corpus: dict,
                 world_size: int, features: str, task_content: dict | None = None,
                 compute: dict | None = None, init_seeds: Sequence[int] | None = None) -> dict:
    """Everything that changes a run's numbers, and nothing else (the module docstring).

    ``upstream``: :meth:`harness.upstream.Upstream.identity`; ``config``: the resolved task config
    (its step budget is left out: a longer run continues a shorter one through identical windows;
    a learning-rate grid is in it as ``lr_grid``); ``probes``: probe keys; ``seed``: the run's
    seed (batch order, and head initialisation without ``init_seeds``); ``corpus``:
    :func:`corpus_identity`; ``features``: :func:`features_mode`; ``task_content``:
    :meth:`harness.task.Task.identity` (left out when empty, so tasks without such content keep
    the keys they always had); ``compute``: :meth:`harness.features.device.Placement.identity`
    (only non-default fields: ``{}`` on the CPU in float32, which leaves the identity as it was
    before devices counted); ``init_seeds``: head initialisation seeds trained in one pass
    (``--seeds``), absent when None, so runs without them keep their keys.
    """
    ident = {"upstream": upstream, "task": task, "config": {k: v for k, v in config.items() if k != "max_steps"},
             "probes": list(probes), "seed": seed, "corpus": corpus, "world_size": world_size, "version": __version__,
             "features": features, **(compute or {})}
    if task_content:
        ident["task_content"] = task_content
    if init_seeds:
        ident["init_seeds"] = list(init_seeds)
    return ident


def run_key(identity: dict) -> str:
    """16 hex digits of the sha256 of the identity (canonical JSON): the run's key."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_paths(out_dir: Path, probes: Sequence[str], seed: int, key: str, steps: int) -> list[Path] | None:
    """The record paths under ``out_dir`` (``OUT/UPSTREAM/TASK``) of a finished run with this key:
    one per probe key, at this step count, with its outcomes beside it; None if any is missing."""
    found = []
    for probe in probes:
        hit = None
        for path in sorted(Path(out_dir).glob(f"*/{probe}_seed{seed}.json")):
            try:
                record = read_record(path)
            except (OSError, ValueError):
                continue
            if record is not None and record.run_key == key and record.steps == steps and \
                    find_outcomes(path) is not None:
                hit = path
                break
        if hit is None:
            return None
        found.append(hit)
    return found
