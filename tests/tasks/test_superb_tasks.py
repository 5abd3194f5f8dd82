"""The superb protocol's task pieces on the tiny corpus: SID crops, KS sampler / silence crops /
separate test set, ER folds reported as one mean, the ASV head with dev or test selection,
gradient accumulation, and the line a run prints before training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from harness.probing.engine import RunRequest, prepare, run
from harness.protocol import resolve_recipe
from harness.records import read_outcomes, read_record
from harness.registry import load_task


def _task(name: str, protocol: str = "superb", **overrides):
    cls = load_task(name)
    return cls(resolve_recipe(cls, protocol, overrides).config)


def _run(corpus, tmp_path, task, **kw):
    req = RunRequest(upstream=kw.pop("upstream", "fbank"), task=task, data_root=corpus, out=tmp_path / "r",
                     max_steps=kw.pop("max_steps", 2), progress=False, protocol=kw.pop("protocol", "superb"), **kw)
    return [read_record(p) for p in run(req)]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(scope="module")
def with_test_set(tiny_corpus, tmp_path_factory):
    """The tiny corpus plus a small separate Speech Commands test archive laid out as the real
    one (a folder per class, _silence_ and _unknown_ included)."""
    root = tmp_path_factory.mktemp("with-test-set")
    test = root / "speech_commands_test_set_v0.01"
    for item in tiny_corpus.iterdir():
        if item.name != test.name:  # the corpus's own test archive is replaced by the one built here
            (root / item.name).symlink_to(item)
    sc = tiny_corpus / "speech_commands_v0.01"
    listed = [line for line in (sc / "testing_list.txt").read_text().split() if line]
    for rel in listed[:12]:
        word = rel.split("/")[0]
        folder = word if word in ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go") else "_unknown_"
        (test / folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sc / rel, test / folder / rel.replace("/", "_"))
    (test / "_silence_").mkdir()
    noise, _ = sf.read(str(sorted((sc / "_background_noise_").glob("*.wav"))[0]), dtype="float32")
    for k in range(3):
        sf.write(str(test / "_silence_" / f"silence_{k}.wav"), noise[k * 16000:(k + 1) * 16000], 16000)
    return root


def test_sid_crops_only_training_utterances(tiny_corpus, home, tmp_path):
    task = _task("sid")
    assert {e.crop for e in task.examples(tiny_corpus, "train")} == {128_000}  # s3prl max_timestep
    assert {e.crop for e in task.examples(tiny_corpus, "test")} == {None}
    (r,) = _run(tiny_corpus, tmp_path, "sid", overrides={"crop_seconds": 1.0})
    assert r.protocol == "superb" and r.config["accumulate"] == 4 and r.config["crop_seconds"] == 1.0
    assert not r.pooled_cache and r.steps == 2  # crops need frames: every draw differs


def test_accumulated_batches_make_one_optimizer_step_of_their_sum(tiny_corpus, home, tmp_path):
    common = {"val_interval": 2, "lr": 1e-2}
    (one,) = _run(tiny_corpus, tmp_path / "a", "sid", protocol="quick", max_steps=4,
                  overrides={**common, "batch_size": 8})
    (acc,) = _run(tiny_corpus, tmp_path / "b", "sid", protocol="quick", max_steps=4,
                  overrides={**common, "batch_size": 4, "accumulate": 2})
    assert [p["step"] for p in one.dev_curve] == [p["step"] for p in acc.dev_curve] == [2, 4]  # optimizer steps
    assert acc.steps == one.steps == 4 and acc.run_key != one.run_key
    for a, b in zip(one.dev_curve, acc.dev_curve):  # 2 x 4 utterances = the same 8 as one batch of 8
        assert abs(a["accuracy"] - b["accuracy"]) <= 1e-6
    assert abs(one.score - acc.score) <= 1e-6


def test_ks_superb_reads_the_separate_test_set_and_balances_training(with_test_set, home, tmp_path):
    task = _task("ks")
    train = task.examples(with_test_set, "train")
    silence = [e for e in train if e.target == ("_silence_",)]
    assert len(silence) == 6 and {e.crop for e in silence} == {16000} and all(e.segment is None for e in silence)
    weights = task.sample_weights(train)
    per_class = Counter()
    for e, w in zip(train, weights):
        per_class[e.target[0]] += w
    assert max(per_class.values()) == pytest.approx(min(per_class.values()))  # every class equally likely
    dev = task.examples(with_test_set, "dev")
    assert sum(e.target == ("_silence_",) for e in dev) == 6 and all(e.segment for e in dev if e.crop is None
                                                                    and e.target == ("_silence_",))
    test = task.examples(with_test_set, "test")
    assert len(test) == 15 and {"_silence_", "_unknown_"} <= {e.target[0] for e in test}
    assert all(e.id.startswith("speech_commands_test_set_v0.01/") for e in test)
    (r,) = _run(with_test_set, tmp_path, "ks")
    assert r.test_utterances == 15 and "balanced_accuracy" in r.dev and not r.pooled_cache
    quick = _task("ks", "quick")
    assert len(quick.examples(with_test_set, "test")) != 15  # quick keeps testing_list.txt


def test_ks_superb_without_the_separate_test_set_says_how_to_proceed(tiny_corpus, tmp_path):
    from harness.errors import HarnessError

    root = tmp_path / "without"  # the corpus less its separate test archive, as a training archive alone
    root.mkdir()
    for item in tiny_corpus.iterdir():
        if item.name != "speech_commands_test_set_v0.01":
            (root / item.name).symlink_to(item)
    with pytest.raises(HarnessError, match="speech_commands_test_set_v0.01.*test_set=lists"):
        _task("ks").examples(root, "test")


def test_er_superb_splits_the_other_sessions_at_random(tiny_corpus):
    task = _task("er", test_session=3)
    train, dev, test = (task.examples(tiny_corpus, s) for s in ("train", "dev", "test"))
    assert {e.id[3:5] for e in test} == {"03"} and "03" not in {e.id[3:5] for e in train + dev}
    assert not {e.id for e in train} & {e.id for e in dev}
    n = len(train) + len(dev)
    assert len(train) == int(0.8 * n) and {e.id[3:5] for e in dev} != {"04"}  # not a whole session
    again = _task("er", test_session=3)
    assert [e.id for e in again.examples(tiny_corpus, "dev")] == [e.id for e in dev]  # seed 0: fixed


def test_er_superb_reports_the_mean_over_five_folds_as_one_result(tiny_corpus, home, tmp_path):
    (r,) = _run(tiny_corpus, tmp_path, "er")
    folds = [r.test[f"accuracy_fold{k}"] for k in range(1, 6)]
    assert r.score == pytest.approx(np.mean(folds)) and r.config["folds"] == [1, 2, 3, 4, 5]
    assert r.test["accuracy_ci_low"] <= r.score <= r.test["accuracy_ci_high"]
    assert {p["fold"] for p in r.dev_curve} == {1, 2, 3, 4, 5} and r.protocol == "superb"
    out = read_outcomes(next((tmp_path / "r").rglob("layer_0_seed0.json")))
    assert out.value == pytest.approx(r.score) and sorted(set(out.extra["fold"])) == [1, 2, 3, 4, 5]
    assert len(out.ids) == r.test_utterances
    fold_records = list((home / "folds").rglob("layer_0_seed0.json"))
    assert len(fold_records) == 5  # each fold a run of its own, out of the results folder
    before = {p: p.stat().st_mtime_ns for p in fold_records}
    (again,) = _run(tiny_corpus, tmp_path, "er")
    assert again.run_key == r.run_key and {p: p.stat().st_mtime_ns for p in fold_records} == before


def test_asv_superb_head_drops_short_training_utterances_and_records_the_selection(tiny_corpus, home, tmp_path):
    small = {"head": {"channels": 16, "pooled": 24, "embedding": 16}}
    task = _task("asv", **small)
    train = task.examples(tiny_corpus, "train")
    assert task.dropped["train"] > 0 and all(sf.info(str(e.path)).frames > 32000 for e in train)
    assert {e.crop for e in train} == {128_000}
    (dev_sel,) = _run(tiny_corpus, tmp_path / "d", "asv", overrides=small)
    (test_sel,) = _run(tiny_corpus, tmp_path / "t", "asv", overrides={**small, "selection": "test"})
    assert dev_sel.selection == "dev" and test_sel.selection == "test" and test_sel.config["selection"] == "test"
    assert dev_sel.dropped_utterances["train"] == task.dropped["train"] and dev_sel.config["head"]["style"] == "superb"
    assert dev_sel.setting_id != test_sel.setting_id  # test-selected numbers never share a table with honest ones
    assert 0 <= test_sel.score <= 1


def test_a_run_prints_its_protocol_steps_and_estimate_before_training(tiny_corpus, tmp_path):
    from harness.probing.announce import TrainingEstimate, announce

    env = dict(os.environ, HARNESS_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--upstream", "fbank", "--task", "ic",
                           "--data-root", str(tiny_corpus), "--out", str(tmp_path / "r"), "--max-steps", "2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if "protocol superb" in x)
    assert "2 optimizer steps of 32 utterances" in line and "estimated training" in line
    plan = prepare(RunRequest(upstream="fbank", task="ic", data_root=tiny_corpus, out=tmp_path / "r"))
    long = announce(plan, TrainingEstimate(0.5, 0.1, 7200.0, "cpu"))
    assert "200,000 optimizer steps" in long and "2.0 h" in long and "--protocol quick" in long
    assert "--protocol quick" not in announce(plan, TrainingEstimate(0.5, 0.1, 60.0, "cpu"))


def test_records_name_their_protocol_outside_the_identity(tiny_corpus, home, tmp_path):
    (r,) = _run(tiny_corpus, tmp_path, "ic", protocol="quick", overrides={"val_interval": 2})
    data = json.loads(next((tmp_path / "r").rglob("layer_0_seed0.json")).read_text())
    assert data["protocol"] == "quick" and data["selection"] == "dev" and "protocol" not in data["config"]


def test_pr_superb_scores_stress_marked_lexicon_phones_of_every_utterance(tiny_corpus, tmp_path):
    """69 stress-marked phones from the corpus's G2P lexicon, no utterance dropped (quick drops the
    CMUdict misses), a Linear(D, 256) projection before the CTC layer; a word the lexicon lacks
    and a phone outside the set are one line each."""
    import torch

    from harness.errors import HarnessError
    from harness.heads import CtcLinear

    task = _task("pr")
    lexicon = {}
    for line in (tiny_corpus / "LibriSpeech" / "librispeech-lexicon.txt").read_text().splitlines():
        word, *phones = line.split()
        lexicon.setdefault(word.lower(), phones)
    for split, folder in (("train", "train-clean-100"), ("dev", "dev-clean"), ("test", "test-clean")):
        examples = task.examples(tiny_corpus, split)
        texts = {}
        for trans in (tiny_corpus / "LibriSpeech" / folder).rglob("*.trans.txt"):
            for line in trans.read_text().splitlines():
                utt, text = line.split(" ", 1)
                texts[utt] = text
        assert task.dropped[split] == 0 and sorted(e.id for e in examples) == sorted(texts)  # nothing dropped
        for e in examples:
            want = [p for w in texts[e.id].lower().split() for p in lexicon[w]]
            assert e.reference.split() == want == [task.tokens[i - 1] for i in e.target]
    assert len(task.tokens) == 69 and {"AH0", "AH1", "AH2", "ZH"} <= set(task.tokens) and "AH" not in task.tokens
    head = task.build_head(80)
    assert isinstance(head, CtcLinear) and head.proj.weight.shape == (256, 80) and head.linear.out_features == 70
    assert head(torch.zeros(2, 5, 80)).shape == (2, 5, 70)
    quick = _task("pr", "quick")
    assert len(quick.tokens) == 39 and quick.build_head(80).proj is None
    short = tmp_path / "lex.txt"
    short.write_text("\n".join(f"{w}\t{' '.join(p)}" for w, p in list(lexicon.items())[:10]) + "\n")
    with pytest.raises(HarnessError, match="is not in the lexicon"):
        _task("pr", lexicon=str(short)).examples(tiny_corpus, "test")
    short.write_text("HELLO\tHH AH0 L OW5\n")
    with pytest.raises(HarnessError, match="stress-marked ARPAbet"):
        _task("pr", lexicon=str(short)).examples(tiny_corpus, "test")


def test_phone_superb_uses_s3prls_split_lists_and_frame_matching(tiny_corpus, home, tmp_path):
    """Train/dev from train_split.txt as s3prl's PhoneDataset splits it (global random seeded
    1337, written here the way s3prl writes it), test from test_split.txt, all train-clean-100
    audio; each label frame scored by the feature frame s3prl's _match_length gives it."""
    import random

    import torch

    from harness.tasks.families import s3prl_frame_index

    folder = tiny_corpus / "libri_phone_s3prl"
    lines = (folder / "train_split.txt").read_text().splitlines(keepends=True)
    state = random.getstate()
    random.seed(1337)
    random.shuffle(lines)
    random.setstate(state)
    cut = int(len(lines) * 0.9)
    want = {"train": [x.strip() for x in lines[:cut]], "dev": [x.strip() for x in lines[cut:]],
            "test": (folder / "test_split.txt").read_text().split()}
    task = _task("phone")
    for split, ids in want.items():
        assert [e.id for e in task.examples(tiny_corpus, split)] == ids

    def s3prl_match(label_len: int, input_len: int) -> list[int]:  # expert._match_length on frame numbers
        inputs = torch.arange(input_len, dtype=torch.float)[None, :, None]
        factor = int(round(label_len / input_len))
        if factor > 1:
            inputs = inputs.repeat(1, 1, factor).reshape(1, input_len * factor, 1)
        if inputs.size(1) > label_len:
            inputs = inputs[:, :label_len]
        elif inputs.size(1) < label_len:
            inputs = torch.cat([inputs, inputs[:, -1:].repeat(1, label_len - inputs.size(1), 1)], dim=1)
        return inputs[0, :, 0].long().tolist()

    for labels, frames in [(100, 100), (100, 98), (100, 103), (101, 50), (100, 49), (99, 51), (7, 2), (5, 5)]:
        assert s3prl_frame_index(labels, frames).tolist() == s3prl_match(labels, frames), (labels, frames)
    (record, *_), = [_run(tiny_corpus, tmp_path, "phone", layer="0", overrides={"batch_size": 4})]
    assert record.test_utterances == len(want["test"]) and record.task == "phone"


