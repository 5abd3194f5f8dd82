"""Corpus profiles: how many speakers, utterances and trials each layout gets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """A corpus size: speakers in all and per LibriSpeech split, and utterance counts per layout."""
    name: str
    speakers: int
    libri_split_speakers: tuple[int, int, int]  # train, dev, test
    libri_utts_per_speaker: int
    fsc_split_speakers: tuple[int, int, int]
    fsc_utts_per_speaker: int
    vox_sessions: int  # sessions per speaker: all but the last two train, then dev, test
    vox_utts_per_session: int
    vocabulary: int
    vox_verification_speakers: int = 8  # VoxCeleb1 speakers whose utterances form veri_test.txt
    vox_trials: int = 2000  # trials in veri_test.txt (half target, half non-target)
    sc_split_speakers: tuple[int, int, int] = (32, 8, 8)  # Speech Commands: train, validation, test
    sc_keyword_repeats: int = 2  # each keyword said this many times by each speaker
    sc_unknown_words: int = 6  # other words per speaker (the _unknown_ class)
    emo_sessions: int = 5  # IEMOCAP-style: sessions of one female and one male speaker
    emo_utts_per_class: int = 12  # per speaker, per style
    sc_test_speakers: int = 8  # new speakers of speech_commands_test_set_v0.01 (none in the training archive)
    sc_test_repeats: int = 2  # each says every keyword, and this many other words, this many times
    snips_split_speakers: tuple[int, int, int] = (8, 4, 4)  # Audio SNIPS train, valid, test (SUPERB's 8/4/4)
    snips_utts_per_speaker: tuple[int, int, int] = (100, 40, 40)


PROFILES: dict[str, Profile] = {
    "tiny": Profile("tiny", 8, (4, 2, 2), 6, (4, 2, 2), 8, 3, 3, 800, vox_verification_speakers=2, vox_trials=40,
                    sc_split_speakers=(4, 2, 2), sc_keyword_repeats=1, sc_unknown_words=2, emo_sessions=5,
                    emo_utts_per_class=2, sc_test_speakers=2, sc_test_repeats=1, snips_split_speakers=(2, 1, 1),
                    snips_utts_per_speaker=(7, 7, 7)),
    "default": Profile("default", 48, (32, 8, 8), 40, (32, 8, 8), 40, 4, 6, 6000),
}
