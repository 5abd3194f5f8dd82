"""GE2E speaker encoder (Wan et al. 2018) with the trained weights that ship inside the PyPI
package ``resemblyzer`` (Apache-2.0): no hub, no download.

Specs: ``ge2e:resemblyzer`` (the package's ``pretrained.pt``) or ``ge2e:/path/model.pt`` (a
checkpoint in the same format: ``{"model_state": ...}``); card ``ge2e``.

Model: 40-channel mel power spectrogram (25 ms Hann window, 10 ms hop, centred frames, Slaney
mel scale, as librosa computes it for resemblyzer) -> 3-layer LSTM (256) -> linear (256) ->
ReLU -> L2 norm. Layers:
- ``lstm_1``, ``lstm_2``, ``lstm_3``: every frame's hidden state of each LSTM layer, the LSTM
  run over the whole utterance (frame-level, 10 ms hop);
- ``embedding``: the utterance embedding as resemblyzer's ``embed_utterance`` computes it:
  1.6 s partial windows at 1.3 per second (zero-padded to cover the end), each window's
  last top-layer state through linear -> ReLU -> L2 norm, averaged, L2-normalised
  (utterance-level).
The waveform is first scaled up to -30 dBFS if quieter (resemblyzer's volume normalisation);
resemblyzer's silence trimming is not applied, since it would break frame timing for the
frame-level layers.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch import nn

from harness.audio import SAMPLE_RATE
from harness.errors import HarnessError
from harness.fsutil import sha256_file
from harness.upstream import Layers, Upstream, UpstreamInfo

HOP = 160
WINDOW = 400
MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s
PARTIAL_RATE = 1.3  # partial windows per second
MIN_COVERAGE = 0.75
TARGET_DBFS = -30.0
INT16_MAX = 2 ** 15 - 1


def packaged_weights() -> Path:
    """Path of the GE2E weights inside the installed resemblyzer package (HarnessError if absent)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError("the ge2e upstream uses the weights inside the resemblyzer package: "
                           "pip install resemblyzer==0.1.4 (Apache-2.0; no download at run time)")
    path = Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
    if not path.exists():
        raise HarnessError(f"the resemblyzer package has no pretrained.pt at {path}; reinstall it")
    return path


def mel_filterbank() -> torch.Tensor:
    """``[MELS, n_fft // 2 + 1]`` Slaney-scale, Slaney-normalised mel filters (librosa's default)."""
    fb = torchaudio.functional.melscale_fbanks(WINDOW // 2 + 1, 0.0, SAMPLE_RATE / 2, MELS, SAMPLE_RATE,
                                               norm="slaney", mel_scale="slaney")
    return fb.T


