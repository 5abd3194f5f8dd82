"""Per-utterance and per-recording draws shared by every layout's plan: a recording channel,
a small rate/pitch jitter and VoxCeleb-style session names. Each layout calls them on its own
random stream, in a fixed order, so the files of one layout never depend on another."""

from __future__ import annotations

import string

import numpy as np


def channel(rng: np.random.Generator) -> dict:
    """A recording channel: gain, background noise level and a gentle low-pass."""
    return {
        "gain_db": round(float(rng.uniform(-8.0, -1.0)), 2),
        "snr_db": round(float(rng.uniform(28.0, 45.0)), 2),
        "lowpass": round(float(rng.uniform(0.0, 0.5)), 3),  # one-pole coefficient; 0 = flat
    }


def jitter(rng: np.random.Generator) -> dict:
    """Speaking rate (words/min) and pitch (espeak 0-100) offsets of one utterance."""
    return {"rate": int(rng.integers(-8, 9)), "pitch": int(rng.integers(-4, 5))}


def session_name(rng: np.random.Generator) -> str:
    """An 11-character YouTube-style id (VoxCeleb1's session folders)."""
    alphabet = string.ascii_letters + string.digits + "-_"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=11))
