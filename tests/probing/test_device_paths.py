"""Every path that runs an upstream asks :func:`harness.features.device.choose_device` and runs
where it says: with ``--accelerator gpu`` (a GPU faked where none exists) each path places the
upstream on ``cuda:0``; without a GPU, ``gpu`` fails in one line before any work."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
import tiny_models
import torch

from harness.features.device import Placement
from harness.probing.engine import RunRequest, prepare, provide_features

CUDA0 = torch.device("cuda", 0)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return tiny_models.hf_hubert(tmp_path_factory.mktemp("hf") / "m", layers=2)


@pytest.fixture()
def fake_gpu(monkeypatch, tmp_path):
    """torch sees one CUDA GPU; a placement records where it would put the upstream and its
    batches and leaves them on the CPU (which is where they can run here)."""
    seen: list[tuple[str, torch.device]] = []
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake GPU")
    monkeypatch.delenv("LOCAL_RANK", raising=False)

    @contextlib.contextmanager
    def placed(self, upstream):
        seen.append(("upstream", self.device))
        upstream.eval()
        yield upstream

    def to_device(self, tensor):
        seen.append(("batch", self.device))
        return tensor

    monkeypatch.setattr(Placement, "placed", placed)
    monkeypatch.setattr(Placement, "to_device", to_device)
    monkeypatch.setattr(Placement, "pin_memory", property(lambda self: False))
    monkeypatch.setattr(Placement, "synchronize", lambda self: None)
    monkeypatch.setattr(Placement, "autocast", lambda self: contextlib.nullcontext())
    monkeypatch.setattr(Placement, "workers", lambda self, requested: 0 if requested is None else requested)
    return seen


def _request(corpus, out, **kw) -> RunRequest:
    return RunRequest(upstream=kw.pop("upstream", "mfcc"), task=kw.pop("task", "phone"), data_root=corpus, out=out,
                      max_steps=4, overrides={"batch_size": 4, "val_interval": 2}, progress=False, protocol="quick", **kw)


def test_cached_runs_extract_on_the_gpu(tiny_corpus, fake_gpu, tmp_path):
    plan = prepare(_request(tiny_corpus, tmp_path / "o", accelerator="gpu"))
    assert plan.placement.device == CUDA0 and plan.identity["device"] == "cuda"
    provide_features(plan)
    assert fake_gpu and {d for _, d in fake_gpu} == {CUDA0}
    assert {k for k, _ in fake_gpu} == {"upstream", "batch"}  # the model and every batch went there


def test_streamed_training_gives_lightning_the_same_device(tiny_corpus, tiny_hf, fake_gpu, tmp_path, monkeypatch):
    import harness.probing.training as training

    built = {}

    class Stop(Exception):
        pass

    def trainer(**kw):
        built.update(kw)
        raise Stop  # Lightning cannot start a CUDA run here; what it was given is the point

    monkeypatch.setattr(training.pl, "Trainer", trainer)
    plan = prepare(_request(tiny_corpus, tmp_path / "o", upstream=f"hf:{tiny_hf}", cache="none", accelerator="gpu"))
    with pytest.raises(Stop):
        training.fit(plan, provide_features(plan))
    assert built["accelerator"] == "cuda" and built["devices"] == 1


def test_plan_times_on_the_gpu(tiny_corpus, fake_gpu, tmp_path, monkeypatch):
    import harness.probing.estimate as estimate

    monkeypatch.setattr(estimate, "time_training", lambda plan, features, sample: None)  # the module would go to cuda
    est = estimate.plan_run(_request(tiny_corpus, tmp_path / "o", accelerator="gpu"))
    assert "Fake GPU" in est.features.extraction_device
    assert {d for _, d in fake_gpu} == {CUDA0}


def test_harness_extract_and_the_analyses_and_pretraining_targets_ask_the_same_function(tiny_corpus, fake_gpu,
                                                                                       tmp_path):
    from harness.analysis.frames import cached_layers, load_utterances
    from harness.cli import main
    from harness.features.extract import iter_layers
    from harness.upstream import load_upstream

    wav = next((tiny_corpus / "LibriSpeech").rglob("*.flac"))
    assert main(["extract", "--upstream", "mfcc", "--wav", str(wav), "--out", str(tmp_path / "x.npz"),
                 "--accelerator", "gpu"]) == 0
    assert fake_gpu and {d for _, d in fake_gpu} == {CUDA0}
    fake_gpu.clear()
    cached_layers(load_upstream("mfcc"), load_utterances(tiny_corpus, "dev", limit=3), progress=False)  # auto
    assert fake_gpu and {d for _, d in fake_gpu} == {CUDA0}
    fake_gpu.clear()
    # harness/training/hubert.py make_targets runs its teacher through iter_layers with the default placement
    list(iter_layers(load_upstream("mfcc"), [np.zeros(16000, np.float32)]))
    assert fake_gpu and {d for _, d in fake_gpu} == {CUDA0}


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("command", ["run", "plan", "extract"])
def test_accelerator_gpu_without_a_gpu_fails_in_one_line_before_any_work(tiny_corpus, tmp_path, command):
    home = tmp_path / "home"
    env = dict(os.environ, HARNESS_HOME=str(home))
    if command == "extract":
        args = ["extract", "--upstream", "mfcc", "--wav", str(next((tiny_corpus / "LibriSpeech").rglob("*.flac"))),
                "--out", str(tmp_path / "x.npz")]
    else:
        args = [command, "--upstream", "mfcc", "--task", "phone", "--data-root", str(tiny_corpus), "--quiet",
                "--out", str(tmp_path / "res")]
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *args, "--accelerator", "gpu"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "no CUDA GPU is visible" in proc.stderr
    assert not home.exists() and not (tmp_path / "res").exists() and not (tmp_path / "x.npz").exists()


def test_auto_on_the_cpu_is_exactly_cpu(tiny_corpus, tmp_path, monkeypatch):
    """The default (auto) resolves to the CPU here and changes no key: the committed results'
    runs keep theirs."""
    if torch.cuda.is_available():
        pytest.skip("auto takes the GPU on this machine")
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    auto = prepare(_request(tiny_corpus, tmp_path / "o"))
    cpu = prepare(_request(tiny_corpus, tmp_path / "o", accelerator="cpu"))
    assert auto.placement == cpu.placement and auto.key == cpu.key
    assert "device" not in auto.identity and "precision" not in auto.identity
    bf16 = prepare(_request(tiny_corpus, tmp_path / "o", precision="bf16-mixed"))
    assert bf16.identity["precision"] == "bf16-mixed" and bf16.key != auto.key
    streamed = prepare(_request(tiny_corpus, tmp_path / "o", cache="none", precision="bf16-mixed"))
    assert streamed.key not in (auto.key, bf16.key)


@pytest.mark.parametrize("task", ["phone", "ic", "pr"])
def test_the_tasks_targets_go_where_the_module_is(tiny_corpus, tmp_path, monkeypatch, task):
    """Tasks build their targets on the CPU from the examples; the module moves them to its own
    device with the rest of the batch, or a GPU run fails in its first loss (found on an H200:
    logits on cuda:0, targets on the CPU). Here the module claims to be on cuda:0 and the move
    is recorded."""
    import harness.probing.module as module_mod
    from harness.features.loaders import FeatureDataset, collate
    from harness.features.cache import ensure_features
    from harness.probing.module import ProbeModule

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    plan = prepare(RunRequest(upstream="fbank", task=task, layer="0", data_root=tiny_corpus, out=tmp_path / "o",
                              protocol="quick"))
    examples = plan.examples["train"][:4]
    feats = ensure_features(plan.upstream, plan.task.dataset, "train", examples, kind="frames", dtype="float16",
                            layers=plan.layers, progress=False)
    batch = collate([FeatureDataset(examples, feats, hop=plan.upstream.info.hop)[i] for i in range(4)])
    module = ProbeModule(plan.task, plan.probes, list(plan.upstream.info.dims), plan.upstream.info.hop, plan.config,
                         examples, offset=plan.upstream.info.frame_offset)
    moved = []
    monkeypatch.setattr(ProbeModule, "device", property(lambda self: CUDA0))
    monkeypatch.setattr(module_mod, "move_data_to_device", lambda data, device: moved.append((data, device)) or data)
    _, b = module.prepared(batch)
    (targets, device), = moved
    assert device == CUDA0 and targets and all(b[k] is v for k, v in targets.items())
    assert "targets" in targets
