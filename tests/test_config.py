"""Task configuration: defaults, overrides and the per-key schema."""

from __future__ import annotations

import pytest

from harness.config import Field, merge_config, parse_overrides, validate
from harness.errors import HarnessError
from harness.registry import load_task
from harness.task import task_config


def test_overrides_are_yaml_typed_and_nested():
    assert parse_overrides(["lr=0.01", "head.proj=64", "layer_norm=true", "splits.dev=valid"]) == {
        "lr": 0.01, "head": {"proj": 64}, "layer_norm": True, "splits": {"dev": "valid"}}
    with pytest.raises(HarnessError, match="key=value"):
        parse_overrides(["lr"])


def test_every_task_default_passes_its_own_schema():
    for name in ("asr", "pr", "phone", "ic", "sid"):
        cls = load_task(name)
        assert task_config(cls) == cls.default_config()


@pytest.mark.parametrize("override,message", [
    ({"lr": 0}, "lr must be a number > 0"),
    ({"lr": "fast"}, "lr must be a number"),
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"batch_size": True}, "batch_size must be an integer"),
    ({"val_interval": -1}, "val_interval must be an integer >= 1"),
    ({"grad_clip": -1.0}, "grad_clip must be a number > 0 or null"),
    ({"metric": "per"}, "metric must be one of wer, cer"),
    ({"head": {"dropout": 1.5}}, "head.dropout must be a number >= 0 <= 1"),
    ({"head": {"proj": 0}}, "head.proj must be an integer >= 1"),
    ({"head": 3}, "head must be a mapping"),
])
def test_values_out_of_type_or_range_are_one_line_errors(override, message):
    with pytest.raises(HarnessError, match=message):
        task_config(load_task("asr"), override)


def test_conversions_that_are_unambiguous_are_accepted():
    cfg = task_config(load_task("asr"), {"lr": "1e-4", "batch_size": 8.0, "grad_clip": None})
    assert cfg["lr"] == 1e-4 and cfg["batch_size"] == 8 and isinstance(cfg["batch_size"], int)
    assert cfg["grad_clip"] is None


def test_unknown_keys_name_the_known_ones():
    with pytest.raises(HarnessError, match="known: proj"):
        merge_config({"head": {"proj": 1}}, {"head": {"hidden": 2}})
    with pytest.raises(HarnessError, match="head takes no options"):
        merge_config({"head": {}}, {"head": {"hidden": 2}})
    assert validate({"x": 1}, {"x": 2}, {"x": Field(int, maximum=3)}) == {"x": 1}
