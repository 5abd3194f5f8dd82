"""harness finetune: CTC fine-tuning of a whole upstream, resumable, saved as an upstream."""

from __future__ import annotations

import json

import pytest
import tiny_models
import torch
from safetensors.torch import load_file

from harness.training.finetune import default_recipe, finetune
from harness.upstream import load_upstream


def _recipe(**kw) -> dict:
    recipe = default_recipe()
    recipe.update({"steps": 8, "checkpoint_every": 4, "log_every": 2, "warmup_steps": 2, "batch_seconds": 12.0,
                   "freeze_transformer_steps": 2, "dev_utterances": 4, "lr": 1e-3})
    recipe.update(kw)
    return recipe


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_models.hf_hubert(tmp_path_factory.mktemp("ft") / "m", stable=True, layers=2)


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_finetuning_saves_an_upstream_keeps_the_cnn_and_resumes_bit_identically(model, tiny_corpus, tmp_path,
                                                                               monkeypatch):
    straight = finetune(f"hf:{model}", "asr", tiny_corpus, tmp_path / "a", _recipe(), progress=False)
    up = load_upstream(f"hf:{straight}")
    assert up.num_layers == 3 and (straight / "ctc_head.safetensors").exists()
    meta = json.loads((straight / "finetune.json").read_text())
    assert meta["step"] == 8 and 0 <= meta["dev_token_error_rate"]
    before, after = _weights(model), _weights(straight)
    cnn = [k for k in before if k.startswith("feature_extractor.")]
    assert cnn and all(torch.equal(before[k], after[k]) for k in cnn)  # frozen CNN
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("encoder.layers."))
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [2, 4, 6, 8]

    # killed after the step-4 checkpoint, then resumed: the same weights bit for bit
    import harness.training.finetune as ft

    real = ft._batch_at
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ft, "_batch_at", dying)
    with pytest.raises(KeyboardInterrupt):
        finetune(f"hf:{model}", "asr", tiny_corpus, tmp_path / "b", _recipe(), progress=False)
    monkeypatch.setattr(ft, "_batch_at", real)
    assert (tmp_path / "b" / "step_000004").exists() and not (tmp_path / "b" / "final").exists()
    resumed = finetune(f"hf:{model}", "asr", tiny_corpus, tmp_path / "b", _recipe(), progress=False)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_reinit_top_changes_only_the_top_layer_before_training(model, tiny_corpus, tmp_path):
    out = finetune(f"hf:{model}", "pr", tiny_corpus, tmp_path / "r",
                   _recipe(reinit_top=1, steps=2, freeze_transformer_steps=2, checkpoint_every=2), progress=False)
    before, after = _weights(model), _weights(out)
    top = [k for k in before if k.startswith("encoder.layers.1.")]
    low = [k for k in before if k.startswith("encoder.layers.0.")]
    # with the transformer frozen for both steps, only the re-initialisation moved it
    assert all(torch.equal(before[k], after[k]) for k in low)
    assert any(not torch.equal(before[k], after[k]) for k in top)


def test_bad_requests_are_one_line_errors(model, tiny_corpus, tmp_path):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="not a CTC task"):
        finetune(f"hf:{model}", "sid", tiny_corpus, tmp_path / "x", _recipe(), progress=False)
    with pytest.raises(HarnessError, match="HuggingFace upstream"):
        finetune("mfcc", "asr", tiny_corpus, tmp_path / "y", _recipe(), progress=False)
    with pytest.raises(HarnessError, match="reinit_top 5"):
        finetune(f"hf:{model}", "asr", tiny_corpus, tmp_path / "z", _recipe(reinit_top=5), progress=False)
