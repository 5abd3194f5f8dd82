"""Fail fast without a network: probe before any download instead of waiting on retries."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants

from harness.errors import HarnessError


def network_available(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to ``host`` (or to the configured HTTPS proxy)?

    ``HARNESS_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) means no, without trying.
    """
    if os.environ.get("HARNESS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("ALL_PROXY")
    if proxy:
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parsed.hostname or host, parsed.port or 80
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_network(model: str, host: str, fetch_hint: str) -> None:
    """Raise a one-line error naming the model and what to do when ``host`` is unreachable."""
    if not network_available(host):
        raise HarnessError(f"{model} is not cached here and {host} cannot be reached (no network): {fetch_hint}")


def hub_cache_folder(repo_id: str) -> str:
    """Where the HuggingFace hub keeps ``repo_id`` on this machine, honouring ``HF_HUB_CACHE`` and
    ``HF_HOME`` as huggingface_hub itself does (for the line that says what to copy here)."""
    return str(Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}")
