"""Build the embedded synthetic corpus in LibriSpeech, FSC and VoxCeleb1 layouts.

Pipeline: plan (pure function of profile + seed) -> synthesise every utterance in
a fresh forked process (espeak keeps state between utterances, see
:mod:`.espeak`), writing its audio and an alignment sidecar atomically -> assemble
the index files (transcripts, CSVs, split lists, CTM alignments, s3prl phone
labels) -> write ``corpus.json`` and ``manifest.sha256``.

An interrupted build resumes: finished utterances (audio + sidecar) are kept and
only the missing ones are synthesised.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import string
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import __version__
from harness.audio import SAMPLE_RATE
from harness.data.fsc import FSC_SPLITS
from harness.data.librispeech import SPLITS as LIBRI_SPLIT_OF
from harness.errors import HarnessError
from harness.fsutil import atomic_path, write_json, write_text
from harness.corpus import align as alignment
from harness.corpus.layout import (
    ALIGNMENT_DIR,
    FSC_DIR,
    IEMOCAP_DIR,
    LIBRI_DIR,
    LIBRI_SPLITS,
    PHONE_DIR,
    PHONE_INVENTORY,
    PHONE_TABLE,
    SC_DIR,
    VOX_DIR,
    CorpusPaths,
)
from harness.corpus.manifest import write_manifest
from harness.corpus.speakers import SpeakerRecipe, make_speakers
from harness.corpus.text import INTENTS, SentenceSampler, command_phrasings, lexicon

OUT_RATE = SAMPLE_RATE
FRAME_SHIFT = 160  # 10 ms phone-label frames
N_CANDIDATES = 6  # alternative texts per utterance, tried in order if alignment fails


@dataclass(frozen=True)
class Profile:
    name: str
    speakers: int
    libri_split_speakers: tuple[int, int, int]  # train, dev, test
    libri_utts_per_speaker: int
    fsc_split_speakers: tuple[int, int, int]
    fsc_utts_per_speaker: int
    vox_sessions: int  # sessions per speaker: all but the last two train, then dev, test
    vox_utts_per_session: int
    vocabulary: int
    vox_verification_speakers: int = 8  # VoxCeleb1 speakers whose utterances form veri_test.txt
    vox_trials: int = 2000  # trials in veri_test.txt (half target, half non-target)
    sc_split_speakers: tuple[int, int, int] = (32, 8, 8)  # Speech Commands: train, validation, test
    sc_keyword_repeats: int = 2  # each keyword said this many times by each speaker
    sc_unknown_words: int = 6  # other words per speaker (the _unknown_ class)
    emo_sessions: int = 5  # IEMOCAP-style: sessions of one female and one male speaker
    emo_utts_per_class: int = 12  # per speaker, per style


PROFILES: dict[str, Profile] = {
    "tiny": Profile("tiny", 8, (4, 2, 2), 6, (4, 2, 2), 8, 3, 3, 800, vox_verification_speakers=2, vox_trials=40,
                    sc_split_speakers=(4, 2, 2), sc_keyword_repeats=1, sc_unknown_words=2, emo_sessions=5,
                    emo_utts_per_class=2),
    "default": Profile("default", 48, (32, 8, 8), 40, (32, 8, 8), 40, 4, 6, 6000),
}

#: every layout a corpus holds, by name (a corpus built before one existed gets it on the next build)
LAYOUTS = {"librispeech": LIBRI_DIR, "fsc": FSC_DIR, "voxceleb1": VOX_DIR, "phone_labels": PHONE_DIR,
           "voxceleb1_trials": f"{VOX_DIR}/veri_test.txt", "speech_commands": SC_DIR, "iemocap": IEMOCAP_DIR}
#: Speech Commands v0.01: the ten keywords of SUPERB KS and the other words (-> _unknown_)
SC_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SC_OTHER_WORDS = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin", "nine", "one",
                  "seven", "sheila", "six", "three", "tree", "two", "wow", "zero")
SC_NOISES = ("doing_the_dishes", "dude_miaowing", "exercise_bike", "pink_noise", "running_tap", "white_noise")
SC_NOISE_SECONDS = 60
#: speaking styles of the IEMOCAP-layout corpus: prosody only (the text is drawn the same way
#: for every style), so a classifier can only use rate, pitch level and range, and loudness.
#: 'exc' (excited) is merged into 'hap' by SUPERB ER; 'fru' is a label SUPERB ER leaves out.
EMO_STYLES = {
    "neu": {"rate": 0, "pitch": 0, "range": 0, "volume": 100},
    "hap": {"rate": 18, "pitch": 14, "range": 30, "volume": 125},
    "exc": {"rate": 28, "pitch": 20, "range": 40, "volume": 140},
    "sad": {"rate": -40, "pitch": -12, "range": -30, "volume": 65},
    "ang": {"rate": 12, "pitch": 4, "range": 12, "volume": 175},
    "fru": {"rate": 5, "pitch": -4, "range": -10, "volume": 120},
}


# --------------------------------------------------------------------------- plan
def _channel(rng: np.random.Generator) -> dict:
    """A recording channel: gain, background noise level and a gentle low-pass."""
    return {
        "gain_db": round(float(rng.uniform(-8.0, -1.0)), 2),
        "snr_db": round(float(rng.uniform(28.0, 45.0)), 2),
        "lowpass": round(float(rng.uniform(0.0, 0.5)), 3),  # one-pole coefficient; 0 = flat
    }


def _jitter(rng: np.random.Generator) -> dict:
    return {"rate": int(rng.integers(-8, 9)), "pitch": int(rng.integers(-4, 5))}


def _session_name(rng: np.random.Generator) -> str:
    alphabet = string.ascii_letters + string.digits + "-_"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=11))


def plan(profile: Profile, seed: int) -> tuple[list[SpeakerRecipe], list[dict]]:
    """All speakers and utterance jobs; a pure function of (profile, seed, versions)."""
    root = np.random.SeedSequence(seed)
    spk_ss, libri_ss, fsc_ss, vox_ss = root.spawn(4)
    speakers = make_speakers(profile.speakers, np.random.default_rng(spk_ss))
    vocab = lexicon(profile.vocabulary)
    sampler = SentenceSampler(vocab)
    jobs: list[dict] = []

    def sentence_candidates(rng: np.random.Generator) -> list[str]:
        return [sampler.sample(rng) for _ in range(N_CANDIDATES)]

    # LibriSpeech: speaker-disjoint splits, two chapters per speaker
    rng = np.random.default_rng(libri_ss)
    order = [int(i) for i in rng.permutation(profile.speakers)]
    n_train, n_dev, n_test = profile.libri_split_speakers
    split_of = {}
    for k, spk in enumerate(order[: n_train + n_dev + n_test]):
        split_of[spk] = LIBRI_SPLITS[0] if k < n_train else LIBRI_SPLITS[1] if k < n_train + n_dev else LIBRI_SPLITS[2]
    for spk in sorted(split_of):
        speaker_id = 100 + 7 * spk
        chapters = [1000 + 37 * spk + c for c in range(2)]
        channels = [_channel(rng) for _ in chapters]
        for u in range(profile.libri_utts_per_speaker):
            c = u % 2
            utt = f"{speaker_id}-{chapters[c]}-{u // 2:04d}"
            rel = f"{LIBRI_DIR}/{split_of[spk]}/{speaker_id}/{chapters[c]}/{utt}.flac"
            jobs.append({
                "corpus": "librispeech", "split": split_of[spk], "utt": utt, "speaker": spk, "path": rel,
                "texts": sentence_candidates(rng), "jitter": _jitter(rng), "channel": channels[c],
                "noise_seed": int(rng.integers(2**31)), "format": "FLAC",
            })

    # Fluent Speech Commands: speaker-disjoint splits, intents cycled so all appear
    rng = np.random.default_rng(fsc_ss)
    order = [int(i) for i in rng.permutation(profile.speakers)]
    n_train, n_dev, n_test = profile.fsc_split_speakers
    fsc_split = {}
    for k, spk in enumerate(order[: n_train + n_dev + n_test]):
        fsc_split[spk] = "train" if k < n_train else "valid" if k < n_train + n_dev else "test"
    intents = rng.permutation(len(INTENTS))
    position = {spk: k for k, spk in enumerate(order)}  # consecutive within each split
    for spk in sorted(fsc_split):
        speaker_id = f"spk{spk:03d}{_session_name(rng)[:5]}"
        channel = _channel(rng)
        for u in range(profile.fsc_utts_per_speaker):
            # consecutive speakers continue the cycle, so even a small split sees every intent
            k = position[spk] * profile.fsc_utts_per_speaker + u
            action, obj, loc = INTENTS[int(intents[k % len(INTENTS)])]
            phrasings = command_phrasings(action, obj, loc)
            pick = [phrasings[int(i)] for i in rng.permutation(len(phrasings))]
            utt = f"{speaker_id}-{u:04d}"
            jobs.append({
                "corpus": "fsc", "split": fsc_split[spk], "utt": utt, "speaker": spk, "speaker_id": speaker_id,
                "path": f"{FSC_DIR}/wavs/speakers/{speaker_id}/{utt}.wav", "texts": pick[:N_CANDIDATES],
                "intent": [action, obj, loc], "jitter": _jitter(rng), "channel": channel,
                "noise_seed": int(rng.integers(2**31)), "format": "WAV",
            })

    # VoxCeleb1 identification: closed set, every speaker in every split, split by session
    rng = np.random.default_rng(vox_ss)
    for spk in range(profile.speakers):
        vox_id = f"id{10001 + spk}"
        n = 0
        for s in range(profile.vox_sessions):
            session = _session_name(rng)
            channel = _channel(rng)
            split = 1 if s < profile.vox_sessions - 2 else 2 if s == profile.vox_sessions - 2 else 3
            for _ in range(profile.vox_utts_per_session):
                n += 1
                rel = f"{vox_id}/{session}/{n:05d}.wav"
                jobs.append({
                    "corpus": "voxceleb1", "split": split, "utt": rel, "speaker": spk, "path": f"{VOX_DIR}/wav/{rel}",
                    "texts": sentence_candidates(rng), "jitter": _jitter(rng), "channel": channel,
                    "noise_seed": int(rng.integers(2**31)), "format": "WAV",
                })

    # layouts added later draw from their own streams, so the ones above stay byte-identical
    sc_ss, emo_ss = root.spawn(2)
    jobs += _speech_commands_jobs(profile, speakers, np.random.default_rng(sc_ss))
    jobs += _iemocap_jobs(profile, speakers, np.random.default_rng(emo_ss), sentence_candidates)
    return speakers, jobs


def _speech_commands_jobs(profile: Profile, speakers: list[SpeakerRecipe], rng: np.random.Generator) -> list[dict]:
    """Speech Commands v0.01: one-second clips of single words, speaker-disjoint split lists."""
    order = [int(i) for i in rng.permutation(profile.speakers)]
    n_train, n_dev, n_test = profile.sc_split_speakers
    jobs = []
    for k, spk in enumerate(order[: n_train + n_dev + n_test]):
        split = "train" if k < n_train else "validation" if k < n_train + n_dev else "testing"
        speaker_hash = f"{int(rng.integers(2**32)):08x}"
        channel = _channel(rng)
        others = [SC_OTHER_WORDS[int(i)] for i in rng.permutation(len(SC_OTHER_WORDS))[: profile.sc_unknown_words]]
        words = [w for w in SC_KEYWORDS for _ in range(profile.sc_keyword_repeats)] + others
        counts: dict[str, int] = {}
        for word in words:
            n = counts[word] = counts.get(word, -1) + 1
            rel = f"{word}/{speaker_hash}_nohash_{n}.wav"
            jobs.append({
                "corpus": "speech_commands", "split": split, "utt": rel, "speaker": spk, "path": f"{SC_DIR}/{rel}",
                "texts": [word], "jitter": _jitter(rng), "channel": channel, "noise_seed": int(rng.integers(2**31)),
                "format": "WAV", "fit_samples": OUT_RATE, "offset_fraction": round(float(rng.random()), 4),
            })
    return jobs


def _iemocap_jobs(profile: Profile, speakers: list[SpeakerRecipe], rng: np.random.Generator,
                  sentence_candidates) -> list[dict]:
    """IEMOCAP layout: sessions of a female and a male speaker, every style from each speaker."""
    women = [s.index for s in speakers if s.gender == "f"]
    men = [s.index for s in speakers if s.gender == "m"]
    women = [women[int(i)] for i in rng.permutation(len(women))]
    men = [men[int(i)] for i in rng.permutation(len(men))]
    jobs = []
    for session in range(1, profile.emo_sessions + 1):
        pair = {"F": women[(session - 1) % len(women)], "M": men[(session - 1) % len(men)]}
        for letter, spk in pair.items():
            dialog = f"Ses{session:02d}{letter}_impro01"
            channel = _channel(rng)
            styles = [style for style in EMO_STYLES for _ in range(profile.emo_utts_per_class)
                      if style not in ("exc", "fru")]
            styles += ["exc"] * max(1, profile.emo_utts_per_class // 3) + ["fru"] * max(1, profile.emo_utts_per_class // 4)
            styles = [styles[int(i)] for i in rng.permutation(len(styles))]
            for n, style in enumerate(styles):
                utt = f"{dialog}_{letter}{n:03d}"
                jobs.append({
                    "corpus": "iemocap", "split": session, "utt": utt, "speaker": spk, "dialog": dialog,
                    "path": f"{IEMOCAP_DIR}/Session{session}/sentences/wav/{dialog}/{utt}.wav",
                    "texts": sentence_candidates(rng), "jitter": _jitter(rng), "channel": channel,
                    "noise_seed": int(rng.integers(2**31)), "format": "WAV", "emotion": style,
                    "prosody": EMO_STYLES[style],
                })
    return jobs


# ----------------------------------------------------------------- synthesis worker
_ENGINE = None  # set in the parent before forking; children inherit a pristine engine
_SPEAKERS: list[SpeakerRecipe] = []
_ROOT: Path | None = None


def _apply_channel(x: np.ndarray, channel: dict, noise_seed: int) -> np.ndarray:
    from scipy.signal import lfilter

    y = x * (10.0 ** (channel["gain_db"] / 20.0))
    a = channel["lowpass"]
    if a > 0:
        y = lfilter([1.0 - a], [1.0, -a], y)
    rms = float(np.sqrt(np.mean(y**2))) if len(y) else 0.0
    sigma = max(rms, 1e-4) * 10.0 ** (-channel["snr_db"] / 20.0)
    y = y + np.random.default_rng(noise_seed).normal(0.0, sigma, size=len(y))
    return y


def sidecar_path(root: Path, job: dict) -> Path:
    key = job["utt"].replace("/", "__")
    return root / ".build" / "align" / job["corpus"] / f"{key}.json"


def _synthesise(job: dict) -> dict:
    """Synthesise one utterance (runs in a fresh forked child)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    engine, spk, root = _ENGINE, _SPEAKERS[job["speaker"]], _ROOT
    voice = spk.voice
    prosody = job.get("prosody") or {}
    rate = max(80, spk.rate + job["jitter"]["rate"] + prosody.get("rate", 0))
    pitch = int(np.clip(spk.pitch + job["jitter"]["pitch"] + prosody.get("pitch", 0), 0, 100))
    pitch_range = int(np.clip(spk.pitch_range + prosody.get("range", 0), 0, 100))
    volume = int(prosody.get("volume", 100))
    counts: dict[str, int] = {}

    def phone_count(word: str) -> int:
        if word not in counts:
            counts[word] = engine.word_phone_count(word, voice)
        return counts[word]

    last_error = None
    for text in job["texts"]:
        syn = engine.synthesize(text, voice, rate=rate, pitch=pitch, pitch_range=pitch_range,
                                rand_seed=job["noise_seed"], volume=volume)
        x = syn.audio.astype(np.float64) / 32768.0
        y = resample_poly(x, 320, 441)
        spoken = len(y)
        shift = 0
        if job.get("fit_samples"):  # a fixed-length clip (Speech Commands: one second)
            y, shift = _fit(y, int(job["fit_samples"]), float(job["offset_fraction"]))
        y = _apply_channel(y, job["channel"], job["noise_seed"])
        pcm = np.clip(np.round(y * 32767.0), -32768, 32767).astype(np.int16)
        try:
            phones, words = alignment.align(syn, text, spoken, phone_count)
        except alignment.AlignmentError as exc:
            last_error = str(exc)
            continue
        if job.get("fit_samples"):
            phones = _shift_alignment(phones, shift, len(pcm), fill=alignment.SILENCE)
            words = _shift_alignment(words, shift, len(pcm))
        audio_path = root / job["path"]
        with atomic_path(audio_path) as tmp:
            sf.write(str(tmp), pcm, OUT_RATE, subtype="PCM_16", format=job["format"])
        record = {
            "utt": job["utt"], "text": text, "samples": int(len(pcm)),
            "phones": [[p.label, p.start, p.end] for p in phones],
            "words": [[w.label, w.start, w.end] for w in words],
        }
        write_json(sidecar_path(root, job), record)
        return record
    raise HarnessError(f"no candidate text of utterance {job['utt']} could be aligned ({last_error})")


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the parent, which stops the pool and exits with one line
    (otherwise every worker prints its own traceback)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _fit(y: np.ndarray, samples: int, offset_fraction: float) -> tuple[np.ndarray, int]:
    """Place a word in a clip of exactly ``samples``: padded with silence at a drawn offset, or
    its centre kept when it is longer. Returns the clip and the word's shift in samples."""
    if len(y) <= samples:
        shift = int(round((samples - len(y)) * offset_fraction))
        return np.concatenate([np.zeros(shift), y, np.zeros(samples - len(y) - shift)]), shift
    start = (len(y) - samples) // 2
    return y[start:start + samples], -start


