"""Plugin discovery: upstream backends, upstream cards, tasks and pretraining recipes.

Backends, tasks and recipes are found through entry points (groups ``harness.upstreams``,
``harness.tasks`` and ``harness.recipes``), so another package adds its own by declaring
entry points, with no edit to the core. Cards (``upstreams/cards.yaml``) name common models and say
which backend loads them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import metadata, resources
from typing import Any

from harness.errors import HarnessError

UPSTREAM_GROUP = "harness.upstreams"
TASK_GROUP = "harness.tasks"
RECIPE_GROUP = "harness.recipes"


@functools.lru_cache(maxsize=None)
def _entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=group)}


def backend_names() -> list[str]:
    return sorted(_entry_points(UPSTREAM_GROUP))


def load_backend(name: str) -> Any:
    eps = _entry_points(UPSTREAM_GROUP)
    if name not in eps:
        raise HarnessError(f"unknown upstream backend {name!r}; available: {', '.join(sorted(eps))}")
    return eps[name].load()


def task_names() -> list[str]:
    return sorted(_entry_points(TASK_GROUP))


def load_task(name: str) -> Any:
    eps = _entry_points(TASK_GROUP)
    if name not in eps:
        raise HarnessError(f"unknown task {name!r}; available: {', '.join(sorted(eps))}")
    return eps[name].load()


def recipe_names() -> list[str]:
    """Names of the registered pretraining recipes (``harness pretrain --recipe NAME``)."""
    return sorted(_entry_points(RECIPE_GROUP))


def load_recipe(name: str) -> Any:
    """The object a pretraining recipe's entry point names (a
    ``harness.training.recipe.Recipe`` subclass). Raises HarnessError for an unknown name."""
    eps = _entry_points(RECIPE_GROUP)
    if name not in eps:
        raise HarnessError(f"unknown pretraining recipe {name!r}; available: {', '.join(sorted(eps))}")
    return eps[name].load()


@dataclass(frozen=True)
class Card:
    """A named model: where it loads from and what it should look like."""

    name: str
    spec: str  # backend:source used by default
    layers: int
    dim: int | list[int]
    hop: int | None
    licence: str
    description: str
    architecture: str | None = None  # spec that builds the same architecture offline (for --random-init)
    alternatives: tuple[str, ...] = field(default_factory=tuple)


@functools.lru_cache(maxsize=1)
def cards() -> dict[str, Card]:
    import yaml

    text = resources.files("harness.upstreams").joinpath("cards.yaml").read_text()
    out = {}
    for name, body in yaml.safe_load(text).items():
        body = dict(body)
        body["alternatives"] = tuple(body.get("alternatives", ()))
        out[name] = Card(name=name, **body)
    return out


def parse_spec(spec: str) -> tuple[str, str, Card | None]:
    """``NAME`` (a card) or ``BACKEND:SOURCE`` -> (backend, source, card or None)."""
    known = cards()
    if spec in known:
        card = known[spec]
        backend, _, source = card.spec.partition(":")
        return backend, source, card
    backend, sep, source = spec.partition(":")
    if not sep:
        raise HarnessError(
            f"unknown upstream {spec!r}: use a registry name ({', '.join(sorted(known))}) "
            f"or BACKEND:SOURCE with a backend among {', '.join(backend_names())}"
        )
    if backend not in _entry_points(UPSTREAM_GROUP):
        raise HarnessError(f"unknown upstream backend {backend!r} in {spec!r}; available: {', '.join(backend_names())}")
    return backend, source, None


def resolve_checkpoints(items: list[str]) -> list[str]:
    """Globs, paths and names -> upstream specs (HF directories -> hf:, other files ->
    torchaudio:, anything else as given, e.g. a card name)."""
    import glob
    from pathlib import Path

    specs: list[str] = []
    for item in items:
        matches = sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
        if not matches:
            raise HarnessError(f"--checkpoints {item!r} matches nothing")
        for m in matches:
            p = Path(m)
            if p.is_dir() and (p / "config.json").exists():
                specs.append(f"hf:{p}")
            elif p.is_file():
                specs.append(f"torchaudio:{p}")
            else:
                specs.append(m)
    return specs
