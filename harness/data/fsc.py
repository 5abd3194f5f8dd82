"""Fluent Speech Commands: ``data/{train,valid,test}_data.csv`` + ``wavs/speakers/...``."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

#: harness split -> the FSC csv prefix
SPLITS = {"train": "train", "dev": "valid", "test": "test"}
FSC_SPLITS = tuple(SPLITS.values())
_COLUMNS = ("path", "speakerId", "transcription", "action", "object", "location")


@dataclass(frozen=True)
class FscUtterance:
    """One Fluent Speech Commands row: path, speaker, transcription and its action/object/location slots."""
    id: str  # path relative to the root, without extension
    path: Path
    speaker: str
    text: str
    action: str
    object: str
    location: str

    @property
    def intent(self) -> tuple[str, str, str]:
        """The intent label ``action_object_location`` (SUPERB IC's class)."""
        return (self.action, self.object, self.location)


def _root(root: Path) -> Path:
    for candidate in (root, root / "fluent_speech_commands_dataset"):
        if (candidate / "data").is_dir():
            return candidate
    raise HarnessError(f"no Fluent Speech Commands data/ folder under {root}; check --data-root")


def read_fsc(root: str | Path, split: str) -> list[FscUtterance]:
    """The rows of FSC's ``data/{split}_data.csv`` under ``root`` (:data:`FSC_SPLITS`); HarnessError if absent."""
    if split not in FSC_SPLITS:
        raise HarnessError(f"unknown FSC split {split!r}; choose from {', '.join(FSC_SPLITS)}")
    base = _root(Path(root))
    table = base / "data" / f"{split}_data.csv"
    if not table.exists():
        raise HarnessError(f"missing {table}; an FSC root has data/{{train,valid,test}}_data.csv")
    utts = []
    with open(table, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise HarnessError(f"{table} lacks column(s) {', '.join(missing)}")
        for n, row in enumerate(reader, 2):
            audio = base / row["path"]
            if not audio.exists():
                raise HarnessError(f"{table}:{n} lists {row['path']} but {audio} is missing")
            utts.append(FscUtterance(str(Path(row["path"]).with_suffix("")), audio, row["speakerId"],
                                     row["transcription"], row["action"], row["object"], row["location"]))
    return utts
