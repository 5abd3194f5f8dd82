"""VoxCeleb1 identification: ``wav/idNNNNN/SESSION/NNNNN.wav`` + ``iden_split.txt``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

#: split name -> its code in iden_split.txt (the harness uses the same split names)
VOX_SPLITS = {"train": 1, "dev": 2, "test": 3}
SPLITS = {name: name for name in VOX_SPLITS}


@dataclass(frozen=True)
class VoxUtterance:
    """One VoxCeleb1 utterance: id (``idNNNNN/SESSION/NNNNN``), path, speaker and its iden_split code."""
    id: str  # idNNNNN/SESSION/NNNNN
    path: Path
    speaker: str


def _root(root: Path) -> Path:
    for candidate in (root, root / "VoxCeleb1"):
        if (candidate / "iden_split.txt").exists():
            return candidate
    raise HarnessError(f"no iden_split.txt under {root}; a VoxCeleb1 root holds iden_split.txt and wav/; check --data-root")


def read_voxceleb1(root: str | Path, split: str) -> list[VoxUtterance]:
    """Every utterance of ``iden_split.txt`` under ``root`` with its split code (1 train, 2 dev, 3 test)."""
    if split not in VOX_SPLITS:
        raise HarnessError(f"unknown VoxCeleb1 split {split!r}; choose from {', '.join(VOX_SPLITS)}")
    base = _root(Path(root))
    wanted = str(VOX_SPLITS[split])
    utts = []
    table = base / "iden_split.txt"
    for n, line in enumerate(table.read_text().splitlines(), 1):
        if not line.strip():
            continue
        code, _, rel = line.partition(" ")
        if code not in ("1", "2", "3") or rel.count("/") != 2:
            raise HarnessError(f"{table}:{n} is not '<1|2|3> idNNNNN/SESSION/NNNNN.wav'")
        if code != wanted:
            continue
        audio = base / "wav" / rel
        if not audio.exists():
            raise HarnessError(f"{table}:{n} lists {rel} but {audio} is missing")
        utts.append(VoxUtterance(rel.rsplit(".", 1)[0], audio, rel.split("/")[0]))
    return utts


#: trial lists in order of preference: VoxCeleb1's cleaned list, then the original one
TRIAL_LISTS = ("veri_test2.txt", "veri_test.txt")


def trial_list_name(root: str | Path) -> str:
    """The first of :data:`TRIAL_LISTS` present in the VoxCeleb1 root (``veri_test.txt`` when
    neither is, so that reading it names the file that is missing)."""
    base = _root(Path(root))
    return next((name for name in TRIAL_LISTS if (base / name).exists()), TRIAL_LISTS[-1])


@dataclass(frozen=True)
class Trial:
    """One verification trial: target (same speaker) or not, the enrolment and the test utterance ids."""
    target: bool  # same speaker
    enrol: str  # idNNNNN/SESSION/NNNNN (no extension)
    test: str


def read_voxceleb1_trials(root: str | Path, name: str = "veri_test.txt") -> list[Trial]:
    """``label enrol test`` lines (label 1 = same speaker), as in VoxCeleb1's veri_test.txt;
    every file a trial names must exist."""
    base = _root(Path(root))
    table = base / name
    if not table.exists():
        raise HarnessError(f"missing {table}; VoxCeleb1 verification needs its trial list (veri_test.txt)")
    trials = []
    for n, line in enumerate(table.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise HarnessError(f"{table}:{n} is not '<0|1> enrol.wav test.wav'")
        for rel in parts[1:]:
            if not (base / "wav" / rel).exists():
                raise HarnessError(f"{table}:{n} names {rel} but {base / 'wav' / rel} is missing")
        trials.append(Trial(parts[0] == "1", parts[1].rsplit(".", 1)[0], parts[2].rsplit(".", 1)[0]))
    if not trials:
        raise HarnessError(f"{table} lists no trials")
    return trials


def read_voxceleb1_all(root: str | Path) -> list[VoxUtterance]:
    """Every utterance of iden_split.txt, whatever its split, sorted by id."""
    return sorted((u for split in VOX_SPLITS for u in read_voxceleb1(root, split)), key=lambda u: u.id)


def voxceleb1_path(root: str | Path, utt_id: str) -> Path:
    """The audio file of a VoxCeleb1 utterance id under ``root``."""
    return _root(Path(root)) / "wav" / f"{utt_id}.wav"
