"""Speech recognition (SUPERB ASR): character CTC with a projection + BiLSTM head.

Characters are A-Z, apostrophe and the word boundary ``|``; greedy decoding, no
language model. WER ranks layers and selects checkpoints (SUPERB's metric); CER is
reported too (jiwer). ``metric: cer`` ranks and selects on CER instead, for runs too
short to move WER off 1.0 (a word is only right when all its characters are).
"""

from __future__ import annotations

from pathlib import Path

from harness.tasks.families import CtcTask

from harness.config import Field
from harness.data import read_librispeech
from harness.data.librispeech import SPLITS as LIBRI_SPLITS
from harness.errors import HarnessError
from harness.heads import BiLstmCtc, ctc_greedy
from harness.metrics import error_counts, error_rate
from harness.task import (
    BASE_OPTIONAL,
    BASE_SCHEMA,
    Example,
    MetricSpec,
    Outcomes,
    require_examples,
    split_name,
)

CHARS = ["|"] + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + ["'"]


class SpeechRecognition(CtcTask):
    """SUPERB ASR: characters with CTC from a BiLSTM head, greedy decoding, WER on LibriSpeech."""
    name = "asr"
    metric = MetricSpec("wer", higher_is_better=False)
    config_schema = {**BASE_SCHEMA, "metric": Field(str, choices=("wer", "cer")),
                     "head.proj": Field(int, minimum=1), "head.hidden": Field(int, minimum=1),
                     "head.layers": Field(int, minimum=1), "head.dropout": Field(float, minimum=0, maximum=1),
                     "head.downsample": Field(int, minimum=1), "head.specaug": Field(bool),
                     "head.final_dropout": Field(bool)}
    # superb turns both on (s3prl's SpecAugment on the representation, dropout after every LSTM layer)
    optional_config = {**BASE_OPTIONAL, "head.specaug": False, "head.final_dropout": False}

    def __init__(self, config: dict) -> None:
        super().__init__(config, CHARS)
        if config["metric"] not in ("wer", "cer"):  # also in config_schema; direct construction lands here
            raise HarnessError(f"asr: metric must be wer or cer, got {config['metric']!r}")
        self.metric = MetricSpec(config["metric"], higher_is_better=False)

    def examples(self, data_root: Path, split: str) -> list[Example]:
        out = []
        for u in read_librispeech(data_root, split_name(self.config, LIBRI_SPLITS, split)):
            text = " ".join(u.text.upper().split())
            chars = [self.index[c] for c in text.replace(" ", "|") if c in self.index]
            out.append(Example(u.id, u.path, chars, text))
        return require_examples(out, f"LibriSpeech {split}", data_root)

    def build_head(self, dim: int):
        h = self.config["head"]
        return BiLstmCtc(dim, len(CHARS), proj=h["proj"], hidden=h["hidden"], layers=h["layers"], dropout=h["dropout"],
                         downsample=int(h["downsample"]), specaug=bool(self.option("head.specaug")),
                         final_dropout=bool(self.option("head.final_dropout")))

    def predict(self, output, batch):
        texts = []
        for ids in ctc_greedy(output, batch["lengths"]):
            texts.append(" ".join("".join(CHARS[i - 1] for i in ids).replace("|", " ").split()))
        return texts

    def score(self, predictions, examples):
        ids = [e.id for e in examples]
        refs, hyps = [e.reference for e in examples], [predictions[i] for i in ids]
        counts = {"wer": error_counts(refs, hyps, "word"), "cer": error_counts(refs, hyps, "char")}
        metrics = {name: error_rate(errors, lengths) for name, (errors, lengths) in counts.items()}
        errors, lengths = counts[self.metric.name]  # what the report bootstraps
        (werr, wlen), (cerr, clen) = counts["wer"], counts["cer"]
        return metrics, Outcomes.error_rate(ids, errors, lengths, word_errors=werr, word_lengths=wlen,
                                           char_errors=cerr, char_lengths=clen)
