"""Speaker recipes: each synthetic speaker is a fixed, recorded espeak recipe.

A recipe is a language/accent, a voice variant (stock or a variant file we write,
with its own pitch range and formant scaling), a speaking rate and pitch settings.
Recipes are drawn from the corpus seed and written into ``corpus.json`` so any
speaker can be re-created exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

STOCK_MALE = ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]
STOCK_FEMALE = ["f1", "f2", "f3", "f4", "f5"]
# Accents give different pronunciations; most speakers are US English.
LANGUAGES = ["en-us"] * 6 + ["en", "en-gb-x-rp", "en-us-nyc", "en-gb-scotland"]


@dataclass(frozen=True)
class SpeakerRecipe:
    """One synthetic speaker: espeak-ng language and variant (stock or our own file), rate and pitch."""
    index: int
    gender: str  # "m" or "f"
    language: str
    variant: str  # name of a stock variant or of a variant file in variant_text
    variant_text: str | None  # contents of our own variant file, or None for a stock one
    rate: int  # words per minute
    pitch: int  # espeak 0-100
    pitch_range: int  # espeak 0-100

    @property
    def voice(self) -> str:
        """The espeak-ng voice name ``language+variant``."""
        return f"{self.language}+{self.variant}"

    def to_dict(self) -> dict:
        """The recipe as a dict (as recorded in ``corpus.json``)."""
        return asdict(self)


def _variant_file(name: str, gender: str, rng: np.random.Generator) -> str:
    """A variant file with its own pitch range and formant scaling (a new timbre)."""
    if gender == "m":
        base = int(rng.integers(72, 120))
    else:
        base = int(rng.integers(150, 215))
    top = base + int(rng.integers(25, 60 if gender == "m" else 90))
    # formant N  frequency% height% width%: scaling F1-F3 changes vocal-tract "size".
    shift = float(rng.uniform(0.9, 1.0) if gender == "m" else rng.uniform(1.0, 1.12))
    lines = [
        "language variant",
        f"name {name}",
        f"gender {'male' if gender == 'm' else 'female'}",
        "",
        f"pitch {base} {top}",
    ]
    for formant in range(0, 6):
        freq = int(round(100 * shift * float(rng.uniform(0.96, 1.04)))) if formant <= 3 else 100
        height = int(rng.integers(85, 116))
        width = int(rng.integers(90, 111))
        lines.append(f"formant {formant} {freq} {height} {width}")
    if rng.random() < 0.3:
        lines.append(f"breath {int(rng.integers(1, 4))} {int(rng.integers(1, 4))}")
    lines.append(f"flutter {int(rng.integers(0, 20))}")
    return "\n".join(lines) + "\n"


def make_speakers(n: int, rng: np.random.Generator) -> list[SpeakerRecipe]:
    """``n`` speakers, half female: stock variants first, then generated ones."""
    speakers: list[SpeakerRecipe] = []
    stock = [(v, "m") for v in STOCK_MALE] + [(v, "f") for v in STOCK_FEMALE]
    order = rng.permutation(len(stock))
    for i in range(n):
        gender = "f" if i % 2 else "m"
        language = LANGUAGES[int(rng.integers(len(LANGUAGES)))]
        rate = int(rng.integers(140, 196))
        pitch = int(rng.integers(35, 66))
        pitch_range = int(rng.integers(30, 80))
        stock_pick = [stock[j] for j in order if stock[j][1] == gender]
        used = sum(1 for s in speakers if s.variant_text is None and s.gender == gender)
        if i < min(n // 4, len(stock)) and used < len(stock_pick):
            variant, text = stock_pick[used][0], None
        else:
            variant = f"harness{i:03d}"
            text = _variant_file(variant, gender, rng)
        speakers.append(SpeakerRecipe(i, gender, language, variant, text, rate, pitch, pitch_range))
    return speakers


def make_extra_speakers(first_index: int, n: int, rng: np.random.Generator) -> list[SpeakerRecipe]:
    """``n`` further speakers, indices ``first_index`` on, alternately male and female, each with a
    variant file of its own (a timbre no earlier speaker has: the stock variants are all taken).

    For layouts added after a corpus's first speakers were drawn: the earlier speakers, and
    every layout that chose among them, stay exactly as they were.
    """
    speakers = []
    for i in range(first_index, first_index + n):
        gender = "m" if (i - first_index) % 2 == 0 else "f"
        language = LANGUAGES[int(rng.integers(len(LANGUAGES)))]
        rate = int(rng.integers(140, 196))
        pitch = int(rng.integers(35, 66))
        pitch_range = int(rng.integers(30, 80))
        variant = f"harness{i:03d}"
        speakers.append(SpeakerRecipe(i, gender, language, variant, _variant_file(variant, gender, rng), rate, pitch,
                                      pitch_range))
    return speakers
