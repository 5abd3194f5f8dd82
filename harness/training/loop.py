"""The one training loop of the harness: pretraining recipes and CTC fine-tuning run through it.

In the spirit of SpeechBrain's ``Brain.fit``: an `Objective` says what one step computes
(``compute_objectives``), what happens after the optimizer step (``on_step_end``: e.g. a
teacher's moving average), what a log row adds, how a checkpoint and the resume state are
written; `fit` owns everything else, the same for every recipe:

- per-step seeding: a ``torch.Generator`` seeded with ``objective.step_seed(step)`` for the
  recipe's own draws (batches, crops, masks), and the global torch and numpy generators
  seeded with the same number (dropout, and masks or distractors HuggingFace draws itself);
- the learning rate of the step from ``objective.lr_at(step)``;
- ``zero_grad``, ``backward``, gradient-norm clipping, ``optimizer.step``;
- window statistics: every number a step returns is summed until the next log row;
- ``log.jsonl`` rows every ``log_every`` steps and at the last step;
- a checkpoint folder ``step_NNNNNN``, ``state.pt`` and the log every ``checkpoint_every``
  steps and at the last step, then the final model;
- resuming: when ``state.pt`` exists, the objective rebuilds itself from it, the log keeps
  the rows up to that step, and the loop continues from there.

Because every draw of step s depends only on ``step_seed(s)`` and the state saved at a
checkpoint, a run interrupted after any checkpoint and resumed ends with the same weights,
bit for bit, as an uninterrupted one. Its log is the same too when ``log_every`` divides
``checkpoint_every``; otherwise the first row after the resume averages only the steps
since the resume (the window's sums are not part of ``state.pt``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from harness.training.runs import read_log, save_state, write_log

STATE = "state.pt"


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint after ``step`` steps (``step_000300``)."""
    return f"step_{step:06d}"


class Objective:
    """What a training run computes; `fit` runs it. Subclasses set the attributes (most
    through this constructor, ``params`` and ``optimizer`` in `setup`) and implement the
    hooks marked below.

    Attributes: ``steps`` (total optimizer steps), ``checkpoint_every``, ``log_every``,
    ``grad_clip`` (max gradient L2 norm), ``params`` (the parameters clipped; after `setup`),
    ``optimizer`` (after `setup`), ``description`` (progress-bar label), ``iteration`` (the
    ``iteration`` field of this run's log rows, or None for rows without one).
    """

    steps: int
    checkpoint_every: int
    log_every: int
    grad_clip: float
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    description: str = "training"
    iteration: int | None = None

    def __init__(self, recipe: dict, steps: int | None = None, grad_clip: float | None = None) -> None:
        """The run's sizes from a recipe's usual keys: ``seed``, ``steps``, ``checkpoint_every``,
        ``log_every`` and ``optim.grad_clip`` (``steps``/``grad_clip`` given where a recipe
        keeps them elsewhere). The recipe is kept as ``self.recipe``."""
        self.recipe = recipe
        self.seed = int(recipe["seed"])
        self.steps = int(recipe["steps"] if steps is None else steps)
        self.grad_clip = float(recipe["optim"]["grad_clip"] if grad_clip is None else grad_clip)
        self.checkpoint_every, self.log_every = int(recipe["checkpoint_every"]), int(recipe["log_every"])

    # ---------------------------------------------------------------- required hooks
    def setup(self, resumed: dict | None, folder: Path) -> None:
        """Build the model(s), ``params`` and ``optimizer``: from scratch when ``resumed`` is
        None, else from the state `state` saved (``folder`` holds its checkpoints)."""
        raise NotImplementedError

    def step_seed(self, step: int) -> int:
        """The seed of every draw of ``step`` (a non-negative int)."""
        raise NotImplementedError

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step`` (see `harness.training.schedules`)."""
        raise NotImplementedError

    def compute_objectives(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward one batch: (scalar loss to minimise, numbers to sum over the log window)."""
        raise NotImplementedError

    def save(self, folder: Path, meta: dict) -> None:
        """Write a checkpoint folder (atomically) with ``meta`` beside the weights."""
        raise NotImplementedError

    def state(self, step: int, checkpoint: str) -> dict:
        """Everything `setup` needs to resume after ``step`` steps (weights-only loadable);
        ``checkpoint`` is the name of the checkpoint folder just written."""
        raise NotImplementedError

    def meta(self, step: int, log: list[dict]) -> dict:
        """What a checkpoint after ``step`` steps records about itself (``log``: rows so far)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- optional hooks
    def on_step_end(self, step: int) -> dict[str, float]:
        """After the optimizer step (e.g. an EMA teacher update); numbers to sum like
        `compute_objectives`'s."""
        return {}

    def log_row(self, window: dict[str, float], step: int) -> dict:
        """Fields of a log row beyond iteration, step, mean loss, lr and seconds; ``window``
        holds the sums since the last row and their count ``n``."""
        return {}

    def postfix(self, row: dict) -> dict[str, str]:
        """What the progress bar shows of a log row."""
        return {"loss": f"{row['loss']:.3f}"}

    def evaluate(self, step: int) -> dict:
        """At a checkpoint, before it is written: fields of an extra log row (none if empty)."""
        return {}

    def finish(self, folder: Path, log: list[dict]) -> Path:
        """Write the final model (``folder / "final"``) and return it."""
        final = folder / "final"
        self.save(final, self.meta(self.steps, log))
        return final


