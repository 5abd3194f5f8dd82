"""HuBERT-style pretraining: k-means, target quality, checkpoints, resume, loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from harness.errors import HarnessError
from harness.training import data, runs
from harness.training import hubert as pt
from harness.upstream import load_upstream


def tiny_recipe(steps: int = 24, second_layer: int = 1) -> dict:
    recipe = pt.default_recipe()
    recipe["data"].update(batch_seconds=6.0, max_crop_seconds=2.0)
    recipe["model"].update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           conv_dim=[16] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    recipe["head"]["code_dim"] = 16
    recipe["optim"].update(lr=3e-3, warmup_steps=4)
    recipe["kmeans"].update(fit_frames=5000, iterations=10)
    recipe["iterations"] = [{"targets": "mfcc", "clusters": 8, "steps": steps},
                            {"targets": "layer", "layer": second_layer, "clusters": 8, "steps": 8}]
    recipe["checkpoint_every"] = 8
    recipe["log_every"] = 4
    return recipe


def test_kmeans_reaches_a_lloyd_fixed_point_and_finds_separated_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + torch.randn(200, 2, generator=g) for c in centres])
    found = pt.kmeans_fit(x, 3, 20, seed=1)
    assign = pt.kmeans_assign(x, found)
    # every centroid is the mean of the points nearest to it (Lloyd's fixed point)
    for k in range(3):
        assert torch.allclose(found[k], x[assign == k].mean(0), atol=1e-4)
    # and the blobs are recovered: each true centre has a centroid within 0.3
    dist = torch.cdist(centres, found)
    assert bool((dist.min(1).values < 0.3).all())
    brute = torch.cdist(x, found).argmin(1)
    assert torch.equal(assign, brute)


def test_target_quality_matches_a_hand_computed_case():
    seg = SimpleNamespace
    # 4 frames at 50 Hz: centres 12.5, 32.5, 52.5, 72.5 ms; phones a (0-40 ms), b (40-80 ms)
    ctm = {"u": [seg(start=0.0, duration=0.04, label="a"), seg(start=0.04, duration=0.04, label="b")]}
    perfect = pt.target_quality({"u": np.array([0, 0, 1, 1])}, ctm, 2)
    assert perfect["phone_purity"] == pytest.approx(1.0) and perfect["pnmi"] == pytest.approx(1.0)
    useless = pt.target_quality({"u": np.array([0, 0, 0, 0])}, ctm, 2)
    assert useless["phone_purity"] == pytest.approx(0.5) and useless["pnmi"] == pytest.approx(0.0)
    half = pt.target_quality({"u": np.array([0, 1, 0, 1])}, ctm, 2)  # independent of the phone
    assert half["pnmi"] == pytest.approx(0.0, abs=1e-12)


def test_span_mask_is_seeded_and_covers_spans():
    a = data.span_mask(3, 100, 0.08, 10, torch.Generator().manual_seed(5))
    b = data.span_mask(3, 100, 0.08, 10, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert 0.3 < a.float().mean() < 0.85  # 8 starts x 10 frames with overlaps


def test_batches_are_stable_and_cover_every_utterance():
    lengths = [16000 + 997 * i for i in range(60)]
    one = data.StepBatches(lengths, 8.0, 2.0, seed=3)
    two = data.StepBatches(lengths, 8.0, 2.0, seed=3)
    first_epoch = data.epoch_batches(lengths, 8.0, 2.0, 3, 0)
    assert sorted(i for b in first_epoch for i in b) == list(range(60))
    assert [two[s] for s in range(40)] == [one[s] for s in range(40)]
    assert all(min(min(lengths[i] for i in b), 32000) * len(b) <= 8 * 16000 or len(b) == 1 for b in first_epoch)


@pytest.fixture(scope="module")
def finished(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "run"
    finals = pt.pretrain(tiny_corpus, out, tiny_recipe(), progress=False)
    return out, finals


def test_pretraining_writes_loadable_checkpoints_and_the_loss_falls(finished):
    out, finals = finished
    assert [f.name for f in finals] == ["final", "final"]
    steps = sorted(p.name for p in (out / "it1").glob("step_*"))
    assert steps == ["step_000008", "step_000016", "step_000024"]
    wav = torch.randn(1, 16000) * 0.1
    outputs = []
    for ck in [out / "it1" / "step_000008", out / "it1" / "final", out / "it2" / "final"]:
        up = load_upstream(f"hf:{ck}")
        assert up.num_layers == 3 and up.info.weights_sha256
        outputs.append(up.layers(wav, torch.tensor([16000])).hidden[-1])
        meta = json.loads((ck / "pretrain.json").read_text())
        assert meta["targets"]["clusters_used"] <= 8
    assert not torch.allclose(outputs[0], outputs[1])  # training moved the weights
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    it1 = [r for r in log if r["iteration"] == 1]
    assert [r["step"] for r in it1] == [4, 8, 12, 16, 20, 24]
    assert it1[-1]["loss"] < it1[0]["loss"] - 0.2, it1
    it2 = json.loads((out / "it2" / "final" / "pretrain.json").read_text())["targets"]
    assert it2["source"] == "layer 1 of it1"


def test_interrupted_pretraining_resumes_to_the_same_weights(tiny_corpus, tmp_path, finished, monkeypatch):
    out = tmp_path / "run"
    real_save = pt.save_checkpoint
    calls = []

    def save_then_die(model, folder, meta):
        real_save(model, folder, meta)
        calls.append(folder.name)
        if len(calls) == 2:  # after it1/step_000016: the process dies here
            raise KeyboardInterrupt

    monkeypatch.setattr(pt, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pt.pretrain(tiny_corpus, out, tiny_recipe(), progress=False)
    monkeypatch.setattr(pt, "save_checkpoint", real_save)
    assert not (out / "it1" / "final").exists()
    pt.pretrain(tiny_corpus, out, tiny_recipe(), progress=False)
    reference, _ = finished
    for part in ("it1/final", "it2/final"):
        a = load_file(out / part / "model.safetensors")
        b = load_file(reference / part / "model.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()
             if json.loads(line)["iteration"] == 1]
    assert steps == [4, 8, 12, 16, 20, 24]  # no step logged twice after the resume


def test_another_recipe_in_the_same_folder_is_refused(finished, tiny_corpus):
    out, _ = finished
    with pytest.raises(HarnessError, match="another recipe"):
        pt.pretrain(tiny_corpus, out, tiny_recipe(steps=30), progress=False)


def test_a_longer_iteration_2_reuses_iteration_1_and_trains_only_iteration_2(finished, tiny_corpus, tmp_path):
    source, _ = finished
    recipe = tiny_recipe()
    recipe["iterations"][1].update(steps=12, optim={"lr": 1e-3})  # longer, with its own peak lr
    with pytest.raises(HarnessError, match="--reuse"):  # the refusal in place says how to keep iteration 1
        pt.pretrain(tiny_corpus, source, recipe, progress=False)
    before = {p: p.stat().st_mtime_ns for p in source.rglob("*")}
    out = tmp_path / "longer"
    pt.pretrain(tiny_corpus, out, recipe, progress=False, reuse=source)
    assert {p: p.stat().st_mtime_ns for p in source.rglob("*")} == before  # the source run is only read
    a, b = (load_file(run / "it1" / "final" / "model.safetensors") for run in (out, source))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((out / "it2" / "final" / "pretrain.json").read_text())["step"] == 12
    assert json.loads((out / "reused.json").read_text())["iterations"] == 1
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    source_rows = [json.loads(line) for line in (source / "log.jsonl").read_text().splitlines()]
    assert [r for r in rows if r["iteration"] == 1] == [r for r in source_rows if r["iteration"] == 1]
    assert [r["step"] for r in rows if r["iteration"] == 2] == [4, 8, 12]
    assert max(r["lr"] for r in rows if r["iteration"] == 2) == pytest.approx(1e-3)  # the iteration's own lr
    assert max(r["lr"] for r in rows if r["iteration"] == 1) == pytest.approx(3e-3)  # the recipe's
    # iteration 2 trained from scratch on the reused iteration 1's targets: same as training both here
    fresh = tmp_path / "fresh"
    pt.pretrain(tiny_corpus, fresh, recipe, progress=False)
    a, b = (load_file(run / "it2" / "final" / "model.safetensors") for run in (out, fresh))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_unknown_optimiser_key_of_an_iteration_is_refused(finished, tiny_corpus, tmp_path):
    source, _ = finished
    recipe = tiny_recipe()
    recipe["iterations"][1]["optim"] = {"learning_rate": 1e-3}
    with pytest.raises(HarnessError, match="unknown optim key"):
        pt.pretrain(tiny_corpus, tmp_path / "typo", recipe, progress=False, reuse=source)


def test_reuse_refuses_a_run_with_another_model(finished, tiny_corpus, tmp_path):
    source, _ = finished
    recipe = tiny_recipe()
    recipe["model"]["hidden_size"] = 48
    with pytest.raises(HarnessError, match="no finished iteration"):
        pt.pretrain(tiny_corpus, tmp_path / "other", recipe, progress=False, reuse=source)
    assert not (tmp_path / "other").exists()


def test_cli_reports_a_bad_target_layer_in_one_line(tiny_corpus, tmp_path):
    import yaml

    recipe = tiny_recipe(steps=4, second_layer=7)
    recipe["checkpoint_every"] = 4
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    env = dict(os.environ, HARNESS_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "pretrain", "--corpus", str(tiny_corpus), "--out",
                           str(tmp_path / "o"), "--config", str(tmp_path / "r.yaml"), "--quiet"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["harness: error: target layer 7 out of range: the previous model has "
                                                "layers 0..2"]
    assert (tmp_path / "o" / "it1" / "final").exists()  # iteration 1 finished and is kept


def test_shipped_float16_checkpoints_load_as_float32_and_match(finished, tmp_path):
    out, _ = finished
    shipped = runs.ship(out, tmp_path / "ship", every=16)
    names = sorted(str(p.relative_to(tmp_path / "ship")) for p in shipped)
    assert names == ["it1/step_000016", "it1/step_000024", "it2/step_000008"]
    assert load_file(shipped[0] / "model.safetensors")["encoder.layers.0.attention.k_proj.weight"].dtype == torch.float16
    wav = torch.randn(2, 12000) * 0.1
    lengths = torch.tensor([12000, 9000])
    a = load_upstream(f"hf:{out / 'it1' / 'step_000024'}").layers(wav, lengths)
    b = load_upstream(f"hf:{shipped[1]}").layers(wav, lengths)
    assert b.hidden[-1].dtype == torch.float32
    for x, y in zip(a.hidden, b.hidden):
        assert (x - y).abs().max() < 0.02 * x.abs().max()  # fp16 rounding of the weights only
    assert (tmp_path / "ship" / "log.jsonl").exists() and (tmp_path / "ship" / "recipe.yaml").exists()


def test_shipping_again_replaces_the_folder_and_takes_one_interval_per_iteration(finished, tmp_path):
    out, _ = finished
    dest = tmp_path / "ship"
    (dest / "it2" / "step_000004").mkdir(parents=True)  # a checkpoint of some earlier run
    shipped = runs.ship(out, dest, every=[8, 16])
    assert sorted(str(p.relative_to(dest)) for p in shipped) == ["it1/step_000008", "it1/step_000016",
                                                                   "it1/step_000024", "it2/step_000008"]
    assert sorted(str(p.relative_to(dest)) for p in dest.glob("it*/step_*")) == sorted(
        str(p.relative_to(dest)) for p in shipped)  # the stale it2/step_000004 is gone
    with pytest.raises(HarnessError, match="intervals"):
        runs.ship(out, dest, every=[8])


def test_shipped_checkpoints_come_from_the_default_recipe():
    """The README's `harness pretrain` command (default recipe) is what made the shipped model."""
    from importlib import resources

    import yaml

    from harness.training import dino as pretrain_dino
    from harness.training import wav2vec2 as pretrain_wav2vec2

    recipes = {"tiny_hubert": pt.default_recipe(), "tiny_wav2vec2": pretrain_wav2vec2.default_recipe(),
               "tiny_dino": pretrain_dino.default_recipe()}
    total = 0
    for name, recipe in recipes.items():
        shipped = resources.files("harness.upstreams").joinpath("checkpoints", name)
        assert yaml.safe_load(shipped.joinpath("recipe.yaml").read_text()) == recipe, name
        iterations = recipe["iterations"] if "iterations" in recipe else [{"steps": recipe["steps"]}]
        for it, iteration in enumerate(iterations, start=1):
            final = iteration["steps"]
            meta = json.loads(shipped.joinpath(f"it{it}", f"step_{final:06d}", "pretrain.json").read_text())
            assert meta["step"] == meta["steps"] == final, name
            assert meta["stored_dtype"] == "float16", name
        total += sum(f.stat().st_size for f in Path(str(shipped)).rglob("*") if f.is_file())
    assert total < 40e6  # every shipped weight together stays under 40 MB


