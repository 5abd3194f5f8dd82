"""The embedded corpus: alignments, layouts, determinism, resumability, checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from harness.corpus.build import FRAME_SHIFT, PROFILES, build, plan
from harness.corpus.layout import LIBRI_SPLITS
from harness.corpus.manifest import check_manifest
from harness.data import (
    read_ctm,
    read_fsc,
    read_librispeech,
    read_phone_labels,
    read_voxceleb1,
)
from harness.errors import HarnessError

RATE = 16_000


def _all_ctm(root: Path, kind: str) -> dict:
    out = {}
    for split in LIBRI_SPLITS:
        out.update(read_ctm(root / "LibriSpeech" / "alignments" / f"{split}.{kind}.ctm"))
    return out


def test_phone_segments_tile_the_audio(tiny_corpus):
    phones = _all_ctm(tiny_corpus, "phones")
    utts = [u for split in LIBRI_SPLITS for u in read_librispeech(tiny_corpus / "LibriSpeech", split)]
    assert len(utts) == len(phones) > 0
    for utt in utts:
        n = sf.info(str(utt.path)).frames
        segs = phones[utt.id]
        total = sum(round(s.duration * RATE) for s in segs)
        assert abs(total - n) <= FRAME_SHIFT, utt.id
        # contiguous: each segment starts where the previous ended
        ends = np.cumsum([round(s.duration * RATE) for s in segs])
        starts = [round(s.start * RATE) for s in segs]
        assert starts[0] == 0 and all(abs(a - b) <= 1 for a, b in zip(starts[1:], ends[:-1])), utt.id


def test_word_alignments_cover_transcript_in_order(tiny_corpus):
    words = _all_ctm(tiny_corpus, "words")
    phones = _all_ctm(tiny_corpus, "phones")
    for split in LIBRI_SPLITS:
        for utt in read_librispeech(tiny_corpus / "LibriSpeech", split):
            segs = words[utt.id]
            assert [s.label.upper() for s in segs] == utt.text.split(), utt.id
            starts = [s.start for s in segs]
            assert starts == sorted(starts)
            for a, b in zip(segs, segs[1:]):
                assert a.start + a.duration <= b.start + 1e-6, utt.id  # no overlap
            # every word span is made of non-silence phones
            for w in segs:
                inside = [p for p in phones[utt.id] if p.start >= w.start - 1e-6 and p.start + p.duration <= w.start + w.duration + 1e-6]
                assert inside and all(p.label != "sil" for p in inside), (utt.id, w.label)


def test_frame_labels_match_alignment(tiny_corpus):
    labels, inventory = read_phone_labels(tiny_corpus / "libri_phone")
    phones = _all_ctm(tiny_corpus, "phones")
    assert inventory[0] == "sil" and len(set(inventory)) == len(inventory)
    for utt_id, frames in labels.items():
        path = next((tiny_corpus / "LibriSpeech").glob(f"*/*/*/{utt_id}.flac"))
        n = sf.info(str(path)).frames
        assert len(frames) == n // FRAME_SHIFT
        # the frame label at a phone's centre is that phone
        for seg in phones[utt_id]:
            centre = int((seg.start + seg.duration / 2) * 100)
            if seg.duration >= 0.03 and centre < len(frames):
                assert inventory[frames[centre]] == seg.label


def test_librispeech_reader_matches_metadata(tiny_corpus):
    meta = json.loads((tiny_corpus / "corpus.json").read_text())
    stats = meta["statistics"]["librispeech"]
    speakers = {}
    for split in LIBRI_SPLITS:
        utts = read_librispeech(tiny_corpus, split)  # root may be the parent of LibriSpeech/
        assert len(utts) == stats[split]["utterances"]
        speakers[split] = {u.speaker for u in utts}
        for u in utts:
            assert u.path.name == f"{u.id}.flac" and u.text == u.text.upper()
    assert not (speakers["train-clean-100"] & speakers["test-clean"]), "speaker-disjoint splits"
    assert not (speakers["train-clean-100"] & speakers["dev-clean"])


def test_fsc_reader_and_splits(tiny_corpus):
    from harness.corpus.text import INTENTS

    by_split = {s: read_fsc(tiny_corpus, s) for s in ("train", "valid", "test")}
    assert not ({u.speaker for u in by_split["train"]} & {u.speaker for u in by_split["test"]})
    for utts in by_split.values():
        for u in utts:
            assert u.intent in INTENTS and u.path.exists()
            assert sf.info(str(u.path)).samplerate == RATE
    assert len({u.intent for u in by_split["train"]}) >= 25


def test_voxceleb_reader_closed_set(tiny_corpus):
    sets = {s: read_voxceleb1(tiny_corpus, s) for s in ("train", "dev", "test")}
    train_spk = {u.speaker for u in sets["train"]}
    assert {u.speaker for u in sets["test"]} == train_spk  # closed set
    sessions = {s: {u.id.split("/")[1] for u in utts} for s, utts in sets.items()}
    assert not (sessions["train"] & sessions["test"])  # split by session


def test_readers_round_trip_real_layouts(tmp_path):
    """Hand-written miniature of each real release: the readers give back what was written."""
    tone = (0.1 * np.sin(np.arange(1600) / 5)).astype(np.float32)
    # LibriSpeech
    chap = tmp_path / "ls" / "dev-clean" / "84" / "121123"
    chap.mkdir(parents=True)
    for i in range(2):
        sf.write(str(chap / f"84-121123-000{i}.flac"), tone, RATE)
    (chap / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE MINUTES\n")
    utts = read_librispeech(tmp_path / "ls", "dev-clean")
    assert [(u.id, u.speaker, u.chapter, u.text) for u in utts] == [
        ("84-121123-0000", "84", "121123", "GO DO YOU HEAR"),
        ("84-121123-0001", "84", "121123", "BUT IN LESS THAN FIVE MINUTES")]
    # FSC
    fsc = tmp_path / "fsc"
    (fsc / "data").mkdir(parents=True)
    (fsc / "wavs" / "speakers" / "2BqVo8kVB2Skwgyb").mkdir(parents=True)
    sf.write(str(fsc / "wavs/speakers/2BqVo8kVB2Skwgyb/0a3129c0.wav"), tone, RATE)
    (fsc / "data" / "test_data.csv").write_text(
        ",path,speakerId,transcription,action,object,location\n"
        "0,wavs/speakers/2BqVo8kVB2Skwgyb/0a3129c0.wav,2BqVo8kVB2Skwgyb,Change language,change language,none,none\n")
    (u,) = read_fsc(fsc, "test")
    assert (u.speaker, u.text, u.intent) == ("2BqVo8kVB2Skwgyb", "Change language", ("change language", "none", "none"))
    # VoxCeleb1
    vox = tmp_path / "vox"
    (vox / "wav" / "id10003" / "na8-QEFmj44").mkdir(parents=True)
    sf.write(str(vox / "wav/id10003/na8-QEFmj44/00003.wav"), tone, RATE)
    (vox / "iden_split.txt").write_text("3 id10003/na8-QEFmj44/00003.wav\n")
    assert read_voxceleb1(vox, "train") == []
    (v,) = read_voxceleb1(vox, "test")
    assert (v.id, v.speaker) == ("id10003/na8-QEFmj44/00003", "id10003")


def test_wrong_layout_and_missing_files_are_one_line_errors(tmp_path, tiny_corpus):
    with pytest.raises(HarnessError, match="no LibriSpeech split"):
        read_librispeech(tmp_path, "dev-clean")
    with pytest.raises(HarnessError, match="Fluent Speech Commands"):
        read_fsc(tmp_path, "train")
    with pytest.raises(HarnessError, match="iden_split.txt"):
        read_voxceleb1(tmp_path, "train")
    # a listed file that is missing is named
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(tiny_corpus / "VoxCeleb1", copy)
    victim = sorted((copy / "wav").rglob("*.wav"))[0]
    victim.unlink()
    with pytest.raises(HarnessError, match=str(victim.name)):
        for split in ("train", "dev", "test"):
            read_voxceleb1(copy, split)


def test_wrong_sample_rate_is_rejected(tmp_path):
    from harness.audio import read_audio

    path = tmp_path / "x.wav"
    sf.write(str(path), np.zeros(800, np.float32), 8000)
    with pytest.raises(HarnessError, match="8000 Hz but 16000 Hz"):
        read_audio(path)


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path, tiny_corpus):
    again = tmp_path / "again"
    build(again, "tiny", 0, progress=False)
    assert (again / "manifest.sha256").read_bytes() == (tiny_corpus / "manifest.sha256").read_bytes()
    other = tmp_path / "other"
    build(other, "tiny", 1, progress=False)
    a = dict(line.split("  ")[::-1] for line in (tiny_corpus / "manifest.sha256").read_text().splitlines())
    b = dict(line.split("  ")[::-1] for line in (other / "manifest.sha256").read_text().splitlines())
    assert a != b
    assert json.loads((other / "corpus.json").read_text())["speakers"] != json.loads((tiny_corpus / "corpus.json").read_text())["speakers"]


def test_corpus_check_catches_corruption(tmp_path, tiny_corpus):
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(tiny_corpus, copy)
    assert check_manifest(copy) > 100
    victim = sorted(copy.rglob("*.flac"))[3]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(HarnessError, match=victim.name):
        check_manifest(copy)
    # and through the CLI: one line on stderr, non-zero exit
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "corpus", "check", str(copy)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and "corrupt" in proc.stderr and "Traceback" not in proc.stderr


def test_interrupted_build_resumes_to_identical_corpus(tmp_path, tiny_corpus):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "corpus", "build", "--profile", "tiny",
                             "--out", str(out), "--quiet"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    align_dir = out / ".build" / "align"
    deadline = time.time() + 60
    while time.time() < deadline:
        if align_dir.exists() and sum(1 for _ in align_dir.rglob("*.json")) >= 30:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.sha256").exists(), "the build finished before it could be interrupted"
    done = sum(1 for _ in align_dir.rglob("*.json"))
    total = len(plan(PROFILES["tiny"], 0)[1])
    assert 0 < done < total
    build(out, "tiny", 0, progress=False)
    assert (out / "manifest.sha256").read_bytes() == (tiny_corpus / "manifest.sha256").read_bytes()
    assert not list(out.rglob("*.tmp*")) and not (out / ".build").exists()


def test_bad_outputs_and_missing_library_are_clear(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HarnessError, match="cannot create output directory"):
        build(blocker / "sub", "tiny", 0, progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(HarnessError, match="not empty"):
        build(busy, "tiny", 0, progress=False)
    import espeakng_loader

    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: str(tmp_path / "nope.so"))
    from harness.corpus.espeak import Espeak

    with pytest.raises(HarnessError, match="espeak-ng library not found"):
        Espeak()


def test_default_profile_plan_meets_size_targets():
    speakers, jobs = plan(PROFILES["default"], 0)
    assert len(speakers) >= 40 and len({s.variant for s in speakers}) == len(speakers)
    words = Counter(w for j in jobs if j["corpus"] == "librispeech" for w in j["texts"][0].split())
    assert len(words) >= 2000
    intents = {tuple(j["intent"]) for j in jobs if j["corpus"] == "fsc"}
    assert len(intents) >= 25
