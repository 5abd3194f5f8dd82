"""The run pipeline end to end: every task, layer modes, caching, resumption, records."""

from __future__ import annotations

import json

import pytest
import tiny_models
import torch

from harness.errors import HarnessError
from harness.probing.engine import RunRequest, finished_records, prepare, run
from harness.records import read_dev_outcomes, read_outcomes

FAST = {"batch_size": 8, "val_interval": 3, "lr": 1e-2}


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return tiny_models.hf_hubert(tmp_path_factory.mktemp("hf") / "m", layers=2)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def request(corpus, out, **kw) -> RunRequest:
    overrides = dict(FAST)
    overrides.update(kw.pop("overrides", {}))
    return RunRequest(upstream=kw.pop("upstream", "fbank"), task=kw.pop("task", "sid"), data_root=corpus, out=out,
                      max_steps=kw.pop("max_steps", 6), overrides=overrides, progress=False,
                      protocol=kw.pop("protocol", "quick"), **kw)


def _run(corpus, out, **kw):
    return [json.loads(p.read_text()) for p in run(request(corpus, out, **kw))]


@pytest.mark.parametrize("task,overrides", [
    ("ic", {}), ("sid", {}), ("phone", {}), ("pr", {}),
    ("asr", {"head": {"proj": 8, "hidden": 8, "layers": 2, "dropout": 0.0}}),
    # a subsampling head: CTC loss and decoding must get the head's output lengths, not the features'
    ("asr", {"head": {"proj": 8, "hidden": 8, "layers": 2, "dropout": 0.0, "downsample": 3}}),
])
def test_every_task_runs_all_layers_and_writes_records(tiny_corpus, tiny_hf, home, tmp_path, task, overrides):
    records = _run(tiny_corpus, tmp_path / "res", upstream=f"hf:{tiny_hf}", task=task, overrides=overrides,
                   layer="all")
    assert [r["probe"] for r in records] == ["layer_0", "layer_1", "layer_2", "weighted"]
    for r in records:
        assert r["task"] == task and r["steps"] == 6 and r["seed"] == 0 and r["world_size"] == 1
        assert r["upstream"]["weights_sha256"] and r["versions"]["torch"]
        name = r["metric"]["name"]
        assert 0.0 <= r["test"][name] and name in r["dev"]
        assert r["metric"]["higher_is_better"] == (task in ("ic", "sid", "phone"))
        assert r["wall_time_s"] >= 0 and r["peak_rss_mb"] > 0 and r["config"]["val_interval"] == 3
    weighted = records[-1]
    assert weighted["layer"] == "weighted" and abs(sum(weighted["layer_weights"]) - 1) < 1e-6
    out_dir = next((tmp_path / "res").glob(f"*/{task}/*"))
    o = read_outcomes(out_dir / "weighted_seed0.json")
    assert len(o.ids) == weighted["test_utterances"]
    dev = read_dev_outcomes(out_dir / "weighted_seed0.json")  # what reports choose the layer on
    metric = weighted["metric"]["name"]
    assert dev is not None and set(dev.ids).isdisjoint(o.ids) and dev.value == pytest.approx(weighted["dev"][metric])


def test_single_and_weighted_modes(tiny_corpus, tiny_hf, home, tmp_path):
    one = _run(tiny_corpus, tmp_path / "a", upstream=f"hf:{tiny_hf}", task="ic", layer="1")
    assert [r["layer"] for r in one] == [1] and one[0]["layer_weights"] is None
    w = _run(tiny_corpus, tmp_path / "b", upstream=f"hf:{tiny_hf}", task="ic", layer="weighted")
    assert w[0]["layer"] == "weighted" and len(w[0]["layer_weights"]) == 3
    sub = _run(tiny_corpus, tmp_path / "c", upstream=f"hf:{tiny_hf}", task="ic", layer="0,2")
    assert sub[0]["layers"] == [0, 2] and len(sub[0]["layer_weights"]) == 2


def test_cached_and_streamed_runs_agree(tiny_corpus, home, tmp_path):
    """Same seed: the cached (fp16 frames / pooled means) and streamed runs reach the same metric."""
    for task in ("sid", "phone"):
        cached = _run(tiny_corpus, tmp_path / "c", task=task, max_steps=9)[0]
        live = _run(tiny_corpus, tmp_path / "l", task=task, max_steps=9, cache="none")[0]
        name = cached["metric"]["name"]
        assert live["no_cache"] and not cached["no_cache"] and live["run_key"] != cached["run_key"]
        assert abs(cached["test"][name] - live["test"][name]) <= 0.02, (task, cached["test"], live["test"])


class _Killed(Exception):
    """Stands in for a kill: raised inside training, nothing after it runs."""


