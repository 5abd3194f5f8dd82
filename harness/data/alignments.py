"""Time alignments (CTM) and s3prl's frame-level phone labels."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

PHONE_TABLE = "converted_aligned_phones.txt"  # s3prl phone_linear: one line per utterance
PHONE_INVENTORY = "phones.txt"  # ours: label -> index


@dataclass(frozen=True)
class CtmSegment:
    start: float  # seconds
    duration: float  # seconds
    label: str


def read_ctm(path: str | Path) -> dict[str, list[CtmSegment]]:
    """``utt channel start duration label`` lines -> segments per utterance, in file order."""
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"alignment file {path} is missing")
    out: dict[str, list[CtmSegment]] = defaultdict(list)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 5:
            raise HarnessError(f"{path}:{n} is not a CTM line (utt channel start duration label)")
        try:
            out[fields[0]].append(CtmSegment(float(fields[2]), float(fields[3]), fields[4]))
        except ValueError:
            raise HarnessError(f"{path}:{n} has a non-numeric time") from None
    return dict(out)


def read_phone_labels(folder: str | Path) -> tuple[dict[str, list[int]], list[str]]:
    """s3prl phone_linear labels: (utterance -> phone index per 10 ms frame, inventory).

    ``converted_aligned_phones.txt`` has one line per utterance, ``UTT idx idx ...``;
    ``phones.txt`` (ours) maps labels to indices; without it labels are plain ints.
    """
    folder = Path(folder)
    table = folder / PHONE_TABLE
    if not table.exists():
        raise HarnessError(f"missing {table}; expected s3prl phone_linear labels in {folder}")
    labels: dict[str, list[int]] = {}
    for n, line in enumerate(table.read_text().splitlines(), 1):
        if not line.strip():
            continue
        utt, *idx = line.split()
        try:
            labels[utt] = [int(i) for i in idx]
        except ValueError:
            raise HarnessError(f"{table}:{n} has a non-integer phone index") from None
    inventory_file = folder / PHONE_INVENTORY
    if inventory_file.exists():
        pairs = [line.split() for line in inventory_file.read_text().splitlines() if line.strip()]
        inventory = [p for p, _ in sorted(pairs, key=lambda x: int(x[1]))]
    else:
        inventory = [str(i) for i in range(max((max(v) for v in labels.values() if v), default=-1) + 1)]
    return labels, inventory
