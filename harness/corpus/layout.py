"""Where each real-corpus layout lives inside a harness corpus root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LIBRI_DIR = "LibriSpeech"
LIBRI_SPLITS = ("train-clean-100", "dev-clean", "test-clean")
PHONE_DIR = "libri_phone"  # s3prl phone_linear's label folder
FSC_DIR = "fluent_speech_commands_dataset"
VOX_DIR = "VoxCeleb1"
METADATA_NAME = "corpus.json"
MANIFEST_NAME = "manifest.sha256"


@dataclass(frozen=True)
class CorpusPaths:
    root: Path

    @property
    def librispeech(self) -> Path:
        return self.root / LIBRI_DIR

    @property
    def phone_labels(self) -> Path:
        return self.root / PHONE_DIR

    @property
    def fsc(self) -> Path:
        return self.root / FSC_DIR

    @property
    def voxceleb1(self) -> Path:
        return self.root / VOX_DIR

    @property
    def metadata(self) -> Path:
        return self.root / METADATA_NAME

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_NAME
