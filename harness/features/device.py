"""Where an upstream runs, and in what precision: one function for every path that runs one.

:func:`choose_device` turns Lightning's ``--accelerator``, ``--devices`` and ``--precision``
into a :class:`Placement` (a ``torch.device`` and a precision). Feature-cache extraction,
``harness extract``, ``harness plan``'s timings, streamed training, the analyses through the
cache and pretraining-target extraction all ask it, so extraction runs where training runs:

- ``--accelerator auto`` (the default, as in Lightning): a CUDA GPU when one is visible,
  else Apple's MPS, else the CPU; ``gpu``/``cuda`` refuses in one line where there is none,
  before any work;
- ``--devices``: as Lightning reads it (``N``: the first N devices; ``0,2``: those ids;
  ``auto``/``-1``: all). Under a launcher (torchrun's ``LOCAL_RANK``, SLURM's
  ``SLURM_LOCALID``) each process takes its own device: the local rank's entry of that list;
  otherwise (one process, or ``ddp_spawn`` before it spawns) the list's first device;
- ``--precision``: Lightning's names for the frozen upstream's forward pass: ``32-true``
  (default, float32), ``bf16-mixed`` and ``16-mixed`` (``torch.autocast`` with bfloat16 or
  float16; layers come out as float32 again). ``16-mixed`` needs a GPU (as in Lightning);
  ``bf16-mixed`` needs a CPU or a GPU that supports bfloat16. The probes themselves always
  train in float32.

The device type (when not ``cpu``) and the precision (when not ``32-true``) are part of the
run identity and of the feature-cache key (:meth:`Placement.identity`): a GPU or a
half-precision forward gives slightly different numbers. The defaults add nothing, so every
key made on the CPU in float32 before these options existed is unchanged.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch

from harness.errors import HarnessError

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
#: Lightning's precision names this harness runs the frozen upstream in (aliases map to them)
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
PRECISION_ALIASES = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}
DEFAULT_PRECISION = "32-true"
_AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def launcher_position() -> tuple[int, int, int]:
    """(global rank, world size, local rank) of this process among those a launcher started
    together (torchrun, SLURM), read before torch.distributed is initialised; (0, 1, 0) when
    no launcher started it. Lightning's own ``ddp`` children (``LOCAL_RANK`` set, no
    torchrun) count as unlaunched for the rank but keep their local rank."""
    env = os.environ
    local = int(env.get("LOCAL_RANK", 0))
    if "RANK" in env and "WORLD_SIZE" in env and "LOCAL_RANK" in env and "TORCHELASTIC_RUN_ID" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), local
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", local))
    return 0, 1, local


def canonical_precision(precision: str | int) -> str:
    """Lightning's precision name as this harness stores it (``"bf16"`` -> ``"bf16-mixed"``);
    HarnessError (one line) for a name it does not run the upstream in."""
    name = PRECISION_ALIASES.get(str(precision), str(precision))
    if name not in PRECISIONS:
        raise HarnessError(f"--precision {precision!r}: choose from {', '.join(PRECISIONS)} (Lightning's names; "
                           "the frozen upstream runs in it, the probes train in float32)")
    return name


def _device_ids(devices: str | int | list, available: int) -> list[int]:
    """The device ids Lightning would use for ``--devices`` on a machine with ``available`` of them."""
    if isinstance(devices, (list, tuple)):
        ids = [int(d) for d in devices]
    else:
        d = str(devices).strip()
        if d in ("auto", "-1"):
            ids = list(range(available))
        elif d.isdigit():
            ids = list(range(int(d)))
        elif all(p.strip().isdigit() for p in d.strip(",").split(",")):
            ids = [int(p) for p in d.split(",") if p.strip()]
        else:
            raise HarnessError(f"--devices {devices!r} is not a number, a comma list of device ids, or auto")
    if not ids:
        raise HarnessError("--devices selects no device")
    missing = [i for i in ids if i >= available]
    if missing:
        raise HarnessError(f"--devices {devices} asks for GPU {missing[0]} but this machine shows {available} "
                           f"(ids 0-{available - 1}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    return ids


def _resolve_accelerator(accelerator: str) -> str:
    """``cpu``, ``cuda`` or ``mps`` for an ``--accelerator`` value (one-line error when the
    asked-for kind is not here)."""
    name = str(accelerator).lower()
    if name not in ACCELERATORS:
        raise HarnessError(f"--accelerator {accelerator!r}: choose from {', '.join(ACCELERATORS)}")
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else ("mps" if mps else "cpu")
    if name in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise HarnessError(f"--accelerator {accelerator}: no CUDA GPU is visible to this process "
                               "(torch.cuda.is_available() is false); use --accelerator cpu, or auto to take a GPU "
                               "only where there is one")
        return "cuda"
    if name == "mps" and not mps:
        raise HarnessError("--accelerator mps: Apple's MPS backend is not available here; use cpu or auto")
    return name


@dataclass(frozen=True)
class Placement:
    """Where the upstream runs (``device``), in what precision (a Lightning name), and the
    accelerator name Lightning's Trainer gets so that training runs there too."""

    device: torch.device
    precision: str = DEFAULT_PRECISION

    @property
    def accelerator(self) -> str:
        """``cpu``, ``cuda`` or ``mps``: what Lightning's Trainer is given."""
        return self.device.type

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bfloat16 or float16 for the mixed precisions, None for float32."""
        return _AUTOCAST[self.precision]

    @property
    def pin_memory(self) -> bool:
        """Pin host memory (page-locked buffers make host-to-GPU copies asynchronous)."""
        return self.device.type == "cuda"

    def autocast(self):
        """The context the upstream's forward runs in: ``torch.autocast`` for the mixed
        precisions, nothing for ``32-true``."""
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on this device; asynchronous from pinned memory (``non_blocking``)."""
        return tensor.to(self.device, non_blocking=True)

    def synchronize(self) -> None:
        """Wait for the device's queued work (for timings; a no-op on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def identity(self) -> dict:
        """What this placement adds to run and cache keys: ``device`` (its type) when not the
        CPU, ``precision`` when not ``32-true``; ``{}`` for the CPU in float32, so keys made
        before these options existed stay valid."""
        out = {}
        if self.device.type != "cpu":
            out["device"] = self.device.type
        if self.precision != DEFAULT_PRECISION:
            out["precision"] = self.precision
        return out

    def describe(self) -> str:
        """The device in words for messages, e.g. ``cuda:0 (NVIDIA H200), bf16-mixed`` or
        ``cpu (2 threads), 32-true``."""
        if self.device.type == "cuda":
            where = f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        elif self.device.type == "cpu":
            where = f"cpu ({torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)})"
        else:
            where = str(self.device)
        return f"{where}, {self.precision}"

    def workers(self, requested: int | None) -> int:
        """DataLoader processes decoding audio: ``requested`` when given; otherwise none on the
        CPU (decoding is cheap next to a CPU forward pass, and workers would take its cores)
        and up to 4 (half the cores) beside a GPU, so the GPU never waits on the disk."""
        if requested is not None:
            if requested < 0:
                raise HarnessError(f"--workers must be 0 or more, got {requested}")
            return requested
        if self.device.type == "cpu":
            return 0
        return max(1, min(4, (os.cpu_count() or 2) // 2))

    @contextlib.contextmanager
    def placed(self, upstream: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The upstream on this device in eval mode for the duration of the block, then back
        where it was (models stay on the CPU between computations, so code that calls them
        directly with CPU tensors keeps working)."""
        before = next((t.device for t in list(upstream.parameters()) + list(upstream.buffers())),
                      torch.device("cpu"))
        moved = before != self.device
        if moved:
            upstream.to(self.device)
        upstream.eval()
        try:
            yield upstream
        finally:
            if moved:
                upstream.to(before)


