"""What a record's numbers depend on beyond its identity: package versions and the machine.

The run identity (:mod:`harness.probing.identity`) makes the same experiment the same key on
every machine. "Same seed, same inputs, same versions -> same numbers" holds bit for bit when,
in addition, the machine computes the same floating-point operations in the same order: the
same CPU vector capability (torch's AVX2 / AVX512 kernels), the same BLAS, and the same number
of intra-op threads (each splits reductions differently). Neither the launch path nor earlier
runs in one process change a run's numbers (tested: a run inside a benchmark equals the same run
alone). Measured on the committed ``fbank`` / ``ic`` run (key ``e20e25527f820ce1``, AMD EPYC,
AVX512, MKL): 2 threads give dev 0.1625 / test 0.1750 at step 1,800, twice in a row and as in the
committed record; 1 thread on the same machine gives dev 0.1656 / test 0.1500; another machine
reported dev 0.1406 / test 0.1437 at step 1,200. That probe sits near chance, where a change in
the last bit of a gradient moves which step is best on dev; well-separated results move far less.

Each record therefore carries :func:`machine_fingerprint`; a record found finished on a machine
with another fingerprint is reused as that machine's result, with a line saying so. To repeat a
record bit for bit, run on the same kind of CPU with ``OMP_NUM_THREADS`` set to the record's
``machine.threads``.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib import metadata

import torch

from harness import __version__

NUMERIC_PACKAGES = ("torch", "torchaudio", "pytorch-lightning", "transformers", "s3prl", "speechbrain", "numpy",
                    "jiwer")


def package_versions() -> dict:
    """Versions of Python, the harness and the packages that change numbers (kept in every record)."""
    out = {"python": platform.python_version(), "harness": __version__}
    for name in NUMERIC_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    for part in torch.__config__.show().replace("\n", ",").split(","):
        if part.strip().startswith("BLAS_INFO="):
            return part.strip().split("=", 1)[1]
    return "unknown"


def machine_fingerprint(accelerator: str = "cpu") -> dict:
    """The machine facts that change floating-point results (see the module docstring): CPU model,
    torch's CPU vector capability, BLAS, intra-op threads, and the CUDA device when one trains."""
    out = {"cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "blas": _blas(),
           "threads": torch.get_num_threads(), "machine": platform.machine()}
    if accelerator not in ("cpu",) and torch.cuda.is_available():
        out["cuda_device"] = torch.cuda.get_device_name(0)
    return out


def same_machine(a: dict | None, b: dict | None) -> bool:
    """True when two fingerprints promise bit-identical numbers (records without one: unknown, False)."""
    return bool(a) and bool(b) and a == b


def describe(fingerprint: dict | None) -> str:
    """A fingerprint in a few words, for the line that says a record came from another machine."""
    if not fingerprint:
        return "an unrecorded machine"
    return (f"{fingerprint.get('cpu', '?')} ({fingerprint.get('cpu_capability', '?')}, {fingerprint.get('blas', '?')}, "
            f"{fingerprint.get('threads', '?')} threads)")
