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

from .. import __version__
from ..audio import SAMPLE_RATE
from ..data.fsc import FSC_SPLITS
from ..data.librispeech import SPLITS as LIBRI_SPLIT_OF
from ..errors import HarnessError
from ..fsutil import atomic_path, write_json, write_text
from . import align as alignment
from .layout import (
    ALIGNMENT_DIR,
    FSC_DIR,
    LIBRI_DIR,
    LIBRI_SPLITS,
    PHONE_DIR,
    PHONE_INVENTORY,
    PHONE_TABLE,
    VOX_DIR,
    CorpusPaths,
)
from .manifest import write_manifest
from .speakers import SpeakerRecipe, make_speakers
from .text import INTENTS, SentenceSampler, command_phrasings, lexicon

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


PROFILES: dict[str, Profile] = {
    "tiny": Profile("tiny", 8, (4, 2, 2), 6, (4, 2, 2), 8, 3, 3, 800),
    "default": Profile("default", 48, (32, 8, 8), 40, (32, 8, 8), 40, 4, 6, 6000),
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
    return speakers, jobs


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
    rate = spk.rate + job["jitter"]["rate"]
    pitch = int(np.clip(spk.pitch + job["jitter"]["pitch"], 0, 100))
    counts: dict[str, int] = {}

    def phone_count(word: str) -> int:
        if word not in counts:
            counts[word] = engine.word_phone_count(word, voice)
        return counts[word]

    last_error = None
    for text in job["texts"]:
        syn = engine.synthesize(text, voice, rate=rate, pitch=pitch, pitch_range=spk.pitch_range,
                                rand_seed=job["noise_seed"])
        x = syn.audio.astype(np.float64) / 32768.0
        y = resample_poly(x, 320, 441)
        y = _apply_channel(y, job["channel"], job["noise_seed"])
        pcm = np.clip(np.round(y * 32767.0), -32768, 32767).astype(np.int16)
        try:
            phones, words = alignment.align(syn, text, len(pcm), phone_count)
        except alignment.AlignmentError as exc:
            last_error = str(exc)
            continue
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
    inventory = sorted({p[0] for r in records.values() for p in r["phones"]} - {alignment.SILENCE})
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
        "layouts": {"librispeech": LIBRI_DIR, "fsc": FSC_DIR, "voxceleb1": VOX_DIR, "phone_labels": PHONE_DIR},
    }
    write_json(paths.metadata, meta)
    return meta


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
    lines = [f"{'corpus':<12}{'split':<18}{'hours':>7}{'utts':>7}{'spk':>5}{'phones':>8}{'ph.types':>9}{'words':>7}{'w.types':>8}"]
    for corpus in sorted(stats):
        for split in sorted(stats[corpus]):
            s = stats[corpus][split]
            lines.append(f"{corpus:<12}{split:<18}{s['hours']:>7.3f}{s['utterances']:>7}{s['speakers']:>5}"
                         f"{s['phone_tokens']:>8}{s['phone_types']:>9}{s['word_tokens']:>7}{s['word_types']:>8}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry
def build(out: Path, profile_name: str = "default", seed: int = 0, workers: int | None = None,
          progress: bool = True) -> dict:
    """Build (or finish building) a corpus at ``out``; returns its metadata."""
    from .espeak import Espeak, prepare_data_dir

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
    if paths.metadata.exists() and paths.manifest.exists():
        meta = json.loads(paths.metadata.read_text())
        if {k: meta.get(k) for k in identity} != identity:
            raise HarnessError(
                f"{out} already holds a corpus built with profile {meta.get('profile')!r} seed {meta.get('seed')}; "
                "use another --out or delete it")
        return meta
    build_dir = out / ".build"
    build_dir.mkdir(exist_ok=True)
    stamp = build_dir / "identity.json"
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
