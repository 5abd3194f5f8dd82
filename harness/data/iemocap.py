"""IEMOCAP: ``SessionN/sentences/wav/DIALOG/UTTERANCE.wav`` with one label file per dialog in
``SessionN/dialog/EmoEvaluation/DIALOG.txt`` (lines ``[start - end]<TAB>utterance<TAB>label<TAB>[v, a, d]``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

SESSIONS = (1, 2, 3, 4, 5)
_LINE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)\s+\[")


@dataclass(frozen=True)
class EmotionUtterance:
    """One IEMOCAP utterance: path, session, speaker and its emotion label."""
    id: str  # e.g. Ses01F_impro01_F000
    path: Path
    session: int
    label: str  # IEMOCAP's label: neu, hap, exc, sad, ang, fru, sur, fea, dis, oth, xxx
    speaker: str  # session + gender of the utterance's speaker, e.g. 1F


def _root(root: Path) -> Path:
    for candidate in (root, root / "IEMOCAP_full_release", root / "IEMOCAP"):
        if (candidate / "Session1").is_dir():
            return candidate
    raise HarnessError(f"no IEMOCAP root under {root} (expected Session1 ... Session5); check --data-root")


def read_iemocap(root: str | Path, sessions: tuple[int, ...] = SESSIONS) -> list[EmotionUtterance]:
    """Every labelled utterance of ``sessions``, sorted by id; every session must be there."""
    base = _root(Path(root))
    out = []
    for s in sessions:
        folder = base / f"Session{s}"
        labels = sorted((folder / "dialog" / "EmoEvaluation").glob("*.txt"))
        if not folder.is_dir() or not labels:
            raise HarnessError(f"IEMOCAP session {s} is missing under {base} (expected {folder}/dialog/EmoEvaluation/"
                               "*.txt); SUPERB ER folds need all five sessions")
        for table in labels:
            dialog = table.stem
            for n, line in enumerate(table.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                m = _LINE.match(line.strip())
                if not m:
                    continue
                utt, label = m.group(1), m.group(2)
                audio = folder / "sentences" / "wav" / dialog / f"{utt}.wav"
                if not audio.exists():
                    raise HarnessError(f"{table}:{n} labels {utt} but {audio} is missing")
                gender = utt.split("_")[-1][0]
                out.append(EmotionUtterance(utt, audio, s, label, f"{s}{gender}"))
    return sorted(out, key=lambda u: u.id)
