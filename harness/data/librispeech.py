"""LibriSpeech: ``SPLIT/SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac`` + ``SPEAKER-CHAPTER.trans.txt``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

#: harness split -> the LibriSpeech folder SUPERB uses for it
SPLITS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}


@dataclass(frozen=True)
class LibriUtterance:
    """One LibriSpeech utterance: id, path, speaker and transcript."""
    id: str  # SPEAKER-CHAPTER-UTT
    path: Path
    speaker: str
    chapter: str
    text: str  # upper case, as in the release


def _split_dir(root: Path, split: str) -> Path:
    root = Path(root)
    for candidate in (root / split, root / "LibriSpeech" / split):
        if candidate.is_dir():
            return candidate
    raise HarnessError(
        f"no LibriSpeech split {split!r} under {root} (expected {root}/{split}/SPEAKER/CHAPTER/*.trans.txt); "
        "check --data-root"
    )


def read_librispeech(root: str | Path, split: str) -> list[LibriUtterance]:
    """All utterances of one split, sorted by id; every audio file must exist."""
    base = _split_dir(Path(root), split)
    utts: list[LibriUtterance] = []
    trans_files = sorted(base.glob("*/*/*.trans.txt"))
    if not trans_files:
        raise HarnessError(f"{base} has no SPEAKER/CHAPTER/*.trans.txt files; is it a LibriSpeech split?")
    for trans in trans_files:
        speaker, chapter = trans.parent.parent.name, trans.parent.name
        for n, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utt_id, _, text = line.partition(" ")
            parts = utt_id.split("-")
            if len(parts) != 3 or parts[0] != speaker or parts[1] != chapter:
                raise HarnessError(f"{trans}:{n}: utterance id {utt_id!r} does not match {speaker}-{chapter}-NNNN")
            audio = trans.parent / f"{utt_id}.flac"
            if not audio.exists():
                raise HarnessError(f"{trans}:{n} lists {utt_id} but {audio} is missing")
            utts.append(LibriUtterance(utt_id, audio, speaker, chapter, text.strip()))
    return sorted(utts, key=lambda u: u.id)
