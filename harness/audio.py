"""Audio reading with soundfile (torchaudio>=2.9 no longer decodes by itself).

Every waveform the harness uses comes through :func:`read_audio`: mono float32 at 16 kHz.
Multi-channel files are averaged to mono (the channel mean, as most speech toolkits do);
other sample rates are refused unless the caller asks for resampling (torchaudio's
band-limited sinc resampler); damaged files and non-finite samples are refused in one
line naming the file.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf

from harness.errors import HarnessError

SAMPLE_RATE = 16_000


def read_audio(path: str | os.PathLike, expected_rate: int = SAMPLE_RATE,
               segment: tuple[int, int] | None = None, resample: bool = False) -> np.ndarray:
    """Read an audio file as mono float32 in [-1, 1], shape ``[samples]``.

    ``segment``: (first sample, end sample) reads only that part (sample indices of the file
    at its own rate). Multi-channel audio is averaged to mono. ``resample``: convert another
    sample rate to ``expected_rate`` with :func:`torchaudio.functional.resample` instead of
    refusing it.

    Raises a one-line :class:`HarnessError` for a missing or undecodable file, a segment
    outside the file, a sample rate other than ``expected_rate`` without ``resample`` (never
    resampled silently: an 8 kHz file fed to a 16 kHz model gives wrong numbers without any
    warning), and for NaN or infinite samples (one NaN makes every frame of every layer NaN).
    """
    if not os.path.exists(path):
        raise HarnessError(f"audio file not found: {path}")
    try:
        if segment is None:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        else:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True, start=int(segment[0]),
                                 stop=int(segment[1]))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise HarnessError(f"cannot decode audio {path}: {str(exc).splitlines()[0]}; re-create or re-download it") from None
    if segment is not None and len(data) != segment[1] - segment[0]:
        raise HarnessError(f"{path} has {segment[0] + len(data)} samples, so the segment {tuple(segment)} lies past "
                           "its end; check the segment list that names it")
    if data.shape[1] != 1:
        data = data.mean(axis=1, keepdims=True)
    wave = np.ascontiguousarray(data[:, 0])
    bad = int((~np.isfinite(wave)).sum())
    if bad:
        raise HarnessError(f"{path} has {bad} non-finite samples (NaN or Inf); the file is damaged: re-create it")
    if rate != expected_rate:
        if not resample:
            raise HarnessError(
                f"{path} is sampled at {rate} Hz but {expected_rate} Hz is required; "
                f"resample it first (e.g. sox in.wav -r {expected_rate} out.wav) or ask for --resample"
            )
        # imported here: the corpus code reads SAMPLE_RATE from this module, and a finished corpus
        # build should not pay torch's 1.5 s import for a resampler it never calls
        import torch
        import torchaudio

        wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, expected_rate).numpy()
    return wave


def audio_length(path: str | os.PathLike, segment: tuple[int, int] | None = None) -> int:
    """Samples of a file, or of ``segment`` (first sample, end sample) of it, from the header alone
    (no audio is decoded). One-line :class:`HarnessError` for a missing file or one whose header
    soundfile cannot read."""
    if segment is not None:
        return int(segment[1]) - int(segment[0])
    if not os.path.exists(path):
        raise HarnessError(f"audio file not found: {path}")
    try:
        return int(sf.info(str(path)).frames)
    except Exception as exc:  # LibsndfileError / RuntimeError
        raise HarnessError(f"cannot read the header of {path}: {str(exc).splitlines()[0]}; the file is damaged: "
                           "re-create or re-download it") from None
