"""Speech Commands v0.01: ``WORD/SPEAKER_nohash_N.wav`` clips, ``validation_list.txt`` and
``testing_list.txt`` (every clip listed in neither is training data), ``_background_noise_/``;
and the separate test archive ``speech_commands_test_set_v0.01`` (SUPERB KS's test set: one
folder per class, the ten keywords, ``_unknown_`` and ``_silence_``, balanced)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError

SPLITS = {"train": "train", "dev": "validation", "test": "testing"}
NOISE_DIR = "_background_noise_"
TEST_DIR = "speech_commands_test_set_v0.01"
UNKNOWN, SILENCE = "_unknown_", "_silence_"


@dataclass(frozen=True)
class CommandClip:
    """One Speech Commands clip: path, word label and speaker (the hash before ``_nohash_``)."""
    id: str  # WORD/SPEAKER_nohash_N
    path: Path
    word: str
    speaker: str


def _root(root: Path) -> Path:
    for candidate in (root, root / "speech_commands_v0.01", root / "speech_commands"):
        if (candidate / "validation_list.txt").exists() or (candidate / "testing_list.txt").exists():
            return candidate
    raise HarnessError(f"no Speech Commands root under {root} (expected validation_list.txt and testing_list.txt "
                       "beside the word folders); check --data-root")


def read_speech_commands(root: str | Path, split: str) -> list[CommandClip]:
    """Clips of ``split`` (train, validation or testing), sorted by id."""
    if split not in SPLITS.values():
        raise HarnessError(f"unknown Speech Commands split {split!r}; choose from {', '.join(SPLITS.values())}")
    base = _root(Path(root))
    lists = {}
    for name in ("validation", "testing"):
        table = base / f"{name}_list.txt"
        if not table.exists():
            raise HarnessError(f"missing {table}; a Speech Commands root has validation_list.txt and testing_list.txt")
        lists[name] = {line.strip() for line in table.read_text().splitlines() if line.strip()}
    if split == "train":
        listed = lists["validation"] | lists["testing"]
        rels = sorted(p.relative_to(base).as_posix() for p in base.glob("*/*.wav")
                      if not p.parent.name.startswith("_") and p.relative_to(base).as_posix() not in listed)
    else:
        rels = sorted(lists[split])
    clips = []
    for rel in rels:
        audio = base / rel
        if not audio.exists():
            raise HarnessError(f"{base / (split + '_list.txt')} lists {rel} but {audio} is missing")
        word, name = rel.split("/")
        clips.append(CommandClip(rel[:-4], audio, word, name.split("_nohash_")[0]))
    return clips


def background_noise(root: str | Path) -> list[Path]:
    """The noise recordings the ``_silence_`` class is cut from."""
    folder = _root(Path(root)) / NOISE_DIR
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise HarnessError(f"no {NOISE_DIR}/*.wav under {folder.parent}: the _silence_ class is cut from them")
    return files


@dataclass(frozen=True)
class TestClip:
    """One clip of the test archive."""

    id: str  # CLASS/FILE without extension, e.g. yes/0a7c2a8d_nohash_0, _unknown_/bed_0c40e715_nohash_0
    path: Path
    label: str  # its class folder: a keyword, _unknown_ or _silence_
    word: str | None  # the word said (an _unknown_ clip's file name starts with it); None for _silence_
    speaker: str | None  # the speaker hash; None for _silence_


def _test_root(root: Path) -> Path:
    for candidate in (root, root / TEST_DIR):
        if (candidate / SILENCE).is_dir() and (candidate / UNKNOWN).is_dir():
            return candidate
    raise HarnessError(f"no Speech Commands test archive under {root} (expected {TEST_DIR}/ with _silence_/, "
                       "_unknown_/ and one folder per keyword); check --data-root")


def read_speech_commands_test(root: str | Path) -> list[TestClip]:
    """Every clip of ``speech_commands_test_set_v0.01``, labelled by its folder (as s3prl's
    ``SpeechCommandsTestingDataset`` does), sorted by id. ``root`` is the archive's folder or
    its parent. Raises :class:`HarnessError` for a missing archive, an ``_unknown_`` file not
    named ``WORD_HASH_nohash_N.wav``, or an archive without clips."""
    base = _test_root(Path(root))
    clips = []
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for wav in sorted(folder.glob("*.wav")):
            label, stem = folder.name, wav.stem
            word: str | None = label
            speaker: str | None = stem.split("_nohash_")[0]
            if label == SILENCE:
                word = speaker = None
            elif label == UNKNOWN:
                word, _, speaker = speaker.rpartition("_")
                if not word or "_nohash_" not in stem:
                    raise HarnessError(f"{wav}: an _unknown_ clip must be named WORD_HASH_nohash_N.wav")
            clips.append(TestClip(f"{label}/{stem}", wav, label, word, speaker))
    if not clips:
        raise HarnessError(f"the Speech Commands test archive at {base} holds no clips")
    return clips
