"""Analysis commands on the tiny corpus: CCA protocol, failures reported, CKA grids."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import tiny_models

from harness.analysis.analyses import Attention, Cca, Cka, Neurons, Svcca
from harness.analysis.cca import CcaProtocol, cca_rows, summarise
from harness.analysis.options import (
    AttentionOptions,
    CcaOptions,
    CkaOptions,
    NeuronOptions,
    SvccaOptions,
)
from harness.analysis.runner import run_analysis


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))


def _summary(table) -> list[dict]:
    return table.companions[".summary.csv"]


def test_fbank_cca_with_mel_is_one_and_phone_is_lower(tiny_corpus, tmp_path, home):
    common = dict(upstream="fbank", data_root=tiny_corpus, folds=4, trials=2, max_samples=3000, top_words=50,
                  per_label=50, quiet=True)
    mel = _summary(run_analysis(Cca, CcaOptions(prop="mel", out=tmp_path / "mel.csv", **common)))
    phone = _summary(run_analysis(Cca, CcaOptions(prop="phone", split="train", out=tmp_path / "ph.csv", **common)))
    assert mel[0]["mean"] > 0.99
    assert phone[0]["mean"] < mel[0]["mean"] - 0.1
    rows = list(csv.DictReader(open(tmp_path / "mel.csv")))
    assert {"upstream", "checkpoint", "layer", "property", "trial", "dev_fold", "test_fold", "epsilon_x", "epsilon_y",
            "score"} <= set(rows[0])
    assert len(rows) == 2 * 16  # 2 trials x 4 x 4 epsilon pairs (one per view)
    assert len({(r["dev_fold"], r["test_fold"]) for r in rows}) == 2  # each trial its own dev and test fold
    assert (tmp_path / "mel.png").exists()
    summary = list(csv.DictReader(open(tmp_path / "mel.summary.csv")))
    assert [float(r["mean"]) for r in summary] == pytest.approx([r["mean"] for r in mel], abs=1e-6)
    sv = _summary(run_analysis(Svcca, SvccaOptions(prop="mel", out=tmp_path / "sv.csv", **{**common, "trials": 1})))
    assert sv[0]["mean"] > 0.99
    assert {r["measure"] for r in csv.DictReader(open(tmp_path / "sv.csv"))} == {"svcca"}


def test_failing_regulariser_is_reported_not_skipped():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6))
    x = np.hstack([x, x[:, :2]])  # rank-deficient: epsilon 0 must fail
    y = x[:, :3] + 0.1 * rng.standard_normal((300, 3))
    protocol = CcaProtocol(convention="relative", folds=4, trials=2, epsilons=(0.0, 1e-3))
    rows = cca_rows("m", "m", ["l0"], [x], y, np.zeros(300, int), "mel", protocol, seed=0)
    failed = [r for r in rows if r["error"]]
    assert failed and all(r["epsilon_x"] == 0.0 and np.isnan(r["score"]) for r in failed)
    (s,) = summarise(rows)
    assert s["failed_fits"] == len(failed) and s["n"] == 2 and s["epsilon"] == "0.001/0.001"
    assert "singular" in s["first_error"]


def test_too_few_samples_says_so(tiny_corpus, tmp_path):
    env = dict(os.environ, HARNESS_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "analyze", "cca", "--upstream", "fbank", "--property",
                           "word", "--data-root", str(tiny_corpus), "--limit", "3", "--folds", "4", "--trials", "1",
                           "--quiet", "--out", str(tmp_path / "w.csv")], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "more samples than dimensions" in proc.stderr, proc.stderr


def test_cka_within_model_and_checkpoint_grid(tiny_corpus, tmp_path, home):
    a = tiny_models.hf_hubert(tmp_path / "a", seed=0, layers=2)
    b = tiny_models.hf_hubert(tmp_path / "b", seed=1, layers=2)
    common = dict(data_root=tiny_corpus, max_samples=2000, limit=6, quiet=True)
    out = run_analysis(Cka, CkaOptions(upstream=f"hf:{a}", out=tmp_path / "cka.csv", **common)).written
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 9
    for r in rows:
        if r["layer_a"] == r["layer_b"]:
            assert abs(float(r["cka"]) - 1) < 1e-6 and abs(float(r["cka_debiased"]) - 1) < 1e-6
    grid = run_analysis(Cka, CkaOptions(checkpoints=(f"hf:{b}", f"hf:{a}"), out=tmp_path / "traj.csv",
                                        **common)).written
    rows = list(csv.DictReader(open(grid)))
    assert len(rows) == 6 and (tmp_path / "traj.png").exists()
    names = ["cnn", "transformer_1", "transformer_2"]  # each row names its own layer of both checkpoints
    assert [(r["layer_a_name"], r["layer_b_name"]) for r in rows] == [(n, n) for n in names] * 2
    last = [float(r["cka"]) for r in rows if r["model_a"] == f"hf:{a}"]
    assert all(abs(v - 1) < 1e-6 for v in last)  # the last checkpoint against itself
    # against a speaker-style model with another hop: frames are aligned by time
    sb = tiny_models.speechbrain_dir(tmp_path / "sb", "ecapa")
    cross = run_analysis(Cka, CkaOptions(upstream=f"hf:{a}", against=f"speechbrain:{sb}", out=tmp_path / "x.csv",
                                         **common)).written
    assert len(list(csv.DictReader(open(cross)))) == 3 * 6
    # held-out PWCCA between two models: a layer against itself is 1, every pair gets a value
    both = run_analysis(Cka, CkaOptions(upstream=f"hf:{a}", against=f"hf:{a}", pwcca=True, out=tmp_path / "p.csv",
                                        **common)).written
    rows = list(csv.DictReader(open(both)))
    assert len(rows) == 9 and (tmp_path / "p.pwcca.png").exists()
    for r in rows:
        assert 0.0 <= float(r["pwcca_heldout"]) <= 1.0 + 1e-9
        if r["layer_a"] == r["layer_b"]:
            assert float(r["pwcca_heldout"]) > 0.999


def test_heldout_pwcca_separates_a_rotation_from_independent_noise():
    """A random rotation of x keeps every canonical correlation at 1; independent noise of the
    same width, scored on frames not used for the fit, is near 0 (in-sample it would not be:
    with 16 dims and 400 frames the top fitted correlations of pure noise exceed 0.2)."""
    from harness.analysis.cka import heldout_pwcca
    from harness.analysis.measures import pwcca

    rng = np.random.default_rng(0)
    x = rng.standard_normal((800, 16))
    rotation, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    assert heldout_pwcca(x, x @ rotation) > 0.999
    noise = rng.standard_normal((800, 16))
    held = heldout_pwcca(x, noise)
    assert held < 0.1
    assert pwcca(x[:400], noise[:400]) > held + 0.05  # the fitting half alone overstates it


def test_probing_across_checkpoints_gives_a_grid(tiny_corpus, tmp_path):
    a = tiny_models.hf_hubert(tmp_path / "ck1", seed=0, layers=2)
    tiny_models.hf_hubert(tmp_path / "ck2", seed=1, layers=2)
    env = dict(os.environ, HARNESS_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--checkpoints", str(tmp_path / "ck*"), "--task",
                           "sid", "--data-root", str(tiny_corpus), "--out", str(tmp_path / "r"), "--max-steps", "4",
                           "--set", "val_interval=2", "--quiet", "--protocol", "quick"], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "r" / "trajectory_sid.csv")))
    assert {r["checkpoint"] for r in rows} == {f"hf:{tmp_path / 'ck1'}", f"hf:{tmp_path / 'ck2'}"}
    assert len(rows) == 2 * 4  # 3 layers + weighted per checkpoint
    assert (tmp_path / "r" / "trajectory_sid.png").exists() and a.exists()


def test_minibatch_cka_reads_every_frame_and_matches_its_definition(tiny_corpus, tmp_path, home):
    from harness.analysis.cka import minibatch_cka_grid
    from harness.analysis.frames import (
        aligned_frames,
        cached_layers,
        layer_frames,
        load_utterances,
    )
    from harness.analysis.measures import minibatch_cka
    from harness.upstream import load_upstream

    a = tiny_models.hf_hubert(tmp_path / "a", seed=0, layers=2)
    out = run_analysis(Cka, CkaOptions(upstream=f"hf:{a}", against="mfcc", data_root=tiny_corpus, limit=4, minibatch=50,
                                       out=tmp_path / "mb.csv", quiet=True)).written
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 3 and (tmp_path / "mb.png").exists()
    # the same value from the in-memory estimator over the same batches
    utts = load_utterances(tiny_corpus, "dev", 4)
    ua, ub = load_upstream(f"hf:{a}"), load_upstream("mfcc")
    grid = minibatch_cka_grid(ua, cached_layers(ua, utts, False), ub, cached_layers(ub, utts, False), utts.examples,
                              10 ** 6)  # one batch: every paired frame
    xa, xb = aligned_frames(layer_frames(ua, utts, False), 320, layer_frames(ub, utts, False), 160, 10 ** 9, 0,
                            ua.info.frame_offset, ub.info.frame_offset)
    assert abs(grid[1, 0] - minibatch_cka([(xa[1], xb[0])])) <= 1e-9


def test_neuron_and_attention_analyses_write_their_tables(tiny_corpus, tmp_path, home):
    a = tiny_models.hf_hubert(tmp_path / "a", seed=0, layers=2)
    b = tiny_models.hf_hubert(tmp_path / "b", seed=1, layers=2)
    common = dict(data_root=tiny_corpus, max_samples=3000, quiet=True)
    out = run_analysis(Neurons, NeuronOptions(upstream=f"hf:{a}", against=f"hf:{b}", limit=6, out=tmp_path / "n.csv",
                                              **common)).written
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 9 and all(0 <= float(r["mincorr_a"]) <= float(r["maxcorr_a"]) <= 1 for r in rows)
    same = run_analysis(Neurons, NeuronOptions(upstream=f"hf:{a}", limit=6, out=tmp_path / "s.csv", **common)).written
    diag = [r for r in csv.DictReader(open(same)) if r["layer_a"] == r["layer_b"]]
    assert all(abs(float(r["maxcorr_a"]) - 1) < 1e-6 and float(r["linreg_a"]) > 0.999 for r in diag)
    ranked = run_analysis(Neurons, NeuronOptions(upstream=f"hf:{a}", prop="phone", split="train",
                                                 out=tmp_path / "r.csv", **common)).written
    check = list(csv.DictReader(open(ranked.with_name("r.check.csv"))))
    assert {r["selection"] for r in check} >= {"all", "top", "random", "bottom"}
    def attention(upstream, against, out, limit):
        return run_analysis(Attention, AttentionOptions(upstream=upstream, against=against, limit=limit, out=out,
                                                        data_root=tiny_corpus, quiet=True)).written

    att = attention(f"hf:{a}", f"hf:{b}", tmp_path / "att.csv", 3)
    att_rows = list(csv.DictReader(open(att)))
    assert {r["measure"] for r in att_rows} == {"js", "pearson", "frobenius"}
    assert len(att_rows) == 3 * 2 * 2 * 2  # measures x layer pairs (2 x 2) x heads of A (2)
    self_rows = list(csv.DictReader(open(attention(f"hf:{a}", None, tmp_path / "self.csv", 2))))
    assert all(abs(float(r["best_score"]) - 1) < 1e-9 for r in self_rows
               if r["measure"] == "js" and r["layer_a"] == r["layer_b"])
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="does not expose attention"):
        attention("mfcc", None, tmp_path / "no.csv", 2)
