"""Pronunciation lexicons in LibriSpeech's form (OpenSLR 11 ``librispeech-lexicon.txt``): one
pronunciation per line, ``WORD<TAB>PH1 PH2 ...``, upper-case words, stress-marked ARPAbet
(vowels carry 0 = unstressed, 1 = primary, 2 = secondary stress); a word with several
pronunciations has several lines, the first being the one s3prl's ``libriphone`` corpus uses."""

from __future__ import annotations

from pathlib import Path

from harness.errors import HarnessError

_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
_CONSONANTS = ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH", "T", "TH",
               "V", "W", "Y", "Z", "ZH")
#: the 69 stress-marked ARPAbet phones of CMUdict and the LibriSpeech lexicon (15 vowels x 3 + 24 consonants)
ARPABET_STRESSED = tuple(sorted([v + s for v in _VOWELS for s in "012"] + list(_CONSONANTS)))


def read_lexicon(path: str | Path) -> dict[str, list[tuple[str, ...]]]:
    """Word (upper case) -> its pronunciations in file order, each a tuple of phones.

    Fields may be separated by a tab or spaces (s3prl splits on any whitespace). Raises
    :class:`HarnessError` for a missing file, a line without phones, or an empty lexicon.
    """
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"lexicon {path} is missing (expected LibriSpeech's librispeech-lexicon.txt form)")
    out: dict[str, list[tuple[str, ...]]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        word, *phones = line.split()
        if not phones:
            raise HarnessError(f"{path}:{n} has a word without phones (expected 'WORD<TAB>PH1 PH2 ...')")
        out.setdefault(word, []).append(tuple(phones))
    if not out:
        raise HarnessError(f"lexicon {path} lists no words")
    return out
