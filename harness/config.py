"""Task configuration: defaults from YAML, ``--set key=value`` overrides, and a per-key schema.

Every value is checked before any work starts: unknown keys, wrong types and values out of
range are one-line errors naming the key, the rule and the value given. Keys without an
explicit :class:`Field` take their type from the default value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from harness.errors import HarnessError

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping",
               list: "a list"}


@dataclass(frozen=True)
class Field:
    """Type and bounds of one config value (``minimum``/``maximum`` inclusive, ``above`` exclusive)."""

    kind: type
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    choices: tuple | None = None
    nullable: bool = False

    def describe(self) -> str:
        """The field's type and bounds in words, for error messages (e.g. 'an int >= 1')."""
        parts = [_TYPE_NAMES.get(self.kind, self.kind.__name__)]
        if self.above is not None:
            parts.append(f"> {self.above:g}")
        if self.minimum is not None:
            parts.append(f">= {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        if self.choices:
            parts = [f"one of {', '.join(map(str, self.choices))}"]
        if self.nullable:
            parts.append("or null")
        return " ".join(parts)

    def coerce(self, key: str, value: Any) -> Any:
        """The value converted to the field's type, or a one-line HarnessError."""
        if value is None:
            if self.nullable:
                return None
            raise HarnessError(f"config {key} must be {self.describe()}, got null")
        out = _convert(self.kind, value)
        if out is _INVALID:
            raise HarnessError(f"config {key} must be {self.describe()}, got {value!r}")
        if self.choices and out not in self.choices:
            raise HarnessError(f"config {key} must be {self.describe()}, got {value!r}")
        if self.kind in (int, float):
            if (self.above is not None and not out > self.above) or (self.minimum is not None and out < self.minimum) \
                    or (self.maximum is not None and out > self.maximum):
                raise HarnessError(f"config {key} must be {self.describe()}, got {value!r}")
        return out


_INVALID = object()


def _convert(kind: type, value: Any) -> Any:
    if kind is bool:
        return value if isinstance(value, bool) else _INVALID
    if kind is int:
        if isinstance(value, bool):
            return _INVALID
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return _INVALID
    if kind is float:
        if isinstance(value, bool):
            return _INVALID
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):  # YAML reads "1e-3" (no dot) as a string
            try:
                out = float(value)
            except ValueError:
                return _INVALID
        else:
            return _INVALID
        return out if math.isfinite(out) else _INVALID
    if kind is dict:
        return value if isinstance(value, dict) else _INVALID
    if kind is list:
        return list(value) if isinstance(value, (list, tuple)) else _INVALID
    if kind is str:
        return value if isinstance(value, str) else _INVALID
    return value if isinstance(value, kind) else _INVALID


def infer_field(default: Any) -> Field:
    """The field a default value implies (null defaults accept anything)."""
    if default is None:
        return Field(object, nullable=True)
    return Field(type(default) if type(default) in _TYPE_NAMES else object)


def parse_overrides(pairs: list[str]) -> dict:
    """``["lr=0.01", "head.hidden=256"]`` -> nested dict with YAML-typed values."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HarnessError(f"--set expects key=value, got {pair!r}")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise HarnessError(f"--set {pair}: {part} is given both a value and sub-keys")
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            node[parts[-1]] = value  # not YAML: keep the string, the schema decides
    return out


def merge_config(base: dict, override: dict, path: str = "") -> dict:
    """Deep-merge ``override`` into ``base``; unknown keys are an error (typos hurt)."""
    out = dict(base)
    for key, value in override.items():
        if key not in base:
            known = sorted(base)
            where = f"{path[:-1]} takes no options" if not known and path else f"known: {', '.join(known)}"
            raise HarnessError(f"unknown config key {path + key!r}; {where}")
        if isinstance(value, dict) and isinstance(base[key], dict):
            out[key] = merge_config(base[key], value, path + key + ".")
        else:
            out[key] = value
    return out


def validate(config: dict, defaults: dict, schema: Mapping[str, Field], path: str = "") -> dict:
    """``config`` with every value checked (and converted) against ``schema`` (dotted keys)
    or, for keys the schema does not name, against the type of the default."""
    out = {}
    for key, value in config.items():
        dotted = path + key
        default = defaults.get(key)
        field = schema.get(dotted) or infer_field(default)
        value = field.coerce(dotted, value)
        if isinstance(value, dict) and isinstance(default, dict):
            value = validate(value, default, schema, dotted + ".")
        out[key] = value
    return out


def _value_set(value: Any, what: str, field: Field, single: str) -> list | None:
    """``value`` (a YAML/JSON list, or a comma-separated string: YAML reads ``1e-3`` without a dot
    as a string) as a sorted list of at least two distinct values, each checked by ``field``;
    None for None. ``single``: what to use instead for one value (``{}`` takes it). One-line
    HarnessError otherwise."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise HarnessError(f"{what} must be a comma-separated list or a YAML list, got {value!r}")
    out = []
    for item in items:
        if field.kind is int and isinstance(item, str) and item.lstrip("-").isdigit():
            item = int(item)
        try:
            out.append(field.coerce(what, item))
        except HarnessError:
            raise HarnessError(f"{what}: each value must be {field.describe()}, got {item!r}") from None
    if len(set(out)) != len(out):
        raise HarnessError(f"{what}: a value is listed twice in {value!r}")
    if len(out) < 2:
        raise HarnessError(f"{what} needs at least two values, got {value!r}; for one, use {single.format(out[0])}")
    return sorted(out)


def parse_lr_grid(value: Any) -> list[float] | None:
    """A learning-rate grid (``lr_grid``: ``--lr-grid 1e-4,1e-3,1e-2``, a YAML list, or null)
    -> its learning rates ascending, or None for no grid (null: the task's single ``lr``).

    The order given does not matter (the grid is a set); a rate must be finite and > 0, no
    rate may repeat, and a grid has at least two rates (one rate is ``--set lr=X``). Raises a
    one-line HarnessError otherwise."""
    return _value_set(value, "lr_grid", Field(float, above=0), "--set lr={:g}")


def parse_seeds(value: Any) -> list[int] | None:
    """Head-initialisation seeds trained in one pass (``--seeds 0,1,2``, a YAML list, or null)
    -> the seeds ascending, or None (null: one seed, the run's ``--seed``). Seeds are integers
    >= 0, none repeated, at least two (one is ``--seed N``). Raises a one-line HarnessError."""
    return _value_set(value, "seeds", Field(int, minimum=0), "--seed {}")