def _shift_alignment(segments: list, shift: int, total: int, fill: str | None = None) -> list:
    """Segments moved by ``shift`` samples and clipped to ``[0, total)``; with ``fill``, the
    padding before and after becomes segments of that label (phones tile the clip)."""
    out = []
    for seg in segments:
        start, end = max(0, seg.start + shift), min(total, seg.end + shift)
        if end > start:
            out.append(type(seg)(seg.label, start, end))
    if fill is not None and out:
        if out[0].start > 0:
            out.insert(0, type(out[0])(fill, 0, out[0].start))
        if out[-1].end < total:
            out.append(type(out[0])(fill, out[-1].end, total))
    return out


def _run_job(job: dict) -> dict:
    try:
        return {"ok": _synthesise(job)}
    except HarnessError as exc:
        return {"error": str(exc)}


# ----------------------------------------------------------------------- assembly
def _fmt_time(samples: int) -> str:
    return f"{samples / OUT_RATE:.4f}"


def _ctm_lines(utt: str, segments: list, skip_silence: bool) -> list[str]:
    out = []
    for label, start, end in segments:
        if skip_silence and label == alignment.SILENCE:
            continue
        out.append(f"{utt} 1 {start / OUT_RATE:.7f} {(end - start) / OUT_RATE:.7f} {label}")
    return out


