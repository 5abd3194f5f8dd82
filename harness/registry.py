"""Plugin discovery: upstream backends, upstream cards, tasks, analyses and pretraining recipes.

Backends, tasks, analyses and recipes are found through entry points (groups
``harness.upstreams``, ``harness.tasks``, ``harness.analyses`` and ``harness.recipes``), so
another package adds its own by declaring entry points, with no edit to the core. Cards
(``upstreams/cards.yaml``) name common models and say which backend loads them.
"""

from __future__ import annotations

import functools
import glob
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError

UPSTREAM_GROUP = "harness.upstreams"
TASK_GROUP = "harness.tasks"
ANALYSIS_GROUP = "harness.analyses"
RECIPE_GROUP = "harness.recipes"


@functools.lru_cache(maxsize=None)
def _entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=group)}


def backend_names() -> list[str]:
    """Names of the upstream backends registered in the ``harness.upstreams`` entry-point group."""
    return sorted(_entry_points(UPSTREAM_GROUP))


def _load(group: str, name: str, what: str) -> Any:
    """The object an entry point of ``group`` names, or a one-line error listing the known names."""
    eps = _entry_points(group)
    if name not in eps:
        raise HarnessError(f"unknown {what} {name!r}; available: {', '.join(sorted(eps))}")
    return eps[name].load()


def load_backend(name: str) -> Any:
    """The backend class registered under ``name`` (an :class:`~harness.upstream.Upstream`
    subclass); one-line HarnessError listing the known names otherwise."""
    return _load(UPSTREAM_GROUP, name, "upstream backend")


def task_names() -> list[str]:
    """Names of the tasks registered in the ``harness.tasks`` entry-point group."""
    return sorted(_entry_points(TASK_GROUP))


def load_task(name: str) -> Any:
    """The task class registered under ``name`` (a :class:`~harness.task.Task` subclass);
    one-line HarnessError listing the known names otherwise."""
    return _load(TASK_GROUP, name, "task")


def analysis_names() -> list[str]:
    """Names of the analyses registered in the ``harness.analyses`` entry-point group."""
    return sorted(_entry_points(ANALYSIS_GROUP))


def load_analysis(name: str) -> Any:
    """The analysis class registered as ``name`` (see :mod:`harness.analysis.base`)."""
    return _load(ANALYSIS_GROUP, name, "analysis")


def recipe_names() -> list[str]:
    """Names of the registered pretraining recipes (``harness pretrain --recipe NAME``)."""
    return sorted(_entry_points(RECIPE_GROUP))


def load_recipe(name: str) -> Any:
    """The object a pretraining recipe's entry point names (a
    ``harness.training.recipe.Recipe`` subclass). Raises HarnessError for an unknown name."""
    return _load(RECIPE_GROUP, name, "pretraining recipe")


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
    """The named models of ``upstreams/cards.yaml``, by name (read once)."""
    text = resources.files("harness.upstreams").joinpath("cards.yaml").read_text()
    out = {}
    for name, body in yaml.safe_load(text).items():
        body = dict(body)
        body["alternatives"] = tuple(body.get("alternatives", ()))
        out[name] = Card(name=name, **body)
    return out


def format_cards() -> str:
    """The table ``harness upstreams`` prints: every card's name, spec, layer count, dimension,
    hop (samples) and licence, then the backends ``BACKEND:SOURCE`` specs may name."""
    rows = [(c.name, c.spec, str(c.layers), str(c.dim if isinstance(c.dim, int) else "/".join(map(str, c.dim))),
             str(c.hop or "-"), c.licence) for c in cards().values()]
    head = ("name", "spec", "layers", "dim", "hop", "licence")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines) + f"\n\nbackends for BACKEND:SOURCE specs: {', '.join(backend_names())}"


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
