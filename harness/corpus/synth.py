"""Synthesis of one utterance, in a freshly forked worker: espeak-ng audio at 22.05 kHz ->
16 kHz -> the job's recording channel -> a PCM file and an alignment sidecar, both written
atomically (an interrupted build keeps every finished utterance).

espeak keeps state between utterances and seeds its noise from the clock, so the parent
creates the engine once (:func:`prepare`) and every job runs in a new child that inherits
it untouched, with the job's own noise seed: the same job always gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.audio import SAMPLE_RATE
from harness.corpus import align as alignment
from harness.corpus.speakers import SpeakerRecipe
from harness.errors import HarnessError
from harness.fsutil import atomic_path, write_json

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
    """Where the build keeps an utterance's alignment while building (under ``.build/``)."""
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
            sf.write(str(tmp), pcm, SAMPLE_RATE, subtype="PCM_16", format=job["format"])
        record = {
            "utt": job["utt"], "text": text, "samples": int(len(pcm)),
            "phones": [[p.label, p.start, p.end] for p in phones],
            "words": [[w.label, w.start, w.end] for w in words],
        }
        write_json(sidecar_path(root, job), record)
        return record
    raise HarnessError(f"no candidate text of utterance {job['utt']} could be aligned ({last_error})")


def ignore_interrupts() -> None:
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


def run_job(job: dict) -> dict:
    """Synthesise one utterance job in a worker: ``{"ok": result}`` or ``{"error": message}``."""
    try:
        return {"ok": _synthesise(job)}
    except HarnessError as exc:
        return {"error": str(exc)}


def prepare(engine, speakers: list[SpeakerRecipe], root: Path) -> None:
    """Set the engine, speakers and corpus root the forked workers inherit."""
    global _ENGINE, _SPEAKERS, _ROOT
    _ENGINE, _SPEAKERS, _ROOT = engine, speakers, Path(root)
