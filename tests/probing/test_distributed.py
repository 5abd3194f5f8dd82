"""DDP actually run: two CPU processes (gloo), with Lightning's own launcher and with torchrun.

Each run must finish, write each record once, extract each cache shard once in total, and
measure what the single-process run measures (the batch size is global, so both take the
same optimisation steps; only float summation order and, for frame tasks, the weighting of
frames across the two halves of a batch differ)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ARGS = ["--max-steps", "24", "--set", "val_interval=8", "--set", "batch_size=8", "--quiet", "--layer", "all",
        "--protocol", "quick"]


def _cli(args, env, launcher=()) -> subprocess.CompletedProcess:
    proc = subprocess.run([*launcher, sys.executable, "-m", "harness.cli", *args] if not launcher else
                          [*launcher, "-m", "harness.cli", *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _records(out: Path) -> dict[str, dict]:
    found = [p for p in out.rglob("*_seed0.json")]
    assert len({p.name for p in found}) == len(found)  # each record once
    return {json.loads(p.read_text())["probe"]: json.loads(p.read_text()) for p in found}


def _shard_extractions(home: Path) -> Counter:
    """(cache entry, shard) -> times extracted, over every process, from the extraction logs."""
    counts: Counter = Counter()
    for log in (home / "features").glob("*/extraction.log"):
        for line in log.read_text().splitlines():
            counts[(log.parent.name, line.split()[2])] += 1
    return counts


@pytest.fixture(scope="module")
def big_vox(tiny_corpus, tmp_path_factory) -> Path:
    """The tiny corpus's VoxCeleb1 with every training file present three times (other
    sessions), so the training split spans two cache shards."""
    root = tmp_path_factory.mktemp("bigvox")
    vox = root / "VoxCeleb1"
    shutil.copytree(tiny_corpus / "VoxCeleb1", vox)
    lines = (vox / "iden_split.txt").read_text().splitlines()
    extra = []
    for line in lines:
        code, rel = line.split(" ", 1)
        if code != "1":
            continue
        spk, session, name = rel.split("/")
        for copy in (1, 2):
            new = f"{spk}/{session}{copy}/{name}"
            (vox / "wav" / new).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(vox / "wav" / rel, vox / "wav" / new)
            extra.append(f"1 {new}")
    (vox / "iden_split.txt").write_text("\n".join(lines + extra) + "\n")
    return root


@pytest.mark.parametrize("task", ["phone", "sid"])
def test_lightning_ddp_on_two_cpu_processes_matches_one_process(tiny_corpus, tmp_path, task):
    base = ["run", "--upstream", "mfcc", "--task", task, "--data-root", str(tiny_corpus), *ARGS]
    _cli(base + ["--out", str(tmp_path / "one")], dict(os.environ, HARNESS_HOME=str(tmp_path / "h1")))
    home = tmp_path / "h2"
    ddp = _cli(base + ["--out", str(tmp_path / "two"), "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu"],
               dict(os.environ, HARNESS_HOME=str(home)))
    assert "[Gloo]" not in ddp.stdout and ddp.stdout.count("layer_0") == 1  # results printed once, by rank 0
    one, two = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert set(one) == set(two) == {"layer_0"}
    a, b = one["layer_0"], two["layer_0"]
    assert (a["world_size"], b["world_size"]) == (1, 2) and a["steps"] == b["steps"] == 24
    assert a["run_key"] != b["run_key"]  # not the same experiment: neither resumes the other
    name = a["metric"]["name"]
    # utterance tasks average over equal halves of each batch: the same steps up to float order;
    # frame tasks weight frames per half, so they may drift a little
    tolerance = 1e-6 if task == "sid" else 0.03
    assert abs(a["test"][name] - b["test"][name]) <= tolerance, (a["test"], b["test"])
    assert all(n == 1 for n in _shard_extractions(home).values()) and _shard_extractions(home)


def test_torchrun_ranks_share_the_extraction_and_write_records_once(big_vox, tmp_path):
    home = tmp_path / "home"
    env = dict(os.environ, HARNESS_HOME=str(home), OMP_NUM_THREADS="1")
    args = ["run", "--upstream", "mfcc", "--task", "sid", "--data-root", str(big_vox), "--out", str(tmp_path / "r"),
            "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", *ARGS]
    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    proc = _cli(args, env, launcher)
    records = _records(tmp_path / "r")
    assert list(records) == ["layer_0"] and records["layer_0"]["world_size"] == 2
    counts = _shard_extractions(home)
    assert counts and all(n == 1 for n in counts.values()), counts  # no shard twice across the two ranks
    train_shards = [k for k in counts if k[1] == "00001"]
    assert train_shards  # the training split really spans two shards
    logs = "".join(p.read_text() for p in (home / "features").glob("*/extraction.log"))
    assert "rank 0/2" in logs or "rank 1/2" in logs  # ranks knew their place under torchrun
    assert proc.stdout.count("layer_0") == 1