def fit(objective: Objective, folder: Path, log_path: Path, progress: bool = True) -> Path:
    """Train ``objective`` to its last step in ``folder`` (checkpoints, ``state.pt``), logging to
    ``log_path`` (shared by the stages of a run); resume from ``folder/state.pt`` if present.
    Returns the final model folder (`Objective.finish`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / STATE
    resumed = torch.load(state_path, weights_only=True) if state_path.exists() else None
    objective.setup(resumed, folder)
    start = int(resumed["step"]) if resumed is not None else 0
    steps = objective.steps
    # other stages' rows, and this one's up to the resumed point
    log = [r for r in read_log(log_path) if r.get("iteration") != objective.iteration or r["step"] <= start]
    tag = {} if objective.iteration is None else {"iteration": objective.iteration}
    window: dict[str, float] = {}
    t0 = time.time()
    bar = tqdm(total=steps, initial=start, desc=objective.description, unit="step", disable=not progress)
    for step in range(start, steps):
        seed = objective.step_seed(step)
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # dropout, Gumbel noise
        np.random.seed(seed % (2 ** 32))  # HuggingFace draws time masks and distractors with numpy
        lr = objective.lr_at(step)
        for group in objective.optimizer.param_groups:
            group["lr"] = lr
        loss, stats = objective.compute_objectives(step, generator)
        objective.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(objective.params, objective.grad_clip)
        objective.optimizer.step()
        for key, value in {"loss": float(loss.detach()), **stats, **objective.on_step_end(step), "n": 1}.items():
            window[key] = window.get(key, 0) + value
        done = step + 1
        if done % objective.log_every == 0 or done == steps:
            row = {**tag, "step": done, "loss": round(window["loss"] / window["n"], 5),
                   **objective.log_row(window, step), "lr": round(lr, 8), "seconds": round(time.time() - t0, 1)}
            log.append(row)
            bar.set_postfix(objective.postfix(row))
            window = {}
        bar.update()
        if done % objective.checkpoint_every == 0 or done == steps:
            extra = objective.evaluate(done)
            if extra:
                log.append({**tag, "step": done, **extra})
            name = checkpoint_name(done)
            objective.save(folder / name, objective.meta(done, log))
            save_state(state_path, objective.state(done, name))
            write_log(log_path, log)
    bar.close()
    return objective.finish(folder, log)
