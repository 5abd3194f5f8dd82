"""The pretraining-recipe contract: registry, overrides, --reuse rules, harness pretrain's result."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.errors import HarnessError
from harness.registry import recipe_names
from harness.training.recipe import PretrainingResult, Recipe, get_recipe


def test_the_built_in_recipes_are_registered_with_their_backends():
    assert {"hubert", "wav2vec2", "dino"} <= set(recipe_names())
    recipes = {name: get_recipe(name) for name in ("hubert", "wav2vec2", "dino")}
    assert all(isinstance(r, Recipe) and r.name == name for name, r in recipes.items())
    assert {name: r.backend for name, r in recipes.items()} == {"hubert": "hf", "wav2vec2": "hf",
                                                                 "dino": "speechbrain"}
    assert [name for name, r in recipes.items() if r.supports_reuse] == ["hubert"]
    with pytest.raises(HarnessError, match="unknown pretraining recipe 'nope'; available: .*hubert"):
        get_recipe("nope")


def test_hubert_overrides_reach_one_iteration_and_keep_the_others():
    hubert = get_recipe("hubert")
    recipe = hubert.default_recipe()
    out = hubert.apply_overrides(recipe, {"iterations": {"1": {"init": "previous", "optim": {"lr": 1e-4}}},
                                          "seed": 3})
    assert out["seed"] == 3 and out["iterations"][0] == recipe["iterations"][0]
    assert out["iterations"][1]["init"] == "previous" and out["iterations"][1]["optim"] == {"lr": 1e-4}
    assert recipe == hubert.default_recipe()  # the input is not changed
    with pytest.raises(HarnessError, match=r"needs N in 0\.\.1"):
        hubert.apply_overrides(recipe, {"iterations": {"2": {"steps": 5}}})
    with pytest.raises(HarnessError, match="unknown config key 'iterations.0.stepz'"):
        hubert.apply_overrides(recipe, {"iterations": {"0": {"stepz": 5}}})
    with pytest.raises(HarnessError, match="unknown config key 'quantizer'"):  # another recipe's key
        hubert.apply_overrides(recipe, {"quantizer": {"groups": 2}})


def test_reuse_is_resolved_or_refused_by_the_recipe(tmp_path):
    hubert = get_recipe("hubert")
    assert hubert.reuse_run(str(tmp_path / "old"), tmp_path / "new") == tmp_path / "old"
    assert (hubert.reuse_run("@tiny_hubert", tmp_path / "new") / "recipe.yaml").exists()  # shipped with the harness
    with pytest.raises(HarnessError, match="no pretraining run of that name ships"):
        hubert.reuse_run("@nothing_like_it", tmp_path / "new")
    with pytest.raises(HarnessError, match="another run than --out"):
        hubert.reuse_run(str(tmp_path / "new"), tmp_path / "new")
    with pytest.raises(HarnessError, match="the dino recipe has one stage"):
        get_recipe("dino").reuse_run(str(tmp_path / "old"), tmp_path / "new")


def test_the_result_prints_each_stage_as_an_upstream(tmp_path):
    result = PretrainingResult(tmp_path, "speechbrain", [tmp_path / "it1" / "final"])
    assert result.format().splitlines() == [f"iteration 1: speechbrain:{tmp_path}/it1/final",
                                            f"checkpoints: {tmp_path}/it*/step_*  (log: {tmp_path}/log.jsonl)"]


def test_cli_recipe_choices_come_from_the_registry(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "pretrain", "--recipe", "nope", "--out",
                           str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert all(name in proc.stderr for name in recipe_names()), proc.stderr
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "corpus.json").write_text("{}")
    reuse = subprocess.run([sys.executable, "-m", "harness.cli", "pretrain", "--recipe", "wav2vec2", "--out",
                            str(tmp_path / "o"), "--corpus", str(corpus), "--reuse", "x", "--quiet"],
                           capture_output=True, text=True)
    assert reuse.returncode == 2 and reuse.stderr.strip().splitlines() == [
        "harness: error: --reuse applies to the iterative HuBERT recipe; the wav2vec2 recipe has one stage"]
    assert not (tmp_path / "o").exists()  # refused before any work
