"""Feature cache: layer-selective, resumable, verified and repaired, safe under concurrency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch

from harness.audio import read_audio
from harness.features.cache import (
    SHARD_SIZE,
    cache_key,
    ensure_features,
    entry_for,
    fill,
)
from harness.registry import load_task
from harness.upstream import load_upstream


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return tiny_models.hf_hubert(tmp_path_factory.mktemp("hf") / "m", layers=3)


def _examples(corpus, split="train", times=1):
    task = load_task("sid")(load_task("sid").default_config())
    return task.examples(corpus, split) * times


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file of an entry's shards: (inode, mtime) by relative path."""
    return {p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in (root / "shards").rglob("*.npy")}


def test_only_the_needed_layers_are_stored_and_later_ones_are_added(tiny_corpus, tiny_hf, tmp_path):
    up = load_upstream(f"hf:{tiny_hf}")
    ex = _examples(tiny_corpus, times=2)
    one = ensure_features(up, "vox", "train", ex, layers=[3], root=tmp_path, progress=False)
    root = one.entry.root
    names = sorted(p.name for p in (root / "shards" / "00000").iterdir())
    assert names == ["layer_03.lengths.npy", "layer_03.npy"]
    frames = sum(len(one.get(e.id)[3]) for e in ex[:SHARD_SIZE])
    arr = np.load(root / "shards" / "00000" / "layer_03.npy", mmap_mode="r")
    assert arr.shape == (frames, 32) and arr.dtype == np.float16  # [frames, dim], fp16: exactly these bytes
    before = _files(root)
    calls = []
    original = up.layers
    up.layers = lambda w, l: calls.append(len(l)) or original(w, l)
    two = ensure_features(up, "vox", "train", ex, layers=[1, 3], root=tmp_path, progress=False)
    after = _files(root)
    assert {k: v for k, v in after.items() if "layer_03" in k} == before  # layer 3 untouched (same inode, mtime)
    assert sorted({Path(k).name for k in after}) == ["layer_01.lengths.npy", "layer_01.npy", "layer_03.lengths.npy",
                                                    "layer_03.npy"]
    assert sum(calls) == len(ex)  # one pass for the missing layer
    calls.clear()
    ensure_features(up, "vox", "train", ex, layers=[1, 3], root=tmp_path, progress=False)
    assert calls == []  # complete: nothing recomputed
    # the stored values are the upstream's, in fp16
    wav = torch.from_numpy(read_audio(ex[0].path))
    ref = up.layers(wav[None], torch.tensor([len(wav)]))
    for layer in (1, 3):
        expect = ref.hidden[layer][0, : int(ref.lengths[layer][0])].numpy().astype(np.float16).astype(np.float32)
        # equal up to fp16 rounding (extraction batches equal-length utterances: float32 summation order)
        np.testing.assert_allclose(two.get(ex[0].id)[layer].numpy(), expect, rtol=2e-3, atol=2e-3)


def test_interrupted_extraction_resumes_without_recomputing(tiny_corpus, tmp_path):
    ex = _examples(tiny_corpus, times=3)
    assert len(ex) > SHARD_SIZE
    up = load_upstream("mfcc")
    calls = []
    original = up.layers
    up.layers = lambda w, l: calls.append(len(l)) or original(w, l)  # count work done
    fresh = ensure_features(up, "vox", "train", ex, root=tmp_path / "fresh", progress=False)
    n_fresh = sum(calls)
    # a crash while writing shard 1: its data file missing, a temporary of a dead writer beside it
    import shutil

    crashed = tmp_path / "crashed" / fresh.entry.root.name
    shutil.copytree(fresh.entry.root, crashed)
    (crashed / "shards" / "00001" / "layer_00.npy").unlink()
    leftover = crashed / "shards" / "00001" / ".layer_00.npy.otherhost.99.x.tmp.npy"
    leftover.write_bytes(b"garbage")
    calls.clear()
    resumed = ensure_features(up, "vox", "train", ex, root=tmp_path / "crashed", progress=False)
    assert sum(calls) == min(SHARD_SIZE, len(ex) - SHARD_SIZE) < n_fresh  # only the missing shard was computed
    for e in ex:
        assert torch.equal(fresh.get(e.id)[0], resumed.get(e.id)[0])


