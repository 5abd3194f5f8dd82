"""Named protocols: which recipe a task runs under (issue 22).

A protocol is a named overlay on a task's defaults:

- ``quick``: ``NAME.yaml`` beside the task's module, unchanged: the CPU budget for the
  embedded corpus (lr 1e-3, 1.5k-3k steps). Every committed record was made with it, and
  because a run's identity comes from the resolved config (never from the protocol's
  name), those records keep their identities.
- ``superb``: ``NAME.yaml`` overlaid with ``NAME.superb.yaml`` beside it: s3prl 0.4.18's
  published downstream recipe (``s3prl/downstream/<task>/config.yaml``, ``expert.py``,
  ``dataset.py``), each value's source named in the overlay.

A plugin ships its own protocols the same way (``NAME.<protocol>.yaml`` beside its module).
Without ``--protocol`` a run takes ``superb`` when the task has it and ``quick`` otherwise
(tasks SUPERB does not have, such as ``word``).

Optional keys. An overlay (or ``--set``) may set keys ``NAME.yaml`` does not hold, when the
task declares them in :attr:`~harness.task.Task.optional_config` with a *neutral* value:
what the harness does without the key (Adam, no gradient accumulation, dev-set selection,
no crops ...). A key at its neutral value is left out of the resolved config, so stating a
default never changes a run's identity, and ``quick`` resolves to exactly ``NAME.yaml``.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.config import merge_config, parse_lr_grid, validate
from harness.errors import HarnessError
from harness.registry import load_task

#: protocol name -> what it is, in words
PROTOCOLS = {
    "superb": "s3prl 0.4.18's published SUPERB downstream recipe",
    "quick": "the CPU budget for the embedded corpus, the task's NAME.yaml",
}
DEFAULT_PROTOCOL = "superb"
BASE_PROTOCOL = "quick"  # NAME.yaml itself: no overlay file
#: a learning-rate grid (``--lr-grid``): any task, protocol overlay or ``--set`` may give it; it is
#: parsed by :func:`harness.config.parse_lr_grid` and kept in the config only when set
GRID_KEY = "lr_grid"


def overlay_path(task_cls: type, protocol: str) -> Path:
    """``NAME.<protocol>.yaml`` beside the module that defines ``task_cls``."""
    return Path(inspect.getfile(task_cls)).with_name(f"{task_cls.name}.{protocol}.yaml")


def task_protocols(task_cls: type) -> list[str]:
    """Protocols ``task_cls`` has: ``quick`` always, plus one per overlay file beside its module."""
    found = sorted(p.name[len(task_cls.name) + 1: -len(".yaml")]
                   for p in Path(inspect.getfile(task_cls)).parent.glob(f"{task_cls.name}.*.yaml"))
    return [BASE_PROTOCOL] + [p for p in found if p and "." not in p and p != BASE_PROTOCOL]


def choose_protocol(task_cls: type, protocol: str | None) -> str:
    """The protocol a run uses: ``protocol`` if the task has it (one-line HarnessError if not);
    when None, ``superb`` where the task has it, else ``quick``."""
    have = task_protocols(task_cls)
    if protocol is None:
        return DEFAULT_PROTOCOL if DEFAULT_PROTOCOL in have else BASE_PROTOCOL
    if protocol not in have:
        raise HarnessError(f"task {task_cls.name} has no protocol {protocol!r} (no {overlay_path(task_cls, protocol).name} "
                           f"beside its module); available: {', '.join(have)}")
    return protocol


def _dotted(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_dotted(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def _set_dotted(d: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


def _drop_dotted(d: dict, key: str) -> None:
    *parents, last = key.split(".")
    for p in parents:
        d = d.get(p)
        if not isinstance(d, dict):
            return
    d.pop(last, None)


def _has_dotted(d: dict, key: str) -> bool:
    *parents, last = key.split(".")
    for p in parents:
        d = d.get(p)
        if not isinstance(d, dict):
            return False
    return last in d


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b


@dataclass
class Recipe:
    """A task's resolved recipe under a protocol.

    ``config``: what the run uses and its identity hashes (optional keys at their neutral
    value left out); ``neutral``: those left-out keys with their values (shown by
    :meth:`format`, never hashed); ``sources``: where each dotted key's value came from
    (``NAME.yaml``, ``NAME.superb.yaml``, ``--set``, ``--max-steps`` or ``neutral``).
    """

    task: str
    protocol: str
    config: dict
    neutral: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def full(self) -> dict:
        """The config with the neutral values filled in (what the run does, every key)."""
        out = copy.deepcopy(self.config)
        for key, value in self.neutral.items():
            _set_dotted(out, key, value)
        return out

    def format(self) -> str:
        """The recipe as ``harness config`` prints it: one ``key: value  (source)`` line per
        setting, then the step budget in words (optimizer steps x batches)."""
        c = self.full
        lines = [f"task {self.task} · protocol {self.protocol} ({PROTOCOLS.get(self.protocol, 'a plugin protocol')})"]
        flat = _dotted(c)
        width = max(len(k) for k in flat) if flat else 0
        for key in sorted(flat):
            value = flat[key]
            text = "{}" if value == {} else yaml.safe_dump(value, default_flow_style=True, width=200).strip()
            text = text[:-4].strip() if text.endswith("\n...") or text.endswith(" ...") else text
            lines.append(f"  {key:<{width}}  {text:<14}  ({self.sources.get(key, 'neutral')})")
        lines.append("  " + budget_line(c))
        return "\n".join(lines)


def batch_utterances(config: dict) -> int:
    """Utterances in one training batch of ``config``: ``batch_size``, or half of it with s3prl's
    ASR buckets (``batching: s3prl_asr`` halves every full bucket of ``batch_size``:
    :func:`harness.features.loaders.s3prl_asr_buckets`)."""
    batch = int(config["batch_size"])
    return batch // 2 if config.get("batching") == "s3prl_asr" and batch >= 2 else batch


def budget_line(config: dict) -> str:
    """'200,000 optimizer steps of 8 x 4 accumulated = 32 utterances, validation every 5,000'."""
    acc = int(config.get("accumulate", 1) or 1)
    batch = batch_utterances(config)
    batching = config.get("batching", "random")
    note = ""
    if batch != int(config["batch_size"]):
        note = f" (s3prl's length-sorted buckets of {config['batch_size']}, halved)"
    elif batching != "random":
        note = " (s3prl's length-sorted buckets)"
    per_step = f"{batch} utterances" if acc == 1 else f"{batch} x {acc} accumulated = {batch * acc} utterances"
    per_step += note
    return (f"{int(config['max_steps']):,} optimizer steps of {per_step}, validation every "
            f"{int(config['val_interval']):,} optimizer steps")


def resolve_recipe(task_cls: type, protocol: str | None = None, overrides: dict | None = None,
                   max_steps: int | None = None) -> Recipe:
    """The task's recipe under ``protocol`` (None: :func:`choose_protocol`'s default), with
    ``overrides`` (``--set``) and ``max_steps`` applied and every value checked against the
    task's schema; one-line HarnessError for unknown keys, bad values or a missing protocol.
    """
    name = choose_protocol(task_cls, protocol)
    base = task_cls.default_config()
    overrides = dict(overrides or {})
    grid = base.pop(GRID_KEY, None)
    grid_source = f"{task_cls.name}.yaml"
    optional = dict(getattr(task_cls, "optional_config", {}) or {})
    extended = copy.deepcopy(base)
    for key, value in optional.items():
        if not _has_dotted(base, key):
            _set_dotted(extended, key, copy.deepcopy(value))
    sources = {k: f"{task_cls.name}.yaml" for k in _dotted(base)}
    layers = []
    if name != BASE_PROTOCOL:
        path = overlay_path(task_cls, name)
        try:
            overlay = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise HarnessError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(overlay, dict):
            raise HarnessError(f"{path} must be a mapping of config keys")
        if GRID_KEY in overlay:
            overlay = dict(overlay)
            grid, grid_source = overlay.pop(GRID_KEY), path.name
        layers.append((overlay, path.name))
    if GRID_KEY in overrides:
        grid, grid_source = overrides.pop(GRID_KEY), "--set"
    if overrides:
        layers.append((overrides, "--set"))
    config = extended
    for layer, source in layers:
        config = merge_config(config, layer)
        sources.update({k: source for k in _dotted(layer)})
    if max_steps is not None:
        config["max_steps"] = max_steps
        sources["max_steps"] = "--max-steps"
    config = validate(config, extended, task_cls.config_schema)
    neutral = {}
    for key, value in optional.items():
        if _has_dotted(base, key):
            continue
        current = config
        for part in key.split("."):
            current = current[part]
        if _same(current, value):
            neutral[key] = current
            _drop_dotted(config, key)
    grid = parse_lr_grid(grid)
    if grid is not None:  # absent without a grid, so runs without one keep their identity
        config[GRID_KEY] = grid
        sources[GRID_KEY] = grid_source
    return Recipe(task_cls.name, name, config, neutral, sources)


def recipe(task: str, protocol: str | None = None, overrides: dict | None = None,
           max_steps: int | None = None) -> Recipe:
    """:func:`resolve_recipe` for a task given by name (``harness config``)."""
    return resolve_recipe(load_task(task), protocol, overrides, max_steps)
