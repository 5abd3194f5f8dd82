"""Where the upstream runs: one function chooses the device and precision; keys change only
when the choice is not the CPU in float32."""

from __future__ import annotations

import pytest
import torch

from harness.errors import HarnessError
from harness.features.device import Placement, choose_device, launcher_position

NO_GPU = not torch.cuda.is_available()


@pytest.fixture()
def fake_cuda(monkeypatch):
    """A machine with four CUDA GPUs, as far as the device choice can tell."""
    state = {"bf16": True}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: state["bf16"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake GPU")
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_PROCID", "SLURM_NTASKS",
                "SLURM_LOCALID", "SLURM_JOB_NAME"):
        monkeypatch.delenv(var, raising=False)
    return state


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only behaviour")
def test_on_a_machine_without_a_gpu_auto_is_the_cpu_and_gpu_fails_in_one_line():
    assert choose_device() == choose_device("auto") == choose_device("cpu") == Placement(torch.device("cpu"))
    for name in ("gpu", "cuda"):
        with pytest.raises(HarnessError, match="no CUDA GPU is visible") as err:
            choose_device(name)
        assert "\n" not in str(err.value)
    with pytest.raises(HarnessError, match="needs a GPU"):
        choose_device("cpu", precision="16-mixed")
    with pytest.raises(HarnessError, match="choose from"):
        choose_device("tpu")
    with pytest.raises(HarnessError, match="choose from 32-true, bf16-mixed, 16-mixed"):
        choose_device("cpu", precision="64-true")
    assert choose_device("cpu", precision="bf16").precision == "bf16-mixed"  # Lightning's short names
    assert choose_device("cpu", precision=32).precision == "32-true"


def test_the_gpu_follows_lightning_devices_and_the_launchers_local_rank(fake_cuda, monkeypatch):
    assert choose_device().device == torch.device("cuda", 0)  # auto takes the GPU
    assert choose_device("gpu", "1,3").device == torch.device("cuda", 1)  # one process: the list's first
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's second process on this node
    assert choose_device("gpu", 2).device == torch.device("cuda", 1)
    assert choose_device("gpu", "1,3").device == torch.device("cuda", 3)
    assert choose_device("gpu", "auto").device == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(HarnessError, match="local rank 2 but --devices 1,3 lists 2"):
        choose_device("gpu", "1,3")
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "3")
    assert launcher_position() == (5, 8, 3)
    assert choose_device("gpu", 4).device == torch.device("cuda", 3)
    with pytest.raises(HarnessError, match="asks for GPU 4 but this machine shows 4"):
        choose_device("gpu", "5")
    with pytest.raises(HarnessError, match="not a number"):
        choose_device("gpu", "two")


def test_precision_checks_on_a_gpu(fake_cuda):
    assert choose_device("gpu", precision="16-mixed").autocast_dtype == torch.float16
    assert choose_device("gpu", precision="bf16-mixed").autocast_dtype == torch.bfloat16
    fake_cuda["bf16"] = False
    with pytest.raises(HarnessError, match="Fake GPU has no bfloat16 support; use --precision 16-mixed"):
        choose_device("gpu", precision="bf16-mixed")


def test_identity_names_only_what_is_not_the_default():
    cpu = Placement(torch.device("cpu"))
    assert cpu.identity() == {}  # keys made on the CPU in float32 are unchanged
    assert Placement(torch.device("cpu"), "bf16-mixed").identity() == {"precision": "bf16-mixed"}
    assert Placement(torch.device("cuda", 3), "16-mixed").identity() == {"device": "cuda", "precision": "16-mixed"}
    assert Placement(torch.device("cuda", 0)).identity() == {"device": "cuda"}  # not the index: any GPU of a kind
    assert cpu.workers(None) == 0 and cpu.workers(3) == 3 and Placement(torch.device("cuda", 0)).workers(None) >= 1
    with pytest.raises(HarnessError, match="--workers"):
        cpu.workers(-1)


def test_mixed_precision_runs_the_forward_in_half_and_gives_float32_layers():
    """bf16 autocast on the CPU: the layers come back float32 and close to (not equal to) fp32."""
    from harness.features.extract import iter_layers
    from harness.upstream import load_upstream

    up = load_upstream("distilhubert", random_init=True)
    g = torch.Generator().manual_seed(0)
    waves = [(0.1 * torch.randn(n, generator=g)).numpy() for n in (8000, 12000)]
    fp32 = dict(iter_layers(up, waves, placement=Placement(torch.device("cpu"))))
    bf16 = dict(iter_layers(up, waves, placement=Placement(torch.device("cpu"), "bf16-mixed")))
    for i in range(len(waves)):
        for a, b in zip(fp32[i], bf16[i]):
            assert b.dtype == a.dtype == "float32" and a.shape == b.shape
            scale = float(abs(a).max())
            diff = float(abs(a - b).max())
            assert 0 < diff <= 0.1 * scale  # bfloat16 keeps 8 bits of mantissa: close, not equal
