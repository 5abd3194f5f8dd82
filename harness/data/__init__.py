"""Readers for the real corpus layouts (LibriSpeech, FSC, VoxCeleb1, s3prl phone labels).

Each reader takes a root directory and returns plain records; the same readers
serve the embedded synthetic corpus and the real corpora, unchanged.
"""

from .alignments import CtmSegment, read_ctm, read_phone_labels
from .fsc import FscUtterance, read_fsc
from .librispeech import LibriUtterance, read_librispeech
from .voxceleb import VoxUtterance, read_voxceleb1

__all__ = [
    "LibriUtterance", "read_librispeech", "FscUtterance", "read_fsc", "VoxUtterance", "read_voxceleb1",
    "CtmSegment", "read_ctm", "read_phone_labels",
]
