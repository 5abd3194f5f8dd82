"""Tests of the s3prl-side stand-ins (run: python -m pytest bench/peer/test_patches.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peer import patches, recipes  # noqa: E402

RATE = 16000


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return 0.5 * np.sin(2 * np.pi * 200 * t) + 0.5 * (t == t)  # DC offset: every sample loud


def test_silence_keeps_short_gaps_and_drops_long_ones():
    gap = np.zeros
    x = np.concatenate([gap(8000), _tone(1.0), gap(800), _tone(0.5), gap(4800), _tone(0.5), gap(3200)])
    y = patches.sox_silence(x)
    # leading 0.5 s trimmed; the 50 ms gap kept; in each long gap the RMS window (the last 320
    # samples, current included) still hears the tone for 319 samples, then 1600 quiet samples
    # end the copy and trimming drops the rest until the next tone
    assert len(y) == 16000 + 800 + 8000 + 319 + 8000 + 319
    assert np.all(y[16000:16800] == 0) and np.all(y[16000 - 1] != 0)


def test_silence_of_a_quiet_file_is_empty_and_threshold_is_on_rms():
    assert len(patches.sox_silence(np.full(32000, 0.0009))) == 0
    # the RMS window starts as zeros: sqrt(k * 0.0011^2 / 320) >= 0.001 first at k = 265 samples
    assert len(patches.sox_silence(np.full(32000, 0.0011))) == 32000 - 264


def test_first_run():
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1], dtype=bool)
    assert patches._first_run(mask, 3, 0) == 3
    assert patches._first_run(mask, 3, 4) == 7
    assert patches._first_run(mask, 4, 0) is None


def test_apply_effects_file_gain_and_refusals(tmp_path):
    x = 0.25 * np.sin(np.arange(RATE) / 7.0)
    path = tmp_path / "a.wav"
    sf.write(path, x, RATE, subtype="PCM_16")
    wav, sr = patches.apply_effects_file(path, [["channels", "1"], ["rate", "16000"], ["gain", "-3.0"]])
    ref = sf.read(path, dtype="float32")[0]
    assert sr == RATE and wav.shape == (1, RATE)
    np.testing.assert_allclose(wav[0].numpy(), ref * 10 ** (-3 / 20), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError):
        patches.apply_effects_file(path, [["rate", "8000"]])
    with pytest.raises(ValueError):
        patches.apply_effects_file(path, [["reverb"]])


def test_cuda_is_the_identity_only_inside_on_cpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    t = torch.ones(2)
    with patches.on_cpu():
        assert t.cuda() is t
    with pytest.raises((AssertionError, RuntimeError)):
        t.cuda()


def test_vocabularies_have_s3prl_sizes():
    assert len(recipes.PHONES) == 71 and recipes.PHONES[:4] == ["SIL", "SPN", "AA0", "AA1"]
    assert recipes.PHONES[-1] == "ZH" and len(set(recipes.PHONES)) == 71
    assert len(recipes.CHARACTERS) == 28 and recipes.CHARACTERS[0] == "|"