def test_a_warm_started_iteration_begins_from_the_previous_model(finished, tiny_corpus, tmp_path):
    """init: previous starts iteration 2 from iteration 1's encoder (a fresh prediction head):
    after a few steps it is much closer to iteration 1 than a scratch iteration 2 is."""
    reference, _ = finished
    recipe = tiny_recipe()
    recipe["iterations"][1]["init"] = "previous"
    out = tmp_path / "warm"
    pt.pretrain(tiny_corpus, out, recipe, progress=False, reuse=reference)
    it1 = load_file(reference / "it1" / "final" / "model.safetensors")
    warm = load_file(out / "it2" / "final" / "model.safetensors")
    scratch = load_file(reference / "it2" / "final" / "model.safetensors")
    dist = lambda a: sum(float((a[k] - it1[k]).pow(2).sum()) for k in it1)  # noqa: E731
    assert dist(warm) < 0.1 * dist(scratch)
    bad = tiny_recipe()
    bad["iterations"][1]["init"] = "sideways"
    with pytest.raises(HarnessError, match="init must be scratch"):
        pt.pretrain(tiny_corpus, tmp_path / "bad", bad, progress=False)


def test_iteration_2_can_start_from_a_shipped_float16_run(finished, tiny_corpus, tmp_path):
    """--reuse of a shipped folder (checkpoints only, float16): its final checkpoint becomes
    iteration 1's result, iteration 2's targets come from those (rounded) weights, and the
    provenance says so; a shipped folder whose iteration 1 stopped early is not reusable."""
    source, _ = finished
    shipped = tmp_path / "shipped"
    runs.ship(source, shipped, every=16)
    recipe = tiny_recipe()
    recipe["iterations"][1]["clusters"] = 6  # a variant of iteration 2
    out = tmp_path / "variant"
    pt.pretrain(tiny_corpus, out, recipe, progress=False, reuse=shipped)
    it1 = load_file(out / "it1" / "final" / "model.safetensors")
    half = load_file(shipped / "it1" / "step_000024" / "model.safetensors")
    assert all(torch.equal(it1[k], half[k]) for k in half) and half[next(iter(half))].dtype == torch.float16
    assert json.loads((out / "reused.json").read_text())["from_shipped_checkpoints_stored_as"] == ["float16"]
    assert json.loads((out / "it2" / "final" / "pretrain.json").read_text())["step"] == 8
    with np.load(out / "it2" / "targets.npz") as z:
        assert int(z["centroids"].shape[0]) == 6
    assert load_upstream(f"hf:{out / 'it2' / 'final'}").num_layers == 3
    # iteration 1 shipped without its last step: nothing to reuse
    for p in (shipped / "it1" / "step_000024").iterdir():
        p.unlink()
    (shipped / "it1" / "step_000024").rmdir()
    with pytest.raises(HarnessError, match="no finished iteration"):
        pt.pretrain(tiny_corpus, tmp_path / "early", recipe, progress=False, reuse=shipped)


