"""Where each real-corpus layout lives inside a harness corpus root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.data.alignments import PHONE_INVENTORY, PHONE_TABLE  # noqa: F401  (inside PHONE_DIR)
from harness.data.librispeech import SPLITS as _LIBRI_SPLIT_OF

LIBRI_DIR = "LibriSpeech"
LIBRI_SPLITS = tuple(_LIBRI_SPLIT_OF.values())  # train, dev, test folders
PHONE_DIR = "libri_phone"  # s3prl phone_linear's label folder
FSC_DIR = "fluent_speech_commands_dataset"
VOX_DIR = "VoxCeleb1"
SC_DIR = "speech_commands_v0.01"  # Speech Commands v0.01: WORD/SPEAKER_nohash_N.wav + split lists
IEMOCAP_DIR = "IEMOCAP_full_release"  # SessionN/sentences/wav/DIALOG/UTT.wav + dialog/EmoEvaluation
SC_TEST_DIR = "speech_commands_test_set_v0.01"  # CLASS/FILE.wav: the ten keywords, _unknown_, _silence_
SNIPS_DIR = "SNIPS"  # Audio SNIPS as s3prl prepares it: {train,valid,test}/SPK-snips-SPLIT-N.wav + all.iob.snips.txt
PHONE_S3PRL_DIR = "libri_phone_s3prl"  # s3prl phone_linear's own form: train-clean-100 only, utterance splits
LEXICON_NAME = "librispeech-lexicon.txt"  # inside LIBRI_DIR: WORD<TAB>stress-marked ARPAbet (OpenSLR 11)
VERI_TEST2_NAME = "veri_test2.txt"  # inside VOX_DIR: trials on audio no shipped model was pretrained on
METADATA_NAME = "corpus.json"
MANIFEST_NAME = "manifest.sha256"
ALIGNMENT_DIR = "alignments"  # inside LIBRI_DIR: SPLIT.{words,phones}.ctm


def embedded_corpus_dir(profile: str = "default", seed: int = 0) -> Path:
    """Where the embedded corpus for (profile, seed) lives unless --out/--data-root says otherwise."""
    from harness.fsutil import default_home

    return default_home() / "corpus" / f"{profile}-seed{seed}"


def require_embedded_corpus(profile: str = "default", seed: int = 0) -> Path:
    """The built embedded corpus, or a one-line error saying how to build it."""
    from harness.errors import HarnessError

    root = embedded_corpus_dir(profile, seed)
    if not (root / METADATA_NAME).exists():
        raise HarnessError(f"the embedded corpus is not built at {root}: run `harness corpus build` "
                           "(or pass --data-root)")
    return root


@dataclass(frozen=True)
class CorpusPaths:
    """Where each real corpus's layout lives inside an embedded corpus root."""
    root: Path

    @property
    def librispeech(self) -> Path:
        """The LibriSpeech root."""
        return self.root / LIBRI_DIR

    @property
    def phone_labels(self) -> Path:
        """The frame-level phone labels' folder (``libri_phone``)."""
        return self.root / PHONE_DIR

    @property
    def fsc(self) -> Path:
        """The Fluent Speech Commands root."""
        return self.root / FSC_DIR

    @property
    def voxceleb1(self) -> Path:
        """The VoxCeleb1 root."""
        return self.root / VOX_DIR

    @property
    def speech_commands(self) -> Path:
        """The Speech Commands v0.01 root (training archive)."""
        return self.root / SC_DIR

    @property
    def iemocap(self) -> Path:
        """The IEMOCAP root."""
        return self.root / IEMOCAP_DIR

    @property
    def speech_commands_test(self) -> Path:
        """The separate Speech Commands v0.01 test-set archive."""
        return self.root / SC_TEST_DIR

    @property
    def snips(self) -> Path:
        """The Audio-SNIPS root (slot filling)."""
        return self.root / SNIPS_DIR

    @property
    def phone_labels_s3prl(self) -> Path:
        """s3prl's phone-label folder layout (``converted_aligned_phones.txt`` and split lists)."""
        return self.root / PHONE_S3PRL_DIR

    @property
    def lexicon(self) -> Path:
        """The stress-marked LibriSpeech lexicon file."""
        return self.root / LIBRI_DIR / LEXICON_NAME

    @property
    def alignments(self) -> Path:
        """The CTM alignments' folder."""
        return self.root / LIBRI_DIR / ALIGNMENT_DIR

    def ctm(self, libri_split: str, kind: str) -> Path:
        """``kind``: ``words`` or ``phones``."""
        return self.alignments / f"{libri_split}.{kind}.ctm"

    @property
    def metadata(self) -> Path:
        """``corpus.json``: profile, seed, speakers, statistics."""
        return self.root / METADATA_NAME

    @property
    def manifest(self) -> Path:
        """``manifest.sha256``: one hash per file."""
        return self.root / MANIFEST_NAME