def frame_labels(phones: list, n_samples: int) -> list[str]:
    """Phone label of each 10 ms frame, taken at the frame centre; floor(n/160) frames."""
    n_frames = n_samples // FRAME_SHIFT
    labels, k = [], 0
    for f in range(n_frames):
        centre = f * FRAME_SHIFT + FRAME_SHIFT // 2
        while phones[k][2] <= centre:
            k += 1
        labels.append(phones[k][0])
    return labels


def _assemble(root: Path, profile: Profile, seed: int, speakers: list[SpeakerRecipe], jobs: list[dict],
              records: dict[str, dict], espeak_version: str) -> dict:
    paths = CorpusPaths(root)
    by_corpus: dict[str, list[dict]] = defaultdict(list)
    for job in jobs:
        by_corpus[job["corpus"]].append(job)

    # LibriSpeech transcripts and alignments
    trans: dict[str, list[str]] = defaultdict(list)
    ctm_words: dict[str, list[str]] = defaultdict(list)
    ctm_phones: dict[str, list[str]] = defaultdict(list)
    for job in by_corpus["librispeech"]:
        rec = records[job["utt"]]
        chapter_dir = str(Path(job["path"]).parent)
        spk, chap, _ = job["utt"].split("-")
        trans[f"{chapter_dir}/{spk}-{chap}.trans.txt"].append(f"{job['utt']} {rec['text'].upper()}")
        ctm_words[job["split"]] += _ctm_lines(job["utt"], rec["words"], False)
        ctm_phones[job["split"]] += _ctm_lines(job["utt"], rec["phones"], False)
    for path, lines in trans.items():
        write_text(root / path, "\n".join(sorted(lines)) + "\n")
    for split in LIBRI_SPLITS:
        write_text(paths.ctm(split, "words"), "\n".join(ctm_words[split]) + "\n")
        write_text(paths.ctm(split, "phones"), "\n".join(ctm_phones[split]) + "\n")

    # s3prl phone_linear labels: one line per utterance, phone indices at 10 ms
    # the inventory of the first three layouts' phones (later layouts must not renumber the labels)
    first = [j for j in jobs if j["corpus"] in ("librispeech", "fsc", "voxceleb1")]
    inventory = sorted({p[0] for j in first for p in records[j["utt"]]["phones"]} - {alignment.SILENCE})
    inventory = [alignment.SILENCE] + inventory
    index = {p: i for i, p in enumerate(inventory)}
    write_text(paths.phone_labels / PHONE_INVENTORY, "".join(f"{p} {i}\n" for p, i in index.items()))
    lines, split_lists = [], defaultdict(list)
    for job in by_corpus["librispeech"]:
        rec = records[job["utt"]]
        labels = frame_labels(rec["phones"], rec["samples"])
        lines.append(job["utt"] + " " + " ".join(str(index[x]) for x in labels))
        split_lists[job["split"]].append(job["utt"])
    write_text(paths.phone_labels / PHONE_TABLE, "\n".join(sorted(lines)) + "\n")
    for harness_split, split in LIBRI_SPLIT_OF.items():  # s3prl's train/dev/test_split.txt
        write_text(paths.phone_labels / f"{harness_split}_split.txt", "\n".join(sorted(split_lists[split])) + "\n")

    # Fluent Speech Commands CSVs (leading unnamed index column, as in the real release)
    for split in FSC_SPLITS:
        rows = [",path,speakerId,transcription,action,object,location"]
        items = sorted((j for j in by_corpus["fsc"] if j["split"] == split), key=lambda j: j["utt"])
        for i, job in enumerate(items):
            rel = job["path"][len(FSC_DIR) + 1:]
            action, obj, loc = job["intent"]
            rows.append(f"{i},{rel},{job['speaker_id']},{records[job['utt']]['text']},{action},{obj},{loc}")
        write_text(paths.fsc / "data" / f"{split}_data.csv", "\n".join(rows) + "\n")
    fsc_ctm = []
    for job in sorted(by_corpus["fsc"], key=lambda j: j["utt"]):
        fsc_ctm += _ctm_lines(job["utt"], records[job["utt"]]["words"], False)
    write_text(paths.fsc / ALIGNMENT_DIR / "words.ctm", "\n".join(fsc_ctm) + "\n")

    # VoxCeleb1 identification split
    iden = sorted(f"{j['split']} {j['utt']}" for j in by_corpus["voxceleb1"])
    write_text(paths.voxceleb1 / "iden_split.txt", "\n".join(iden) + "\n")
    # VoxCeleb1 verification trials (veri_test.txt): among a few speakers kept out of ASV training
    write_text(paths.voxceleb1 / "veri_test.txt", "\n".join(_trials(by_corpus["voxceleb1"], profile, seed)) + "\n")

    # Speech Commands v0.01: split lists (train = every clip not listed) and background noise
    for split, name in (("validation", "validation_list.txt"), ("testing", "testing_list.txt")):
        listed = sorted(j["utt"] for j in by_corpus["speech_commands"] if j["split"] == split)
        write_text(paths.speech_commands / name, "\n".join(listed) + "\n")
    _write_background_noise(paths.speech_commands / "_background_noise_", seed)

    # IEMOCAP: one EmoEvaluation file per dialog, '[start - end]<TAB>utterance<TAB>label<TAB>[v, a, d]'
    by_dialog: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for job in by_corpus["iemocap"]:
        by_dialog[(job["split"], job["dialog"])].append(job)
    for (session, dialog), items in sorted(by_dialog.items()):
        lines, t = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""], 0.0
        for job in sorted(items, key=lambda j: j["utt"]):
            dur = records[job["utt"]]["samples"] / OUT_RATE
            vad = EMO_VAD[job["emotion"]]
            lines.append(f"[{t:.4f} - {t + dur:.4f}]\t{job['utt']}\t{job['emotion']}\t"
                         f"[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]")
            t += dur + 0.5
        write_text(paths.iemocap / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt",
                   "\n".join(lines) + "\n")

    stats = corpus_statistics(jobs, records)
    meta = {
        "format": 1,
        "profile": profile.name,
        "seed": seed,
        "harness_version": __version__,
        "espeak_ng": espeak_version,
        "sample_rate": OUT_RATE,
        "phone_inventory": inventory,
        "speakers": [s.to_dict() for s in speakers],
        "statistics": stats,
        "layouts": LAYOUTS,
    }
    write_json(paths.metadata, meta)
    return meta