def test_interrupted_training_resumes_to_the_same_result(tiny_corpus, tmp_path, monkeypatch):
    from harness.probing.module import ProbeModule

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "straight"))
    straight = _run(tiny_corpus, tmp_path / "s", task="phone", max_steps=12)

    # kill the same run in the middle of its third window (windows end at steps 3, 6, 9)
    step = ProbeModule.training_step

    def dying(self, batch, batch_idx):
        if self.trainer.global_step == 7:
            raise _Killed()
        return step(self, batch, batch_idx)

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "resumed"))
    monkeypatch.setattr(ProbeModule, "training_step", dying)
    with pytest.raises(_Killed):
        _run(tiny_corpus, tmp_path / "r", task="phone", max_steps=12)
    [last] = (tmp_path / "resumed").glob("runs/*/checkpoints/last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 6  # the last window end
    assert not list((tmp_path / "r").rglob("*.json"))  # no record from a killed run

    monkeypatch.setattr(ProbeModule, "training_step", step)
    resumed = _run(tiny_corpus, tmp_path / "r", task="phone", max_steps=12)
    assert resumed[0]["steps"] == 12
    assert resumed[0]["test"] == straight[0]["test"] and resumed[0]["best_step"] == straight[0]["best_step"]
    # the dev curve (every validation's metrics) survives the kill: windows 3, 6 from before, 9, 12 after
    assert [p["step"] for p in resumed[0]["dev_curve"]] == [3, 6, 9, 12]
    assert resumed[0]["dev_curve"] == straight[0]["dev_curve"]
    best = max(resumed[0]["dev_curve"], key=lambda p: p["accuracy"])
    assert best["step"] == resumed[0]["best_step"]
    # a longer run continues a finished shorter one
    longer = _run(tiny_corpus, tmp_path / "r", task="phone", max_steps=15)
    assert longer[0]["steps"] == 15


def test_a_run_ending_inside_a_window_is_validated_at_its_last_step(tiny_corpus, home, tmp_path):
    """--max-steps below val_interval used to train and then fail; now the last step is validated."""
    short = _run(tiny_corpus, tmp_path / "o", task="phone", max_steps=4, overrides={"val_interval": 10})
    assert short[0]["steps"] == 4 and [p["step"] for p in short[0]["dev_curve"]] == [4]
    assert short[0]["best_step"] == 4


def test_a_short_run_leaves_nothing_that_changes_a_longer_one(tiny_corpus, tmp_path, monkeypatch):
    """Checkpoints are kept only at window ends, which a longer run passes through identically."""
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "clean"))
    clean = _run(tiny_corpus, tmp_path / "c", task="phone", max_steps=9)
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "reused"))
    _run(tiny_corpus, tmp_path / "r", task="phone", max_steps=2)  # inside the first window: no checkpoint
    assert not list((tmp_path / "reused").glob("runs/*/checkpoints/last.ckpt"))
    _run(tiny_corpus, tmp_path / "r", task="phone", max_steps=5)  # ends inside the second: checkpoint at 3
    [last] = (tmp_path / "reused").glob("runs/*/checkpoints/last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 3
    longer = _run(tiny_corpus, tmp_path / "r", task="phone", max_steps=9)
    assert longer[0]["test"] == clean[0]["test"] and longer[0]["dev_curve"] == clean[0]["dev_curve"]


def test_a_shorter_budget_never_takes_a_longer_runs_checkpoint(tiny_corpus, tmp_path, monkeypatch):
    """A 12-step run of an experiment exists; a 6-step run of the same experiment must give the
    clean 6-step numbers (it used to resume the step-12 state and report 12 steps), and must
    leave the longer run's checkpoint as it was."""
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "clean"))
    clean = _run(tiny_corpus, tmp_path / "c", task="phone", max_steps=6)
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    _run(tiny_corpus, tmp_path / "long", task="phone", max_steps=12)
    [last] = (tmp_path / "home").glob("runs/*/checkpoints/last.ckpt")
    before = last.read_bytes()
    short = _run(tiny_corpus, tmp_path / "short", task="phone", max_steps=6)
    assert short[0]["steps"] == 6 and short[0]["config"]["max_steps"] == 6
    assert short[0]["test"] == clean[0]["test"] and short[0]["dev_curve"] == clean[0]["dev_curve"]
    assert last.read_bytes() == before


def test_a_finished_run_is_found_by_identity_and_not_trained_again(tiny_corpus, home, tmp_path):
    req = request(tiny_corpus, tmp_path / "o", task="sid")
    first = run(req)
    mtimes = [p.stat().st_mtime_ns for p in first]
    plan = prepare(req)
    assert finished_records(plan) == first
    again = run(req)
    assert again == first and [p.stat().st_mtime_ns for p in again] == mtimes
    # another seed is another experiment
    assert finished_records(prepare(request(tiny_corpus, tmp_path / "o", task="sid", seed=1))) is None


