"""Speech recognition (SUPERB ASR): character CTC with a projection + BiLSTM head.

Characters are A-Z, apostrophe and the word boundary ``|``; greedy decoding, no
language model. WER is the ranking metric; CER is reported too (jiwer).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from harness.data import read_librispeech
from harness.heads import BiLstmCtc, ctc_greedy
from harness.metrics import error_counts, error_rate
from harness.task import Example, MetricSpec, Task

from ._common import LIBRI_SPLITS, require_examples, split_name

CHARS = ["|"] + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + ["'"]


class SpeechRecognition(Task):
    name = "asr"
    level = "ctc"
    dataset = "librispeech"
    metric = MetricSpec("wer", higher_is_better=False)

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        self.index = {c: i + 1 for i, c in enumerate(CHARS)}  # 0 is the CTC blank

    def examples(self, data_root: Path, split: str) -> list[Example]:
        out = []
        for u in read_librispeech(data_root, split_name(self.config, LIBRI_SPLITS, split)):
            text = " ".join(u.text.upper().split())
            chars = [self.index[c] for c in text.replace(" ", "|") if c in self.index]
            out.append(Example(u.id, u.path, chars, text))
        return require_examples(out, f"LibriSpeech {split}", data_root)

    def build_head(self, dim: int):
        h = self.config["head"]
        return BiLstmCtc(dim, len(CHARS), proj=h["proj"], hidden=h["hidden"], layers=h["layers"], dropout=h["dropout"])

    def batch_targets(self, examples, frames, hop, offset=0):
        targets = [torch.tensor(e.target, dtype=torch.long) for e in examples]
        return {"targets": torch.cat(targets), "target_lengths": torch.tensor([len(t) for t in targets])}

    def loss(self, output, batch):
        return F.ctc_loss(output.transpose(0, 1), batch["targets"], batch["lengths"], batch["target_lengths"],
                          blank=0, zero_infinity=True)

    def predict(self, output, batch):
        texts = []
        for ids in ctc_greedy(output, batch["lengths"]):
            texts.append(" ".join("".join(CHARS[i - 1] for i in ids).replace("|", " ").split()))
        return texts

    def score(self, predictions, examples):
        ids = [e.id for e in examples]
        refs, hyps = [e.reference for e in examples], [predictions[i] for i in ids]
        errors, lengths = error_counts(refs, hyps, "word")
        cerr, clen = error_counts(refs, hyps, "char")
        metrics = {"wer": error_rate(errors, lengths), "cer": error_rate(cerr, clen)}
        return metrics, {"ids": ids, "errors": errors, "lengths": lengths, "char_errors": cerr, "char_lengths": clen}