EMO_VAD = {"neu": (2.5, 2.5, 2.5), "hap": (4.0, 3.5, 3.0), "exc": (4.0, 4.0, 3.0), "sad": (1.5, 2.0, 2.0),
           "ang": (1.5, 4.0, 4.0), "fru": (2.0, 3.5, 3.0)}  # valence, activation, dominance (1-5)


def _trials(vox_jobs: list[dict], profile: Profile, seed: int) -> list[str]:
    """``label enrol test`` lines over the utterances of the verification speakers (the last ones
    by id, like VoxCeleb1's id10270-id10309): half target trials (same speaker, another
    session), half non-target, each utterance about equally often."""
    rng = np.random.default_rng([seed, 4711])
    by_speaker: dict[int, list[dict]] = defaultdict(list)
    for job in vox_jobs:
        by_speaker[job["speaker"]].append(job)
    test = sorted(by_speaker)[-profile.vox_verification_speakers:]
    utts = [(spk, j["utt"], j["utt"].split("/")[1]) for spk in test for j in sorted(by_speaker[spk], key=lambda j: j["utt"])]
    lines: set[str] = set()
    want = profile.vox_trials
    while len(lines) < want:
        a = utts[int(rng.integers(len(utts)))]
        target = len(lines) % 2 == 0
        pool = [u for u in utts if (u[0] == a[0]) == target and u[2] != a[2]]
        b = pool[int(rng.integers(len(pool)))]
        lines.add(f"{int(target)} {a[1]} {b[1]}")
    return sorted(lines)


