"""Slot filling (SUPERB SF) on Audio SNIPS: CTC over characters and slot tags, scored by
slot-type F1 and slot-value CER, as s3prl 0.4.18's ``downstream/ctc`` recipe for SNIPS does.

Targets follow s3prl's ``CharacterTextSlotEncoder``: each word as its characters (``&`` read as
``AND``, punctuation tokens dropped), words separated by a space token, and each maximal run of
one slot name wrapped in a ``B-slot`` token before its first character and an ``E-slot`` token
after its last. The slot names are ``SNIPS/slots.txt`` (its first line, ``O``, skipped, as
s3prl reads it). Decoding is greedy; a decoded slot token is written ``"B-slot "`` or
``" E-slot"``, so references and hypotheses are strings such as
``ADD B-artist RUBY HILL E-artist TO MY B-playlist STUDY SESSION E-playlist``.

Metrics (s3prl ``downstream/ctc/metric.py``): per utterance, the F1 of the slot *types* found
(both empty: 1; one empty: 0), averaged over utterances (the ranked metric, higher is better);
and the slot-value CER: for every reference slot value, the hypothesis value of the same type
closest to it in character edit distance (an empty string when that type was not found),
edits over reference characters over the split. Intervals resample utterances (each
utterance's F1, and its value edits and characters).
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.tasks.families import CtcTask

from harness.config import Field
from harness.data.snips import SPLITS as SNIPS_SPLITS
from harness.data.snips import read_snips
from harness.errors import HarnessError
from harness.heads import BiLstmCtc, ctc_greedy
from harness.metrics import error_counts
from harness.task import (
    BASE_OPTIONAL,
    BASE_SCHEMA,
    Example,
    MetricSpec,
    Outcomes,
    require_examples,
)

SLOTS_FILE = "slots.txt"
_SLOT_RUN = re.compile(r"B\-(\S+) (.+?) E\-\1")


def slot_names(root: Path) -> list[str]:
    """The slot names of ``SNIPS/slots.txt`` under ``root`` (first line skipped, as s3prl does)."""
    for base in (Path(root), Path(root) / "SNIPS"):
        path = base / SLOTS_FILE
        if path.is_file():
            return [s for s in path.read_text().split("\n")[1:] if s.strip()]
    raise HarnessError(f"no SNIPS/{SLOTS_FILE} under {root}: slot filling needs the slot list beside the transcripts")


def _strip_tags(text: str) -> str:
    return re.sub(r" E\-(\S+)", "", re.sub(r"B\-(\S+) ", "", text))


def slots_of(text: str) -> dict[str, list[str]]:
    """{slot type: its values in order} of a decoded string (``B-type value E-type`` runs)."""
    out: dict[str, list[str]] = {}
    for slot, value in _SLOT_RUN.findall(re.sub(r" +", " ", text)):
        out.setdefault(slot, []).append(_strip_tags(value))
    return out


def slot_type_f1(hypothesis: str, reference: str) -> float:
    """s3prl's per-utterance slot-type F1 (both without slots: 1.0; one without: 0.0)."""
    hyp, ref = slots_of(hypothesis), slots_of(reference)
    if not hyp and not ref:
        return 1.0
    if not hyp or not ref:
        return 0.0
    recall = sum(s in hyp for s in ref) / len(ref)
    precision = sum(s in ref for s in hyp) / len(hyp)
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def slot_value_edits(hypothesis: str, reference: str) -> tuple[int, int]:
    """(character edits, reference characters) of every reference slot value against the closest
    hypothesis value of its type (s3prl's slot-value CER terms for one utterance)."""
    hyp, ref = slots_of(hypothesis), slots_of(reference)
    edits = chars = 0
    for slot, values in ref.items():
        for value in values:
            candidates = hyp.get(slot, [""])
            edits += min(error_counts([value] * len(candidates), candidates, "char")[0])
            chars += len(value)
    return edits, chars


