"""Turn espeak events into phone and word segments at 16 kHz.

Phone segments tile ``[0, n_samples)`` exactly: leading audio before the first
phone and espeak's pauses become ``sil``. Words get the span of their phones.

espeak pronounces some word pairs as one unit ("on the", "that it"); their
phones all carry the first word's text position. We split such a group using the
phone count of each word said alone; if the counts do not add up the utterance is
rejected (:class:`AlignmentError`) and the corpus builder picks another text, so
every shipped word boundary is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from harness.audio import SAMPLE_RATE
from harness.corpus.espeak import NATIVE_RATE, Synthesis

SILENCE = "sil"
_STRESS_MARKS = "',%=!"


class AlignmentError(ValueError):
    """An utterance whose phone events cannot be aligned to its words exactly (the build re-draws it)."""
    pass


@dataclass(frozen=True)
class Segment:
    """One aligned segment (a phone or a word): its label and sample span ``[start, end)`` at 16 kHz."""
    label: str
    start: int  # first sample (inclusive)
    end: int  # last sample (exclusive)


# espeak's English allophones folded into one label each (as TIMIT-61 folds to 39):
# reduced vowels to schwa, flaps/glottal stops to t, numbered variants to their base,
# unstressed r-coloured schwa to the stressed one. The result has ~48 labels.
PHONE_FOLDING = {
    "@2": "@", "@5": "@", "@-": "@", "a#": "@",
    "I2": "I", "I#": "I",
    "aI2": "aI", "aI3": "aI",
    "i@3": "i@", "IR": "i@",
    "t2": "t", "t#": "t", "?": "t",
    "w#": "w", "n-": "n", "r-": "r", ";": "j",
    "O": "O:", "O2": "O:", "o@": "O@",
    "3": "3:", "VR": "3:", "aa": "A:",
}


def normalize_phone(name: str) -> str:
    """espeak mnemonic -> phone label: stress removed, allophones folded, pauses -> ``sil``."""
    if name.startswith("_") or not name:
        return SILENCE
    base = name.lstrip(_STRESS_MARKS)
    if not base:
        return SILENCE
    return PHONE_FOLDING.get(base, base)


def resample_index(sample: int, out_len: int, src_rate: int = NATIVE_RATE, dst_rate: int = SAMPLE_RATE) -> int:
    """Sample index ``sample`` at ``src_rate`` mapped to ``dst_rate``, clipped to ``out_len``."""
    return min(out_len, int(round(sample * dst_rate / src_rate)))


def _word_spans(text: str) -> list[tuple[int, int]]:
    """1-based [start, end) character spans of the space-separated words of ``text``."""
    spans, pos = [], 1
    for word in text.split(" "):
        if word:
            spans.append((pos, pos + len(word)))
        pos += len(word) + 1
    return spans


def align(
    syn: Synthesis, text: str, out_len: int, phone_count: Callable[[str], int]
) -> tuple[list[Segment], list[Segment]]:
    """Return (phone segments, word segments) in samples of the resampled audio.

    ``out_len`` is the length of the resampled audio; ``phone_count(word)`` gives
    the number of phones of a word said alone (used to split merged groups).
    """
    words = text.split()
    spans = _word_spans(text)
    n_native = len(syn.audio)
    events = [e for e in syn.phones if e.sample < n_native]
    # --- phones: each event runs until the next event (or the end of the audio)
    phones: list[Segment] = []
    bounds = [resample_index(e.sample, out_len) for e in events] + [out_len]
    if not events or bounds[0] > 0:
        phones.append(Segment(SILENCE, 0, bounds[0] if events else out_len))
    for i, ev in enumerate(events):
        start, end = bounds[i], bounds[i + 1]
        if end <= start:
            continue
        label = normalize_phone(ev.name)
        if phones and phones[-1].label == SILENCE and label == SILENCE:
            phones[-1] = Segment(SILENCE, phones[-1].start, end)
        else:
            phones.append(Segment(label, start, end))

    # --- words: group speech phones by text position, then map groups to words
    groups: list[tuple[int, list[int]]] = []  # (text position, indices into events)
    after_pause = True
    for i, ev in enumerate(events):
        if ev.name.startswith("_"):
            after_pause = True
            continue
        if bounds[i + 1] <= bounds[i]:
            continue  # zero-length at 16 kHz: no samples to give a word
        if groups and not after_pause and groups[-1][0] == ev.text_position:
            groups[-1][1].append(i)
        else:
            groups.append((ev.text_position, [i]))
        after_pause = False
    starts: list[int] = []
    for pos, _ in groups:
        idx = next((w for w, (a, b) in enumerate(spans) if a <= pos < b + 1), None)
        if idx is None:
            raise AlignmentError(f"phone at text position {pos} outside the words of {text!r}")
        if starts and idx <= starts[-1]:
            idx = starts[-1] + 1
        starts.append(idx)
    if not groups or starts[0] != 0 or starts[-1] >= len(words):
        raise AlignmentError(f"cannot map espeak's phone groups onto the words of {text!r}")
    word_segments: list[Segment] = []
    for g, (_, idxs) in enumerate(groups):
        first, last = starts[g], (starts[g + 1] if g + 1 < len(groups) else len(words))
        members = words[first:last]
        if len(members) == 1:
            counts = [len(idxs)]
        else:
            counts = [phone_count(w) for w in members]
            if sum(counts) != len(idxs) or min(counts) < 1:
                raise AlignmentError(f"cannot split merged words {' '.join(members)!r} in {text!r}")
        k = 0
        for word, count in zip(members, counts):
            seg = idxs[k : k + count]
            word_segments.append(Segment(word, bounds[seg[0]], bounds[seg[-1] + 1]))
            k += count
    if [w.label for w in word_segments] != words:
        raise AlignmentError(f"word alignment does not reproduce {text!r}")
    return phones, word_segments