def test_slot_filling_metrics_follow_s3prls_definitions():
    """Written from s3prl's metric.py definitions: per-utterance slot-type F1 (both empty 1, one
    empty 0), averaged; slot-value CER with each reference value against the closest hypothesis
    value of its type, an absent type counting the whole value as errors."""
    from harness.tasks.sf import slot_type_f1, slot_value_edits, slots_of

    ref = "ADD B-artist RUBY HILL E-artist TO MY B-playlist STUDY E-playlist"
    assert slots_of(ref) == {"artist": ["RUBY HILL"], "playlist": ["STUDY"]}
    assert slot_type_f1(ref, ref) == 1.0 and slot_type_f1("PLAY IT", "PLAY IT") == 1.0
    assert slot_type_f1("PLAY IT", ref) == 0.0 and slot_type_f1(ref, "PLAY IT") == 0.0
    hyp = "ADD B-artist RUBY HIL E-artist TO B-city MY E-city"
    precision, recall = 1 / 2, 1 / 2  # artist right, city wrong; playlist missed
    assert slot_type_f1(hyp, ref) == pytest.approx(2 * precision * recall / (precision + recall))
    # artist: RUBY HIL vs RUBY HILL = 1 edit of 9; playlist absent: STUDY, 5 edits of 5
    assert slot_value_edits(hyp, ref) == (1 + 5, 9 + 5)
    two = "B-artist RUBY HUL E-artist AND B-artist RUBY HILL E-artist"
    assert slot_value_edits(two, "B-artist RUBY HILL E-artist") == (0, 9)  # the closest value counts


