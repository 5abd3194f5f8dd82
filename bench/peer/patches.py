"""What it takes to run s3prl 0.4.18's downstream experts here, without editing site-packages.

Every patch is applied in this process only, by ``apply(task, workdir)`` (import stubs once,
then the task's own patches); each returns the one-line notes that go into the task's record.

- ``sox`` (pysox) is not installed; ``sv_voxceleb1/dataset.py`` imports ``sox.Transformer`` and
  never uses it: a stub module stands in.
- ``catalyst`` is not installed; ``speech_commands/expert.py`` imports
  ``DistributedSamplerWrapper``, used only under torch.distributed: a stub that raises if called.
- libsox is absent, so ``torchaudio.sox_effects.apply_effects_file`` fails. KS calls it with
  ``channels 1, rate 16000, gain -3.0`` and ASV with the same plus
  ``silence 1 0.1 0.1% -1 0.1 0.1%``. ``apply_effects_file`` below re-implements exactly those
  effects on the decoded samples: down-mix to one channel, refuse any rate but 16 kHz (the corpus
  is 16 kHz, where sox's rate effect is a no-op), gain as a multiplication by 10^(dB/20), and
  sox's silence effect as its state machine is written in sox's ``silence.c`` (a 20 ms running
  RMS window that starts from zeros, "above" = RMS >= threshold; trim until 0.1 s of consecutive
  above-threshold samples; then copy until 0.1 s of consecutive below-threshold samples, drop
  them, clear the RMS window and trim again; shorter quiet stretches are kept; at the end a
  pending quiet stretch shorter than 0.1 s is kept).
- ASV's expert moves its attention masks with ``.cuda()``: ``on_cpu()`` makes ``Tensor.cuda`` return
  the tensor itself while there is no GPU.
- ASV's training set runs that sox chain on every file through ``joblib.Parallel(n_jobs=12)``;
  worker processes would not see the patched effects, so ``Parallel`` there becomes an
  in-process loop (same results, one core).
- SID writes its file-list cache to ``<package>/voxceleb1/.cache`` and ASV its trimmed-length
  cache to ``<package>/sv_voxceleb1/.wav_lengths``: both are redirected into the run's folder,
  which also keeps a stale cache from another corpus from being read.
- SID's ``SpeakerClassifiDataset`` fixes ``speaker_num = 1251`` (VoxCeleb1's speaker count), which
  sizes the output layer: the patched class sets it to the number of speakers in the corpus's
  identification split (labels stay ``int(id[2:]) - 10001``), so the head's parameter count is
  the one a harness head for the same speakers has.
- The legacy runner (``downstream/runner.py``) imports ``HfFolder`` and ``Repository`` from
  huggingface_hub, gone from the installed version, and ``tensorboardX``, not installed: it is not
  imported at all; ``bench/peer/loop.py`` builds upstream, featurizer and expert as it does and runs
  the same loop, and the experts' ``log_records`` get a ``ScalarLog`` that keeps the scalars they
  log (that is where each metric is read from).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

SAMPLE_RATE = 16000


class ScalarLog:
    """Stand-in for tensorboardX's SummaryWriter: keeps the last value logged under each tag."""

    def __init__(self, *args, **kwargs) -> None:
        self.scalars: dict[str, float] = {}

    def add_scalar(self, tag: str, value, global_step=None, **kwargs) -> None:
        self.scalars[tag] = float(value)

    def close(self) -> None:
        pass

    def ending(self, suffix: str) -> float:
        """The value of the one tag that ends with ``suffix`` (e.g. ``"test-acc"``)."""
        hits = [v for k, v in self.scalars.items() if k.endswith(suffix)]
        if len(hits) != 1:
            raise KeyError(f"{len(hits)} logged scalars end with {suffix!r}: {sorted(self.scalars)}")
        return hits[0]


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    module.__peer_stub__ = True
    return module


class _UnusedDistributedSamplerWrapper:
    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError("catalyst is not installed; DistributedSamplerWrapper is only for torch.distributed")


def install_import_stubs() -> list[str]:
    """Stub the modules the experts import but never call here; returns one note per stub."""
    notes = []
    try:
        importlib.import_module("sox")
    except ImportError:
        sys.modules["sox"] = _stub("sox", Transformer=object)
        notes.append("pysox is not installed: stub module `sox` (sv_voxceleb1 imports sox.Transformer, never uses it)")
    try:
        importlib.import_module("catalyst.data.sampler")
    except ImportError:
        sampler = _stub("catalyst.data.sampler", DistributedSamplerWrapper=_UnusedDistributedSamplerWrapper)
        data = _stub("catalyst.data", sampler=sampler)
        sys.modules.update({"catalyst": _stub("catalyst", data=data), "catalyst.data": data,
                            "catalyst.data.sampler": sampler})
        notes.append("catalyst is not installed: stub DistributedSamplerWrapper (speech_commands uses it only "
                     "under torch.distributed)")
    return notes


