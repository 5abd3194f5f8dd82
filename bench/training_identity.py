"""Bit-identity check for the training loops: a few steps of every recipe, hashed.

Runs, on the tiny corpus (profile ``tiny``, seed 0), a few-step pretraining of each built-in
recipe (HuBERT with two short iterations, wav2vec 2.0, DINO) and a few-step CTC fine-tuning
of the HuBERT run's first iteration, then hashes every file the runs wrote:

- weights and metadata files (``*.safetensors``, ``*.json``, ``*.yaml``): their bytes;
- torch pickles (``state.pt``, ``embedding_model.ckpt``): their tensors (key, dtype, shape,
  bytes, recursively), since a pickle's archive records the temporary file name it was
  written under;
- ``targets.npz``: its arrays (the zip stores a time stamp);
- ``log.jsonl``: its rows without the wall-clock ``seconds`` field;
- the path of the runs' folder, where a JSON or YAML file names it, as ``<RUNS>``.

Run it on two commits and compare: the same hashes mean the same weights, optimizer states,
targets and logs bit for bit.

    python bench/training_identity.py --save before.json                # on the old commit
    python bench/training_identity.py --save after.json --compare before.json

Takes about half a minute on 2 CPU cores. The recipes are the tests' tiny ones
(tests/training/), copied here so the check does not move when the tests do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from harness.corpus.build import build
from harness.training import dino, finetune, hubert, wav2vec2

TINY_MODEL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=[16] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)


def hubert_recipe() -> dict:
    r = hubert.default_recipe()
    r["data"].update(batch_seconds=6.0, max_crop_seconds=2.0)
    r["model"].update(TINY_MODEL)
    r["head"]["code_dim"] = 16
    r["optim"].update(lr=3e-3, warmup_steps=4)
    r["kmeans"].update(fit_frames=5000, iterations=10)
    r["iterations"] = [{"targets": "mfcc", "clusters": 8, "steps": 12},
                       {"targets": "layer", "layer": 1, "clusters": 8, "steps": 10, "optim": {"lr": 1e-3}}]
    r.update(checkpoint_every=8, log_every=3)
    return r


def wav2vec2_recipe() -> dict:
    r = wav2vec2.default_recipe()
    r["data"].update(batch_seconds=6.0, max_crop_seconds=2.0)
    r["model"].update(TINY_MODEL)
    r["quantizer"].update(groups=2, codewords=16, dim=16)
    r["contrastive"]["distractors"] = 10
    r["optim"].update(lr=3e-3, warmup_steps=4)
    r.update(steps=12, checkpoint_every=8, log_every=3)
    return r


def dino_recipe() -> dict:
    r = dino.default_recipe()
    r["data"]["batch_utterances"] = 6
    r["model"].update(channels=16, attention_channels=8, embedding=16)
    r["head"].update(hidden=32, bottleneck=16, prototypes=32)
    r["crops"].update(global_seconds=1.0, local_seconds=0.5)
    r["optim"].update(lr=3e-3, warmup_steps=4)
    r.update(steps=12, checkpoint_every=8, log_every=3)
    return r


def finetune_recipe() -> dict:
    r = finetune.default_recipe()
    r.update(steps=8, checkpoint_every=4, log_every=3, warmup_steps=2, batch_seconds=12.0,
             freeze_transformer_steps=2, dev_utterances=4, lr=1e-3, reinit_top=1)
    return r


def _update_tensors(h, value) -> None:
    """Feed a nested state (dicts, lists, tensors, numbers) into ``h`` in a fixed order."""
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            h.update(f"key:{key!r};".encode())
            _update_tensors(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(f"seq:{len(value)};".encode())
        for item in value:
            _update_tensors(h, item)
    elif isinstance(value, torch.Tensor):
        t = value.detach().contiguous().cpu()
        h.update(f"tensor:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    else:
        h.update(f"value:{value!r};".encode())


def file_hash(path: Path, root: Path) -> str:
    """sha256 of what a file holds (see the module docstring for what is left out); the
    folder ``root`` of the runs is written as ``<RUNS>`` in JSON and YAML files."""
    h = hashlib.sha256()
    if path.name == "log.jsonl":
        for line in path.read_text().splitlines():
            row = json.loads(line)
            row.pop("seconds", None)
            h.update((json.dumps(row, sort_keys=True) + "\n").encode())
    elif path.suffix in (".pt", ".ckpt"):
        _update_tensors(h, torch.load(path, map_location="cpu", weights_only=True))
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            for key in sorted(z.files):
                a = z[key]
                h.update(f"{key}:{a.dtype}:{a.shape};".encode())
                h.update(np.ascontiguousarray(a).tobytes())
    elif path.suffix in (".json", ".yaml"):  # the fine-tuning run names its upstream by (temporary) path
        h.update(path.read_bytes().replace(str(root).encode(), b"<RUNS>"))
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): file_hash(p, root) for p in sorted(root.rglob("*")) if p.is_file()}


def run_all(work: Path) -> dict[str, str]:
    corpus = work / "corpus"
    build(corpus, "tiny", 0, progress=False)
    runs = work / "runs"
    finals = hubert.pretrain(corpus, runs / "hubert", hubert_recipe(), progress=False)
    wav2vec2.pretrain(corpus, runs / "wav2vec2", wav2vec2_recipe(), progress=False)
    dino.pretrain(corpus, runs / "dino", dino_recipe(), progress=False)
    finetune.finetune(f"hf:{finals[0]}", "asr", corpus, runs / "finetune", finetune_recipe(), progress=False)
    return tree_hashes(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", help="write the hashes (JSON) here")
    parser.add_argument("--compare", help="hashes of another commit (JSON) to compare with")
    parser.add_argument("--work", help="folder for the corpus and the runs (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        hashes = run_all(Path(args.work) if args.work else Path(tmp))
    digest = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()
    print(f"{len(hashes)} files, combined sha256 {digest}")
    if args.save:
        Path(args.save).write_text(json.dumps({"combined": digest, "files": hashes}, indent=1, sort_keys=True) + "\n")
    if args.compare:
        other = json.loads(Path(args.compare).read_text())["files"]
        differ = sorted(k for k in set(hashes) | set(other) if hashes.get(k) != other.get(k))
        for k in differ:
            print(f"DIFFERS {k}: {other.get(k, 'missing')[:12]} -> {hashes.get(k, 'missing')[:12]}")
        print("identical" if not differ else f"{len(differ)} of {len(hashes)} files differ")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