def _write_background_noise(folder: Path, seed: int) -> None:
    """Six minute-long noise recordings named as in Speech Commands (the _silence_ class is cut
    from them): white, pink, a running tap, an exercise bike, dishes, a cat."""
    import soundfile as sf
    from scipy.signal import lfilter

    rng = np.random.default_rng([seed, 1729])
    n = SC_NOISE_SECONDS * OUT_RATE
    t = np.arange(n) / OUT_RATE
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    pink = np.fft.irfft(spectrum, n)
    tap = lfilter([1.0], [1.0, -0.97], rng.standard_normal(n)) * (1 + 0.3 * np.sin(2 * np.pi * 3.1 * t))
    bike = lfilter([1.0], [1.0, -0.9], rng.standard_normal(n)) * (0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 1.3 * t)))
    dishes = 0.2 * rng.standard_normal(n)
    for start in rng.integers(0, n - 4000, size=90):
        f = rng.uniform(1500, 5000)
        k = np.arange(4000)
        dishes[start:start + 4000] += 3 * np.sin(2 * np.pi * f * k / OUT_RATE) * np.exp(-k / 600)
    cat = 0.1 * rng.standard_normal(n)
    for start in rng.integers(0, n - 8000, size=25):
        k = np.arange(8000)
        f0 = rng.uniform(400, 700) * (1 + 0.3 * np.sin(np.pi * k / 8000))
        cat[start:start + 8000] += np.sin(2 * np.pi * np.cumsum(f0) / OUT_RATE) * np.hanning(8000)
    for name, x in zip(SC_NOISES, (dishes, cat, bike, pink, tap, white)):
        x = 0.1 * x / (np.abs(x).max() + 1e-9)
        pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
        with atomic_path(folder / f"{name}.wav") as tmp:
            sf.write(str(tmp), pcm, OUT_RATE, subtype="PCM_16", format="WAV")


