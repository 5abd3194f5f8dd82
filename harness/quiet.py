"""Third-party chatter off the user's terminal, in one place.

Lightning's start-up banners and cloud tips, transformers' load reports and advisory
notes, SpeechBrain's info lines and the deprecation warnings of dependencies are not the
user's concern; the warnings that matter (the harness's own, and Lightning's about real
problems) stay. Called by the CLI at start-up, by the probing engine before training, and
by the Lightning module at import (``ddp_spawn`` workers start a fresh interpreter that
never ran the CLI).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric", "speechbrain")

_EXPECTED_WARNINGS = (
    # DataLoader workers are chosen deliberately (features come memory-mapped from the cache)
    r".*does not have many workers.*",
    r".*The number of training batches.*is smaller than the logging interval.*",
    # spawned DDP workers hand their weights back in a temporary checkpoint Lightning writes itself
    r".*`weights_only` was not set.*",
    # a streamed run (--cache none) holds the frozen upstream in eval mode on purpose
    r".*module\(s\) in eval mode at the start of training.*",
)


def quiet_third_party(dependency_warnings: bool = True) -> None:
    """Silence what is listed in the module docstring (idempotent).

    ``dependency_warnings``: also ignore User/Future/Deprecation warnings raised from modules
    outside ``harness`` (the CLI does; a library caller may want to see them)."""
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    if dependency_warnings:
        for category in (UserWarning, FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=r"(?!harness)")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@contextlib.contextmanager
def no_stdout():
    """Gloo (CPU DDP) prints a connection line per rank on the C++ side's stdout; the run's
    results are printed afterwards, so stdout stays clean for them."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
