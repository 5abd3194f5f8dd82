"""Readers for the real corpus layouts (LibriSpeech, FSC, VoxCeleb1, s3prl phone labels).

Each reader takes a root directory and returns plain records; the same readers
serve the embedded synthetic corpus and the real corpora, unchanged.
"""

from harness.data.alignments import CtmSegment, read_ctm, read_phone_labels
from harness.data.fsc import FscUtterance, read_fsc
from harness.data.iemocap import EmotionUtterance, read_iemocap
from harness.data.librispeech import LibriUtterance, read_librispeech
from harness.data.speech_commands import CommandClip, background_noise, read_speech_commands
from harness.data.voxceleb import (
    Trial,
    VoxUtterance,
    read_voxceleb1,
    read_voxceleb1_all,
    read_voxceleb1_trials,
)

__all__ = [
    "LibriUtterance", "read_librispeech", "FscUtterance", "read_fsc", "VoxUtterance", "read_voxceleb1",
    "CtmSegment", "read_ctm", "read_phone_labels", "Trial", "read_voxceleb1_all", "read_voxceleb1_trials",
    "CommandClip", "background_noise", "read_speech_commands", "EmotionUtterance", "read_iemocap",
]
