"""A task, an upstream and an analysis from another package: installed with pip, found by
entry point, run end to end with no edit to the core (examples/plugins/harness-example)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugins" / "harness-example"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "harness-example"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    # built from a copy: setuptools writes build/ and *.egg-info into the source tree
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(source)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (target / "harness_example" / "action.yaml").exists()  # the defaults ship with the package
    return target


def test_the_example_plugins_run_from_an_external_package(installed, tiny_corpus, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(installed), HARNESS_HOME=str(tmp_path / "home"))
    listing = subprocess.run([sys.executable, "-m", "harness.cli", "upstreams"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert "energy" in listing.stdout.splitlines()[-1]  # the new backend is listed
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--upstream", "energy:log", "--task", "action",
                           "--layer", "all", "--data-root", str(tiny_corpus), "--out", str(tmp_path / "r"), "--quiet",
                           "--max-steps", "4", "--set", "val_interval=2", "--set", "batch_size=8"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = sorted((tmp_path / "r" / "energy_log" / "action").glob("*/*_seed0.json"))
    probes = [json.loads(p.read_text())["probe"] for p in records if not p.name.endswith(".outcomes.json")]
    assert sorted(probes) == ["layer_0", "layer_1", "weighted"]
    record = json.loads(next(p for p in records if p.name == "layer_0_seed0.json").read_text())
    assert record["config"]["max_steps"] == 4 and record["config"]["head"]["proj"] == 256  # from action.yaml
    # and the plugin's bad input is a one-line error like the core's
    bad = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--upstream", "energy:nope", "--task", "action",
                          "--data-root", str(tiny_corpus), "--quiet"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "only source" in bad.stderr


def test_the_example_analysis_runs_from_an_external_package(installed, tiny_corpus, tmp_path, monkeypatch):
    home = tmp_path / "home"
    env = dict(os.environ, PYTHONPATH=str(installed), HARNESS_HOME=str(home))
    listing = subprocess.run([sys.executable, "-m", "harness.cli", "analyze", "--help"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert "norms" in listing.stdout and "cca" in listing.stdout  # listed beside the core analyses
    options = subprocess.run([sys.executable, "-m", "harness.cli", "analyze", "norms", "--help"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert "--order" in options.stdout and "--upstream" in options.stdout  # its own option and the common ones
    outs = {}
    for order in ("2", "1"):
        out = tmp_path / f"norms_{order}.csv"
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "analyze", "norms", "--upstream", "fbank",
                               "--data-root", str(tiny_corpus), "--limit", "4", "--order", order, "--out", str(out),
                               "--quiet"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[-1] == f"rows: {out}"
        (outs[order],) = list(csv.DictReader(open(out)))  # fbank has one layer
    # the same number from the frames themselves
    from harness.analysis.frames import layer_frames, load_utterances
    from harness.upstream import load_upstream

    monkeypatch.setenv("HARNESS_HOME", str(home))
    frames = np.concatenate([u[0] for u in layer_frames(load_upstream("fbank"), load_utterances(tiny_corpus, "dev", 4),
                                                        progress=False)]).astype(np.float64)
    assert int(outs["2"]["frames"]) == len(frames)
    assert float(outs["2"]["mean_norm"]) == pytest.approx(np.linalg.norm(frames, axis=1).mean(), rel=1e-5)
    assert float(outs["1"]["mean_norm"]) == pytest.approx(np.abs(frames).sum(1).mean(), rel=1e-5)


def test_the_example_recipe_pretrains_through_the_shared_loop_and_its_checkpoints_are_upstreams(installed, tiny_corpus,
                                                                                                tmp_path):
    """``harness pretrain --recipe mam``: a recipe from another package (one file, one entry
    point) trains a few steps; its checkpoints load as upstreams and a probe runs on one."""
    import torch

    from harness.upstream import load_upstream

    env = dict(os.environ, PYTHONPATH=str(installed), HARNESS_HOME=str(tmp_path / "home"))
    out = tmp_path / "mam"
    command = [sys.executable, "-m", "harness.cli", "pretrain", "--recipe", "mam", "--corpus", str(tiny_corpus),
               "--out", str(out), "--quiet", "--set", "steps=6", "--set", "checkpoint_every=3", "--set", "log_every=2"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    final = out / "it1" / "final"
    assert proc.stdout.splitlines()[0] == f"iteration 1: hf:{final}"
    assert sorted(p.name for p in (out / "it1").glob("step_*")) == ["step_000003", "step_000006"]
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6] and all(r["masked_frames"] > 0 for r in rows)
    wav, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    early, last = (load_upstream(f"hf:{p}") for p in (out / "it1" / "step_000003", final))
    assert last.num_layers == 3 and last.info.dims == [32, 32, 32]
    assert not torch.allclose(early.layers(wav, lengths).hidden[-1], last.layers(wav, lengths).hidden[-1])
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)  # finished: nothing to do
    assert again.returncode == 0 and again.stdout == proc.stdout
    run = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--upstream", f"hf:{final}", "--task", "action",
                          "--layer", "2", "--data-root", str(tiny_corpus), "--out", str(tmp_path / "r"), "--quiet",
                          "--max-steps", "4", "--set", "val_interval=2", "--set", "batch_size=8"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    records = [p for p in (tmp_path / "r").rglob("*_seed0.json") if not p.name.endswith(".outcomes.json")]
    assert [json.loads(p.read_text())["probe"] for p in records] == ["layer_2"]
