"""The Lightning module: picklable (spawned DDP workers), selection state travels in its state dict."""

from __future__ import annotations

import pickle

import torch

from harness.probing.module import ProbeModule
from harness.probing.probes import parse_layers
from harness.registry import load_task
from harness.task import Example


def _module(seed: int = 0) -> ProbeModule:
    torch.manual_seed(seed)
    cls = load_task("sid")
    task = cls(cls.default_config())
    task.prepare([Example(f"u{i}", None, (f"spk{i % 3}",)) for i in range(6)])
    dev = [Example(f"d{i}", None, (f"spk{i % 3}",)) for i in range(4)]
    return ProbeModule(task, parse_layers("all", 2), [5, 5], 160, task.config, dev)


def test_the_module_pickles_for_spawned_workers():
    module = _module()
    clone = pickle.loads(pickle.dumps(module))
    assert list(clone.probes) == ["layer_0", "layer_1", "weighted"]
    for a, b in zip(module.state_dict().values(), clone.state_dict().values()):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)


def test_best_states_and_curves_travel_in_the_state_dict():
    module = _module()
    preds = {key: {f"d{i}": (f"spk{i % 3}",) if key == "layer_1" else ("spk0",) for i in range(4)}
             for key in module.probes}
    module.select(5, preds)
    assert module.best["layer_1"]["dev"] == 1.0 and module.best["layer_0"]["dev"] == 0.5
    fresh = _module(seed=1)
    fresh.load_state_dict(module.state_dict())
    assert fresh.curve == module.curve and fresh.best["layer_1"]["step"] == 5
    for key in module.probes:
        for name, value in module.best[key]["state"].items():
            assert torch.equal(fresh.best[key]["state"][name], value)
    # selection keeps the first best on ties and follows the metric's direction
    module.select(9, preds)
    assert module.best["layer_1"]["step"] == 5 and module.last_validated_step == 9
