"""Tasks and engine: heads, layer modes, feature cache, resumption, records, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_models
from harness.engine import RunRequest, StreamSampler, parse_layers, run
from harness.errors import HarnessError
from harness.heads import Featurizer, UtteranceHead, masked_mean
from harness.metrics import error_counts

FAST = {"batch_size": 8, "val_interval": 3, "lr": 1e-2}


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return tiny_models.hf_hubert(tmp_path_factory.mktemp("hf") / "m", layers=2)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _run(corpus, out, **kw):
    overrides = dict(FAST)
    overrides.update(kw.pop("overrides", {}))
    req = RunRequest(upstream=kw.pop("upstream", "fbank"), task=kw.pop("task", "sid"), data_root=corpus, out=out,
                     max_steps=kw.pop("max_steps", 6), overrides=overrides, progress=False, **kw)
    return [json.loads(p.read_text()) for p in run(req)]


def test_pooled_means_give_the_frame_level_logits():
    torch.manual_seed(0)
    head = UtteranceHead(12, [5, 3], proj=7)
    x = torch.randn(4, 30, 12)
    lengths = torch.tensor([30, 17, 5, 22])
    frame_level = head(x, lengths)
    pooled = head(masked_mean(x, lengths))
    for a, b in zip(frame_level, pooled):
        assert torch.allclose(a, b, atol=1e-5)  # exact up to float32 rounding
    # also through a weighted featurizer over several layers (linear in the layers)
    layers = [torch.randn(4, 30, 12) for _ in range(3)]
    feat = Featurizer([0, 1, 2], weighted=True)
    with torch.no_grad():
        feat.weights.copy_(torch.tensor([0.3, -1.0, 2.0]))
    a = head(feat(layers), lengths)
    b = head(feat([masked_mean(h, lengths) for h in layers]))
    assert all(torch.allclose(u, v, atol=1e-5) for u, v in zip(a, b))


def test_error_counts_match_a_reference_levenshtein():
    def lev(a, b):
        d = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            prev, d[0] = d[0], i
            for j, y in enumerate(b, 1):
                prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
        return d[-1]

    rng = np.random.default_rng(0)
    refs, hyps = [], []
    for _ in range(50):
        refs.append(" ".join(rng.choice(list("abcde"), size=rng.integers(1, 8))))
        hyps.append(" ".join(rng.choice(list("abcdef"), size=rng.integers(0, 8))))
    errors, lengths = error_counts(refs, hyps, "word")
    assert errors == [lev(r.split(), h.split()) for r, h in zip(refs, hyps)]
    assert lengths == [len(r.split()) for r in refs]
    cerr, clen = error_counts(refs, hyps, "char")
    assert cerr == [lev(list(r), list(h)) for r, h in zip(refs, hyps)]


def test_layer_argument_parsing():
    assert [p.key for p in parse_layers("all", 3)] == ["layer_0", "layer_1", "layer_2", "weighted"]
    assert parse_layers("2", 3)[0].layers == (2,)
    assert parse_layers("1-2", 4)[0].layers == (1, 2) and parse_layers("1-2", 4)[0].weighted
    assert parse_layers("3,1", 4)[0].layers == (1, 3)
    for bad, msg in [("5", "out of range"), ("2-1", "must go up"), ("x", "not N"), ("1,9", "out of range")]:
        with pytest.raises(HarnessError, match=msg):
            parse_layers(bad, 4)


def test_stream_sampler_epochs_depend_only_on_seed_and_epoch():
    s = StreamSampler(10, 4, 3, seed=5)
    s.set_epoch(2)
    a = list(s)
    t = StreamSampler(10, 4, 3, seed=5)
    t.set_epoch(2)
    assert a == list(t) and len(a) == 12
    s.set_epoch(0)
    first = list(s)
    s.set_epoch(1)
    stream = first + list(s)
    assert sorted(stream[:10]) == list(range(10))  # each pass over the stream is a permutation


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
        assert r["task"] == task and r["steps"] == 6 and r["seed"] == 0
        assert r["upstream"]["weights_sha256"] and r["versions"]["torch"]
        name = r["metric"]["name"]
        assert 0.0 <= r["test"][name] and name in r["dev"]
        assert r["metric"]["higher_is_better"] == (task in ("ic", "sid", "phone"))
        assert r["wall_time_s"] >= 0 and r["peak_rss_mb"] > 0 and r["config"]["val_interval"] == 3
    weighted = records[-1]
    assert weighted["layer"] == "weighted" and abs(sum(weighted["layer_weights"]) - 1) < 1e-6
    out_dir = next((tmp_path / "res").glob(f"*/{task}/*"))
    o = json.loads((out_dir / "weighted_seed0.outcomes.json").read_text())
    assert len(o["ids"]) == weighted["test_utterances"]


def test_single_and_weighted_modes(tiny_corpus, tiny_hf, home, tmp_path):
    one = _run(tiny_corpus, tmp_path / "a", upstream=f"hf:{tiny_hf}", task="ic", layer="1")
    assert [r["layer"] for r in one] == [1] and one[0]["layer_weights"] is None
    w = _run(tiny_corpus, tmp_path / "b", upstream=f"hf:{tiny_hf}", task="ic", layer="weighted")
    assert w[0]["layer"] == "weighted" and len(w[0]["layer_weights"]) == 3
    sub = _run(tiny_corpus, tmp_path / "c", upstream=f"hf:{tiny_hf}", task="ic", layer="0,2")
    assert sub[0]["layers"] == [0, 2] and len(sub[0]["layer_weights"]) == 2


def test_cached_and_live_runs_agree(tiny_corpus, home, tmp_path):
    """Same seed: the cached (fp16 frames / pooled means) and --no-cache runs reach the same metric."""
    for task in ("sid", "phone"):
        cached = _run(tiny_corpus, tmp_path / "c", task=task, max_steps=9)[0]
        live = _run(tiny_corpus, tmp_path / "l", task=task, max_steps=9, no_cache=True)[0]
        name = cached["metric"]["name"]
        assert abs(cached["test"][name] - live["test"][name]) <= 0.02, (task, cached["test"], live["test"])


class _Killed(Exception):
    """Stands in for a kill: raised inside training, nothing after it runs."""


def test_interrupted_training_resumes_to_the_same_result(tiny_corpus, tmp_path, monkeypatch):
    import harness.engine as engine

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "straight"))
    straight = _run(tiny_corpus, tmp_path / "s", task="phone", max_steps=12)

    # kill the same run in the middle of its third window (windows end at steps 3, 6, 9)
    make_module = engine.make_module

    def dying_module(*args, **kwargs):
        module = make_module(*args, **kwargs)
        step = module.training_step

        def training_step(batch, batch_idx):
            if module.trainer.global_step == 7:
                raise _Killed()
            return step(batch, batch_idx)

        module.training_step = training_step
        return module

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "resumed"))
    monkeypatch.setattr(engine, "make_module", dying_module)
    with pytest.raises(_Killed):
        _run(tiny_corpus, tmp_path / "r", task="phone", max_steps=12)
    [last] = (tmp_path / "resumed").glob("runs/*/checkpoints/last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 6  # the last window end
    assert not list((tmp_path / "r").rglob("*.json"))  # no record from a killed run

    monkeypatch.setattr(engine, "make_module", make_module)
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


def test_interrupted_extraction_resumes_without_recomputing(tiny_corpus, tmp_path):
    from harness.features import SHARD_SIZE, ensure_cache
    from harness.registry import load_task
    from harness.upstream import load_upstream

    task = load_task("sid")(load_task("sid").default_config())
    examples = task.examples(tiny_corpus, "train") * 3  # > 1 shard
    assert len(examples) > SHARD_SIZE
    up = load_upstream("mfcc")
    calls = []
    original = up.layers
    up.layers = lambda w, l: calls.append(len(l)) or original(w, l)  # count work done
    fresh = ensure_cache(up, "vox", "train", examples, root=tmp_path / "fresh", progress=False)
    n_fresh = sum(calls)
    # simulate a crash after the first shard: no manifest, a half-written temp shard
    crashed = tmp_path / "crashed" / fresh.root.name
    shutil.copytree(fresh.root, crashed)
    (crashed / "manifest.json").unlink()
    shutil.rmtree(crashed / "shards" / "00001")
    (crashed / "shards" / ".00001.tmp").mkdir()
    (crashed / "shards" / ".00001.tmp" / "layer_00.npy").write_bytes(b"garbage")
    calls.clear()
    resumed = ensure_cache(up, "vox", "train", examples, root=tmp_path / "crashed", progress=False)
    assert sum(calls) == len(examples) - SHARD_SIZE < n_fresh  # only the missing shard was computed
    a, b = fresh.open([0]), resumed.open([0])
    for e in examples:
        assert torch.equal(a.get(e.id)[0], b.get(e.id)[0])


def test_cache_is_reused_and_invalidated(tiny_corpus, tmp_path):
    from harness.features import cache_key
    from harness.registry import load_task
    from harness.upstream import load_upstream

    task = load_task("sid")(load_task("sid").default_config())
    ex = task.examples(tiny_corpus, "dev")
    fb = load_upstream("fbank")
    k = cache_key(fb, "vox", "dev", ex, "frames", "float16")
    assert k == cache_key(load_upstream("fbank"), "vox", "dev", ex, "frames", "float16")
    assert k != cache_key(load_upstream("mfcc"), "vox", "dev", ex, "frames", "float16")
    assert k != cache_key(fb, "vox", "dev", ex, "frames", "float32")
    assert k != cache_key(fb, "vox", "dev", ex[:-1], "frames", "float16")


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli_run_and_one_line_errors(tiny_corpus, tmp_path):
    env = dict(os.environ, HARNESS_HOME=str(tmp_path / "home"))
    base = ["run", "--upstream", "fbank", "--data-root", str(tiny_corpus), "--out", str(tmp_path / "r"), "--quiet",
            "--max-steps", "4", "--set", "val_interval=2"]
    ok = _cli(*base, "--task", "slu", "--layer", "0", env=env)
    assert ok.returncode == 0, ok.stderr
    assert list((tmp_path / "r" / "fbank" / "ic").glob("*/layer_0_seed0.json")) and "layer_0" in ok.stdout
    cases = [
        (["--task", "ic", "--layer", "3"], "out of range"),
        (["--task", "ic", "--layer", "1-x"], "is not N"),
        (["--task", "nope"], "unknown task"),
        (["--task", "ic", "--set", "nonsense=1"], "unknown config key"),
    ]
    for extra, msg in cases:
        proc = _cli(*base, *extra, env=env)
        assert proc.returncode != 0 and msg in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    wrong = _cli("run", "--upstream", "fbank", "--task", "sid", "--data-root", str(tmp_path), "--quiet", env=env)
    assert wrong.returncode != 0 and "iden_split.txt" in wrong.stderr and wrong.stderr.count("\n") == 1


def test_asr_head_downsampling_concatenates_frames_and_ignores_padding():
    from harness.heads import BiLstmCtc

    torch.manual_seed(0)
    head = BiLstmCtc(6, 5, proj=4, hidden=3, layers=2, dropout=0.0, downsample=2).eval()
    x = torch.randn(2, 11, 6)
    out = head(x, torch.tensor([11, 7]))
    assert out.shape == (2, 5, 6)  # 11 // 2 frames, vocab + blank
    alone = head(x[1:, :7], torch.tensor([7]))  # 7 // 2 = 3 frames: padding beyond them changes nothing
    assert torch.allclose(out[1, :3], alone[0], atol=1e-6)
    assert head.output_lengths(torch.tensor([11, 7])).tolist() == [5, 3]


def test_asr_can_rank_and_select_on_cer_and_scores_match_jiwer():
    import jiwer

    from harness.registry import load_task
    from harness.task import Example

    cls = load_task("asr")
    refs = ["THE CAT SAT", "A DOG", "HELLO WORLD AGAIN"]
    hyps = {"u0": "THE CAT SAD", "u1": "A DOG", "u2": "HELO WORD"}
    examples = [Example(f"u{i}", None, [], r) for i, r in enumerate(refs)]
    by_wer = cls(cls.default_config())
    by_cer = cls(dict(cls.default_config(), metric="cer"))
    assert (by_wer.metric.name, by_cer.metric.name) == ("wer", "cer")
    m_wer, o_wer = by_wer.score(hyps, examples)
    m_cer, o_cer = by_cer.score(hyps, examples)
    assert m_wer == m_cer  # both rates are always reported; only the ranked one changes
    assert m_wer["wer"] == pytest.approx(jiwer.wer(refs, [hyps[f"u{i}"] for i in range(3)]))
    assert m_wer["cer"] == pytest.approx(jiwer.cer(refs, [hyps[f"u{i}"] for i in range(3)]))
    # the report bootstraps outcomes["errors"] / outcomes["lengths"]: they must be the ranked metric's
    assert sum(o_wer["errors"]) / sum(o_wer["lengths"]) == pytest.approx(m_wer["wer"])
    assert sum(o_cer["errors"]) / sum(o_cer["lengths"]) == pytest.approx(m_cer["cer"])
    with pytest.raises(HarnessError, match="wer or cer"):
        cls(dict(cls.default_config(), metric="per"))
