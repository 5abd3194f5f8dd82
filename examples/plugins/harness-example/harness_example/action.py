"""Task plugin example: the FSC *action* slot alone (activate, bring, change language ...).

Registered as ``action`` in the ``harness.tasks`` entry-point group; its defaults are in
``action.yaml`` beside this file. The utterance-classification base brings the SUPERB
head (Linear -> mean pool -> linear), the loss, predictions and accuracy with outcomes.
"""

from __future__ import annotations

from pathlib import Path

from harness.data import read_fsc
from harness.data.fsc import SPLITS
from harness.task import Example, split_name
from harness.tasks.families import UtteranceClassificationTask


class ActionClassification(UtteranceClassificationTask):
    name = "action"
    dataset = "fsc"  # shares cached features with the ic task

    def examples(self, data_root: Path, split: str) -> list[Example]:
        utts = read_fsc(data_root, split_name(self.config, SPLITS, split))
        return sorted((Example(u.id, u.path, (u.action,), u.text) for u in utts), key=lambda e: e.id)
