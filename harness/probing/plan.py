"""What a run is: the request (``harness run``'s arguments) and the resolved plan.

:class:`RunRequest` is what the user asked for; :class:`RunPlan` is the request resolved by
:func:`harness.probing.engine.prepare` (task and config, data, upstream, probes, device) with
the run's identity and key. Kept apart from the engine so that the training step
(:mod:`harness.probing.training`, which imports Lightning) can name them without importing the
engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from harness.features.device import DEFAULT_PRECISION, Placement
from harness.features.extract import BATCH_SECONDS
from harness.fsutil import default_home
from harness.probing.identity import features_mode, run_key
from harness.probing.probes import ProbeSpec, needed_layers
from harness.protocol import batch_utterances
from harness.records import UpstreamRef
from harness.task import Example, Task

CACHE_MODES = ("disk", "auto", "none")


@dataclass
class RunRequest:
    """What the user asked for (``harness run`` arguments)."""

    upstream: str
    task: str
    layer: str = "all"
    data_root: Path | None = None
    out: Path = Path("results")
    seed: int = 0
    #: head-initialisation seeds trained in one pass (``--seeds 0,1,2``: a list or comma string,
    #: at least two); they share the batch order of ``seed``. None: one seed, ``seed``.
    seeds: Sequence[int] | str | None = None
    max_steps: int | None = None
    overrides: dict | None = None
    protocol: str | None = None  # None: superb where the task has it, else quick (harness.protocol)
    cache: str = "disk"  # disk (refused when it does not fit); auto: disk if it fits, else none; none: streamed
    no_cache: bool = False  # the old spelling of cache="none"
    random_init: bool = False
    init_seed: int = 0
    devices: str | int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    accelerator: str = "auto"  # as Lightning: a GPU when there is one (harness.features.device)
    precision: str = DEFAULT_PRECISION  # of the frozen upstream's forward pass; the probes train in float32
    cache_dtype: str = "float16"
    workers: int | None = None  # DataLoader worker processes (None: none on the CPU, a few beside a GPU)
    batch_seconds: float = BATCH_SECONDS  # padded audio per extraction batch
    progress: bool = True


@dataclass
class RunPlan:
    """A resolved request: everything the later steps need, and the run's identity."""

    request: RunRequest
    task: Task
    config: dict
    data_root: Path
    examples: dict[str, list[Example]]
    upstream: Any  # harness.upstream.Upstream
    probes: list[ProbeSpec]
    streamed: bool  # the upstream runs inside every step instead of reading the cache
    pooled: bool  # utterance means are cached instead of frames
    world_size: int
    identity: dict
    key: str
    placement: Placement = field(default_factory=lambda: Placement(torch.device("cpu")))
    protocol: str = "quick"  # the resolved protocol's name (recorded, never hashed)
    timing: dict = field(default_factory=dict)
    seeds: list[int] | None = None  # head-initialisation seeds of one pass (parsed request.seeds)

    @property
    def selection(self) -> str:
        """The split model selection scores: ``dev`` (default) or ``test`` (SUPERB's ASV choice)."""
        return str(self.config.get("selection", "dev"))

    def set_features(self, streamed: bool, pooled: bool) -> None:
        """How features reach the probes (part of the identity: fp16 frames, float32 means and
        streamed float32 layers give slightly different numbers)."""
        self.streamed, self.pooled = streamed, pooled
        self.identity["features"] = features_mode(streamed, pooled, self.request.cache_dtype)
        self.key = run_key(self.identity)

    @property
    def per_rank_batch(self) -> int:
        """Utterances one training process takes per batch: the global batch over the processes;
        with s3prl's buckets (config ``batching``) each process takes a whole bucket, a half one
        for ASR (every full bucket is halved, :func:`~harness.features.loaders.s3prl_asr_buckets`)."""
        batch = batch_utterances(self.config)
        return max(1, batch // self.world_size) if self.task.option("batching") == "random" else batch

    @property
    def heads(self) -> list[tuple[ProbeSpec, int | None]]:
        """(probe, head seed) for every record the run writes; the head seed is None without
        ``seeds`` (the heads start from the run's own seed)."""
        return [(spec, seed) for seed in (self.seeds or [None]) for spec in self.probes]

    def record_seed(self, head_seed: int | None) -> int:
        """The seed a record of head seed ``head_seed`` carries (its file name's ``seedN``)."""
        return self.request.seed if head_seed is None else head_seed

    @property
    def layers(self) -> list[int]:
        """The layers the probes read (only those are extracted or streamed)."""
        return needed_layers(self.probes)

    @property
    def upstream_ref(self) -> UpstreamRef:
        """The upstream as records name it (spec, backend, weights hash, layer names, hop)."""
        info = self.upstream.info
        r = self.request
        return UpstreamRef(spec=r.upstream, backend=info.backend, source=info.source,
                           weights_sha256=info.weights_sha256, random_init=r.random_init,
                           init_seed=r.init_seed if r.random_init else None,
                           layer_names=tuple(info.layer_names), hop=info.hop)

    @property
    def out_dir(self) -> Path:
        """``OUT/UPSTREAM/TASK``: its setting folders hold the records."""
        return Path(self.request.out) / self.upstream_ref.folder / self.task.name

    @property
    def run_dir(self) -> Path:
        """``$HARNESS_HOME/runs/<key>``: the run's checkpoints and lock."""
        return default_home() / "runs" / self.key


def draws_crops(examples: list[Example]) -> bool:
    """Whether training draws crops (then utterance means cannot be cached: each draw differs)."""
    return any(e.crop for e in examples)