def test_slot_filling_runs_and_reports_f1_and_value_cer(tiny_corpus, home, tmp_path):
    task = _task("sf", "quick")
    examples = task.examples(tiny_corpus, "test")
    assert examples and all(task.decode(e.target) == e.reference for e in examples)
    assert any("B-" in e.reference for e in examples)
    records = _run(tiny_corpus, tmp_path, "sf", protocol="quick", layer="0",
                   overrides={"batch_size": 4, "head": {"proj": 8, "hidden": 8, "layers": 1}})
    r = records[0]
    assert r.metric.name == "slot_type_f1" and r.metric.higher_is_better
    assert set(r.test) == {"slot_type_f1", "slot_value_cer"} and 0 <= r.test["slot_type_f1"] <= 1
    outcomes = read_outcomes(next((tmp_path / "r").rglob("layer_0_seed0.json")))
    assert outcomes.value == pytest.approx(r.test["slot_type_f1"])


def test_the_estimate_stops_timing_once_its_budget_is_spent(tiny_corpus, tmp_path, monkeypatch):
    """A head whose step takes longer than the timing budget is timed on one step (ASR's BiLSTM on a
    CPU took 400 s to estimate on four); the estimate still scales that step by the run's steps."""
    import harness.probing.announce as announce_mod

    plan = prepare(RunRequest(upstream="fbank", task="ic", data_root=tiny_corpus, out=tmp_path / "r",
                              protocol="quick"))
    steps = []
    real = announce_mod.ProbeModule.prepared

    def counting(self, data):
        steps.append(1)
        return real(self, data)

    monkeypatch.setattr(announce_mod.ProbeModule, "prepared", counting)
    full = announce_mod.estimate_training(plan)
    assert len(steps) == announce_mod.TIMED_STEPS + 1 + 1  # warm-up, timed steps, the evaluation pass
    steps.clear()
    monkeypatch.setattr(announce_mod, "TIMING_BUDGET_S", 0.0)
    one = announce_mod.estimate_training(plan)
    assert len(steps) == 1 + 1 and one.step_s > 0
    batches = int(plan.config["max_steps"]) * int(plan.config.get("accumulate", 1) or 1)
    assert one.seconds >= batches * one.step_s and full.seconds >= batches * full.step_s


