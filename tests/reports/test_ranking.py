"""Reporter, leaderboard and recommendation."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tiny_models
import torch

from harness.reports.leaderboard import build
from harness.reports.ranking import load_records, rank

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def write_probe(root: Path, upstream: str, task: str, layer, outcomes: dict, metric: str, hib: bool, seed=0,
                config=None, weights=None, names=None):
    if "correct" in outcomes:
        score = sum(outcomes["correct"]) / sum(outcomes["total"])
    else:
        score = sum(outcomes["errors"]) / sum(outcomes["lengths"])
    probe = f"layer_{layer}" if isinstance(layer, int) else layer
    rec = {"format": 1, "task": task, "metric": {"name": metric, "higher_is_better": hib}, "probe": probe,
           "layer": layer, "layer_weights": weights, "layers": [],
           "upstream": {"spec": upstream, "random_init": False, "layer_names": names or [f"l{i}" for i in range(20)]},
           "test": {metric: score}, "dev": {metric: score}, "seed": seed, "steps": 100,
           "config": config or {"lr": 0.001, "batch_size": 8}, "corpus": {"kind": "external", "root": "/x"},
           "versions": {"harness": "0.1.0"}, "test_utterances": len(outcomes["ids"])}
    folder = root / upstream / task
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{probe}_seed{seed}.json").write_text(json.dumps(rec))
    (folder / f"{probe}_seed{seed}.outcomes.json").write_text(json.dumps(outcomes))
    return score


def acc_outcomes(p: float, n: int, rng) -> dict:
    correct = (rng.random(n) < p).astype(int).tolist()
    return {"ids": [f"u{i}" for i in range(n)], "correct": correct, "total": [1] * n}


def wer_outcomes(rate: float, n: int, rng) -> dict:
    lengths = rng.integers(5, 15, size=n)
    errors = rng.binomial(lengths, rate)
    return {"ids": [f"u{i}" for i in range(n)], "errors": errors.tolist(), "lengths": lengths.tolist()}


@pytest.fixture()
def results(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "results"
    for layer, p in enumerate([0.3, 0.6, 0.8, 0.78, 0.5]):
        write_probe(root, "modelA", "ic", layer, acc_outcomes(p, 400, rng), "accuracy", True)
    write_probe(root, "modelA", "ic", "weighted", acc_outcomes(0.79, 400, rng), "accuracy", True,
                weights=[0.1, 0.2, 0.3, 0.3, 0.1])
    for layer, r in enumerate([0.5, 0.2, 0.35, 0.6]):
        write_probe(root, "modelA", "asr", layer, wer_outcomes(r, 300, rng), "wer", False)
    return root


def test_ranking_direction_for_accuracy_and_wer(results):
    by_task = {r.task: r for r in rank(load_records(results))}
    assert by_task["ic"].best.layer == 2 and by_task["ic"].ranked()[0].layer == 2
    assert by_task["asr"].best.layer == 1  # lowest WER wins
    assert [s.layer for s in by_task["asr"].ranked()] == [1, 2, 0, 3]


def test_bootstrap_ci_brackets_and_narrows(tmp_path):
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 1600):
        root = tmp_path / f"n{n}"
        for layer in range(2):
            write_probe(root, "m", "sid", layer, acc_outcomes(0.7, n, rng), "accuracy", True)
        (r,) = rank(load_records(root))
        for s in r.layers:
            assert s.ci_low <= s.score <= s.ci_high
        widths.append(np.mean([s.ci_high - s.ci_low for s in r.layers]))
    assert widths[1] < widths[0] / 2  # ~1/sqrt(16) = 1/4 in theory


def test_significance_set_contains_best_and_excludes_clear_losers(results):
    ic = next(r for r in rank(load_records(results)) if r.task == "ic")
    near = {s.layer for s in ic.layers if s.not_worse}
    assert ic.best.layer in near
    assert 3 in near  # 0.78 vs 0.80 on 400 utterances: not distinguishable
    assert 0 not in near and 4 not in near


def test_several_seeds_are_combined(tmp_path):
    rng = np.random.default_rng(2)
    for seed in range(3):
        for layer, p in enumerate([0.4, 0.7]):
            write_probe(tmp_path, "m", "sid", layer, acc_outcomes(p, 200, rng), "accuracy", True, seed=seed)
    (r,) = rank(load_records(tmp_path))
    assert all(s.seeds == 3 for s in r.layers) and r.best.layer == 1



def test_a_record_stored_twice_counts_once(results):
    before = len(load_records(results))
    copy = results / "trajectory" / "modelA" / "ic"
    shutil.copytree(results / "modelA" / "ic", copy)
    assert len(load_records(results)) == before
    (r,) = [r for r in rank(load_records(results)) if r.task == "ic"]
    assert all(s.seeds == 1 for s in r.layers)
    # a random-weights run under the same name is another measurement, not a duplicate
    rec = json.loads((copy / "layer_0_seed0.json").read_text())
    rec["upstream"]["random_init"] = True
    (copy / "layer_0_seed0.json").write_text(json.dumps(rec))
    assert len(load_records(results)) == before + 1

def test_leaderboard_is_byte_identical_and_keeps_settings_apart(results, tmp_path):
    rng = np.random.default_rng(3)
    # the same upstream and task measured with another config: must be a separate table
    for layer, p in enumerate([0.5, 0.9]):
        write_probe(results / "other", "modelA", "ic", layer, acc_outcomes(p, 100, rng), "accuracy", True,
                    config={"lr": 0.1, "batch_size": 8})
    a, b = tmp_path / "a", tmp_path / "b"
    build(results, a)
    build(results, b)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    md = (a / "LEADERBOARD.md").read_text()
    assert md.count("## ic") == 2 and md.count("## asr") == 1
    rows = (a / "leaderboard.csv").read_text().splitlines()
    assert len(rows) == 1 + 3
    # regenerating after records were removed drops their plots, and only those
    (a / "plots" / "notes.png").write_bytes(b"not a leaderboard plot")
    before = {f.name for f in (a / "plots").iterdir()}
    shutil.rmtree(results / "other")
    build(results, a)
    gone = before - {f.name for f in (a / "plots").iterdir()}
    assert len(gone) == 1 and next(iter(gone)).startswith("ic__modelA__")


def test_exported_truncated_model_reproduces_kept_layers(tmp_path, monkeypatch):
    from harness.reports.recommend import costs, export
    from harness.upstream import load_upstream, pad_batch

    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    model = tiny_models.hf_hubert(tmp_path / "m", layers=4)
    out = export(f"hf:{model}", 2, tmp_path / "cut")
    full, cut = load_upstream(f"hf:{model}"), load_upstream(f"hf:{out}")
    assert cut.num_layers == 3
    wavs, lens = pad_batch([torch.randn(16000) * 0.1])
    a, b = full.layers(wavs, lens).hidden, cut.layers(wavs, lens).hidden
    for i in range(3):
        assert (a[i] - b[i]).abs().max().item() <= 1e-5
    n_full = sum(p.numel() for p in full.parameters())
    n_cut = sum(p.numel() for p in cut.parameters())
    assert n_cut < n_full
    c_full, c_cut = costs(f"hf:{model}", 2)
    assert c_cut.params < c_full.params and c_cut.gflops_per_second < c_full.gflops_per_second


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian chromium is not installed (scripts/test.sh installs it as root)")
def test_html_renders_in_headless_chromium(results, tmp_path):
    out = tmp_path / "board"
    build(results, out)
    page = out / "index.html"
    probe = page.read_text().replace(
        "</body>", "<script>window.addEventListener('load',function(){document.body.setAttribute('data-ok',"
        "[].filter.call(document.images,function(i){return i.complete&&i.naturalWidth>0}).length+'/'+"
        "document.images.length+'/'+document.querySelectorAll('table tbody tr').length);});</script></body>")
    checked = out / "checked.html"  # beside the page: the plots are linked relative to it
    checked.write_text(probe)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", checked.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    import re

    m = re.search(r'data-ok="(\d+)/(\d+)/(\d+)"', dom)
    assert m, dom[:500]
    loaded, images, table_rows = map(int, m.groups())
    assert images == 2 and loaded == images and table_rows == 2
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "leaderboard.png"
    subprocess.run([_chromium(), *flags, "--window-size=1280,1400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000


@pytest.mark.parametrize("case", ["distinct", "tied within a label", "tied across labels", "all tied", "one class"])
def test_bootstrap_eer_equals_the_metric_on_every_replicate(case):
    """The batched EER bootstrap gives, bit for bit, equal_error_rate of each resampled trial set."""
    from harness.metrics import equal_error_rate
    from harness.records import Outcomes
    from harness.reports.ranking import _stat

    rng = np.random.default_rng(len(case))
    for n in (1, 2, 9, 300):
        scores, labels = rng.normal(size=n), rng.random(n) < 0.3
        if case == "tied within a label":
            scores = np.where(labels, np.round(scores, 1) + 5, scores)
        elif case == "tied across labels":
            scores = np.round(scores, 1)
        elif case == "all tied":
            scores = np.where(np.arange(n) % 2, 0.0, -0.0)
        elif case == "one class":
            labels[:] = True
        idx = rng.integers(0, n, size=(200, n))
        got = _stat(Outcomes.verification([str(i) for i in range(n)], scores.tolist(), labels.tolist()), idx)
        want = [equal_error_rate(scores[rows], labels[rows]) if 0 < labels[rows].sum() < n else np.nan
                for rows in idx]
        assert np.array_equal(got, np.array(want), equal_nan=True), (case, n)


def test_a_nan_verification_score_is_one_line_naming_the_record(tmp_path):
    from harness.errors import HarnessError
    from harness.records import (
        MetricSpec,
        Outcomes,
        ResultRecord,
        UpstreamRef,
        write_record,
    )

    rec = ResultRecord(UpstreamRef("m"), "asv", MetricSpec("eer", False), "layer_0", 0, [0], None, {"eer": 0.5},
                       {"eer": 0.5}, 1, 1, 0, {}, {}, "k", 4, {})
    write_record(tmp_path, rec, Outcomes.verification(["a|b", "a|c", "b|c", "c|d"], [0.1, float("nan"), 0.3, 0.2],
                                                      [1, 0, 1, 0]))
    with pytest.raises(HarnessError, match="layer_0_seed0.json: detection errors need finite scores"):
        rank(load_records(tmp_path))


def _trials(n_utts: int, seed: int, per_utt: int = 6):
    """Verification trials over few utterances of 4 speakers, each utterance in many trials, with
    a per-utterance score offset (trials sharing an utterance are correlated, as real ones are)."""
    rng = np.random.default_rng(seed)
    utts = [f"id1000{k % 4}/s{k}/0000{k}" for k in range(n_utts)]
    offset = rng.normal(size=n_utts)
    ids, scores, labels = [], [], []
    for a in range(n_utts):
        for b in rng.choice(n_utts, size=per_utt, replace=False):
            if a == b:
                continue
            target = utts[a].split("/")[0] == utts[b].split("/")[0]
            ids.append(f"{utts[a]}|{utts[b]}")
            scores.append(float(offset[a] + offset[b] + (1.5 if target else 0.0) + 0.3 * rng.normal()))
            labels.append(int(target))
    return ids, scores, labels


@pytest.mark.parametrize("unit", ["utterance", "speaker"])
def test_cluster_bootstrap_of_trials_equals_the_metric_on_each_replicates_trial_list(unit):
    """Each replicate draws units (utterances or speakers) with replacement; a trial then counts
    (draws of its enrolment side's unit) x (draws of its test side's unit) times. Written here
    from that definition with Counters and repeated trial lists, against equal_error_rate."""
    from collections import Counter

    from harness.metrics import equal_error_rate
    from harness.records import Outcomes
    from harness.reports.ranking import _stat, resampling

    ids, scores, labels = _trials(16, seed=3)
    outcomes = Outcomes.verification(ids, scores, labels)
    res = resampling(outcomes, unit, np.random.default_rng(7), 60)
    got = _stat(outcomes, res)

    def unit_of(utt: str) -> str:
        return utt.split("/")[0] if unit == "speaker" else utt

    names = sorted({unit_of(u) for i in ids for u in i.split("|")})
    assert res.units == len(names) == (4 if unit == "speaker" else 16) and res.unit == unit
    draws = np.random.default_rng(7).integers(0, len(names), size=(60, len(names)))
    for b, row in enumerate(draws):
        count = Counter(names[k] for k in row)
        rep_scores, rep_labels = [], []
        for i, s, lab in zip(ids, scores, labels):
            enrol, test = i.split("|")
            times = count[unit_of(enrol)] * count[unit_of(test)]
            rep_scores += [s] * times
            rep_labels += [lab] * times
        both = 0 < sum(rep_labels) < len(rep_labels)
        want = equal_error_rate(np.array(rep_scores), np.array(rep_labels, bool)) if both else np.nan
        assert np.array_equal(got[b], want, equal_nan=True), (b, got[b], want)


def test_clustered_intervals_are_wider_than_trial_intervals_when_trials_share_utterances():
    from harness.records import Outcomes
    from harness.reports.ranking import _stat, resampling

    ids, scores, labels = _trials(24, seed=5, per_utt=20)
    outcomes = Outcomes.verification(ids, scores, labels)
    rng = np.random.default_rng(0)
    trials = _stat(outcomes, rng.integers(0, len(ids), size=(1000, len(ids))))
    clustered = _stat(outcomes, resampling(outcomes, "utterance", np.random.default_rng(0), 1000))
    speakers = _stat(outcomes, resampling(outcomes, "speaker", np.random.default_rng(0), 1000))

    def width(x):
        x = x[~np.isnan(x)]
        return np.percentile(x, 97.5) - np.percentile(x, 2.5)

    assert width(clustered) > 1.2 * width(trials)
    assert width(speakers) > width(clustered)


def test_speaker_resampling_of_utterance_outcomes_weighs_each_utterance_by_its_speakers_draws():
    from collections import Counter

    from harness.records import Outcomes
    from harness.reports.ranking import _stat, resampling

    ids = [f"id{k % 3}/x/{k}" for k in range(12)]
    correct = [1, 0, 1, 1, 0, 1, 1, 1, 0, 0, 1, 1]
    outcomes = Outcomes.accuracy(ids, correct)
    got = _stat(outcomes, resampling(outcomes, "speaker", np.random.default_rng(1), 50))
    names = sorted({i.split("/")[0] for i in ids})
    for b, row in enumerate(np.random.default_rng(1).integers(0, len(names), size=(50, len(names)))):
        count = Counter(names[k] for k in row)
        num = sum(c * count[i.split("/")[0]] for i, c in zip(ids, correct))
        den = sum(count[i.split("/")[0]] for i in ids)
        assert got[b] == pytest.approx(num / den, rel=1e-12)


def test_a_unit_the_ids_cannot_give_is_one_line():
    from harness.errors import HarnessError
    from harness.records import Outcomes
    from harness.reports.ranking import resampling

    outcomes = Outcomes.verification(["a|b", "b|c"], [0.1, 0.2], [1, 0])
    with pytest.raises(HarnessError, match="no speaker"):
        resampling(outcomes, "speaker", np.random.default_rng(0), 10)
    with pytest.raises(HarnessError, match="choose from"):
        resampling(outcomes, "session", np.random.default_rng(0), 10)


def test_recommend_takes_the_trained_model_not_its_random_twin_and_warns_on_few_test_units(tmp_path):
    """Both share a spec (the twin differs by random_init); a choice resting on fewer than
    FEW_UNITS test utterances says so."""
    from harness.reports.recommend import FEW_UNITS, recommend

    rng = np.random.default_rng(4)
    root = tmp_path / "results"
    for layer, p in enumerate([0.4, 0.9, 0.85]):
        write_probe(root, "m", "ic", layer, acc_outcomes(p, 300, rng), "accuracy", True)
    twin = tmp_path / "twin"
    for layer, p in enumerate([0.9, 0.2, 0.2]):
        write_probe(twin, "m", "ic", layer, acc_outcomes(p, 30, rng), "accuracy", True)
    for path in twin.rglob("layer_*_seed0.json"):
        rec = json.loads(path.read_text())
        rec["upstream"]["random_init"] = True
        dest = root / "m_random-init" / "ic" / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(rec))
        shutil.copy(path.with_name(path.name.replace(".json", ".outcomes.json")),
                    dest.with_name(path.name.replace(".json", ".outcomes.json")))
    rankings = rank(load_records(root, "m", "ic"))
    assert len(rankings) == 2
    trained = recommend(rankings, "m", "ic", measure_costs=False)
    assert not trained.ranking.upstream.random_init and trained.best.layer == 1
    assert not [n for n in trained.notes if "settings" in n or "fewer than" in n]
    random = recommend(rankings, "m", "ic", random_init=True, measure_costs=False)
    assert random.ranking.upstream.random_init and random.best.layer == 0
    assert any(f"fewer than {FEW_UNITS}" in n for n in random.notes) and "note: the intervals rest on 30" in \
        random.format()


def test_the_layer_is_chosen_on_dev_and_reported_on_test(tmp_path):
    """Layer 1 is best on dev and layer 2 on test: the ranking chooses 1, reports its test score,
    decides ~best from the dev bootstrap, and says so; without dev outcomes it decides on test."""
    from harness.records import Outcomes, dev_outcomes_path, write_outcomes
    from harness.reports.ranking import format_table

    rng = np.random.default_rng(2)
    root = tmp_path / "results"
    dev_p, test_p = [0.5, 0.9, 0.6], [0.5, 0.7, 0.9]
    for layer in range(3):
        write_probe(root, "m", "ic", layer, acc_outcomes(test_p[layer], 400, rng), "accuracy", True)
    legacy = rank(load_records(root, "m", "ic"))[0]
    assert legacy.chosen_on == "test" and legacy.best.layer == 2
    for layer in range(3):
        path = root / "m" / "ic" / f"layer_{layer}_seed0.json"
        dev = acc_outcomes(dev_p[layer], 300, rng)
        rec = json.loads(path.read_text())
        rec["dev"] = {"accuracy": sum(dev["correct"]) / 300}
        path.write_text(json.dumps(rec))
        write_outcomes(dev_outcomes_path(path), Outcomes.accuracy(dev["ids"], dev["correct"]))
    r = rank(load_records(root, "m", "ic"))[0]
    assert r.chosen_on == "dev" and r.best.layer == 1 and [s.layer for s in r.ranked()] == [1, 2, 0]
    assert r.best.score == pytest.approx(sum(json.loads((root / "m/ic/layer_1_seed0.outcomes.json").read_text())
                                             ["correct"]) / 400)
    assert [s.not_worse for s in r.layers] == [False, True, False]  # on dev 0.6 vs 0.9 is far apart
    table = format_table([r])
    assert "layer chosen on dev" in table.splitlines()[0] and "dev accuracy" in table.splitlines()[1]
    assert "on dev; the test score is reported" in format_table([r], "markdown")
    assert "dev" in format_table([r], "csv").splitlines()[0].split(",")
