"""The Lightning module that trains a run's probes, and the callback that makes runs resumable.

``--layer all`` puts L single-layer probes and one weighted-sum probe in one module and
trains them from the same batches: the losses are summed, but each probe has its own
parameters, Adam state and gradient clipping, so each trains exactly as it would alone on
that batch sequence, for the price of one data pass.

A learning-rate grid (config ``lr_grid``) and head-initialisation seeds (``seeds``) multiply
the heads in the same pass (:class:`~harness.probing.probes.Member`): every probe is trained
once per grid rate (its own Adam parameter group) and per seed, each selected on dev at its
own best step; :meth:`ProbeModule.chosen` then picks, per probe and seed, the grid point with
the best dev score. All grid points of a probe start from the same head initialisation, the
one a single-rate run with the same seed gives that probe, so grid point ``lr`` trains exactly
as a run with ``--set lr=<lr>`` (bit for bit on CPU; heads with dropout draw their masks from
one shared stream, so there they agree in distribution only). Seeds in one pass share the
batch stream of the run's ``--seed``: a seed varies the head initialisation only.

Each probe keeps its own best dev state (dev-set model selection). That state and the dev
curve are part of the module's ``state_dict`` (as extra state), so they travel with
checkpoints and come back from spawned DDP workers.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import move_data_to_device
from tqdm import tqdm

from harness.errors import HarnessError
from harness.features.device import Placement
from harness.features.extract import streamed_layers
from harness.features.loaders import frame_lengths
from harness.fsutil import atomic_path
from harness.heads import Featurizer, Head, Probe
from harness.probing.probes import Member, ProbeSpec, grid_members
from harness.quiet import quiet_third_party
from harness.task import Example, Task

quiet_third_party(dependency_warnings=False)  # ddp_spawn workers import this module in a fresh interpreter


@dataclass(frozen=True)
class ProbeSelection:
    """What dev-set model selection kept for one probe: the step of its best dev score, that
    score, the dev metrics at every validation, and (weighted-sum probes) the softmax layer
    weights of the selected state."""

    best_step: int
    best_dev: float
    dev_curve: list[dict]
    layer_weights: list[float] | None


class ProbeModule(pl.LightningModule):
    """L+1 (or fewer) independent probes trained from one stream of batches, each once per
    rate of ``config["lr_grid"]`` (if set) and per seed of ``seeds`` (if given).

    ``upstream``: None when batches carry cached features; an upstream when batches carry
    waveforms (streamed runs), run frozen under ``no_grad`` inside every step, in
    ``placement``'s precision (Lightning has moved it to the module's device).
    ``dev_examples``: the examples model selection scores (the dev split, or the test split
    under ``selection: test``). ``probes`` maps member keys
    (:func:`~harness.probing.probes.grid_members`) to :class:`~harness.heads.Probe` modules;
    without grid and seeds the keys are the probe keys.
    """

    def __init__(self, task: Task, probes: list[ProbeSpec], dims: list[int], hop: int | None, config: dict,
                 dev_examples: list[Example], upstream=None, offset: int = 0,
                 placement: Placement | None = None, seeds: list[int] | None = None) -> None:
        super().__init__()
        self.task, self.specs, self.hop, self.config, self.offset = task, probes, hop, config, offset
        self.dev_examples = dev_examples
        self.placement = placement
        self.upstream = upstream
        if upstream is not None:
            upstream.requires_grad_(False)
        self.members = grid_members(probes, float(config["lr"]), config.get("lr_grid"), seeds)
        inits = self._initial_probes(dims, seeds)
        self.probes = torch.nn.ModuleDict()
        for m in self.members:
            first = inits[(m.seed, m.spec.key)]
            # every grid point of a probe starts from the same initialisation
            self.probes[m.key] = first if len(self.members) == len(probes) else copy.deepcopy(first)
        self.best: dict[str, dict] = {}  # probe -> {"dev", "step", "state"}
        self.curve: dict[str, list[dict]] = {}  # probe -> dev metrics at every validation
        self.steps_done = 0  # optimizer steps taken (travels back from spawned workers)
        self._val: dict[str, dict] = {}

    def _initial_probes(self, dims: list[int], seeds: list[int] | None) -> dict[tuple, Probe]:
        """{(seed, probe key): a freshly initialised probe}. Without ``seeds`` the heads draw from
        the global RNG in probe order (after the run's ``seed_everything``, as always); with them,
        each seed's heads draw in probe order from a CPU generator seeded with that seed, which
        is what a run with ``--seed <seed>`` draws, leaving the global RNG untouched."""

        def build(spec: ProbeSpec) -> Probe:
            featurizer = Featurizer(spec.layers, spec.weighted, layer_norm=bool(self.config["layer_norm"]))
            head = self.task.build_head(dims[spec.layers[0]])
            if not isinstance(head, Head):
                raise HarnessError(f"task {self.task.name}: build_head must return a harness.heads.Head, "
                                   f"got {type(head).__name__}")
            return Probe(featurizer, head)

        if not seeds:
            return {(None, spec.key): build(spec) for spec in self.specs}
        out = {}
        for seed in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(seed)
                out.update({(seed, spec.key): build(spec) for spec in self.specs})
        return out

    # -- features for a batch, from the cache or from the upstream ------------
    def features(self, batch: dict) -> tuple[list, list]:
        """(per-layer features, per-layer frame counts) of a batch; None for layers not used."""
        if self.upstream is None:
            return batch["hidden"], batch["layer_lengths"]

        return streamed_layers(self.upstream, batch["waves"], batch["wave_lengths"],
                               sorted({i for s in self.specs for i in s.layers}), self.placement)

    def prepared(self, batch: dict) -> tuple[list, dict]:
        """(per-layer features, the batch with lengths and the task's targets)."""
        hidden, layer_lengths = self.features(batch)
        b = dict(batch)
        b["layer_lengths"] = layer_lengths
        b["lengths"] = frame_lengths(layer_lengths)
        targets = self.task.batch_targets(batch["examples"], b["lengths"], self.hop, self.offset)
        # tasks build their targets on the CPU from the examples; the probes' outputs are on the
        # module's device (a GPU run failed in its first loss without this)
        b.update(move_data_to_device(targets, self.device))
        return hidden, b

    def predictions(self, batch: dict, keys: Iterable[str] | None = None) -> dict[str, list[Any]]:
        """The predictions of every member (or of the members ``keys``) for a batch (in batch order)."""
        hidden, b = self.prepared(batch)
        keys = list(self.probes) if keys is None else list(keys)
        return {key: self.task.predict(*self.probes[key].outputs(hidden, b)) for key in keys}

    # -- training -------------------------------------------------------------
    def loss(self, batch: dict) -> torch.Tensor:
        """The sum of every probe's loss on a batch (each probe's gradient is its own loss's)."""
        hidden, b = self.prepared(batch)
        return sum(self.task.loss(*probe.outputs(hidden, b)) for probe in self.probes.values())

    def training_step(self, batch, batch_idx):
        total = self.loss(batch)
        self.log("train_loss", total / len(self.probes), prog_bar=True, batch_size=len(batch["examples"]))
        return total

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.steps_done = int(self.global_step)

    def on_before_optimizer_step(self, optimizer):
        clip = self.config.get("grad_clip")
        if clip:  # per probe, so probes stay independent
            for probe in self.probes.values():
                torch.nn.utils.clip_grad_norm_(probe.parameters(), clip)

    def configure_optimizers(self):
        """The config's optimizer (:func:`make_optimizer`) with one parameter group per learning
        rate (one group without a grid, as always). Adam's state is per parameter, so every member
        keeps its own."""
        groups: dict[float, list] = {}
        for m in self.members:
            groups.setdefault(m.lr, []).extend(self.probes[m.key].parameters())
        if len(groups) == 1:
            return make_optimizer(list(self.probes.parameters()), self.config)
        return make_optimizer([{"params": params, "lr": lr} for lr, params in groups.items()], self.config)

    # -- validation: dev-set model selection ----------------------------------
    def on_validation_epoch_start(self):
        self._val = {key: {} for key in self.probes}

    def validation_step(self, batch, batch_idx):
        for key, preds in self.predictions(batch).items():
            for e, p in zip(batch["examples"], preds):
                self._val[key][e.id] = p

    def on_validation_epoch_end(self):
        self.select(int(self.global_step), self._val)

    def select(self, step: int, predictions: dict[str, dict[str, Any]]) -> None:
        """Score every probe's dev predictions at ``step``; keep each probe's best state."""
        for key, probe in self.probes.items():
            metrics, _ = self.task.score(predictions[key], self.dev_examples)
            value = float(metrics[self.task.selection_metric])
            self.curve.setdefault(key, []).append({"step": step, **{k: float(v) for k, v in metrics.items()}})
            best = self.best.get(key)
            if best is None or self.task.metric.better(value, best["dev"]):
                state = {k: v.detach().clone() for k, v in probe.state_dict().items()}
                self.best[key] = {"dev": value, "step": step, "state": state}

    @property
    def last_validated_step(self) -> int | None:
        """The latest step any probe was validated at (None before the first validation)."""
        steps = [c[-1]["step"] for c in self.curve.values() if c]
        return max(steps) if steps else None

    def validate_now(self, loader: Iterable[dict], step: int, device: torch.device | None = None) -> None:
        """A validation pass outside Lightning's loop (the last step of a run that ends
        inside a window), with the same selection rule, on ``device`` (default: where the
        module is)."""
        preds = predict_all(self, loader, device=device)
        self.select(step, preds)

    def chosen(self, probe: str, seed: int | None = None) -> Member:
        """The grid point that probe ``probe`` (a probe key) of head seed ``seed`` keeps: the member
        with the best dev score at its own selected step; on a tie the smaller learning rate.
        Without a grid, the probe's only member. HarnessError if training ended unvalidated."""
        pick = None
        for m in self.members:  # ascending learning rate within a (probe, seed)
            if m.spec.key != probe or m.seed != seed:
                continue
            if m.key not in self.best:
                raise HarnessError("training finished without a validation pass")
            if pick is None or self.task.metric.better(self.best[m.key]["dev"], self.best[pick.key]["dev"]):
                pick = m
        if pick is None:
            raise KeyError(f"no member for probe {probe!r}, seed {seed!r}")
        return pick

    def grid_points(self, probe: str, seed: int | None = None) -> list[dict]:
        """Every grid point of probe ``probe`` (seed ``seed``), ascending learning rate: its ``lr``,
        ``best_step``, ``best_dev`` (the metric at that step) and ``dev_curve`` (dev metrics at every
        validation). What a record keeps of the points it did not choose."""
        return [{"lr": m.lr, "best_step": self.best[m.key]["step"], "best_dev": self.best[m.key]["dev"],
                 "dev_curve": list(self.curve.get(m.key, []))}
                for m in self.members if m.spec.key == probe and m.seed == seed]

    def selection(self, key: str) -> ProbeSelection:
        """The selection of member ``key`` (call after :meth:`load_best`, so the layer weights are
        the selected state's)."""
        best = self.best[key]
        featurizer = self.probes[key].featurizer
        weights = featurizer.mix().detach().tolist() if featurizer.weighted else None
        return ProbeSelection(best["step"], best["dev"], list(self.curve.get(key, [])), weights)

    def load_best(self) -> None:
        """Put every probe in its best dev state (HarnessError if training ended unvalidated)."""
        for key, probe in self.probes.items():
            if key not in self.best:
                raise HarnessError("training finished without a validation pass")
            probe.load_state_dict(self.best[key]["state"])

    # -- state: probes + selection; the frozen upstream is never saved --------
    def get_extra_state(self) -> dict:
        return {"best": self.best, "curve": self.curve, "steps_done": self.steps_done}

    def set_extra_state(self, state: dict) -> None:
        self.best = state.get("best", {})
        self.curve = state.get("curve", {})
        self.steps_done = int(state.get("steps_done", 0))

    def state_dict(self, *args, **kwargs):
        sd = super().state_dict(*args, **kwargs)
        return {k: v for k, v in sd.items() if not k.startswith("upstream.")}

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        result = super().load_state_dict(state_dict, strict=False)
        if strict:  # the upstream is left out on purpose (see state_dict); probe keys must all match
            missing = [k for k in result.missing_keys if not k.startswith("upstream.")]
            if missing or result.unexpected_keys:
                raise RuntimeError(f"checkpoint does not match the probes: missing {missing}, "
                                   f"unexpected {result.unexpected_keys}")
        return result


def make_optimizer(params: list, config: dict) -> torch.optim.Optimizer:
    """The config's optimizer: ``adam`` (torch.optim.Adam, s3prl's ``TorchOptim: Adam``) or
    ``adamw`` (torch.optim.AdamW, s3prl's ``TorchOptim: AdamW``: decoupled weight decay), with
    ``lr``, ``weight_decay`` (default 0) and ``eps`` (default 1e-8). ``params``: parameters, or
    parameter groups (dicts with their own ``lr``: a learning-rate grid). Both act element-wise,
    so the probes of a run still train independently."""
    kind = config.get("optimizer", "adam")
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(kind)
    if cls is None:
        raise HarnessError(f"config optimizer must be adam or adamw, got {kind!r}")
    return cls(params, lr=float(config["lr"]), weight_decay=float(config.get("weight_decay", 0.0)),
               eps=float(config.get("eps", 1e-8)))


def predict_all(module: ProbeModule, loader: Iterable[dict], keys: Iterable[str] | None = None,
                device: torch.device | None = None) -> dict[str, dict[str, Any]]:
    """{member key: {utterance id: prediction}} over a whole loader, in eval mode, for every
    member or the members ``keys``; with ``device``, the module and each batch are moved there
    first (after ``fit`` Lightning has put the module back on the CPU)."""
    keys = list(module.probes) if keys is None else list(keys)
    preds: dict[str, dict[str, Any]] = {key: {} for key in keys}
    was_training = module.training
    if device is not None:
        module.to(device)
    module.eval()
    with torch.no_grad():
        for batch in loader:
            if device is not None:
                batch = move_data_to_device(batch, device)
            for key, out in module.predictions(batch, keys).items():
                for e, p in zip(batch["examples"], out):
                    preds[key][e.id] = p
    module.train(was_training)
    return preds


class WindowCheckpoint(pl.Callback):
    """Rewrites ``path`` (atomically) after the validation that closes each training window.

    Only window ends (multiples of ``val_interval``) are saved: a run that stops inside a
    window leaves its last window end, which any longer run with the same identity passes
    through identically, so resuming never changes numbers. (Lightning's ModelCheckpoint
    with save_top_k=0 writes last.ckpt only when training ends.)
    """

    def __init__(self, path: Path, val_interval: int) -> None:
        self.path, self.val_interval = Path(path), val_interval
        self.saved_step = -1

    def _save(self, trainer: pl.Trainer) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or step == self.saved_step or step % self.val_interval:
            return
        # save_checkpoint is collective (every rank calls it) but only rank 0 writes
        if trainer.is_global_zero:
            with atomic_path(self.path) as tmp:
                trainer.save_checkpoint(str(tmp))
        else:
            trainer.save_checkpoint(str(self.path))
        self.saved_step = step

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self._save(trainer)


class StepProgress(pl.Callback):
    """One progress bar over the run's steps (Lightning's counts epochs, which here are
    validation windows of an endless stream), with the time estimate, the training loss and
    the best dev score so far."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.bar = None

    def on_train_start(self, trainer, pl_module) -> None:

        if trainer.is_global_zero:
            self.bar = tqdm(total=trainer.max_steps, initial=trainer.global_step, unit="step", desc="training probes",
                            file=sys.stderr, dynamic_ncols=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.bar is not None:
            self.bar.update(trainer.global_step - self.bar.n)
            loss = trainer.callback_metrics.get("train_loss")
            if loss is not None and trainer.global_step % 10 == 0:
                self.bar.set_postfix_str(f"loss {float(loss):.3f}" + self._best(pl_module), refresh=False)

    def _best(self, module) -> str:
        if not module.best:
            return ""
        values = [b["dev"] for b in module.best.values()]
        best = max(values) if module.task.metric.higher_is_better else min(values)
        return f", best dev {self.metric} {best:.4f}"

    def on_train_end(self, trainer, pl_module) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
