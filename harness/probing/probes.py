"""Which probes a run trains: ``--layer`` parsed against the upstream's layers and the task.

A probe is one layer setting: a single layer, or a learned weighted sum over some layers.
``--layer all`` gives every usable single layer plus the weighted sum over them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from harness.errors import HarnessError
from harness.upstream import UpstreamInfo


@dataclass(frozen=True)
class ProbeSpec:
    """One probe of a run: its key (``layer_3``, ``weighted``, ``weighted_1-4``), the layers it
    reads, and whether it learns a weighted sum of them.
    """
    key: str  # "layer_3", "weighted", "weighted_1-4", "weighted_1_4_7"
    layers: tuple[int, ...]
    weighted: bool

    @property
    def mode(self) -> str | int:
        """What records call the layer: its index, or "weighted"."""
        return self.layers[0] if not self.weighted else "weighted"


def parse_layers(arg: str, num_layers: int) -> list[ProbeSpec]:
    """``N`` | ``weighted`` | ``a-b`` | ``1,4,7`` | ``all`` -> probes.

    >>> [p.key for p in parse_layers("all", 3)]
    ['layer_0', 'layer_1', 'layer_2', 'weighted']
    >>> parse_layers("2-4", 6)[0].layers
    (2, 3, 4)
    """
    arg = str(arg).strip()

    def check(i: int) -> int:
        if not 0 <= i < num_layers:
            raise HarnessError(f"--layer {i} is out of range: this upstream has layers 0..{num_layers - 1}")
        return i

    if arg == "all":
        singles = [ProbeSpec(f"layer_{i}", (i,), False) for i in range(num_layers)]
        return singles + ([ProbeSpec("weighted", tuple(range(num_layers)), True)] if num_layers > 1 else [])
    if arg == "weighted":
        return [ProbeSpec("weighted", tuple(range(num_layers)), True)]
    if re.fullmatch(r"\d+", arg):
        i = check(int(arg))
        return [ProbeSpec(f"layer_{i}", (i,), False)]
    if re.fullmatch(r"\d+-\d+", arg):
        a, b = (check(int(x)) for x in arg.split("-"))
        if a >= b:
            raise HarnessError(f"--layer {arg}: the range must go up (e.g. 3-8)")
        return [ProbeSpec(f"weighted_{a}-{b}", tuple(range(a, b + 1)), True)]
    if re.fullmatch(r"\d+(,\d+)+", arg):
        idx = sorted({check(int(x)) for x in arg.split(",")})
        return [ProbeSpec("weighted_" + "_".join(map(str, idx)), tuple(idx), True)]
    raise HarnessError(f"--layer {arg!r} is not N, weighted, all, A-B or a comma list like 1,4,7")


def select_probes(arg: str, info: UpstreamInfo, task_level: str) -> list[ProbeSpec]:
    """The probes of ``--layer arg`` that the task can train on this upstream.

    Frame-level and CTC tasks need frame-level layers: ``all`` keeps the frame-level ones
    (and weighs over those); naming an utterance-level layer explicitly is an error. A
    weighted sum needs equal dimensions: ``all`` on a model whose layers differ in size
    (speaker models) trains single layers only; asking for a weighted sum there is an error.
    """
    probes = parse_layers(arg, len(info.layer_names))
    frame_level = info.frame_layers
    if task_level != "utterance":
        if arg == "all":
            probes = [p for p in probes if all(i in frame_level for i in p.layers)]
            if not any(p.weighted for p in probes) and len(frame_level) > 1:
                probes.append(ProbeSpec("weighted", tuple(frame_level), True))
        bad = sorted({info.layer_names[i] for p in probes for i in p.layers if i not in frame_level})
        if bad:
            raise HarnessError(f"layer(s) {', '.join(bad)} of {info.spec} are utterance-level; "
                               "frame-level and CTC tasks need frame-level layers")
    out = []
    for p in probes:
        dims = {info.dims[i] for i in p.layers}
        if p.weighted and len(dims) > 1:
            if arg == "all":
                continue  # mixed dims (speaker models): single layers only
            raise HarnessError(f"{p.key}: the layers have different dims {sorted(dims)}; a weighted sum needs "
                               "equal dims (pick layers of one size, or single layers)")
        out.append(p)
    return out


def needed_layers(probes: Sequence[ProbeSpec]) -> list[int]:
    """Every layer some probe reads, ascending."""
    return sorted({i for p in probes for i in p.layers})


@dataclass(frozen=True)
class Member:
    """One head a run trains: a probe at one learning rate (a point of the run's ``lr_grid``)
    from one head-initialisation seed (one of ``--seeds``).

    ``key`` names it in the module (``layer_3`` in a run with neither; ``layer_3__lr1``: the
    second-smallest rate; ``layer_3__seed2__lr0``); ``seed`` is None when the head is
    initialised from the run's own seed (no ``--seeds``)."""

    spec: ProbeSpec
    lr: float
    seed: int | None
    key: str


def grid_members(probes: Sequence[ProbeSpec], lr: float, lr_grid: Sequence[float] | None = None,
                 seeds: Sequence[int] | None = None) -> list[Member]:
    """Every head of a run: each probe x each grid rate (``lr`` alone without a grid) x each seed
    (the run's own without ``seeds``); seed-major, then rate, then probe order.

    >>> [m.key for m in grid_members(parse_layers("all", 2)[:2], 1e-3, [1e-4, 1e-3])]
    ['layer_0__lr0', 'layer_1__lr0', 'layer_0__lr1', 'layer_1__lr1']
    """
    rates = list(lr_grid) if lr_grid else [float(lr)]
    out = []
    for seed in (list(seeds) if seeds else [None]):
        for i, rate in enumerate(rates):
            for spec in probes:
                key = spec.key + (f"__seed{seed}" if seeds else "") + (f"__lr{i}" if lr_grid else "")
                out.append(Member(spec, float(rate), seed, key))
    return out