def choose_device(accelerator: str = "auto", devices: str | int | list = 1,
                  precision: str | int = DEFAULT_PRECISION) -> Placement:
    """The placement of every upstream forward pass for these Lightning settings (the module
    docstring gives the rules).

    ``accelerator``: auto | cpu | gpu | cuda | mps; ``devices``: Lightning's ``--devices``;
    ``precision``: 32-true | bf16-mixed | 16-mixed (or 32, bf16, 16). Raises HarnessError
    (one line) when the accelerator asked for is not here, ``--devices`` names a GPU that is
    not visible or more local processes than it lists, or the precision cannot run there.
    """
    precision = canonical_precision(precision)
    kind = _resolve_accelerator(accelerator)
    if kind == "cuda":
        ids = _device_ids(devices, torch.cuda.device_count())
        local = launcher_position()[2]
        if local >= len(ids):
            raise HarnessError(f"this process has local rank {local} but --devices {devices} lists {len(ids)} GPU(s); "
                               "give the launcher as many processes per node as --devices")
        device = torch.device("cuda", ids[local])
        if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
            raise HarnessError(f"--precision bf16-mixed: {torch.cuda.get_device_name(device)} has no bfloat16 "
                               "support; use --precision 16-mixed")
    else:
        device = torch.device(kind)
        if precision == "16-mixed" and kind == "cpu":
            raise HarnessError("--precision 16-mixed needs a GPU (as in Lightning); on the CPU use bf16-mixed or "
                               "32-true")
        if precision == "bf16-mixed" and kind == "mps":
            raise HarnessError("--precision bf16-mixed is not available on MPS; use 16-mixed or 32-true")
    return Placement(device, precision)
