"""Reading audio: every kind of bad file is one line naming the file; stereo and resampling."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from harness.audio import SAMPLE_RATE, audio_length, read_audio
from harness.errors import HarnessError


def _write(path, data, rate=SAMPLE_RATE, subtype="FLOAT"):
    sf.write(str(path), data, rate, subtype=subtype)
    return path


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused_naming_the_file(tmp_path, bad):
    wave = np.zeros(16000, np.float32)
    wave[1234] = bad
    path = _write(tmp_path / "damaged.wav", wave)
    with pytest.raises(HarnessError, match=r"damaged\.wav has 1 non-finite samples"):
        read_audio(path)


def test_a_segment_past_the_end_says_so_not_that_the_file_is_damaged(tmp_path):
    path = _write(tmp_path / "short.wav", np.zeros(1000, np.float32))
    assert len(read_audio(path, segment=(200, 1000))) == 800
    with pytest.raises(HarnessError) as err:
        read_audio(path, segment=(500, 1500))
    assert "past its end" in str(err.value) and "1000 samples" in str(err.value)
    assert "re-download" not in str(err.value)


def test_damaged_and_missing_files_are_one_line(tmp_path):
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"not audio at all" * 10)
    for fn in (read_audio, audio_length):
        with pytest.raises(HarnessError, match="garbage.flac") as err:
            fn(garbage)
        assert "\n" not in str(err.value)
        with pytest.raises(HarnessError, match="not found"):
            fn(tmp_path / "missing.wav")


def test_stereo_is_the_channel_mean_and_other_rates_need_resample(tmp_path):
    left = np.linspace(-0.5, 0.5, 8000, dtype=np.float32)
    right = np.full(8000, 0.25, np.float32)
    path = _write(tmp_path / "stereo.wav", np.stack([left, right], axis=1))
    assert np.allclose(read_audio(path), (left + right) / 2, atol=1e-7)
    slow = _write(tmp_path / "8k.wav", np.sin(np.arange(8000) / 8000 * 2 * np.pi * 440).astype(np.float32), rate=8000)
    with pytest.raises(HarnessError, match="8000 Hz"):
        read_audio(slow)
    up = read_audio(slow, resample=True)
    assert len(up) == 16000  # one second either way
    # a 440 Hz tone stays a 440 Hz tone: the peak of the spectrum (1 Hz bins)
    assert abs(int(np.argmax(np.abs(np.fft.rfft(up)))) - 440) <= 1
    assert audio_length(slow) == 8000 and audio_length(slow, segment=(10, 110)) == 100


def test_an_empty_file_reads_as_zero_samples(tmp_path):
    path = _write(tmp_path / "empty.wav", np.zeros(0, np.float32))
    assert read_audio(path).shape == (0,) and audio_length(path) == 0