def test_pr_superb_trains_on_s3prls_buckets(tiny_corpus, home, tmp_path, monkeypatch):
    """Under superb, PR's training batches are s3prl's CTC buckets (by target length, one per
    utterance) and every batch Lightning gets is one of them; the record says so and the
    batching is part of the identity (random batches are another experiment)."""
    import harness.probing.training as training
    from harness.features.loaders import s3prl_ctc_buckets
    from harness.features.planning import audio_samples

    seen = []
    real = training.train_loader

    def capturing(*a, **k):
        loader = real(*a, **k)
        seen.append((k.get("buckets"), loader))
        return loader

    monkeypatch.setattr(training, "train_loader", capturing)
    overrides = {"val_interval": 2, "lexicon": str(tiny_corpus / "LibriSpeech" / "librispeech-lexicon.txt")}
    (bucketed,) = _run(tiny_corpus, tmp_path / "b", "pr", layer="0", overrides=overrides)
    buckets, loader = seen[0]
    train = _task("pr").examples(tiny_corpus, "train")
    assert buckets == s3prl_ctc_buckets([len(e.target) for e in train], audio_samples(train), 16)
    assert [b for b, _ in zip(loader.batch_sampler, range(4))] and \
        all(b in buckets for b, _ in zip(loader.batch_sampler, range(4)))
    assert bucketed.config["batching"] == "s3prl_ctc"
    (plain,) = _run(tiny_corpus, tmp_path / "p", "pr", layer="0", overrides={**overrides, "batching": "random"})
    assert seen[1][0] is None and plain.run_key != bucketed.run_key
    # what one process trains on per batch, as the estimate and `harness plan` count it
    asr = prepare(RunRequest(upstream="fbank", task="asr", layer="0", data_root=tiny_corpus, out=tmp_path / "a"))
    assert asr.config["batch_size"] == 32 and asr.per_rank_batch == 16  # s3prl halves every full bucket
    pr = prepare(RunRequest(upstream="fbank", task="pr", layer="0", data_root=tiny_corpus, out=tmp_path / "a",
                            overrides={"batching": "random"}))
    assert pr.per_rank_batch == 16
