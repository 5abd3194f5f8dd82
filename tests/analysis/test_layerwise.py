"""Analysis commands on the tiny corpus: CCA protocol, failures reported, CKA grids."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import tiny_models

from harness.analysis.layerwise import CcaProtocol, cca_rows, run_cca, run_cka, summarise


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))


def test_fbank_cca_with_mel_is_one_and_phone_is_lower(tiny_corpus, tmp_path, home):
    protocol = CcaProtocol(folds=4, trials=2)
    _, mel = run_cca(["fbank"], "mel", tiny_corpus, "dev", tmp_path / "mel.csv", False, protocol,
                     max_samples=3000, top_words=50, per_label=50, limit=None, seed=0, progress=False)
    _, phone = run_cca(["fbank"], "phone", tiny_corpus, "train", tmp_path / "ph.csv", False, protocol,
                       max_samples=3000, top_words=50, per_label=50, limit=None, seed=0, progress=False)
    assert mel[0]["mean"] > 0.99
    assert phone[0]["mean"] < mel[0]["mean"] - 0.1
    rows = list(csv.DictReader(open(tmp_path / "mel.csv")))
    assert {"upstream", "checkpoint", "layer", "property", "trial", "dev_fold", "test_fold", "epsilon_x", "epsilon_y",
            "score"} <= set(rows[0])
    assert len(rows) == 2 * 16  # 2 trials x 4 x 4 epsilon pairs (one per view)
    assert len({(r["dev_fold"], r["test_fold"]) for r in rows}) == 2  # each trial its own dev and test fold
    assert (tmp_path / "mel.png").exists()
    _, sv = run_cca(["fbank"], "mel", tiny_corpus, "dev", tmp_path / "sv.csv", False,
                    CcaProtocol(measure="svcca", folds=4, trials=1), max_samples=3000, top_words=50, per_label=50,
                    limit=None, seed=0, progress=False)
    assert sv[0]["mean"] > 0.99


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
    out = run_cka(f"hf:{a}", None, tiny_corpus, "dev", tmp_path / "cka.csv", False, 2000, 6, 0, progress=False)
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 9
    for r in rows:
        if r["layer_a"] == r["layer_b"]:
            assert abs(float(r["cka"]) - 1) < 1e-6 and abs(float(r["cka_debiased"]) - 1) < 1e-6
    grid = run_cka(None, None, tiny_corpus, "dev", tmp_path / "traj.csv", False, 2000, 6, 0,
                   checkpoints=[f"hf:{b}", f"hf:{a}"], progress=False)
    rows = list(csv.DictReader(open(grid)))
    assert len(rows) == 6 and (tmp_path / "traj.png").exists()
    last = [float(r["cka"]) for r in rows if r["model_a"] == f"hf:{a}"]
    assert all(abs(v - 1) < 1e-6 for v in last)  # the last checkpoint against itself
    # against a speaker-style model with another hop: frames are aligned by time
    sb = tiny_models.speechbrain_dir(tmp_path / "sb", "ecapa")
    cross = run_cka(f"hf:{a}", f"speechbrain:{sb}", tiny_corpus, "dev", tmp_path / "x.csv", False, 2000, 6, 0,
                    progress=False)
    assert len(list(csv.DictReader(open(cross)))) == 3 * 6
    # held-out PWCCA between two models: a layer against itself is 1, every pair gets a value
    both = run_cka(f"hf:{a}", f"hf:{a}", tiny_corpus, "dev", tmp_path / "p.csv", False, 2000, 6, 0,
                   progress=False, with_pwcca=True)
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
    from harness.analysis.layerwise import heldout_pwcca
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
    from harness.analysis.layerwise import cached_layers, load_utterances, minibatch_cka_grid
    from harness.analysis.measures import minibatch_cka
    from harness.upstream import load_upstream

    a = tiny_models.hf_hubert(tmp_path / "a", seed=0, layers=2)
    out = run_cka(f"hf:{a}", "mfcc", tiny_corpus, "dev", tmp_path / "mb.csv", False, 2000, 4, 0, progress=False,
                  minibatch=50)
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 3 and (tmp_path / "mb.png").exists()
    # the same value from the in-memory estimator over the same batches
    utts = load_utterances(tiny_corpus, "dev", 4)
    ua, ub = load_upstream(f"hf:{a}"), load_upstream("mfcc")
    grid = minibatch_cka_grid(ua, cached_layers(ua, utts, False), ub, cached_layers(ub, utts, False), utts.examples,
                              10 ** 6)  # one batch: every paired frame
    from harness.analysis.layerwise import aligned_frames, layer_frames

    xa, xb = aligned_frames(layer_frames(ua, utts, False), 320, layer_frames(ub, utts, False), 160, 10 ** 9, 0,
                            ua.info.frame_offset, ub.info.frame_offset)
    assert abs(grid[1, 0] - minibatch_cka([(xa[1], xb[0])])) <= 1e-9


def test_neuron_and_attention_analyses_write_their_tables(tiny_corpus, tmp_path, home):
    from harness.analysis.attention import run_attention
    from harness.analysis.neurons import run_neurons

    a = tiny_models.hf_hubert(tmp_path / "a", seed=0, layers=2)
    b = tiny_models.hf_hubert(tmp_path / "b", seed=1, layers=2)
    out = run_neurons(f"hf:{a}", f"hf:{b}", tiny_corpus, "dev", tmp_path / "n.csv", False, 3000, 6, 0, progress=False)
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 9 and all(0 <= float(r["mincorr_a"]) <= float(r["maxcorr_a"]) <= 1 for r in rows)
    same = run_neurons(f"hf:{a}", None, tiny_corpus, "dev", tmp_path / "s.csv", False, 3000, 6, 0, progress=False)
    diag = [r for r in csv.DictReader(open(same)) if r["layer_a"] == r["layer_b"]]
    assert all(abs(float(r["maxcorr_a"]) - 1) < 1e-6 and float(r["linreg_a"]) > 0.999 for r in diag)
    ranked = run_neurons(f"hf:{a}", None, tiny_corpus, "train", tmp_path / "r.csv", False, 3000, None, 0,
                         prop="phone", progress=False)
    check = list(csv.DictReader(open(ranked.with_name("r.check.csv"))))
    assert {r["selection"] for r in check} >= {"all", "top", "random", "bottom"}
    att = run_attention(f"hf:{a}", f"hf:{b}", tiny_corpus, "dev", tmp_path / "att.csv", 3, progress=False)
    att_rows = list(csv.DictReader(open(att)))
    assert {r["measure"] for r in att_rows} == {"js", "pearson", "frobenius"}
    assert len(att_rows) == 3 * 2 * 2 * 2  # measures x layer pairs (2 x 2) x heads of A (2)
    self_rows = list(csv.DictReader(open(run_attention(f"hf:{a}", None, tiny_corpus, "dev", tmp_path / "self.csv", 2,
                                                        progress=False))))
    assert all(abs(float(r["best_score"]) - 1) < 1e-9 for r in self_rows
               if r["measure"] == "js" and r["layer_a"] == r["layer_b"])
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="does not expose attention"):
        run_attention("mfcc", None, tiny_corpus, "dev", tmp_path / "no.csv", 2, progress=False)