class SlotFilling(CtcTask):
    """SUPERB SF: characters and slot tags with CTC from a BiLSTM head on Audio SNIPS."""
    name = "sf"
    dataset = "snips"
    metric = MetricSpec("slot_type_f1", higher_is_better=True)
    config_schema = {**BASE_SCHEMA, "head.proj": Field(int, minimum=1), "head.hidden": Field(int, minimum=1),
                     "head.layers": Field(int, minimum=1), "head.dropout": Field(float, minimum=0, maximum=1),
                     "head.specaug": Field(str, choices=("none", "fixed", "adaptive")),
                     "head.final_dropout": Field(bool)}
    # superb: s3prl's adaptive SpecAugment and dropout after every LSTM layer
    optional_config = {**BASE_OPTIONAL, "head.specaug": "none", "head.final_dropout": False}

    def __init__(self, config: dict) -> None:
        super().__init__(config, [])

    def _vocabulary(self, data_root: Path) -> None:
        """Characters of the training words plus the space, then B-/E- tokens per slot name."""
        if self.tokens:
            return
        train = read_snips(data_root, SNIPS_SPLITS["train"])
        chars = sorted({c for u in train for w in u.words for c in ("AND" if w == "&" else w)} | {" "})
        tags = [f"{side}-{s}" for s in slot_names(data_root) for side in "BE"]
        self.tokens = chars + tags
        self.index = {t: i + 1 for i, t in enumerate(self.tokens)}

    def encode(self, words: tuple[str, ...], tags: tuple[str, ...]) -> list[int]:
        """Token ids (1-based) of one utterance, s3prl's encoding; characters or slots the
        vocabulary lacks are left out (they can only be in dev or test)."""
        out: list[str] = []
        for i, (word, tag) in enumerate(zip(words, tags)):
            word = "AND" if word == "&" else word
            if tag != "O" and (i == 0 or tags[i - 1] != tag):
                out.append(f"B-{tag}")
            out += list(word)
            if tag != "O" and (i == len(words) - 1 or tags[i + 1] != tag):
                out.append(f"E-{tag}")
            if i < len(words) - 1:
                out.append(" ")
        return [self.index[t] for t in out if t in self.index]

    def decode(self, ids: list[int]) -> str:
        """A string from token ids: characters as they are, ``B-slot`` as ``"B-slot "`` and
        ``E-slot`` as ``" E-slot"`` (s3prl's decoder), spaces collapsed."""
        parts = []
        for i in ids:
            token = self.tokens[i - 1]
            parts.append(token + " " if token.startswith("B-") and len(token) > 2 else
                         " " + token if token.startswith("E-") and len(token) > 2 else token)
        return re.sub(r" +", " ", "".join(parts)).strip()

    def examples(self, data_root: Path, split: str) -> list[Example]:
        self._vocabulary(data_root)
        out = []
        for u in read_snips(data_root, SNIPS_SPLITS[split]):
            ids = self.encode(u.words, u.tags)
            out.append(Example(u.id, u.path, ids, self.decode(ids)))
        return require_examples(out, f"Audio SNIPS {split}", data_root)

    def build_head(self, dim: int):
        h = self.config["head"]
        specaug = self.option("head.specaug")
        return BiLstmCtc(dim, len(self.tokens), proj=h["proj"], hidden=h["hidden"], layers=h["layers"],
                         dropout=h["dropout"], specaug=False if specaug == "none" else specaug,
                         final_dropout=bool(self.option("head.final_dropout")))

    def predict(self, output, batch):
        return [self.decode(ids) for ids in ctc_greedy(output, batch["lengths"])]

    def score(self, predictions, examples):
        ids = [e.id for e in examples]
        hyps, refs = [predictions[i] for i in ids], [e.reference for e in examples]
        f1 = [slot_type_f1(h, r) for h, r in zip(hyps, refs)]
        edits, chars = zip(*(slot_value_edits(h, r) for h, r in zip(hyps, refs))) if ids else ((), ())
        metrics = {"slot_type_f1": sum(f1) / max(len(f1), 1),
                   "slot_value_cer": sum(edits) / max(sum(chars), 1)}
        return metrics, Outcomes.accuracy(ids, f1, [1] * len(ids), value_edits=list(edits), value_chars=list(chars))
