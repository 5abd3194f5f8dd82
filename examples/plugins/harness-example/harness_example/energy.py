"""Upstream plugin example: frame log-energy and its delta as two 'layers' (10 ms hop).

Registered as ``energy`` in the ``harness.upstreams`` entry-point group, so it loads as
``--upstream energy:log`` (the part after the colon is the source; this backend has one).
"""

from __future__ import annotations

import torch

from harness.errors import HarnessError
from harness.upstream import Layers, Upstream, UpstreamInfo

HOP = 160


class EnergyUpstream(Upstream):
    @classmethod
    def load(cls, source: str, random_init: bool = False, seed: int = 0) -> "EnergyUpstream":
        if source != "log" or random_init:
            raise HarnessError("energy: the only source is 'log', and it has no weights to randomise")
        up = cls()
        up.info = UpstreamInfo(spec=f"energy:{source}", backend="energy", source=source, weights_sha256=None,
                               layer_names=["log_energy", "delta"], dims=[1, 1], hop=HOP, frame_offset=HOP // 2)
        return up

    @torch.no_grad()
    def layers(self, wavs: torch.Tensor, lengths: torch.Tensor) -> Layers:
        frames = wavs[:, : wavs.shape[1] // HOP * HOP].reshape(len(wavs), -1, HOP)
        energy = frames.pow(2).mean(-1, keepdim=True).add(1e-8).log()  # [batch, frames, 1]
        delta = energy.diff(dim=1, prepend=energy[:, :1])
        n = torch.div(lengths, HOP, rounding_mode="floor")
        return Layers([energy, delta], [n, n], [HOP, HOP], list(self.info.layer_names))
