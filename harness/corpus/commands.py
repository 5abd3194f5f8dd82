"""Speech Commands v0.01 in the embedded corpus: the training archive's one-second word clips
(split by ``validation_list.txt`` / ``testing_list.txt``) and its six background-noise recordings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.audio import SAMPLE_RATE
from harness.corpus.draws import channel as draw_channel
from harness.corpus.draws import jitter as draw_jitter
from harness.corpus.layout import SC_DIR
from harness.fsutil import atomic_path

#: the ten keywords of SUPERB KS and the other words (-> _unknown_)
SC_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SC_OTHER_WORDS = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin", "nine", "one",
                  "seven", "sheila", "six", "three", "tree", "two", "wow", "zero")
SC_NOISES = ("doing_the_dishes", "dude_miaowing", "exercise_bike", "pink_noise", "running_tap", "white_noise")
SC_NOISE_SECONDS = 60


def speech_commands_jobs(profile, rng: np.random.Generator) -> list[dict]:
    """Speech Commands v0.01: one-second clips of single words, speaker-disjoint split lists."""
    order = [int(i) for i in rng.permutation(profile.speakers)]
    n_train, n_dev, n_test = profile.sc_split_speakers
    jobs = []
    for k, spk in enumerate(order[: n_train + n_dev + n_test]):
        split = "train" if k < n_train else "validation" if k < n_train + n_dev else "testing"
        speaker_hash = f"{int(rng.integers(2**32)):08x}"
        channel = draw_channel(rng)
        others = [SC_OTHER_WORDS[int(i)] for i in rng.permutation(len(SC_OTHER_WORDS))[: profile.sc_unknown_words]]
        words = [w for w in SC_KEYWORDS for _ in range(profile.sc_keyword_repeats)] + others
        counts: dict[str, int] = {}
        for word in words:
            n = counts[word] = counts.get(word, -1) + 1
            rel = f"{word}/{speaker_hash}_nohash_{n}.wav"
            jobs.append({
                "corpus": "speech_commands", "split": split, "utt": rel, "speaker": spk, "path": f"{SC_DIR}/{rel}",
                "texts": [word], "jitter": draw_jitter(rng), "channel": channel, "noise_seed": int(rng.integers(2**31)),
                "format": "WAV", "fit_samples": SAMPLE_RATE, "offset_fraction": round(float(rng.random()), 4),
            })
    return jobs


def noise_recordings(rng: np.random.Generator, seconds: int) -> dict[str, np.ndarray]:
    """Six noise recordings named as in Speech Commands: white, pink, a running tap, an exercise
    bike, dishes (decaying clinks), a cat (gliding tones); float, peak 0.1, ``seconds`` long."""
    from scipy.signal import lfilter

    n = seconds * SAMPLE_RATE
    t = np.arange(n) / SAMPLE_RATE
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    pink = np.fft.irfft(spectrum, n)
    tap = lfilter([1.0], [1.0, -0.97], rng.standard_normal(n)) * (1 + 0.3 * np.sin(2 * np.pi * 3.1 * t))
    bike = lfilter([1.0], [1.0, -0.9], rng.standard_normal(n)) * (0.5 + 0.5 * np.abs(np.sin(2 * np.pi * 1.3 * t)))
    dishes = 0.2 * rng.standard_normal(n)
    for start in rng.integers(0, n - 4000, size=round(90 * seconds / 60)):  # 90 clinks a minute
        f = rng.uniform(1500, 5000)
        k = np.arange(4000)
        dishes[start:start + 4000] += 3 * np.sin(2 * np.pi * f * k / SAMPLE_RATE) * np.exp(-k / 600)
    cat = 0.1 * rng.standard_normal(n)
    for start in rng.integers(0, n - 8000, size=round(25 * seconds / 60)):  # 25 meows a minute
        k = np.arange(8000)
        f0 = rng.uniform(400, 700) * (1 + 0.3 * np.sin(np.pi * k / 8000))
        cat[start:start + 8000] += np.sin(2 * np.pi * np.cumsum(f0) / SAMPLE_RATE) * np.hanning(8000)
    return {name: 0.1 * x / (np.abs(x).max() + 1e-9)
            for name, x in zip(SC_NOISES, (dishes, cat, bike, pink, tap, white))}


def write_pcm16(path: Path, x: np.ndarray) -> None:
    """``x`` (float, full scale 1.0) as a 16 kHz 16-bit WAV, written atomically."""
    import soundfile as sf

    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def write_background_noise(folder: Path, seed: int) -> None:
    """The training archive's ``_background_noise_/``: six minute-long recordings (the
    ``_silence_`` class of training is cut from them)."""
    for name, x in noise_recordings(np.random.default_rng([seed, 1729]), SC_NOISE_SECONDS).items():
        write_pcm16(folder / f"{name}.wav", x)


# ---------------------------------------------------- speech_commands_test_set_v0.01
#: seconds of each fresh noise recording the test set's _silence_ clips are cut from
SC_TEST_NOISE_SECONDS = 20


def test_set_jobs(profile, speakers: list, taken_hashes: set[str], rng: np.random.Generator) -> list[dict]:
    """The separate test archive (``speech_commands_test_set_v0.01``), spoken by ``speakers``:
    speakers the training archive never heard. Each says every keyword ``sc_test_repeats`` times
    (``WORD/HASH_nohash_N.wav``) and ``sc_test_repeats`` other words (``_unknown_/WORD_HASH_nohash_N.wav``,
    as in the real archive), so every keyword and ``_unknown_`` get the same number of clips."""
    from harness.corpus.layout import SC_TEST_DIR

    repeats = profile.sc_test_repeats
    jobs = []
    for speaker in speakers:
        speaker_hash = f"{int(rng.integers(2**32)):08x}"
        while speaker_hash in taken_hashes:
            speaker_hash = f"{int(rng.integers(2**32)):08x}"
        taken_hashes.add(speaker_hash)
        channel = draw_channel(rng)
        picks = rng.choice(len(SC_OTHER_WORDS), size=repeats, replace=repeats > len(SC_OTHER_WORDS))
        others = [SC_OTHER_WORDS[int(i)] for i in picks]
        counts: dict[str, int] = {}
        for word in [w for w in SC_KEYWORDS for _ in range(repeats)] + others:
            n = counts[word] = counts.get(word, -1) + 1
            rel = (f"{word}/{speaker_hash}_nohash_{n}.wav" if word in SC_KEYWORDS
                   else f"_unknown_/{word}_{speaker_hash}_nohash_{n}.wav")
            jobs.append({
                "corpus": "speech_commands_test", "split": "test", "utt": f"{SC_TEST_DIR}/{rel}",
                "speaker": speaker.index, "path": f"{SC_TEST_DIR}/{rel}", "texts": [word], "jitter": draw_jitter(rng),
                "channel": channel, "noise_seed": int(rng.integers(2**31)), "format": "WAV",
                "fit_samples": SAMPLE_RATE, "offset_fraction": round(float(rng.random()), 4),
            })
    return jobs


def write_test_set_silence(folder: Path, seed: int, n: int) -> list[str]:
    """The test archive's ``_silence_/N.wav``: ``n`` one-second clips cut at random offsets from
    six fresh noise recordings (their own random stream: none of the training archive's noise),
    at levels from -30 dB to 0 dB of the recordings' peak 0.1, as the real clips range from
    near silence to loud noise. Returns the file names."""
    rng = np.random.default_rng([seed, 1730])
    recordings = noise_recordings(rng, SC_TEST_NOISE_SECONDS)
    numbers = sorted(int(i) for i in rng.choice(10 * n + 100, size=n, replace=False))
    names = []
    for k, number in enumerate(numbers):
        x = recordings[SC_NOISES[k % len(SC_NOISES)]]
        start = int(rng.integers(0, len(x) - SAMPLE_RATE))
        gain = 10.0 ** (float(rng.uniform(-30.0, 0.0)) / 20.0)
        names.append(f"{number}.wav")
        write_pcm16(folder / names[-1], gain * x[start:start + SAMPLE_RATE])
    return names