def test_a_damaged_layer_is_detected_and_extracted_again(tiny_corpus, tmp_path, capsys):
    ex = _examples(tiny_corpus)
    up = load_upstream("mfcc")
    good = ensure_features(up, "vox", "train", ex, root=tmp_path, progress=False)
    expected = {e.id: good.get(e.id)[0].clone() for e in ex}
    data = good.entry.root / "shards" / "00000" / "layer_00.npy"
    arr = np.load(data)
    np.save(data, arr[: len(arr) // 2])  # truncated: shape no longer matches the lengths
    capsys.readouterr()
    repaired = ensure_features(up, "vox", "train", ex, root=tmp_path, progress=False)
    err = capsys.readouterr().err
    assert "1 damaged layer file" in err and err.count("\n") == 1
    for e in ex:
        assert torch.equal(repaired.get(e.id)[0], expected[e.id])


_FILLER = """
import json, sys, time
from pathlib import Path
from harness.features.cache import entry_for, fill
from harness.registry import load_task
from harness.upstream import load_upstream

root, corpus = Path(sys.argv[1]), Path(sys.argv[2])
up = load_upstream("mfcc")
original = up.layers
def slow(w, l):  # slow enough that the two processes overlap
    time.sleep(0.05)
    return original(w, l)
up.layers = slow
task = load_task("sid")(load_task("sid").default_config())
ex = task.examples(corpus, "train") * 4
entry = entry_for(up, "vox", "train", ex, root=root)
print(json.dumps(fill(entry, up, ex, [0], progress=False)))
"""


def test_two_processes_filling_one_entry_compute_each_shard_once(tiny_corpus, tmp_path):
    import json
    import subprocess
    import sys

    script = tmp_path / "fill.py"
    script.write_text(_FILLER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache"), str(tiny_corpus)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    stats = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    ex = _examples(tiny_corpus, times=4)
    n_shards = (len(ex) + SHARD_SIZE - 1) // SHARD_SIZE
    assert sum(s["extracted_shards"] for s in stats) == n_shards  # no shard twice, none missing
    assert all(s["extracted_shards"] > 0 for s in stats)  # they really did overlap and share the work
    up = load_upstream("mfcc")
    shared = ensure_features(up, "vox", "train", ex, root=tmp_path / "cache", progress=False)
    alone = ensure_features(up, "vox", "train", ex, root=tmp_path / "alone", progress=False)
    for e in ex[::7]:
        assert torch.equal(shared.get(e.id)[0], alone.get(e.id)[0])


def test_ranks_take_their_own_share_first(tiny_corpus, tmp_path):
    ex = _examples(tiny_corpus, times=4)
    up = load_upstream("mfcc")
    entry = entry_for(up, "vox", "train", ex, root=tmp_path)
    seen = []
    original = up.layers
    up.layers = lambda w, l: seen.append(len(l)) or original(w, l)
    stats = fill(entry, up, ex, [0], rank=1, world=2, progress=False)
    assert stats["extracted_shards"] == entry.num_shards  # alone, rank 1 ends up doing everything
    order = [int(p.parent.name) for p in sorted((entry.root / "shards").glob("*/layer_00.npy"),
                                                  key=lambda p: p.stat().st_mtime_ns)]
    assert order[: entry.num_shards // 2] == list(range(1, entry.num_shards, 2))  # its own (odd) shards first


def test_cache_is_reused_and_invalidated(tiny_corpus):
    ex = _examples(tiny_corpus, "dev")
    fb = load_upstream("fbank")
    k = cache_key(fb, "vox", "dev", ex, "frames", "float16")
    assert k == cache_key(load_upstream("fbank"), "vox", "dev", ex, "frames", "float16")
    assert k != cache_key(load_upstream("mfcc"), "vox", "dev", ex, "frames", "float16")
    assert k != cache_key(fb, "vox", "dev", ex, "frames", "float32")
    assert k != cache_key(fb, "vox", "dev", ex[:-1], "frames", "float16")
