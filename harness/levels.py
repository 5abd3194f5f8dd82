"""Levels of linguistic structure, defined once from the corpus alignments and used both by the
probing tasks (``syllable``, ``word``, ``position``, with ``phone``) and by CCA properties.

Each level turns an utterance's aligned phones and words (CTM, in seconds) into labelled
spans ``(start_s, end_s, label)``:

- ``phone``: the phone segments (silence left out);
- ``syllable``: each word's phones grouped into syllables: one vowel nucleus each, the
  consonants between two nuclei split by the maximal-onset principle over English onsets;
  a syllable's label is its phone string (e.g. ``k.I.d``);
- ``word``: the word segments;
- ``position``: where in a word each 10 ms frame lies: ``B`` (the word's first 30 ms), ``E``
  (its last 30 ms), ``I`` (inside) or ``sil`` (between words) - word boundary detection;
- ``speaker``: the whole utterance, labelled with its speaker (LibriSpeech ``SPK-CHAPTER-N``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

LEVELS = ("phone", "syllable", "word", "position", "speaker")
SILENCE = "sil"
#: vowel labels of the embedded corpus's phone set (espeak, folded; ``@L`` is a syllabic l)
VOWELS = frozenset("3: @ @L A: A@ E I O: O@ OI U U@ V a aI aI@ aU e@ eI i i: i@ oU u:".split())
#: English onsets for the maximal-onset split (espeak labels: T = th, S = sh, N = ng)
ONSETS = frozenset(
    [(c,) for c in "b d D f g h j k l m n p r s S t T v w z Z dZ tS".split()]
    + [tuple(o.split()) for o in (
        "s p", "s t", "s k", "s m", "s n", "s l", "s w", "s f", "p r", "b r", "t r", "d r", "k r", "g r", "f r",
        "T r", "S r", "p l", "b l", "k l", "g l", "f l", "t w", "d w", "k w", "g w", "T w", "p j", "b j", "k j",
        "f j", "m j", "h j", "v j", "n j", "s p r", "s t r", "s k r", "s p l", "s k l", "s k w", "s p j", "s t j",
        "s k j")])
POSITION_EDGE_S = 0.03
FRAME_S = 0.01


@dataclass(frozen=True)
class Span:
    """One aligned segment: ``start`` and ``end`` in seconds, and its label (a phone, syllable or word)."""
    start: float  # seconds
    end: float
    label: str


def syllabify(phones: Sequence[str]) -> list[list[int]]:
    """Indices of ``phones`` (one word) grouped into syllables. A word without a vowel is one
    syllable; consonants before the first nucleus and after the last stay with it."""
    nuclei = [i for i, p in enumerate(phones) if p in VOWELS]
    if not nuclei:
        return [list(range(len(phones)))]
    bounds = [0]  # first phone of each syllable
    for a, b in zip(nuclei, nuclei[1:]):
        cluster = list(range(a + 1, b))
        split = b  # by default the next syllable starts at its nucleus
        for k in range(len(cluster)):  # the longest legal onset wins
            onset = tuple(phones[i] for i in cluster[k:])
            if onset in ONSETS:
                split = cluster[k]
                break
        bounds.append(split)
    bounds.append(len(phones))
    return [list(range(s, e)) for s, e in zip(bounds, bounds[1:])]


def _phones_in(word: Span, phones: Sequence[Span]) -> list[Span]:
    return [p for p in phones if p.label != SILENCE and p.start >= word.start - 1e-6 and p.end <= word.end + 1e-6]


def spans(level: str, phones: Sequence[Span], words: Sequence[Span], utt_id: str = "") -> list[Span]:
    """The labelled spans of one utterance at ``level`` (not ``position``: see :func:`frame_labels`)."""
    if level == "phone":
        return [p for p in phones if p.label != SILENCE]
    if level == "word":
        return list(words)
    if level == "syllable":
        out = []
        for w in words:
            inside = _phones_in(w, phones)
            for group in syllabify([p.label for p in inside]):
                if group:
                    seg = [inside[i] for i in group]
                    out.append(Span(seg[0].start, seg[-1].end, ".".join(p.label for p in seg)))
        return out
    if level == "speaker":
        end = max([p.end for p in phones] + [w.end for w in words] + [0.0])
        return [Span(0.0, end, utt_id.split("-")[0])]
    raise ValueError(f"unknown level {level!r}; span levels: phone, syllable, word, speaker")


def frame_labels(words: Sequence[Span], duration_s: float, frame_s: float = FRAME_S) -> list[str]:
    """Word position of every ``frame_s`` frame (its centre): B, I, E or sil."""
    n = int(round(duration_s / frame_s))
    out = [SILENCE] * n
    for w in words:
        for j in range(n):
            t = (j + 0.5) * frame_s
            if w.start <= t < w.end:
                if t < w.start + POSITION_EDGE_S:
                    out[j] = "B"
                elif t >= w.end - POSITION_EDGE_S:
                    out[j] = "E"
                else:
                    out[j] = "I"
    return out


def vocabulary(labels: Iterable[str], top: int, min_count: int = 2) -> list[str]:
    """The ``top`` most frequent labels seen at least ``min_count`` times, most frequent first
    (ties by label, so the choice is deterministic)."""
    counts = Counter(labels)
    ranked = sorted((c for c in counts if counts[c] >= min_count), key=lambda c: (-counts[c], c))
    return ranked[:top]


def to_spans(segments) -> list[Span]:
    """CTM segments (start, duration, label) -> spans."""
    return [Span(s.start, s.start + s.duration, s.label) for s in segments]
