"""The other pretraining objectives: wav2vec 2.0 (contrastive) and DINO (speaker self-distillation).

Each: a few-step run gives loadable checkpoints, its loss falls, and an interrupted run
resumes to bit-identical weights."""

from __future__ import annotations

import json

import pytest
import torch

from harness.training import dino
from harness.training import wav2vec2 as w2v
from harness.upstream import load_upstream


def w2v_recipe(steps: int = 24) -> dict:
    r = w2v.default_recipe()
    r["data"].update(batch_seconds=6.0, max_crop_seconds=2.0)
    r["model"].update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      conv_dim=[16] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    r["quantizer"].update(groups=2, codewords=16, dim=16)
    r["contrastive"]["distractors"] = 10
    r["optim"].update(lr=3e-3, warmup_steps=4)
    r.update(steps=steps, checkpoint_every=8, log_every=4)
    return r


def dino_recipe(steps: int = 24) -> dict:
    r = dino.default_recipe()
    r["data"]["batch_utterances"] = 6
    r["model"].update(channels=16, attention_channels=8, embedding=16)
    r["head"].update(hidden=32, bottleneck=16, prototypes=32)
    r["crops"].update(global_seconds=1.0, local_seconds=0.5)
    r["optim"].update(lr=3e-3, warmup_steps=4)
    r.update(steps=steps, checkpoint_every=8, log_every=4)
    return r


@pytest.fixture(scope="module")
def w2v_run(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("w2v") / "run"
    return out, w2v.pretrain(tiny_corpus, out, w2v_recipe(), progress=False)[0]


@pytest.fixture(scope="module")
def dino_run(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("dino") / "run"
    return out, dino.pretrain(tiny_corpus, out, dino_recipe(), progress=False)[0]


def _log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_wav2vec2_checkpoints_load_as_upstreams_and_the_loss_falls(w2v_run):
    out, final = w2v_run
    assert sorted(p.name for p in (out / "it1").glob("step_*")) == ["step_000008", "step_000016", "step_000024"]
    up = load_upstream(f"hf:{final}")
    assert up.num_layers == 3 and up.info.hop == 320 and up.info.weights_sha256
    log = _log(out)
    assert [r["step"] for r in log] == [4, 8, 12, 16, 20, 24]
    assert log[-1]["contrastive"] < log[0]["contrastive"] - 0.1, log
    assert 0 < log[-1]["gumbel_temperature"] < log[0]["gumbel_temperature"]
    assert log[0]["contrastive"] == pytest.approx(torch.log(torch.tensor(11.0)).item(), abs=0.3)  # chance: 1 in 11


def _weights_equal(a, b) -> bool:
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_wav2vec2_resumes_bit_identically(w2v_run, tiny_corpus, tmp_path, monkeypatch):
    reference, final = w2v_run
    out = tmp_path / "run"
    real = w2v.save_checkpoint
    calls = []

    def save_then_die(model, folder, meta):
        real(model, folder, meta)
        calls.append(folder.name)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(w2v, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        w2v.pretrain(tiny_corpus, out, w2v_recipe(), progress=False)
    monkeypatch.setattr(w2v, "save_checkpoint", real)
    resumed = w2v.pretrain(tiny_corpus, out, w2v_recipe(), progress=False)[0]
    assert _weights_equal(resumed / "model.safetensors", final / "model.safetensors")
    assert [r["step"] for r in _log(out)] == [4, 8, 12, 16, 20, 24]


def test_dino_checkpoints_are_speechbrain_upstreams_that_training_moved(dino_run):
    out, final = dino_run
    up = load_upstream(f"speechbrain:{final}")
    assert up.info.layer_names == ["block_0", "block_1", "block_2", "block_3", "mfa", "embedding"]
    assert up.info.dims == [16, 16, 16, 16, 48, 16] and not up.info.is_frame_level(5)
    first = torch.load(out / "it1" / "step_000008" / "embedding_model.ckpt", weights_only=True)
    last = torch.load(final / "embedding_model.ckpt", weights_only=True)
    assert any(not torch.equal(first[k], last[k]) for k in first if first[k].is_floating_point())
    log = _log(out)
    assert [r["step"] for r in log] == [4, 8, 12, 16, 20, 24]
    # the teacher is not collapsed onto one prototype: its sharpened outputs still spread
    assert all(r["teacher_entropy"] > 0.1 for r in log)


def test_dino_resumes_bit_identically(dino_run, tiny_corpus, tmp_path, monkeypatch):
    reference, final = dino_run
    out = tmp_path / "run"
    real = dino.save_encoder
    calls = []

    def save_then_die(encoder, folder, recipe, meta):
        real(encoder, folder, recipe, meta)
        calls.append(folder.name)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(dino, "save_encoder", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        dino.pretrain(tiny_corpus, out, dino_recipe(), progress=False)
    monkeypatch.setattr(dino, "save_encoder", real)
    resumed = dino.pretrain(tiny_corpus, out, dino_recipe(), progress=False)[0]
    a = torch.load(resumed / "embedding_model.ckpt", weights_only=True)
    b = torch.load(final / "embedding_model.ckpt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dino_loss_matches_its_definition():
    torch.manual_seed(0)
    s = [torch.randn(3, 5) for _ in range(3)]
    t = [torch.randn(3, 5) for _ in range(2)]
    c = torch.randn(5) * 0.1
    got = dino.dino_loss(s, t, c, 0.1, 0.04)
    terms = []
    for i in range(2):
        q = torch.softmax((t[i] - c) / 0.04, -1)
        for j in range(3):
            if i != j:
                terms.append(-(q * torch.log_softmax(s[j] / 0.1, -1)).sum(-1).mean())
    assert torch.allclose(got, torch.stack(terms).mean())
