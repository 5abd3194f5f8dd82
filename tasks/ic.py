"""Intent classification on Fluent Speech Commands (SUPERB IC; alias ``slu``).

Head: Linear(D, 256) -> mean pool -> three slot classifiers (action, object,
location). Accuracy counts an utterance right only when all three slots are right.
"""

from __future__ import annotations

from pathlib import Path

from harness.tasks.families import UtteranceClassificationTask

from harness.data import read_fsc
from harness.data.fsc import SPLITS
from harness.task import (
    Example,
    require_examples,
    split_name,
)


class IntentClassification(UtteranceClassificationTask):
    """SUPERB IC: action, object and location of Fluent Speech Commands; right only when all three are."""
    name = "ic"
    dataset = "fsc"

    def examples(self, data_root: Path, split: str) -> list[Example]:
        utts = read_fsc(data_root, split_name(self.config, SPLITS, split))
        out = [Example(u.id, u.path, u.intent, u.text) for u in utts]
        return require_examples(sorted(out, key=lambda e: e.id), f"FSC {split}", data_root)