def mel_power(wav: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """``[samples]`` -> ``[frames, MELS]`` mel power spectrogram (frames = samples // HOP + 1)."""
    spec = torch.stft(wav.double(), n_fft=WINDOW, hop_length=HOP, win_length=WINDOW,
                      window=torch.hann_window(WINDOW, periodic=True, dtype=torch.float64, device=wav.device),
                      center=True,
                      pad_mode="constant", return_complex=True)
    power = spec.abs() ** 2
    return (filters.double() @ power).T.float()


def normalize_volume(wav: np.ndarray) -> np.ndarray:
    """Scale up to -30 dBFS when quieter (resemblyzer's ``normalize_volume(increase_only=True)``)."""
    rms = np.sqrt(np.mean((wav.astype(np.float64) * INT16_MAX) ** 2))
    if rms <= 0:
        return wav
    change = TARGET_DBFS - 20 * np.log10(rms / INT16_MAX)
    return wav if change < 0 else (wav * 10 ** (change / 20)).astype(np.float32)


def partial_slices(n_samples: int) -> list[slice]:
    """Mel-frame windows of ``embed_utterance`` (1.6 s, 1.3 per second, last kept when >= 75% covered)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = int(np.round((SAMPLE_RATE / PARTIAL_RATE) / HOP))
    slices = [slice(i, i + PARTIAL_FRAMES) for i in range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP) / ((last.stop - last.start) * HOP)
    if coverage < MIN_COVERAGE and len(slices) > 1:
        slices = slices[:-1]
    return slices


class Ge2eUpstream(Upstream):
    """Resemblyzer's GE2E speaker encoder (3 LSTM layers of 256 over 40 mel bands, 10 ms hop) with
    every LSTM layer and the utterance embedding as layers.
    """
    padding_sensitive = True  # utterances run one by one (the LSTM and the partial windows see no padding)

    def __init__(self, info: UpstreamInfo) -> None:
        super().__init__()
        # the checkpoint's 3-layer LSTM as three stacked 1-layer LSTMs (the same computation; each
        # layer's frames are then at hand)
        self.lstms = nn.ModuleList(nn.LSTM(MELS if i == 0 else 256, 256, batch_first=True) for i in range(3))
        self.linear = nn.Linear(256, 256)
        self.info = info
        self.register_buffer("filters", mel_filterbank(), persistent=False)

    @classmethod
    def load(cls, source: str, random_init: bool = False, seed: int = 0) -> "Ge2eUpstream":
        path = packaged_weights() if source == "resemblyzer" else Path(source).expanduser()
        if not path.exists():
            raise HarnessError(f"GE2E checkpoint {source} does not exist (ge2e:resemblyzer, or ge2e:/path/model.pt)")
        names = ["lstm_1", "lstm_2", "lstm_3", "embedding"]
        info = UpstreamInfo(spec=f"ge2e:{source}", backend="ge2e", source=source, layer_names=names,
                            dims=[256, 256, 256, 256], hop=HOP, weights_sha256=None, random_init=random_init,
                            frame_offset=0, layer_hops=[HOP, HOP, HOP, None], min_samples=WINDOW,
                            notes={"model": "GE2E 3x LSTM 256", "features": "40 mel power, 10 ms"})
        up = cls(info)
        if random_init:
            torch.manual_seed(seed)
            for lstm in up.lstms:
                lstm.reset_parameters()
            up.linear.reset_parameters()
        else:
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
                state = checkpoint["model_state"]
                for i, lstm in enumerate(up.lstms):
                    lstm.load_state_dict({f"{name}_l0": state[f"lstm.{name}_l{i}"]
                                          for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
                up.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
            except (KeyError, RuntimeError, OSError) as exc:
                raise HarnessError(f"{path} is not a GE2E checkpoint of resemblyzer's format: "
                                   f"{str(exc).splitlines()[0]}") from None
            info.weights_sha256 = sha256_file(path)
        return up.eval()

    def _embed(self, mel: torch.Tensor) -> torch.Tensor:
        """``[windows, frames, MELS]`` -> L2-normalised embeddings ``[windows, 256]``."""
        out = mel
        for lstm in self.lstms:
            out, _ = lstm(out)
        raw = torch.relu(self.linear(out[:, -1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp(min=1e-12)

    @torch.no_grad()
    def layers(self, wavs: torch.Tensor, lengths: torch.Tensor) -> Layers:
        per_layer: list[list[torch.Tensor]] = [[], [], [], []]
        frames = []
        for wav, n in zip(wavs, lengths.tolist()):
            x = torch.from_numpy(normalize_volume(wav[:n].cpu().numpy())).to(wav.device)
            mel = mel_power(x, self.filters)[None]  # [1, T, 40]
            out = mel
            for layer, lstm in enumerate(self.lstms):  # the LSTM over the whole utterance, layer by layer
                out, _ = lstm(out)
                per_layer[layer].append(out[0])
            # the utterance embedding, as embed_utterance computes it (windows over zero-padded audio)
            slices = partial_slices(len(x))
            stop = slices[-1].stop * HOP
            padded = torch.nn.functional.pad(x, (0, max(0, stop - len(x))))
            full_mel = mel_power(padded, self.filters)
            windows = torch.stack([full_mel[s] for s in slices])
            embed = self._embed(windows).mean(0)
            per_layer[3].append((embed / embed.norm().clamp(min=1e-12))[None])
            frames.append(mel.shape[1])
        n_frames = torch.tensor(frames, device=wavs.device)
        hidden = [torch.nn.utils.rnn.pad_sequence(h, batch_first=True) for h in per_layer]
        ones = torch.ones_like(n_frames)
        return Layers(hidden, [n_frames, n_frames, n_frames, ones], [HOP, HOP, HOP, None], list(self.info.layer_names))
