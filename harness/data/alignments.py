"""Time alignments (CTM) and s3prl's frame-level phone labels."""

from __future__ import annotations

import functools
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.fsutil import file_stamp

PHONE_TABLE = "converted_aligned_phones.txt"  # s3prl phone_linear: one line per utterance
PHONE_INVENTORY = "phones.txt"  # ours: label -> index
#: s3prl phone_linear's seed for cutting train_split.txt into train and dev (``train_dev_seed``)
S3PRL_TRAIN_DEV_SEED = 1337


@dataclass(frozen=True)
class CtmSegment:
    """One CTM line: utterance, start and end in seconds, and the word or phone."""
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


def read_phone_labels(folder: str | Path) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """s3prl phone_linear labels: (utterance -> phone index per 10 ms frame, inventory).

    ``converted_aligned_phones.txt`` has one line per utterance, ``UTT idx idx ...``;
    ``phones.txt`` (ours) maps labels to indices; without it labels are plain ints. Parsed once
    per process while the files are unchanged (a run reads them for each split, a benchmark
    for each run); the caller gets its own dict, of label tuples nobody can change.
    """
    folder = Path(folder)
    table = folder / PHONE_TABLE
    if not table.exists():
        raise HarnessError(f"missing {table}; expected s3prl phone_linear labels in {folder}")
    stamps = (file_stamp(table), file_stamp(folder / PHONE_INVENTORY))
    labels, inventory = _parse_phone_labels(folder, stamps)
    return dict(labels), list(inventory)


@functools.lru_cache(maxsize=2)
def _parse_phone_labels(folder: Path, stamps: tuple) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    table = folder / PHONE_TABLE
    labels: dict[str, tuple[int, ...]] = {}
    for n, line in enumerate(table.read_text().splitlines(), 1):
        if not line.strip():
            continue
        utt, *idx = line.split()
        try:
            labels[utt] = tuple(int(i) for i in idx)
        except ValueError:
            raise HarnessError(f"{table}:{n} has a non-integer phone index") from None
    inventory_file = folder / PHONE_INVENTORY
    if inventory_file.exists():
        pairs = [line.split() for line in inventory_file.read_text().splitlines() if line.strip()]
        inventory = [p for p, _ in sorted(pairs, key=lambda x: int(x[1]))]
    else:
        inventory = [str(i) for i in range(max((max(v) for v in labels.values() if v), default=-1) + 1)]
    return labels, inventory


def read_phone_splits(folder: str | Path, seed: int = S3PRL_TRAIN_DEV_SEED) -> dict[str, list[str]]:
    """s3prl ``phone_linear``'s three splits from ``train_split.txt`` and ``test_split.txt``:
    harness split -> utterance ids.

    The rule of s3prl's ``downstream/phone_linear/dataset.py``: the lines of
    ``train_split.txt`` are shuffled by Python's ``random`` seeded with ``seed`` (1337), the
    first ``int(0.9 * n)`` are train and the rest dev; test is ``test_split.txt``. The order of
    the file's lines therefore matters and is kept. Raises :class:`HarnessError` for a missing
    list or an utterance in both lists.
    """
    folder = Path(folder)
    lists = {}
    for name in ("train_split.txt", "test_split.txt"):
        path = folder / name
        if not path.exists():
            raise HarnessError(f"missing {path}; s3prl phone_linear's folder has train_split.txt and test_split.txt")
        with open(path) as fh:  # as s3prl reads it: the shuffle permutes these very lines
            lists[name] = fh.readlines()
    usage = list(lists["train_split.txt"])
    random.Random(seed).shuffle(usage)
    cut = int(len(usage) * 0.9)
    strip = lambda lines: [line.strip("\n") for line in lines if line.strip()]  # noqa: E731
    out = {"train": strip(usage[:cut]), "dev": strip(usage[cut:]), "test": strip(lists["test_split.txt"])}
    both = sorted(set(out["test"]) & (set(out["train"]) | set(out["dev"])))
    if both:
        raise HarnessError(f"{folder}: utterance {both[0]} is in both train_split.txt and test_split.txt")
    return out
