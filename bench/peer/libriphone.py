"""Stand-in for s3prl's ``downstream/ctc/corpus/libriphone.py``, which the 0.4.18 wheel does not ship.

``s3prl.downstream.ctc.data.create_dataset`` imports ``.corpus.libriphone.LibriPhoneDataset`` for
SUPERB PR; without it the expert cannot load data. ``install()`` registers this module under that
name. Written here from the behaviour of the repository's file (not copied): words map to the
first pronunciation the lexicon files give; each utterance's target is its transcript's phones
encoded by the expert's tokenizer (which appends <eos>); utterances are sorted by target length,
longest first; with bucketing, item ``i`` is the bucket of ``bucket_size`` consecutive utterances
starting at ``min(len - bucket_size, i)``, so an epoch has one (overlapping) bucket per utterance.
Two differences, both stated in the record: files are listed in sorted order (the original keeps
``rglob`` order, which depends on the file system), and an utterance with a word missing from the
lexicon is dropped and counted (the original raises KeyError).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

from torch.utils.data import Dataset

MODULE = "s3prl.downstream.ctc.corpus.libriphone"
DROPPED: dict[str, int] = {}  # split name -> utterances left out for out-of-lexicon words


def _lexicon(files) -> dict[str, list[str]]:
    words: dict[str, list[str]] = {}
    for name in files:
        for line in Path(name).read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if parts and parts[0] not in words:
                words[parts[0]] = parts[1:]
    return words


def _transcripts(folder: Path) -> dict[str, str]:
    out = {}
    for trans in folder.rglob("*.trans.txt"):
        for line in trans.read_text(encoding="utf-8").splitlines():
            if line.strip():
                utt, _, text = line.partition(" ")
                out[utt] = text.strip()
    return out


class LibriPhoneDataset(Dataset):
    def __init__(self, split, tokenizer, bucket_size, path, lexicon, ascending=False, **kwargs):
        self.bucket_size = bucket_size
        words = _lexicon(lexicon)
        unknown = [p for ps in words.values() for p in ps if p not in tokenizer._vocab2idx]
        if unknown:
            raise ValueError(f"lexicon phones missing from the vocabulary: {sorted(set(unknown))[:10]}")
        pairs, dropped = [], 0
        for s in split:
            files = sorted(Path(path, s).rglob("*.flac"))
            if not files:
                raise FileNotFoundError(f"no data found @ {Path(path, s)}")
            text = _transcripts(Path(path, s))
            for f in files:
                transcript = text[f.name.split(".")[0]].split()
                if not all(w in words for w in transcript):
                    dropped += 1
                    continue
                pairs.append((f, tokenizer.encode(" ".join(p for w in transcript for p in words[w]))))
            DROPPED["+".join(split)] = dropped
        pairs.sort(key=lambda pair: len(pair[1]), reverse=not ascending)
        self.file_list, self.text = zip(*pairs)

    def __getitem__(self, index):
        if self.bucket_size > 1:
            index = min(len(self.file_list) - self.bucket_size, index)
            return list(zip(self.file_list[index:index + self.bucket_size], self.text[index:index + self.bucket_size]))
        return self.file_list[index], self.text[index]

    def __len__(self):
        return len(self.file_list)


def install() -> list[str]:
    """Register this dataset where ``s3prl.downstream.ctc.data`` imports it from."""
    if MODULE in sys.modules:
        return []
    import s3prl.downstream.ctc as ctc

    package = types.ModuleType("s3prl.downstream.ctc.corpus")
    package.__path__ = []
    module = types.ModuleType(MODULE)
    module.LibriPhoneDataset = LibriPhoneDataset
    package.libriphone = module
    ctc.corpus = package
    sys.modules.update({package.__name__: package, MODULE: module})
    return ["the wheel lacks downstream/ctc/corpus/libriphone.py: bench/peer/libriphone.py stands in "
            "(same lexicon lookup, length sort and overlapping buckets)"]
