"""Readers for the real corpus layouts (LibriSpeech, FSC, VoxCeleb1, Speech Commands, IEMOCAP,
Audio SNIPS, s3prl phone labels, the LibriSpeech lexicon).

Each reader takes a root directory and returns plain records; the same readers
serve the embedded synthetic corpus and the real corpora, unchanged.
"""

from harness.data.alignments import (
    CtmSegment,
    read_ctm,
    read_phone_labels,
    read_phone_splits,
)
from harness.data.fsc import FscUtterance, read_fsc
from harness.data.iemocap import EmotionUtterance, read_iemocap
from harness.data.lexicon import ARPABET_STRESSED, read_lexicon
from harness.data.librispeech import LibriUtterance, read_librispeech
from harness.data.snips import SlotSpan, SnipsUtterance, read_slot_names, read_snips
from harness.data.speech_commands import (
    CommandClip,
    TestClip,
    background_noise,
    read_speech_commands,
    read_speech_commands_test,
)
from harness.data.voxceleb import (
    Trial,
    VoxUtterance,
    read_voxceleb1,
    read_voxceleb1_all,
    read_voxceleb1_trials,
)

__all__ = [
    "LibriUtterance", "read_librispeech", "FscUtterance", "read_fsc", "VoxUtterance", "read_voxceleb1",
    "CtmSegment", "read_ctm", "read_phone_labels", "read_phone_splits", "Trial", "read_voxceleb1_all",
    "read_voxceleb1_trials", "CommandClip", "TestClip", "background_noise", "read_speech_commands",
    "read_speech_commands_test", "EmotionUtterance", "read_iemocap", "SlotSpan", "SnipsUtterance", "read_snips",
    "read_slot_names", "ARPABET_STRESSED", "read_lexicon",
]