def corpus_statistics(jobs: list[dict], records: dict[str, dict]) -> dict:
    """Hours, utterances, speakers, phones, words per corpus and split."""
    stats: dict[str, dict] = {}
    for job in jobs:
        rec = records[job["utt"]]
        key = stats.setdefault(job["corpus"], {}).setdefault(str(job["split"]), {
            "hours": 0.0, "utterances": 0, "speakers": set(), "phone_tokens": 0, "phone_types": set(),
            "word_tokens": 0, "word_types": set()})
        key["hours"] += rec["samples"] / OUT_RATE / 3600
        key["utterances"] += 1
        key["speakers"].add(job["speaker"])
        speech = [p[0] for p in rec["phones"] if p[0] != alignment.SILENCE]
        key["phone_tokens"] += len(speech)
        key["phone_types"].update(speech)
        key["word_tokens"] += len(rec["words"])
        key["word_types"].update(w[0] for w in rec["words"])
    for corpus in stats.values():
        for s in corpus.values():
            s["hours"] = round(s["hours"], 4)
            for k in ("speakers", "phone_types", "word_types"):
                s[k] = len(s[k])
    return stats


def format_statistics(stats: dict) -> str:
    lines = [f"{'corpus':<16}{'split':<16}{'hours':>7}{'utts':>7}{'spk':>5}{'phones':>8}{'ph.types':>9}{'words':>7}{'w.types':>8}"]
    for corpus in sorted(stats):
        for split in sorted(stats[corpus]):
            s = stats[corpus][split]
            lines.append(f"{corpus:<16}{split:<16}{s['hours']:>7.3f}{s['utterances']:>7}{s['speakers']:>5}"
                         f"{s['phone_tokens']:>8}{s['phone_types']:>9}{s['word_tokens']:>7}{s['word_types']:>8}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry
def build(out: Path, profile_name: str = "default", seed: int = 0, workers: int | None = None,
          progress: bool = True) -> dict:
    """Build (or finish building) a corpus at ``out``; returns its metadata."""
    from harness.corpus.espeak import Espeak, prepare_data_dir

    if profile_name not in PROFILES:
        raise HarnessError(f"unknown profile {profile_name!r}; choose from {', '.join(PROFILES)}")
    profile = PROFILES[profile_name]
    out = Path(out)
    paths = CorpusPaths(out)
    identity = {"profile": profile.name, "seed": seed, "harness_version": __version__}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"cannot create output directory {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK):
        raise HarnessError(f"output directory {out} is not writable; choose another --out")
    build_dir = out / ".build"
    stamp = build_dir / "identity.json"
    if paths.metadata.exists() and paths.manifest.exists():
        meta = json.loads(paths.metadata.read_text())
        if {k: meta.get(k) for k in identity} != identity:
            raise HarnessError(
                f"{out} already holds a corpus built with profile {meta.get('profile')!r} seed {meta.get('seed')}; "
                "use another --out or delete it")
        missing = sorted(set(LAYOUTS) - set(meta.get("layouts", {})))
        if not missing:
            return meta
        # built before these layouts existed: synthesis is deterministic, so finishing the build
        # adds them and rewrites the existing files with identical bytes
        if progress:
            print(f"adding layout(s) {', '.join(missing)} to the corpus at {out}", file=sys.stderr)
        build_dir.mkdir(exist_ok=True)
        write_json(stamp, identity)
    build_dir.mkdir(exist_ok=True)
    if stamp.exists() and json.loads(stamp.read_text()) != identity:
        raise HarnessError(f"{out} holds an unfinished build with different settings; use another --out or delete it")
    if not stamp.exists() and any(p.name != ".build" for p in out.iterdir()):
        raise HarnessError(f"{out} is not empty and is not a harness corpus; choose an empty or new --out")
    write_json(stamp, identity)

    t0 = time.time()
    speakers, jobs = plan(profile, seed)
    variants = {s.variant: s.variant_text for s in speakers if s.variant_text}
    data_parent = prepare_data_dir(build_dir / "espeak", variants)

    records: dict[str, dict] = {}
    todo = []
    for job in jobs:
        side = sidecar_path(out, job)
        if side.exists() and (out / job["path"]).exists():
            records[job["utt"]] = json.loads(side.read_text())
        else:
            todo.append(job)

    global _ENGINE, _SPEAKERS, _ROOT
    # Import what the children use before forking, so each child does not pay for it.
    import scipy.signal  # noqa: F401
    import soundfile  # noqa: F401

    _ENGINE = Espeak(data_parent)
    _SPEAKERS, _ROOT = speakers, out
    espeak_version = _ENGINE.version
    if todo:
        from tqdm import tqdm

        ctx = mp.get_context("fork")
        n_workers = workers or min(2, os.cpu_count() or 1)
        with ctx.Pool(n_workers, maxtasksperchild=1, initializer=_ignore_interrupts) as pool:
            bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="utt", desc="synthesising",
                       disable=not progress, file=sys.stderr)
            for result in pool.imap_unordered(_run_job, todo, chunksize=1):
                if "error" in result:
                    pool.terminate()
                    raise HarnessError(result["error"])
                records[result["ok"]["utt"]] = result["ok"]
                bar.update(1)
            bar.close()
    synth_seconds = time.time() - t0
    meta = _assemble(out, profile, seed, speakers, jobs, records, espeak_version)
    for stray in out.rglob(".*.tmp*"):  # temp files of a killed earlier run
        if stray.is_file():
            stray.unlink()
    write_manifest(out)
    shutil.rmtree(build_dir, ignore_errors=True)
    meta["build_seconds"] = round(time.time() - t0, 1)
    meta["synthesis_seconds"] = round(synth_seconds, 1)
    return meta
