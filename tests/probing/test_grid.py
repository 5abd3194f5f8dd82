"""Learning-rate grids and head seeds trained in the same pass (issue 25): each grid point trains
exactly as a single-lr run, dev chooses per probe, records keep every point, identities and
resumption hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_models
import torch

from harness.config import parse_lr_grid
from harness.errors import HarnessError
from harness.probing.benchmark import load_config
from harness.probing.engine import RunRequest, finished_records, prepare, run
from harness.probing.module import ProbeModule
from harness.probing.probes import parse_layers
from harness.records import MetricSpec, read_outcomes
from harness.registry import load_task
from harness.reports.ranking import format_table, load_records, rank
from harness.task import Example

FAST = {"batch_size": 8, "val_interval": 3}
GRID = [1e-3, 3e-2]


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return tiny_models.hf_hubert(tmp_path_factory.mktemp("hf") / "m", layers=2)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def request(corpus, out, model, **kw) -> RunRequest:
    overrides = dict(FAST)
    overrides.update(kw.pop("overrides", {}))
    return RunRequest(upstream=f"hf:{model}", task=kw.pop("task", "ic"), data_root=corpus, out=out,
                      max_steps=kw.pop("max_steps", 6), overrides=overrides, progress=False,
                      protocol=kw.pop("protocol", "quick"), **kw)


def _run(corpus, out, model, **kw) -> dict[str, dict]:
    """{file name stem: record} of one run."""
    return {p.stem: json.loads(p.read_text()) for p in run(request(corpus, out, model, **kw))}


def _outcomes(out: Path, stem: str) -> dict:
    return vars(read_outcomes(next(out.rglob(f"{stem}.json"))))


@pytest.mark.parametrize("task", ["ic", "phone"])  # pooled utterance features; fp16 frames
def test_each_grid_point_trains_exactly_as_a_single_lr_run(tiny_corpus, tiny_hf, home, tmp_path, task):
    grid = _run(tiny_corpus, tmp_path / "grid", tiny_hf, task=task, overrides={"lr_grid": GRID})
    singles = {lr: _run(tiny_corpus, tmp_path / f"lr{lr}", tiny_hf, task=task, overrides={"lr": lr}) for lr in GRID}
    assert list(grid) == ["layer_0_seed0", "layer_1_seed0", "layer_2_seed0", "weighted_seed0"]
    for stem, g in grid.items():
        assert [p["lr"] for p in g["grid"]] == GRID and g["config"]["lr_grid"] == GRID
        for point in g["grid"]:  # every point's whole dev curve, bit for bit
            single = singles[point["lr"]][stem]
            assert point["dev_curve"] == single["dev_curve"] and point["best_step"] == single["best_step"]
        chosen = singles[g["lr"]][stem]  # the record is the chosen point's run
        assert (g["dev"], g["test"], g["best_step"], g["dev_curve"], g["layer_weights"]) == \
            (chosen["dev"], chosen["test"], chosen["best_step"], chosen["dev_curve"], chosen["layer_weights"])
        assert _outcomes(tmp_path / "grid", stem) == _outcomes(tmp_path / f"lr{g['lr']}", stem)


def test_dev_chooses_the_grid_point_per_probe(tiny_corpus, tiny_hf, home, tmp_path):
    # 1e-7 barely moves the heads from their initialisation: dev must prefer 3e-2 for every probe
    records = _run(tiny_corpus, tmp_path / "g", tiny_hf, task="phone", overrides={"lr_grid": "1e-7,3e-2"})
    for r in records.values():
        metric = r["metric"]["name"]
        best = max(p["best_dev"] for p in r["grid"])
        assert r["lr"] == next(p["lr"] for p in r["grid"] if p["best_dev"] == best)  # ties: the smaller rate
        point = next(p for p in r["grid"] if p["lr"] == r["lr"])
        assert r["dev"][metric] == point["best_dev"] and r["best_step"] == point["best_step"]
        assert point["dev_curve"] == r["dev_curve"] and len(r["dev_curve"]) == 2
    assert {r["lr"] for r in records.values()} == {3e-2}


def _sid_module(config_extra: dict, probes: str = "all", seeds=None) -> ProbeModule:
    cls = load_task("sid")
    task = cls({**cls.default_config(), **config_extra})
    task.prepare([Example(f"u{i}", None, (f"spk{i % 3}",)) for i in range(6)])
    return ProbeModule(task, parse_layers(probes, 2), [5, 5], 160, task.config, [], seeds=seeds)


def test_the_chosen_point_ties_to_the_smaller_rate_and_follows_the_metric():
    module = _sid_module({"lr_grid": [1e-4, 1e-3, 1e-2]}, probes="0")
    assert [m.key for m in module.members] == ["layer_0__lr0", "layer_0__lr1", "layer_0__lr2"]
    for higher_is_better, values, expect in ((True, [0.5, 0.75, 0.75], 1e-3), (False, [0.5, 0.2, 0.2], 1e-3),
                                             (True, [0.9, 0.5, 0.9], 1e-4), (False, [0.9, 0.5, 0.9], 1e-3)):
        module.task.metric = MetricSpec("m", higher_is_better)
        module.best = {m.key: {"dev": v, "step": 3, "state": {}} for m, v in zip(module.members, values)}
        assert module.chosen("layer_0").lr == expect
    del module.best["layer_0__lr2"]
    with pytest.raises(HarnessError, match="without a validation"):
        module.chosen("layer_0")


def test_grid_runs_are_deterministic_and_resume_through_identical_windows(tiny_corpus, tiny_hf, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "h1"))
    _run(tiny_corpus, tmp_path / "a", tiny_hf, max_steps=3, overrides={"lr_grid": GRID})
    resumed = _run(tiny_corpus, tmp_path / "a", tiny_hf, max_steps=9, overrides={"lr_grid": GRID})
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "h2"))
    straight = _run(tiny_corpus, tmp_path / "b", tiny_hf, max_steps=9, overrides={"lr_grid": GRID})
    keys = ("dev", "test", "lr", "grid", "best_step", "layer_weights", "run_key")
    assert [[r[k] for k in keys] for r in resumed.values()] == [[r[k] for k in keys] for r in straight.values()]
    assert finished_records(prepare(request(tiny_corpus, tmp_path / "b", tiny_hf, max_steps=9,
                                            overrides={"lr_grid": list(reversed(GRID))})))


def test_identity_without_a_grid_is_unchanged_and_the_grid_is_in_it(tiny_corpus, tiny_hf, home, tmp_path):
    plain = prepare(request(tiny_corpus, tmp_path / "o", tiny_hf))
    assert set(plain.identity) == {"upstream", "task", "config", "probes", "seed", "corpus", "world_size", "version",
                                   "features"}
    assert set(plain.identity["config"]) | {"max_steps"} == set(plain.config) == set(load_task("ic").default_config())
    grid = prepare(request(tiny_corpus, tmp_path / "o", tiny_hf, overrides={"lr_grid": "1e-2,1e-3"}))
    same = prepare(request(tiny_corpus, tmp_path / "o", tiny_hf, overrides={"lr_grid": [1e-3, 1e-2]}))
    other = prepare(request(tiny_corpus, tmp_path / "o", tiny_hf, overrides={"lr_grid": [1e-4, 1e-2]}))
    seeds = prepare(request(tiny_corpus, tmp_path / "o", tiny_hf, seeds="0,1"))
    assert grid.identity["config"]["lr_grid"] == [1e-3, 1e-2] and grid.key == same.key
    assert len({plain.key, grid.key, other.key, seeds.key}) == 4 and seeds.identity["init_seeds"] == [0, 1]


def test_head_seeds_in_one_pass_vary_the_initialisation_only(tiny_corpus, tiny_hf, home, tmp_path):
    one_pass = _run(tiny_corpus, tmp_path / "s", tiny_hf, seeds=[0, 1])
    plain = _run(tiny_corpus, tmp_path / "p", tiny_hf, seed=0)
    assert sorted(one_pass) == sorted(f"{k[:-len('_seed0')]}_seed{s}" for k in plain for s in (0, 1))
    for stem, r in plain.items():
        same = one_pass[stem]  # head seed 0 on the batches of seed 0: the plain run
        assert same["seed"] == 0 and same["batch_seed"] == 0 and same["run_key"] != r["run_key"]
        assert (same["dev_curve"], same["test"]) == (r["dev_curve"], r["test"])
        assert one_pass[stem.replace("seed0", "seed1")]["batch_seed"] == 0
    assert any(one_pass[s.replace("seed0", "seed1")]["dev_curve"] != one_pass[s]["dev_curve"] for s in plain)
    # the report resamples the two seeds of one setting; the plain run is another setting
    rankings = rank(load_records(tmp_path / "s"))
    assert len(rankings) == 1 and {s.seeds for s in rankings[0].layers} == {2}
    assert "head initialisation only" in format_table(rankings)
    assert rankings[0].setting != rank(load_records(tmp_path / "p"))[0].setting


def test_a_grid_with_seeds_keeps_a_rate_per_seed_and_the_report_shows_it(tiny_corpus, tiny_hf, home, tmp_path):
    records = _run(tiny_corpus, tmp_path / "g", tiny_hf, seeds="0,1", overrides={"lr_grid": GRID})
    assert len(records) == 8 and all(len(r["grid"]) == 2 and r["batch_seed"] == 0 for r in records.values())
    rankings = rank(load_records(tmp_path / "g"))
    table = format_table(rankings)
    header = table.splitlines()[1].split()
    assert header[-1] == "lr" and "grid 0.001, 0.03" in table
    for s in rankings[0].layers:
        seed_lrs = tuple(records[f"{s.probe}_seed{seed}"]["lr"] for seed in (0, 1))
        assert s.lrs == seed_lrs
    row = json.loads(format_table(rankings, "json"))[0]["rows"][0]
    assert row["lr"] in {"0.001", "0.03", "0.001,0.03", "0.03,0.001"}
    assert "lr" in format_table(rankings, "csv").splitlines()[0].split(",")


def test_bad_grids_and_seeds_are_one_line(tiny_corpus, tiny_hf, home, tmp_path):
    for overrides, seeds, msg in (({"lr_grid": "1e-3"}, None, "at least two"), ({"lr_grid": "1e-3,x"}, None, "must be a number"),
                                  ({"lr_grid": [1e-3, -1]}, None, "> 0"), ({}, "0,0", "twice"), ({}, "1", "--seed 1")):
        with pytest.raises(HarnessError, match=msg):
            prepare(request(tiny_corpus, tmp_path / "o", tiny_hf, overrides=overrides, seeds=seeds))
    assert parse_lr_grid(None) is None
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--upstream", "fbank", "--task", "ic",
                           "--data-root", str(tiny_corpus), "--lr-grid", "1e-3,1e-3", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "twice" in done.stderr


def test_benchmark_configs_take_lr_grid_and_seeds(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("jobs:\n  - upstreams: [fbank]\n    tasks: [ic]\n    lr_grid: [1.0e-2, 1.0e-4]\n    seeds: 1,0\n"
                    "  - upstreams: [fbank]\n    tasks: [ic]\n    set: {lr_grid: \"1e-3,1e-2\"}\n")
    jobs = load_config(path)
    assert jobs[0].overrides["lr_grid"] == [1e-4, 1e-2] and jobs[0].seeds == [0, 1]
    assert jobs[1].overrides["lr_grid"] == [1e-3, 1e-2] and jobs[1].seeds is None
    path.write_text("jobs:\n  - upstreams: [fbank]\n    tasks: [ic]\n    lr_grid: [1.0e-2]\n")
    with pytest.raises(HarnessError, match="job 1: lr_grid needs at least two"):
        load_config(path)


def test_the_heads_of_one_seed_start_as_a_run_with_that_seed():
    torch.manual_seed(5)
    plain = _sid_module({})
    before = torch.random.get_rng_state()
    seeded = _sid_module({"lr_grid": [1e-4, 1e-2]}, seeds=[5, 6])
    assert torch.equal(before, torch.random.get_rng_state())  # the global stream is left alone
    for key, probe in plain.probes.items():
        for lr_index in (0, 1):
            other = seeded.probes[f"{key}__seed5__lr{lr_index}"]
            assert all(torch.equal(a, b) for a, b in zip(probe.state_dict().values(), other.state_dict().values()))
    a, b = seeded.probes["layer_0__seed5__lr0"], seeded.probes["layer_0__seed6__lr0"]
    assert not torch.equal(a.head.proj.weight, b.head.proj.weight)
    groups = seeded.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == [1e-4, 1e-2] and len(groups[0]["params"]) == len(groups[1]["params"])
    # no grid: one group over every probe, as before grids existed
    assert [len(g["params"]) for g in plain.configure_optimizers().param_groups] == [len(list(plain.parameters()))]
