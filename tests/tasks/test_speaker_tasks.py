"""Speaker and paralinguistic tasks (asv, ks, er), their readers and the GE2E upstream."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny_models
import torch

from harness.errors import HarnessError
from harness.probing.engine import RunRequest, run
from harness.registry import load_task


def _task(name: str, **config):
    cls = load_task(name)
    return cls({**cls.default_config(), **config})


def test_speech_commands_reader_and_ks_classes(tiny_corpus):
    from harness.data import read_speech_commands

    task = _task("ks")
    splits = {s: task.examples(tiny_corpus, s) for s in ("train", "dev", "test")}
    speakers = {s: {e.id.split("/")[1].split("_")[0] for e in ex if e.segment is None} for s, ex in splits.items()}
    assert not speakers["train"] & speakers["test"] and not speakers["dev"] & speakers["test"]  # speaker-disjoint
    labels = {e.target[0] for e in splits["train"]}
    assert {"yes", "no", "_unknown_", "_silence_"} <= labels and labels <= set(
        "yes no up down left right on off stop go _unknown_ _silence_".split())
    silence = [e for e in splits["test"] if e.target == ("_silence_",)]
    assert silence and all(e.segment[1] - e.segment[0] == 16000 for e in silence)
    # the silence of each split comes from its own part of the noise recordings
    starts = {s: {(e.path.name, e.segment[0]) for e in ex if e.segment} for s, ex in splits.items()}
    assert not starts["train"] & starts["test"]
    clips = read_speech_commands(tiny_corpus, "testing")
    assert all(len(__import__("soundfile").read(str(c.path))[0]) == 16000 for c in clips[:5])  # one-second clips


def test_iemocap_reader_folds_and_labels(tiny_corpus):
    from harness.data import read_iemocap

    utts = read_iemocap(tiny_corpus)
    assert {u.session for u in utts} == {1, 2, 3, 4, 5} and {"exc", "fru"} <= {u.label for u in utts}
    for fold in (1, 5):
        task = _task("er", test_session=fold)
        ex = {s: task.examples(tiny_corpus, s) for s in ("train", "dev", "test")}
        assert {e.id[3:5] for e in ex["test"]} == {f"{fold:02d}"}
        assert {e.id[3:5] for e in ex["dev"]} == {f"{fold % 5 + 1:02d}"}
        assert {e.target[0] for s in ex.values() for e in s} <= {"neu", "hap", "sad", "ang"}  # exc -> hap, fru out


def test_verification_trials_keep_test_speakers_out_of_training(tiny_corpus):
    task = _task("asv")
    train, dev, test = (task.examples(tiny_corpus, s) for s in ("train", "dev", "test"))
    spk = lambda ex: {e.target[0] for e in ex}  # noqa: E731
    assert not spk(train) & spk(test) and not spk(train) & spk(dev) and not spk(dev) & spk(test)
    assert {lab for *_, lab in task.trials["test"]} == {0, 1} and {lab for *_, lab in task.trials["dev"]} == {0, 1}
    ids = {e.id for e in test}
    assert all(a in ids and b in ids for a, b, _ in task.trials["test"])


def test_real_layouts_round_trip_and_bad_roots_are_one_line_errors(tmp_path, tiny_corpus):
    import shutil

    from harness.data import read_iemocap, read_speech_commands, read_voxceleb1_trials

    # Speech Commands without its split lists
    sc = tmp_path / "sc"
    (sc / "yes").mkdir(parents=True)
    with pytest.raises(HarnessError, match="validation_list.txt"):
        read_speech_commands(sc, "train")
    # a list naming a missing clip
    (sc / "validation_list.txt").write_text("yes/abc_nohash_0.wav\n")
    (sc / "testing_list.txt").write_text("")
    with pytest.raises(HarnessError, match="missing"):
        read_speech_commands(sc, "validation")
    # IEMOCAP with a session missing
    iem = tmp_path / "iem"
    shutil.copytree(tiny_corpus / "IEMOCAP_full_release", iem)
    shutil.rmtree(iem / "Session3")
    with pytest.raises(HarnessError, match="session 3 is missing"):
        read_iemocap(iem)
    # a trial naming a file that is not there
    vox = tmp_path / "vox"
    shutil.copytree(tiny_corpus / "VoxCeleb1", vox)
    (vox / "veri_test.txt").write_text("1 id10001/nosuch/00001.wav id10001/nosuch/00002.wav\n")
    with pytest.raises(HarnessError, match="names id10001/nosuch/00001.wav"):
        read_voxceleb1_trials(vox)


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    return tiny_models.hf_hubert(tmp_path_factory.mktemp("hf") / "m", layers=2)


@pytest.mark.parametrize("task", ["ks", "er", "asv"])
def test_a_sweep_of_each_new_task_writes_complete_records(tiny_corpus, tiny_hf, tmp_path, monkeypatch, task):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    req = RunRequest(upstream=f"hf:{tiny_hf}", task=task, data_root=tiny_corpus, out=tmp_path / "r", max_steps=4,
                     overrides={"batch_size": 8, "val_interval": 2}, progress=False, protocol="quick")
    records = [json.loads(p.read_text()) for p in run(req)]
    assert [r["probe"] for r in records] == ["layer_0", "layer_1", "layer_2", "weighted"]
    name = records[0]["metric"]["name"]
    assert name == ("eer" if task == "asv" else "accuracy")
    for r in records:
        assert 0 <= r["test"][name] <= 1 and r["metric"]["higher_is_better"] == (task != "asv")
    if task == "asv":
        assert "min_dcf" in records[0]["test"] and not records[0]["pooled_cache"]  # the x-vector head needs frames
    from harness.reports.ranking import load_records, rank

    (ranking,) = rank(load_records(tmp_path / "r"))
    assert all(s.ci_low <= s.score <= s.ci_high for s in ranking.layers)  # bootstrap over trials (asv) or utterances


def test_a_speaker_embedding_layer_serves_utterance_tasks_and_is_refused_by_frame_tasks(tiny_corpus, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "home"))
    req = RunRequest(upstream="ge2e", task="asv", layer="3", data_root=tiny_corpus, out=tmp_path / "r", max_steps=2,
                     overrides={"batch_size": 8, "val_interval": 2}, progress=False, protocol="quick")
    (path,) = run(req)
    assert json.loads(path.read_text())["layer"] == 3
    with pytest.raises(HarnessError, match="utterance-level"):
        run(RunRequest(upstream="ge2e", task="phone", layer="3", data_root=tiny_corpus, out=tmp_path / "r",
                       max_steps=2, progress=False, protocol="quick"))


def test_ge2e_layers_match_the_resemblyzer_package(tiny_corpus):
    import warnings

    warnings.simplefilter("ignore")
    from harness.upstreams.ge2e_backend import normalize_volume
    from resemblyzer import VoiceEncoder, audio

    from harness.audio import read_audio
    from harness.upstream import load_upstream

    up = load_upstream("ge2e")
    assert up.info.layer_names == ["lstm_1", "lstm_2", "lstm_3", "embedding"] and up.info.weights_sha256
    encoder = VoiceEncoder(device="cpu", verbose=False)
    for path in sorted((tiny_corpus / "VoxCeleb1" / "wav").rglob("*.wav"))[:3]:
        wav = read_audio(path)
        out = up.layers(torch.from_numpy(wav)[None], torch.tensor([len(wav)]))
        x = normalize_volume(wav)
        reference = encoder.embed_utterance(x)  # the package's own embedding function
        assert np.abs(out.hidden[3][0, 0].numpy() - reference).max() <= 1e-5
        mel = torch.from_numpy(audio.wav_to_mel_spectrogram(x))[None]  # the package's features
        with torch.no_grad():
            frames, _ = encoder.lstm(mel)
        assert out.hidden[2].shape[1] == frames.shape[1]
        assert (out.hidden[2][0] - frames[0]).abs().max() <= 1e-4


def test_reversed_trial_pairs_count_once_and_the_trial_list_is_part_of_the_identity(tiny_corpus):
    from harness.tasks.asv import unique_pairs

    from harness.registry import load_task
    from harness.task import task_config

    trials = [("a", "b", 1), ("b", "a", 1), ("a", "c", 0), ("c", "a", 0), ("b", "c", 0)]
    assert unique_pairs(trials) == [("a", "b", 1), ("a", "c", 0), ("b", "c", 0)]
    cls = load_task("asv")
    task = cls(task_config(cls))
    for split in ("train", "dev", "test"):
        task.examples(tiny_corpus, split)
    first = task.identity()
    assert set(first) == {"trials_sha256"}
    task.trials["test"] = task.trials["test"][1:]  # another list over (nearly) the same utterances
    assert task.identity() != first
