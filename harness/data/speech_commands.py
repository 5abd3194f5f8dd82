"""Speech Commands v0.01: ``WORD/SPEAKER_nohash_N.wav`` clips, ``validation_list.txt`` and
``testing_list.txt`` (every clip listed in neither is training data), ``_background_noise_/``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

SPLITS = {"train": "train", "dev": "validation", "test": "testing"}
NOISE_DIR = "_background_noise_"


@dataclass(frozen=True)
class CommandClip:
    id: str  # WORD/SPEAKER_nohash_N
    path: Path
    word: str
    speaker: str


def _root(root: Path) -> Path:
    for candidate in (root, root / "speech_commands_v0.01", root / "speech_commands"):
        if (candidate / "validation_list.txt").exists() or (candidate / "testing_list.txt").exists():
            return candidate
    raise HarnessError(f"no Speech Commands root under {root} (expected validation_list.txt and testing_list.txt "
                       "beside the word folders); check --data-root")


def read_speech_commands(root: str | Path, split: str) -> list[CommandClip]:
    """Clips of ``split`` (train, validation or testing), sorted by id."""
    if split not in SPLITS.values():
        raise HarnessError(f"unknown Speech Commands split {split!r}; choose from {', '.join(SPLITS.values())}")
    base = _root(Path(root))
    lists = {}
    for name in ("validation", "testing"):
        table = base / f"{name}_list.txt"
        if not table.exists():
            raise HarnessError(f"missing {table}; a Speech Commands root has validation_list.txt and testing_list.txt")
        lists[name] = {line.strip() for line in table.read_text().splitlines() if line.strip()}
    if split == "train":
        listed = lists["validation"] | lists["testing"]
        rels = sorted(p.relative_to(base).as_posix() for p in base.glob("*/*.wav")
                      if not p.parent.name.startswith("_") and p.relative_to(base).as_posix() not in listed)
    else:
        rels = sorted(lists[split])
    clips = []
    for rel in rels:
        audio = base / rel
        if not audio.exists():
            raise HarnessError(f"{base / (split + '_list.txt')} lists {rel} but {audio} is missing")
        word, name = rel.split("/")
        clips.append(CommandClip(rel[:-4], audio, word, name.split("_nohash_")[0]))
    return clips


def background_noise(root: str | Path) -> list[Path]:
    """The noise recordings the ``_silence_`` class is cut from."""
    folder = _root(Path(root)) / NOISE_DIR
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise HarnessError(f"no {NOISE_DIR}/*.wav under {folder.parent}: the _silence_ class is cut from them")
    return files