def test_ship_keeps_exactly_the_listed_steps_and_checks_them_before_training(finished, tmp_path):
    source, _ = finished
    shipped = runs.ship(source, tmp_path / "s", steps=[8])
    assert sorted(str(p.relative_to(tmp_path / "s")) for p in shipped) == \
        ["it1/step_000008", "it1/step_000024", "it2/step_000008"]  # each iteration's last always
    with pytest.raises(HarnessError, match=r"no checkpoint at step\(s\) \[5\]"):
        runs.ship(source, tmp_path / "t", steps=[5, 8])
    assert not (tmp_path / "t").exists()
    for flags, message in ((["--ship", str(tmp_path / "u"), "--ship-steps", "6x"], "--ship-steps expects"),
                           (["--ship-steps", "600"], "need --ship DIR"),
                           (["--ship", str(tmp_path / "u"), "--ship-steps", "8", "--ship-every", "8"], "not both")):
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "pretrain", "--out", str(tmp_path / "never"),
                               "--quiet", *flags], capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()  # refused before any work


def test_set_reaches_an_iterations_optional_keys(tmp_path):
    """--set iterations.N.init / .optim.KEY work though the default iteration lacks those keys;
    a misspelt optimiser key is refused in one line before any work."""
    env = dict(os.environ, HARNESS_HOME=str(tmp_path / "home"))
    base = [sys.executable, "-m", "harness.cli", "pretrain", "--out", str(tmp_path / "o"), "--quiet",
            "--corpus", str(tmp_path / "nowhere")]
    ok = subprocess.run(base + ["--set", "iterations.1.init=previous", "--set", "iterations.0.optim.lr=0.001"],
                        capture_output=True, text=True, env=env)
    assert "is not a corpus root" in ok.stderr, ok.stderr  # the recipe was accepted, the corpus check came next
    typo = subprocess.run(base + ["--set", "iterations.1.inti=previous"], capture_output=True, text=True, env=env)
    assert typo.returncode == 2 and "unknown config key 'iterations.1.inti'" in typo.stderr, typo.stderr