def test_bad_settings_are_refused_before_any_work(tiny_corpus, home, tmp_path):
    cases = [
        ({"overrides": {"lr": "abc"}}, "lr must be a number"),
        ({"overrides": {"batch_size": 0}}, "batch_size must be an integer >= 1"),
        ({"overrides": {"val_interval": 0}}, "val_interval must be an integer >= 1"),
        ({"task": "phone", "overrides": {"head": {"foo": 1}}}, "head takes no options"),
        ({"overrides": {"head": {"foo": 1}}}, "known: proj"),
        ({"task": "phone", "overrides": {"layer_norm": "yes"}}, "layer_norm must be true or false"),
        ({"max_steps": 0}, "max_steps must be an integer >= 1"),
        ({"devices": 3}, "not divisible by the 3"),
        ({"data_root": tmp_path / "nope"}, "does not exist"),
        ({"cache": "ram"}, "--cache"),
    ]
    for kw, msg in cases:
        corpus = kw.pop("data_root", tiny_corpus)
        with pytest.raises(HarnessError, match=msg):
            prepare(request(corpus, tmp_path / "o", **kw))
    assert not (home / "features").exists() and not (home / "runs").exists()  # nothing was extracted or trained


def test_streamed_layers_never_show_padding_to_a_group_norm_model(tiny_hf):
    """Streaming pads a batch of unequal utterances; a padding-sensitive model must still give
    each utterance exactly what it gives alone."""
    from harness.features.extract import streamed_layers
    from harness.upstream import load_upstream, pad_batch

    up = load_upstream(f"hf:{tiny_hf}")
    assert up.padding_sensitive
    g = torch.Generator().manual_seed(0)
    waves = [0.1 * torch.randn(n, generator=g) for n in (16000, 9000, 16000, 12345)]
    wavs, lengths = pad_batch(waves)
    hidden, layer_lengths = streamed_layers(up, wavs, lengths, [0, 2])
    assert hidden[1] is None
    for i, w in enumerate(waves):
        alone = up.layers(w[None], torch.tensor([len(w)]))
        for layer in (0, 2):
            n = int(layer_lengths[layer][i])
            assert n == int(alone.lengths[layer][0])
            assert torch.allclose(hidden[layer][i, :n], alone.hidden[layer][0, :n], atol=1e-5)
    naive = up.layers(wavs, lengths)  # what feeding the padded batch directly would give
    n = int(naive.lengths[0][1])
    assert not torch.allclose(naive.hidden[0][1, :n], hidden[0][1, :n], atol=1e-3)


def test_streamed_and_cached_runs_agree_for_a_group_norm_model(tiny_corpus, tiny_hf, home, tmp_path):
    kw = dict(upstream=f"hf:{tiny_hf}", task="phone", layer="1", max_steps=12)
    cached = _run(tiny_corpus, tmp_path / "c", **kw)[0]
    streamed = _run(tiny_corpus, tmp_path / "s", cache="none", **kw)[0]
    # the cache stores fp16; streaming feeds float32: the same training up to that rounding
    assert abs(cached["test"]["accuracy"] - streamed["test"]["accuracy"]) <= 0.01
    for a, b in zip(cached["dev_curve"], streamed["dev_curve"]):
        assert a["step"] == b["step"] and abs(a["accuracy"] - b["accuracy"]) <= 0.01


def test_the_planner_refuses_a_cache_that_does_not_fit(tiny_corpus, home, tmp_path, monkeypatch):
    import harness.features.planning as planning
    from harness.probing.engine import cache_plan, choose_features

    req = request(tiny_corpus, tmp_path / "o", task="phone", upstream="fbank")
    need = cache_plan(prepare(req))
    assert need.bytes_to_write == sum(s.bytes_to_write for s in need.splits) > 0
    # the formula: frames x 80 dims x 2 bytes (fp16) + 8 bytes per utterance
    assert need.bytes_total == sum(s.frames for s in need.splits) * 80 * 2 + 8 * sum(s.utterances for s in need.splits)
    monkeypatch.setattr(planning, "free_bytes", lambda path: need.needed_with_headroom - 1)
    with pytest.raises(HarnessError, match=r"needs .* but .* free; ways out: fewer layers.*--cache none"):
        choose_features(prepare(req))
    assert not (home / "features").exists()
    auto = choose_features(prepare(request(tiny_corpus, tmp_path / "o", task="phone", upstream="fbank", cache="auto")))
    assert auto.streamed and auto.identity["features"] == "streamed"
    monkeypatch.setattr(planning, "free_bytes", lambda path: need.needed_with_headroom)
    assert not choose_features(prepare(req)).streamed
