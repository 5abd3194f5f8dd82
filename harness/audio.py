"""Audio reading with soundfile (torchaudio>=2.9 no longer decodes by itself)."""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf

from harness.errors import HarnessError

SAMPLE_RATE = 16_000


def read_audio(path: str | os.PathLike, expected_rate: int = SAMPLE_RATE,
               segment: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mono file as float32 in [-1, 1], shape ``[samples]``; with ``segment``
    (first sample, end sample) only that part.

    Raises a one-line :class:`HarnessError` for a missing or unreadable file or a
    sample rate other than ``expected_rate`` (we never resample silently: a 8 kHz
    file fed to a 16 kHz model gives wrong numbers without any warning).
    """
    if not os.path.exists(path):
        raise HarnessError(f"audio file not found: {path}")
    try:
        if segment is None:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        else:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True, start=int(segment[0]),
                                 stop=int(segment[1]))
            if len(data) != segment[1] - segment[0]:
                raise HarnessError(f"{path} has fewer than {segment[1]} samples; the segment {segment} is outside it")
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise HarnessError(f"cannot decode audio {path}: {str(exc).splitlines()[0]}; re-create or re-download it") from None
    if rate != expected_rate:
        raise HarnessError(
            f"{path} is sampled at {rate} Hz but {expected_rate} Hz is required; "
            f"resample it first (e.g. sox in.wav -r {expected_rate} out.wav)"
        )
    if data.shape[1] != 1:
        data = data.mean(axis=1, keepdims=True)
    return np.ascontiguousarray(data[:, 0])