# ----------------------------------------------------------------------------- sox effects
def sox_silence(x: np.ndarray, duration_s: float = 0.1, threshold: float = 0.001,
                rate: int = SAMPLE_RATE) -> np.ndarray:
    """sox's ``silence 1 D T -1 D T`` (D seconds, T as a fraction of full scale) on mono samples.

    x: (samples,) float in [-1, 1]. Returns the kept samples, (kept,) float, in order. The running
    RMS is taken over the last ``rate // 50`` samples including the current one, over a window
    that starts as zeros and is cleared each time trimming restarts. Empty if no stretch of D
    seconds is loud enough.
    """
    x = np.asarray(x, dtype=np.float64)
    n, hold, win = len(x), int(round(duration_s * rate)), rate // 50
    kept: list[np.ndarray] = []
    start = 0  # where the RMS window was last cleared (trim mode starts here)
    while start < n:
        energy = np.concatenate([[0.0], np.cumsum(x[start:] ** 2)])
        idx = np.arange(n - start)
        rms = np.sqrt(np.maximum(energy[idx + 1] - energy[np.maximum(idx + 1 - win, 0)], 0.0) / win)
        loud = rms >= threshold
        first = _first_run(loud, hold, 0)
        if first is None:
            break  # trimming reached the end: the rest is dropped
        quiet = _first_run(~loud, hold, first + hold)
        if quiet is None:
            kept.append(x[start + first:])  # copying reached the end: a short pending quiet stretch is kept
            break
        kept.append(x[start + first:start + quiet])
        start += quiet + hold
    return np.concatenate(kept) if kept else np.zeros(0)


def _first_run(mask: np.ndarray, length: int, offset: int) -> int | None:
    """Index of the first run of ``length`` consecutive True in ``mask[offset:]`` (absolute)."""
    m = mask[offset:].astype(np.int64)
    if len(m) < length:
        return None
    c = np.concatenate([[0], np.cumsum(m)])
    full = np.nonzero(c[length:] - c[:-length] == length)[0]
    return None if len(full) == 0 else offset + int(full[0])


def apply_effects_file(path, effects, normalize: bool = True, channels_first: bool = True, format=None):
    """``torchaudio.sox_effects.apply_effects_file`` for the effect chains s3prl's KS and ASV use.

    Returns ``(waveform (1, samples) float32, 16000)``; raises ValueError for any other effect.
    """
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
    x = data.T.astype(np.float64)
    for effect in effects:
        name, args = effect[0], effect[1:]
        if name == "channels" and args == ["1"]:
            x = x.mean(axis=0, keepdims=True)
        elif name == "rate":
            if int(float(args[0])) != sr:
                raise ValueError(f"{path}: {sr} Hz; the sox rate effect is not re-implemented here")
        elif name == "gain" and len(args) == 1:
            x = x * 10.0 ** (float(args[0]) / 20.0)
        elif name == "silence" and args[0] == "1" and args[3] == "-1" and args[2] == args[5] and args[1] == args[4] \
                and args[2].endswith("%"):
            x = sox_silence(x[0], float(args[1]), float(args[2][:-1]) / 100.0, sr)[None, :]
        else:
            raise ValueError(f"sox effect {effect} is not re-implemented here")
    return torch.from_numpy(x.astype(np.float32)), sr


# ----------------------------------------------------------------------------- per-task patches
@contextlib.contextmanager
def on_cpu():
    """While there is no GPU, ``Tensor.cuda()`` returns the tensor unchanged (ASV's masks)."""
    if torch.cuda.is_available():
        yield
        return
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def _sequential_parallel(n_jobs=None, **kwargs):
    return lambda tasks: [fn(*args, **kw) for fn, args, kw in tasks]


def _patch_sid(workdir: Path, speaker_count: int) -> list[str]:
    dataset = importlib.import_module("s3prl.downstream.voxceleb1.dataset")
    expert = importlib.import_module("s3prl.downstream.voxceleb1.expert")
    dataset.CACHE_PATH = str(workdir / "sid_cache") + "/"
    base = dataset.SpeakerClassifiDataset

    class CorpusSpeakerClassifiDataset(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.speaker_num = speaker_count

    expert.SpeakerClassifiDataset = CorpusSpeakerClassifiDataset
    return [f"voxceleb1 file-list cache redirected to {dataset.CACHE_PATH}",
            f"SID output size patched from 1251 to the corpus's {speaker_count} speakers"]


def _patch_asv(workdir: Path) -> list[str]:
    dataset = importlib.import_module("s3prl.downstream.sv_voxceleb1.dataset")
    dataset.apply_effects_file = apply_effects_file
    dataset.Parallel = _sequential_parallel
    # the length cache goes to Path(os.path.dirname(__file__)) / '.wav_lengths'
    dataset.__file__ = str(workdir / "sv_voxceleb1_dataset.py")
    return ["sox effects (channels 1, rate 16000, gain -3 dB, silence 1 0.1 0.1% -1 0.1 0.1%) re-implemented "
            "on tensors (no libsox)",
            "joblib Parallel(n_jobs=12) in the trimmed-length pass replaced by an in-process loop",
            "trimmed-length cache redirected into the run folder", "Tensor.cuda() is the identity on this CPU run"]


def _patch_ks() -> list[str]:
    dataset = importlib.import_module("s3prl.downstream.speech_commands.dataset")
    dataset.apply_effects_file = apply_effects_file
    return ["sox effects (channels 1, rate 16000, gain -3 dB) re-implemented on tensors (no libsox)"]


def apply(task: str, workdir: Path, speaker_count: int | None = None) -> list[str]:
    """Install the import stubs and ``task``'s patches; returns the notes for its record."""
    notes = install_import_stubs()
    if task == "sid":
        notes += _patch_sid(workdir, speaker_count)
    elif task == "asv":
        notes += _patch_asv(workdir)
    elif task == "ks":
        notes += _patch_ks()
    return notes
