"""The shared training loop (harness.training.loop.fit) on a toy objective, and the schedules."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from harness.fsutil import atomic_dir
from harness.training import schedules
from harness.training.loop import Objective, fit


class Toy(Objective):
    """Least squares with dropout: every step draws from the step's generator (inputs), the
    global torch generator (dropout) and numpy (label noise), as the recipes do."""

    description = "toy"
    iteration = 1

    def __init__(self, die_at: int | None = None, checkpoint_every: int = 4) -> None:
        self.steps, self.checkpoint_every, self.log_every, self.grad_clip = 10, checkpoint_every, 3, 1.0
        self.die_at = die_at

    def setup(self, resumed, folder):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 1))
        self.params = list(self.model.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=0.0)
        if resumed is not None:
            self.model.load_state_dict(resumed["model"])
            self.optimizer.load_state_dict(resumed["optimizer"])

    def step_seed(self, step):
        return 1000 + step

    def lr_at(self, step):
        return schedules.warmup_cosine(step, 0.05, 2, self.steps)

    def compute_objectives(self, step, generator):
        if step == self.die_at:
            raise KeyboardInterrupt
        x = torch.randn(16, 4, generator=generator)
        y = x.sum(1, keepdim=True) + 0.01 * torch.from_numpy(np.random.randn(16, 1)).float()
        return ((self.model(x) - y) ** 2).mean(), {"examples": 16}

    def log_row(self, window, step):
        return {"examples": window["examples"]}

    def meta(self, step, log):
        return {"step": step, "loss": log[-1]["loss"] if log else None}

    def save(self, folder, meta):
        with atomic_dir(folder) as tmp:
            torch.save(self.model.state_dict(), tmp / "weights.pt")
            (tmp / "meta.json").write_text(json.dumps(meta))

    def state(self, step, checkpoint):
        return {"step": step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}


def _rows(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.pop("seconds", None)
    return rows


def _weights(final):
    return torch.load(final / "weights.pt", weights_only=True)


def test_fit_logs_windows_checkpoints_and_uses_the_schedule(tmp_path):
    final = fit(Toy(), tmp_path / "it1", tmp_path / "log.jsonl", progress=False)
    assert final == tmp_path / "it1" / "final"
    assert sorted(p.name for p in (tmp_path / "it1").glob("step_*")) == ["step_000004", "step_000008", "step_000010"]
    rows = _rows(tmp_path / "log.jsonl")
    assert [r["step"] for r in rows] == [3, 6, 9, 10]
    assert [r["examples"] for r in rows] == [48, 48, 48, 16]  # sums over the window since the last row
    assert all(r["iteration"] == 1 for r in rows)
    assert [r["lr"] for r in rows] == [round(schedules.warmup_cosine(r["step"] - 1, 0.05, 2, 10), 8) for r in rows]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert json.loads((final / "meta.json").read_text()) == {"step": 10, "loss": rows[-1]["loss"]}


def test_an_interrupted_fit_resumes_to_the_same_weights_and_log(tmp_path):
    straight = fit(Toy(checkpoint_every=6), tmp_path / "a" / "it1", tmp_path / "a" / "log.jsonl", progress=False)
    with pytest.raises(KeyboardInterrupt):  # dies in step 8 (0-based 7), after the step-6 checkpoint
        fit(Toy(die_at=7, checkpoint_every=6), tmp_path / "b" / "it1", tmp_path / "b" / "log.jsonl", progress=False)
    assert torch.load(tmp_path / "b" / "it1" / "state.pt", weights_only=True)["step"] == 6
    resumed = fit(Toy(checkpoint_every=6), tmp_path / "b" / "it1", tmp_path / "b" / "log.jsonl", progress=False)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _rows(tmp_path / "a" / "log.jsonl") == _rows(tmp_path / "b" / "log.jsonl")  # no row twice, none lost


def test_a_log_window_cut_by_a_resume_covers_the_steps_after_it(tmp_path):
    """The window sums are not in state.pt: resumed at step 4 (log every 3), the row of step 6
    averages steps 5 and 6 only. The weights are the same as without the interruption."""
    straight = fit(Toy(), tmp_path / "a" / "it1", tmp_path / "a" / "log.jsonl", progress=False)
    with pytest.raises(KeyboardInterrupt):
        fit(Toy(die_at=6), tmp_path / "b" / "it1", tmp_path / "b" / "log.jsonl", progress=False)
    resumed = fit(Toy(), tmp_path / "b" / "it1", tmp_path / "b" / "log.jsonl", progress=False)
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["examples"] for r in _rows(tmp_path / "b" / "log.jsonl")] == [48, 32, 48, 16]


def test_a_resume_keeps_other_stages_rows(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"iteration": 0, "step": 50, "loss": 1.0}) + "\n")
    fit(Toy(), tmp_path / "it1", log, progress=False)
    rows = _rows(log)
    assert rows[0] == {"iteration": 0, "step": 50, "loss": 1.0} and [r["step"] for r in rows[1:]] == [3, 6, 9, 10]


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    lr = [schedules.warmup_cosine(s, 2.0, 4, 20) for s in range(21)]
    assert lr[:4] == [0.5, 1.0, 1.5, 2.0]
    assert lr[4] == 2.0 and lr[20] == 0.0
    assert all(a > b for a, b in zip(lr[4:20], lr[5:21]))
    assert lr[12] == pytest.approx(1.0)  # half way through the decay: half the peak


def test_warmup_linear_decays_linearly_to_zero_and_stays_there():
    lr = [schedules.warmup_linear(s, 1.0, 2, 10) for s in range(12)]
    assert lr[:2] == [0.5, 1.0]
    assert lr[6] == pytest.approx(0.5) and lr[10] == 0.0 and lr[11] == 0.0


def test_teacher_momentum_and_gumbel_temperature_reach_their_ends():
    assert schedules.cosine_to_one(0, 0.996, 100) == pytest.approx(0.996)
    assert schedules.cosine_to_one(100, 0.996, 100) == 1.0
    assert schedules.exponential_decay(0, 2.0, 0.5, 100) == 2.0
    assert schedules.exponential_decay(50, 2.0, 0.5, 100) == pytest.approx(1.0)  # geometric mean half way
    assert schedules.exponential_decay(200, 2.0, 0.5, 100) == 0.5
    assert math.isclose(schedules.exponential_decay(100, 2.0, 0.5, 100), 0.5)
