"""Classic features as single-layer upstreams (Kaldi-compatible, torchaudio.compliance.kaldi).

- ``classic:fbank``: 80 log-mel filterbank energies, 25 ms window, 10 ms hop;
- ``classic:mfcc``: 13 MFCCs plus deltas and delta-deltas (39 dims), as SUPERB's
  MFCC baseline.
Dither is off (deterministic); no CMVN. Frames follow Kaldi's ``snip_edges``:
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
KINDS = {"fbank": 80, "mfcc": 39}


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
        x = wav[None] * 32768.0  # Kaldi works on 16-bit sample values
        if self.kind == "fbank":
            return kaldi.fbank(x, num_mel_bins=80, frame_length=25.0, frame_shift=10.0, dither=0.0,
                               sample_frequency=float(SAMPLE_RATE))

        ceps = kaldi.mfcc(x, num_ceps=13, frame_length=25.0, frame_shift=10.0, dither=0.0, sample_frequency=float(SAMPLE_RATE))
        d1 = compute_deltas(ceps.T[None])[0].T
        d2 = compute_deltas(d1.T[None])[0].T
        return torch.cat([ceps, d1, d2], dim=1)

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
