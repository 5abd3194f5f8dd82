"""espeak-ng through its C API, with sample-exact phone and word boundaries.

We load the libespeak-ng shipped by the ``espeakng-loader`` wheel with ctypes,
synthesise synchronously, and collect PHONEME events: each carries the sample
index where the phone starts, and the final event lands on the last sample, so
phone segments tile the audio exactly.

espeak-ng keeps synthesiser state (pitch flutter, filter memories) in static
variables that survive ``espeak_Terminate``; the same text synthesised twice in
one process differs. For byte-identical corpora every utterance is therefore
synthesised in a freshly forked process whose parent initialised espeak but never
synthesised (see :mod:`harness.corpus.build`).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

# espeak_AUDIO_OUTPUT / event types / flags from speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_EVENT_END = 5
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4

NATIVE_RATE = 22_050


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class PhoneEvent:
    """One phoneme event espeak-ng reports: its mnemonic, start sample and position in the text."""
    name: str  # espeak mnemonic incl. stress marks, e.g. "'aI"; pauses start with "_"
    sample: int  # start sample at NATIVE_RATE
    text_position: int  # 1-based character index into the synthesised text


@dataclass
class Synthesis:
    """What one espeak-ng call produced: int16 audio at espeak's native rate and its phoneme events."""
    audio: np.ndarray  # int16 [samples] at NATIVE_RATE
    phones: list[PhoneEvent]


def _loader():
    try:
        import espeakng_loader
    except ImportError:
        raise HarnessError(
            "the espeak-ng library is missing: install it with `pip install espeakng-loader` "
            "(it is in the harness requirements; re-run the setup command)"
        ) from None
    return espeakng_loader


def stock_data_dir() -> Path:
    """The ``espeak-ng-data`` folder shipped in the espeakng-loader wheel."""
    return Path(_loader().get_data_path())


def prepare_data_dir(dest: Path, variants: dict[str, str]) -> Path:
    """Build an espeak data folder that adds our own voice variant files.

    ``dest/espeak-ng-data`` mirrors the stock data through symlinks, except for
    ``voices/!v`` which also holds one file per entry of ``variants``
    (name -> variant file text). Returns ``dest`` (the folder to pass to
    :class:`Espeak`).
    """
    stock = stock_data_dir()
    root = dest / "espeak-ng-data"
    vdir = root / "voices" / "!v"
    vdir.mkdir(parents=True, exist_ok=True)
    for entry in stock.iterdir():
        if entry.name == "voices":
            continue
        link = root / entry.name
        if not link.exists():
            link.symlink_to(entry)
    for entry in (stock / "voices").iterdir():
        if entry.name == "!v":
            continue
        link = root / "voices" / entry.name
        if not link.exists():
            link.symlink_to(entry)
    for entry in (stock / "voices" / "!v").iterdir():
        link = vdir / entry.name
        if not link.exists() and entry.name not in variants:
            link.symlink_to(entry)
    for name, text in variants.items():
        path = vdir / name
        if not path.exists() or path.read_text() != text:
            tmp = vdir / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, path)
    return dest


class Espeak:
    """A handle on libespeak-ng (one per process; the library is a singleton)."""

    def __init__(self, data_parent: Path | None = None) -> None:
        loader = _loader()
        lib_path = loader.get_library_path()
        if not os.path.exists(lib_path):
            raise HarnessError(f"espeak-ng library not found at {lib_path}; reinstall espeakng-loader")
        try:
            self._lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            raise HarnessError(f"cannot load espeak-ng library {lib_path}: {exc}") from None
        parent = str(data_parent if data_parent is not None else stock_data_dir().parent)
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, parent.encode(), _INIT_PHONEME_EVENTS)
        if rate != NATIVE_RATE:
            raise HarnessError(f"espeak-ng failed to initialise from data folder {parent} (returned {rate})")
        self._chunks: list[np.ndarray] = []
        self._events: list[PhoneEvent] = []
        self._end_sample: int | None = None
        self._callback = _Callback(self._on_audio)  # keep a reference: ctypes does not
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self._lib.espeak_Info.restype = ctypes.c_char_p

    @property
    def version(self) -> str:
        """espeak-ng's version string (recorded in ``corpus.json``)."""
        return self._lib.espeak_Info(None).decode()

    def _on_audio(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                self._events.append(PhoneEvent(name, int(ev.sample), int(ev.text_position)))
            elif ev.type == _EVENT_END:
                self._end_sample = int(ev.sample)
            i += 1
        return 0

    def synthesize(self, text: str, voice: str, rate: int = 175, pitch: int = 50, pitch_range: int = 50,
                   rand_seed: int = 0, volume: int = 100) -> Synthesis:
        """Synthesise ``text`` with ``voice`` (e.g. ``"en-us+m3"``).

        ``rate`` is words per minute; ``pitch``/``pitch_range`` are espeak's 0-100 scale;
        ``volume`` is espeak's amplitude (100 = normal).
        ``rand_seed`` seeds espeak's noise source (breathy voices); espeak otherwise
        seeds it from the clock at initialisation.
        """
        self._lib.espeak_ng_SetRandSeed(ctypes.c_long(rand_seed))
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise HarnessError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range), (_PARAM_VOLUME, volume)):
            self._lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._events, self._end_sample = [], [], None
        data = text.encode("utf-8")
        status = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise HarnessError(f"espeak-ng failed to synthesise {text!r} (status {status})")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return Synthesis(audio=audio.astype(np.int16), phones=list(self._events))

    def word_phone_count(self, word: str, voice: str) -> int:
        """Number of (non-pause) phones espeak uses for ``word`` said alone."""
        syn = self.synthesize(word, voice)
        return sum(1 for p in syn.phones if not p.name.startswith("_"))
