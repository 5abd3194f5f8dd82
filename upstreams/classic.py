"""Classic features as single-layer upstreams (Kaldi-compatible, torchaudio.compliance.kaldi).

- ``classic:fbank``: 80 log-mel filterbank energies, 25 ms window, 10 ms hop;
- ``classic:mfcc``: 13 MFCCs plus deltas and delta-deltas (39 dims), without CMVN;
- ``classic:fbank_superb`` and ``classic:mfcc_superb``: SUPERB's FBANK and MFCC rows, as
  s3prl 0.4.18's ``upstream/baseline/{fbank,mfcc}.yaml`` and ``extracter.py`` compute them:
  Kaldi features of the waveform as read (s3prl does not scale to 16-bit values), deltas and
  delta-deltas (``ComputeDeltas``, window 5: 240 and 39 dims), then per-utterance CMVN
  ``(x - mean) / (1e-10 + std)`` with the unbiased standard deviation.
Dither is off (deterministic). Frames follow Kaldi's ``snip_edges``:
``1 + (samples - 400) // 160``. Computed per utterance, so padding never matters.
"""

from __future__ import annotations

import torch
from torchaudio.compliance import kaldi
from torchaudio.functional import compute_deltas

from harness.audio import SAMPLE_RATE
from harness.errors import HarnessError
from harness.upstream import Layers, Upstream, UpstreamInfo

HOP = 160
WINDOW = 400
KINDS = {"fbank": 80, "mfcc": 39, "fbank_superb": 240, "mfcc_superb": 39}
CMVN_EPS = 1e-10  # s3prl extracter.CMVN's eps, added to the standard deviation


def with_deltas(x: torch.Tensor) -> torch.Tensor:
    """``[frames, dim]`` -> ``[frames, 3 * dim]``: the features, their deltas and delta-deltas
    (torchaudio's ``compute_deltas``, window 5, as s3prl's ``Delta(order=2, win_length=5)``)."""
    d1 = compute_deltas(x.T[None])[0].T
    d2 = compute_deltas(d1.T[None])[0].T
    return torch.cat([x, d1, d2], dim=1)


def cmvn(x: torch.Tensor) -> torch.Tensor:
    """Per-utterance mean and variance normalisation of ``[frames, dim]`` (s3prl's ``CMVN``)."""
    return (x - x.mean(0, keepdim=True)) / (CMVN_EPS + x.std(0, keepdim=True))


class ClassicUpstream(Upstream):
    """Parameter-free features as an upstream (``classic:fbank``, ``classic:mfcc``): one layer each,
    computed with torchaudio's Kaldi-compatible functions at a 10 ms hop.
    """
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.info = UpstreamInfo(spec=f"classic:{kind}", backend="classic", source=kind, layer_names=[kind],
                                 dims=[KINDS[kind]], hop=HOP, weights_sha256=None, frame_offset=WINDOW // 2,
                                 notes={"dither": 0.0})

    @classmethod
    def load(cls, source: str, random_init: bool = False, seed: int = 0) -> "ClassicUpstream":
        if source not in KINDS:
            raise HarnessError(f"unknown classic feature {source!r}; choose from {', '.join(KINDS)}")
        if random_init:
            raise HarnessError(f"classic:{source} has no weights to randomise; drop --random-init")
        return cls(source)

    def _one(self, wav: torch.Tensor) -> torch.Tensor:
        superb = self.kind.endswith("_superb")
        x = wav[None] if superb else wav[None] * 32768.0  # Kaldi's 16-bit sample values; s3prl passes floats
        if self.kind.startswith("fbank"):
            feats = kaldi.fbank(x, num_mel_bins=80, frame_length=25.0, frame_shift=10.0, dither=0.0,
                                sample_frequency=float(SAMPLE_RATE))
            return cmvn(with_deltas(feats)) if superb else feats
        ceps = kaldi.mfcc(x, num_ceps=13, frame_length=25.0, frame_shift=10.0, dither=0.0, sample_frequency=float(SAMPLE_RATE))
        return cmvn(with_deltas(ceps)) if superb else with_deltas(ceps)

    @torch.no_grad()
    def layers(self, wavs: torch.Tensor, lengths: torch.Tensor) -> Layers:
        feats = []
        for i, n in enumerate(lengths.tolist()):
            if n < WINDOW:
                feats.append(torch.zeros(0, KINDS[self.kind], device=wavs.device))
            else:
                feats.append(self._one(wavs[i, :n].float()))
        frames = torch.tensor([len(f) for f in feats], dtype=torch.long, device=wavs.device)
        out = torch.zeros(len(feats), max(int(frames.max()), 1), KINDS[self.kind], device=wavs.device)
        for i, f in enumerate(feats):
            out[i, : len(f)] = f
        return Layers([out], [frames], [HOP], [self.kind])
