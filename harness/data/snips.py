"""Audio SNIPS (SUPERB SF) as s3prl's ``preprocess/snips_prepare_data.sh`` leaves it:
``SNIPS/{train,valid,test}/SPEAKER-snips-SPLIT-N.wav`` and ``SNIPS/all.iob.snips.txt`` with
lines ``ID BOS WORDS EOS<TAB>O TAGS INTENT``: one tag per word, a slot name or ``O`` (s3prl's
tokenizer turns each run of one slot name into ``B-slot ... E-slot``), then the intent.

Every speaker recorded every split's text, so a split's speakers come from the recipe
(``downstream/ctc/snips.yaml``: 8 train, 4 valid, 4 test voices); a root without those voices
(the embedded corpus) uses every speaker found in the split's folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

#: harness split -> the Audio SNIPS folder
SPLITS = {"train": "train", "dev": "valid", "test": "test"}
TRANSCRIPTS = "all.iob.snips.txt"
#: SUPERB SF's speakers per split (s3prl ``downstream/ctc/snips.yaml``)
SUPERB_SPEAKERS = {
    "train": ("Ivy", "Joanna", "Joey", "Justin", "Kendra", "Kimberly", "Matthew", "Salli"),
    "valid": ("Aditi", "Amy", "Geraint", "Nicole"),
    "test": ("Brian", "Emma", "Raveena", "Russell"),
}
_PUNCTUATION = set("?!.,;-–…")  # tokens s3prl drops, with their tags


@dataclass(frozen=True)
class SlotSpan:
    """One slot of an Audio-SNIPS utterance: its type and the word positions it covers."""
    slot: str
    start: int  # first word (index into the utterance's words)
    end: int  # one past the last word

    def value(self, words: tuple[str, ...]) -> str:
        """The slot's words joined by spaces."""
        return " ".join(words[self.start:self.end])


@dataclass(frozen=True)
class SnipsUtterance:
    """One Audio-SNIPS utterance: path, speaker, words with their BIO slot tags, and the intent."""
    id: str  # SPEAKER-snips-SPLIT-N
    path: Path
    speaker: str
    words: tuple[str, ...]  # upper case, as in the transcripts
    tags: tuple[str, ...]  # one per word: a slot name or "O"
    intent: str

    @property
    def text(self) -> str:
        """The transcript (words joined by spaces)."""
        return " ".join(self.words)

    @property
    def spans(self) -> list[SlotSpan]:
        """The slots as :class:`SlotSpan` from the BIO tags."""
        return slot_spans(self.tags)


def slot_spans(tags: tuple[str, ...] | list[str]) -> list[SlotSpan]:
    """Maximal runs of one slot name: s3prl's rule for where ``B-slot`` and ``E-slot`` go."""
    spans: list[SlotSpan] = []
    for i, tag in enumerate(tags):
        if tag == "O":
            continue
        if spans and spans[-1].slot == tag and spans[-1].end == i:
            spans[-1] = SlotSpan(tag, spans[-1].start, i + 1)
        else:
            spans.append(SlotSpan(tag, i, i + 1))
    return spans


def _root(root: Path) -> Path:
    for candidate in (root, root / "SNIPS"):
        if (candidate / TRANSCRIPTS).exists():
            return candidate
    raise HarnessError(f"no Audio SNIPS root under {root} (expected {TRANSCRIPTS} beside train/, valid/, test/); "
                       "check --data-root")


def read_transcripts(root: str | Path) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], str]]:
    """``all.iob.snips.txt``: utterance id -> (words, tags, intent), punctuation tokens dropped."""
    table = _root(Path(root)) / TRANSCRIPTS
    out = {}
    for n, line in enumerate(table.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        uid, _, rest = line.strip().partition(" ")
        sentence, tab, labels = rest.partition("\t")
        words, tags = sentence.split(), labels.split()
        if not tab or len(words) < 2 or words[0] != "BOS" or words[-1] != "EOS" or len(tags) != len(words):
            raise HarnessError(f"{table}:{n} is not 'ID BOS WORDS EOS<TAB>O TAGS INTENT' with one tag per word")
        kept = [(w, t) for w, t in zip(words[1:-1], tags[1:-1]) if w not in _PUNCTUATION]
        out[uid] = (tuple(w for w, _ in kept), tuple(t for _, t in kept), tags[-1])
    return out


def read_snips(root: str | Path, split: str, speakers: tuple[str, ...] | None = None) -> list[SnipsUtterance]:
    """Utterances of one Audio SNIPS folder (``train``, ``valid`` or ``test``), sorted by id.

    ``speakers``: the voices to keep (default: SUPERB's for the split when the root has them,
    else every voice in the folder). As s3prl does, a wav file without a transcript line is
    skipped. Raises :class:`HarnessError` for a bad split, layout or line, or no utterance.
    """
    if split not in SPLITS.values():
        raise HarnessError(f"unknown Audio SNIPS split {split!r}; choose from {', '.join(SPLITS.values())}")
    base = _root(Path(root))
    transcripts = read_transcripts(base)
    wavs = {p.stem: p for p in (base / split).rglob("*.wav") if p.stem in transcripts}
    voices = {uid.split("-")[0] for uid in wavs}
    if speakers is None:
        speakers = SUPERB_SPEAKERS[split] if voices & set(SUPERB_SPEAKERS[split]) else tuple(sorted(voices))
    keep = set(speakers)
    out = []
    for uid in sorted(wavs):
        speaker = uid.split("-")[0]
        if speaker in keep:
            words, tags, intent = transcripts[uid]
            out.append(SnipsUtterance(uid, wavs[uid], speaker, words, tags, intent))
    if not out:
        raise HarnessError(f"no Audio SNIPS utterance of speakers {', '.join(sorted(keep)) or '(none)'} "
                           f"with a transcript in {base / split}")
    return out


def read_slot_names(root: str | Path) -> list[str]:
    """``slots.txt``: every tag, ``O`` first (s3prl's tokenizer skips the first line)."""
    path = _root(Path(root)) / "slots.txt"
    if not path.exists():
        raise HarnessError(f"missing {path}; Audio SNIPS's slot vocabulary is slots.txt beside {TRANSCRIPTS}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
