"""Train probes on one layer, a weighted sum, or all layers at once, with Lightning.

``--layer all`` puts L single-layer probes and one weighted-sum probe in one module
and trains them from the same batches of cached features: the losses are summed, but
each probe has its own parameters, Adam state and gradient clipping, so each trains
exactly as it would alone on that batch sequence, for the price of one data pass.

Epochs are fixed-length windows (``val_interval`` steps) of a seeded, endless stream
of shuffled indices; validation and a checkpoint close every window, so an
interrupted run resumes at a window boundary and reaches the same result. Each
probe keeps its own best dev state (dev-set model selection), stored in the
checkpoint; the test set is scored once per probe with that state.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import platform
import re
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from . import __version__
from .errors import HarnessError
from .fsutil import atomic_path, default_home, write_json
from .heads import Featurizer, Head, Probe
from .task import SPLITS, Example, Task

# ------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class ProbeSpec:
    key: str  # "layer_3", "weighted", "weighted_1-4"
    layers: tuple[int, ...]
    weighted: bool

    @property
    def mode(self) -> str | int:
        return self.layers[0] if not self.weighted else "weighted"


def parse_layers(arg: str, num_layers: int) -> list[ProbeSpec]:
    """``N`` | ``weighted`` | ``a-b`` | ``1,4,7`` | ``all`` -> probes."""
    arg = str(arg).strip()

    def check(i: int) -> int:
        if not 0 <= i < num_layers:
            raise HarnessError(f"--layer {i} is out of range: this upstream has layers 0..{num_layers - 1}")
        return i

    if arg == "all":
        singles = [ProbeSpec(f"layer_{i}", (i,), False) for i in range(num_layers)]
        return singles + ([ProbeSpec("weighted", tuple(range(num_layers)), True)] if num_layers > 1 else [])
    if arg == "weighted":
        return [ProbeSpec("weighted", tuple(range(num_layers)), True)]
    if re.fullmatch(r"\d+", arg):
        i = check(int(arg))
        return [ProbeSpec(f"layer_{i}", (i,), False)]
    if re.fullmatch(r"\d+-\d+", arg):
        a, b = (check(int(x)) for x in arg.split("-"))
        if a >= b:
            raise HarnessError(f"--layer {arg}: the range must go up (e.g. 3-8)")
        return [ProbeSpec(f"weighted_{a}-{b}", tuple(range(a, b + 1)), True)]
    if re.fullmatch(r"\d+(,\d+)+", arg):
        idx = sorted({check(int(x)) for x in arg.split(",")})
        return [ProbeSpec("weighted_" + "_".join(map(str, idx)), tuple(idx), True)]
    raise HarnessError(f"--layer {arg!r} is not N, weighted, all, A-B or a comma list like 1,4,7")


# ------------------------------------------------------------------------- data


class StreamSampler(Sampler[int]):
    """Fixed-length epochs cut from an endless seeded stream of permutations.

    Epoch e yields stream positions [e*N, (e+1)*N), N = steps * batch_size (times the
    world size under DDP, each rank taking a strided share), so the order depends only
    on (seed, epoch) and a resumed run sees the same batches.
    """

    def __init__(self, n_items: int, batch_size: int, steps: int, seed: int) -> None:
        self.n, self.batch, self.steps, self.seed = n_items, batch_size, steps, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _world(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return self.steps * self.batch

    def __iter__(self):
        rank, world = self._world()
        per_epoch = self.steps * self.batch * world
        start = self.epoch * per_epoch
        out = []
        block = start // self.n
        while len(out) < per_epoch + (start % self.n):
            perm = np.random.default_rng([self.seed, block]).permutation(self.n)
            out.extend(perm.tolist())
            block += 1
        stream = out[start % self.n: start % self.n + per_epoch]
        return iter(stream[rank::world])


class FeatureDataset(Dataset):
    """Cached layers (frames or pooled means) of some examples."""

    def __init__(self, examples: list[Example], features) -> None:
        self.examples, self.features = examples, features

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        e = self.examples[i]
        return {"example": e, "hidden": self.features.get(e.id)}


class WaveDataset(Dataset):
    """Raw audio, for ``--no-cache`` runs where the upstream runs inside the step."""

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        from .audio import read_audio

        e = self.examples[i]
        return {"example": e, "wave": torch.from_numpy(read_audio(e.path))}


def collate(items: list[dict]) -> dict:
    batch: dict[str, Any] = {"examples": [it["example"] for it in items]}
    if "wave" in items[0]:
        from .upstream import pad_batch

        batch["waves"], batch["wave_lengths"] = pad_batch([it["wave"] for it in items])
        return batch
    n_layers = len(items[0]["hidden"])
    hidden: list[torch.Tensor | None] = [None] * n_layers
    lengths = None
    for l in range(n_layers):
        xs = [it["hidden"][l] for it in items]
        if xs[0] is None:
            continue
        if xs[0].dim() == 1:  # pooled
            hidden[l] = torch.stack(xs)
        else:
            lengths = torch.tensor([len(x) for x in xs])
            hidden[l] = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)
    batch["hidden"], batch["lengths"] = hidden, lengths
    return batch


# ------------------------------------------------------------------------- module


def window_checkpoint(path: Path):
    """A callback that rewrites ``path`` (atomically) after every validation pass and at the
    end of training, so a killed run resumes from its last finished window.

    Lightning's ModelCheckpoint(save_top_k=0, save_last=True) only writes last.ckpt in a step
    where a top-k checkpoint was written, i.e. never before training ends."""
    pl = _lightning()

    class WindowCheckpoint(pl.Callback):
        def __init__(self) -> None:
            self.saved_step = -1

        def _save(self, trainer) -> None:
            if trainer.sanity_checking or trainer.global_step == self.saved_step:
                return
            # save_checkpoint is collective (every rank calls it) but only rank 0 writes
            if trainer.is_global_zero:
                with atomic_path(path) as tmp:
                    trainer.save_checkpoint(str(tmp))
            else:
                trainer.save_checkpoint(str(path))
            self.saved_step = trainer.global_step

        def on_validation_end(self, trainer, pl_module) -> None:
            self._save(trainer)

        def on_train_end(self, trainer, pl_module) -> None:
            self._save(trainer)

    return WindowCheckpoint()


def _lightning():
    import pytorch_lightning as pl

    return pl


def make_module(task: Task, probes: list[ProbeSpec], dims: list[int], hop: int | None, config: dict,
                dev_examples: list[Example], upstream=None, offset: int = 0):
    pl = _lightning()

    class ProbeModule(pl.LightningModule):
        """L+1 (or fewer) independent probes trained from one stream of batches."""

        def __init__(self) -> None:
            super().__init__()
            self.task, self.specs, self.hop, self.config, self.offset = task, probes, hop, config, offset
            self.upstream = upstream
            if upstream is not None:
                upstream.requires_grad_(False)
            self.probes = torch.nn.ModuleDict()
            for spec in probes:
                layer_dims = {dims[i] for i in spec.layers}
                if len(layer_dims) != 1:
                    raise HarnessError(f"{spec.key}: the layers have different dims {sorted(layer_dims)}; "
                                       "a weighted sum needs equal dims")
                featurizer = Featurizer(spec.layers, spec.weighted, layer_norm=bool(config["layer_norm"]))
                head = task.build_head(layer_dims.pop())
                if not isinstance(head, Head):
                    raise HarnessError(f"task {task.name}: build_head must return a harness.heads.Head, "
                                       f"got {type(head).__name__}")
                self.probes[spec.key] = Probe(featurizer, head)
            self.best: dict[str, dict] = {}
            self.curve: dict[str, list[dict]] = {}  # dev metrics at every validation, per probe
            self._val: dict[str, dict] = {}

        # -- features for a batch, from the cache or from the upstream ------------
        def _features(self, batch: dict) -> tuple[list, torch.Tensor | None]:
            if self.upstream is None:
                return batch["hidden"], batch["lengths"]
            self.upstream.eval()
            with torch.no_grad():
                out = self.upstream.layers(batch["waves"], batch["wave_lengths"])
            return out.hidden, out.lengths[min(s.layers[0] for s in self.specs)]

        def _batch(self, batch: dict) -> tuple[list, dict]:
            hidden, lengths = self._features(batch)
            b = dict(batch)
            b["lengths"] = lengths
            b.update(self.task.batch_targets(batch["examples"], lengths, self.hop, self.offset))
            return hidden, b

        def training_step(self, batch, batch_idx):
            hidden, b = self._batch(batch)
            losses = {}
            for key, probe in self.probes.items():
                losses[key] = self.task.loss(*probe.outputs(hidden, b))
            total = sum(losses.values())
            self.log("train_loss", total / len(losses), prog_bar=True, batch_size=len(batch["examples"]))
            return total

        def on_before_optimizer_step(self, optimizer):
            clip = self.config.get("grad_clip")
            if clip:  # per probe, so probes stay independent
                for probe in self.probes.values():
                    torch.nn.utils.clip_grad_norm_(probe.parameters(), clip)

        def configure_optimizers(self):
            params = [p for p in self.probes.parameters()]
            return torch.optim.Adam(params, lr=float(self.config["lr"]))

        def on_validation_epoch_start(self):
            self._val = {key: {} for key in self.probes}

        def validation_step(self, batch, batch_idx):
            hidden, b = self._batch(batch)
            for key, probe in self.probes.items():
                preds = self.task.predict(*probe.outputs(hidden, b))
                for e, p in zip(batch["examples"], preds):
                    self._val[key][e.id] = p

        def on_validation_epoch_end(self):
            examples = dev_examples
            step = int(self.global_step)
            sign = 1.0 if self.task.metric.higher_is_better else -1.0
            for key, probe in self.probes.items():
                metrics, _ = self.task.score(self._val[key], examples)
                value = float(metrics[self.task.metric.name])
                self.curve.setdefault(key, []).append({"step": step, **{k: float(v) for k, v in metrics.items()}})
                best = self.best.get(key)
                if best is None or sign * value > sign * best["dev"]:
                    state = {k: v.detach().clone() for k, v in probe.state_dict().items()}
                    self.best[key] = {"dev": value, "step": step, "state": state}
            summary = {key: b["dev"] for key, b in self.best.items()}
            self.log(f"dev_best_{self.task.metric.name}", float(max(summary.values()) if sign > 0 else min(summary.values())),
                     prog_bar=True)

        def on_save_checkpoint(self, checkpoint):
            checkpoint["harness_best"] = self.best
            checkpoint["harness_curve"] = self.curve

        def on_load_checkpoint(self, checkpoint):
            self.best = checkpoint.get("harness_best", {})
            self.curve = checkpoint.get("harness_curve", {})

        def state_dict(self, *args, **kwargs):
            # the frozen upstream is not part of what we train or checkpoint
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

    return ProbeModule()


# ------------------------------------------------------------------------- running


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "upstream"


def package_versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version(), "harness": __version__}
    for name in ("torch", "torchaudio", "pytorch-lightning", "transformers", "s3prl", "speechbrain", "numpy", "jiwer"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _evaluate(module, loader, examples: list[Example]) -> dict[str, tuple[dict, dict]]:
    """Score every probe in one pass over the data: {probe key: (metrics, outcomes)}."""
    task = module.task
    preds: dict[str, dict[str, Any]] = {key: {} for key in module.probes}
    module.eval()
    with torch.no_grad():
        for batch in loader:
            hidden, b = module._batch(batch)
            for key, probe in module.probes.items():
                for e, p in zip(batch["examples"], task.predict(*probe.outputs(hidden, b))):
                    preds[key][e.id] = p
    return {key: task.score(preds[key], examples) for key in module.probes}


@dataclass
class RunRequest:
    upstream: str
    task: str
    layer: str = "all"
    data_root: Path | None = None
    out: Path = Path("results")
    seed: int = 0
    max_steps: int | None = None
    overrides: dict | None = None
    no_cache: bool = False
    random_init: bool = False
    init_seed: int = 0
    devices: str | int = 1
    strategy: str = "auto"
    accelerator: str = "cpu"
    cache_dtype: str = "float16"
    progress: bool = True


def run(req: RunRequest) -> list[Path]:
    """Train and evaluate; write one JSON record per probe; return their paths."""
    from .registry import load_task
    from .task import merge_config
    from .upstream import load_upstream

    pl = _lightning()
    if not req.progress:
        import logging

        for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    t_start = time.time()
    task_cls = load_task(req.task)
    config = merge_config(task_cls.default_config(), req.overrides or {})
    if req.max_steps is not None:
        config["max_steps"] = int(req.max_steps)
    if int(config["max_steps"]) < 1:
        raise HarnessError("--max-steps must be at least 1")
    task = task_cls(config)
    data_root = Path(req.data_root) if req.data_root else _embedded_root()
    examples = {split: task.examples(data_root, split) for split in SPLITS}
    task.prepare(examples["train"])

    upstream = load_upstream(req.upstream, random_init=req.random_init, seed=req.init_seed)
    probes = parse_layers(req.layer, upstream.num_layers)
    frame_level = [i for i, n in enumerate(upstream.info.layer_names) if n not in ("pooling", "embedding")]
    if task.level != "utterance":
        if req.layer == "all":
            probes = [p for p in probes if all(i in frame_level for i in p.layers)]
            if not any(p.weighted for p in probes) and len(frame_level) > 1:
                probes.append(ProbeSpec("weighted", tuple(frame_level), True))
        from .features import check_utterance_level

        for p in probes:
            check_utterance_level(upstream, p.layers)
    dims = list(upstream.info.dims)
    if any(p.weighted for p in probes) and req.layer == "all" and len({dims[i] for i in probes[-1].layers}) > 1:
        probes = [p for p in probes if not p.weighted]  # mixed dims (speaker models): single layers only
    hop = upstream.info.hop
    pooled = task.level == "utterance" and not config["layer_norm"] and not req.no_cache
    needed = sorted({i for p in probes for i in p.layers})

    # data
    t_extract = time.time()
    if req.no_cache:
        datasets = {s: WaveDataset(examples[s]) for s in SPLITS}
    else:
        from .features import ensure_cache

        kind = "pooled" if pooled else "frames"
        datasets = {}
        for s in SPLITS:
            entry = ensure_cache(upstream, task.dataset, s, examples[s], kind=kind, dtype=req.cache_dtype,
                                 progress=req.progress)
            datasets[s] = FeatureDataset(examples[s], entry.open(needed))
    batch_size = int(config["batch_size"])
    val_interval = int(config["val_interval"])
    sampler = StreamSampler(len(datasets["train"]), batch_size, val_interval, req.seed)
    train_loader = DataLoader(datasets["train"], batch_size=batch_size, sampler=sampler, collate_fn=collate,
                              drop_last=True, num_workers=0)
    eval_loaders = {s: DataLoader(datasets[s], batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=0)
                    for s in ("dev", "test")}

    # run identity (max_steps excluded so that a longer run continues a shorter one)
    ident = {
        "upstream": upstream.info.spec, "weights": upstream.info.weights_sha256, "random_init": req.random_init,
        "init_seed": req.init_seed if req.random_init else None, "task": task.name,
        "config": {k: v for k, v in config.items() if k != "max_steps"}, "probes": [p.key for p in probes],
        "seed": req.seed, "data_root": str(data_root.resolve()), "no_cache": req.no_cache, "pooled": pooled,
        "version": __version__,
    }
    run_key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
    run_dir = default_home() / "runs" / run_key
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"

    # a finished run with its records in place: nothing to do (keeps the second run fast)
    out_dir = Path(req.out) / _slug(req.upstream + ("_random-init" if req.random_init else "")) / task.name
    done = _finished_records(out_dir, probes, req.seed, run_key, int(config["max_steps"]))
    if done is not None:
        return done

    t_train = time.time()
    pl.seed_everything(req.seed, workers=True, verbose=False)
    module = make_module(task, probes, dims, hop, config, examples["dev"], upstream=upstream if req.no_cache else None,
                         offset=upstream.info.frame_offset)
    checkpoint = window_checkpoint(last)
    trainer = pl.Trainer(
        max_steps=int(config["max_steps"]), max_epochs=-1, accelerator=req.accelerator, devices=req.devices,
        strategy=req.strategy, deterministic=True, num_sanity_val_steps=0, check_val_every_n_epoch=1,
        callbacks=[checkpoint], enable_checkpointing=False, logger=False, enable_progress_bar=req.progress,
        enable_model_summary=False,
        default_root_dir=str(run_dir), use_distributed_sampler=False,
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    trainer.fit(module, train_loader, eval_loaders["dev"], ckpt_path=str(last) if last.exists() else None,
                weights_only=True)
    if trainer.global_rank != 0:
        return []
    steps = int(trainer.global_step)

    # test every probe with its best dev state
    versions = package_versions()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    records = []
    for spec in probes:
        best = module.best.get(spec.key)
        if best is None:
            raise HarnessError("training finished without a validation pass; raise --max-steps above val_interval")
        module.probes[spec.key].load_state_dict(best["state"])
    t_eval = time.time()
    dev_scores = _evaluate(module, eval_loaders["dev"], examples["dev"])
    test_scores = _evaluate(module, eval_loaders["test"], examples["test"])
    timing = {"extract_s": round(t_train - t_extract, 1), "train_s": round(t_eval - t_train, 1),
              "evaluate_s": round(time.time() - t_eval, 1)}
    for spec in probes:
        best = module.best[spec.key]
        dev_metrics, _ = dev_scores[spec.key]
        test_metrics, outcomes = test_scores[spec.key]
        featurizer = module.probes[spec.key].featurizer
        weights = featurizer.mix().detach().tolist() if spec.weighted else None
        record = {
            "format": 1,
            "upstream": {"spec": req.upstream, "backend": upstream.info.backend, "source": upstream.info.source,
                         "weights_sha256": upstream.info.weights_sha256, "random_init": req.random_init,
                         "init_seed": req.init_seed if req.random_init else None,
                         "layer_names": upstream.info.layer_names, "hop": hop},
            "task": task.name,
            "metric": {"name": task.metric.name, "higher_is_better": task.metric.higher_is_better},
            "layer": spec.mode, "probe": spec.key, "layers": list(spec.layers),
            "layer_weights": weights,
            "dev": dev_metrics, "test": test_metrics,
            "best_step": best["step"], "steps": steps, "seed": req.seed,
            "dev_curve": module.curve.get(spec.key, []),
            "config": config, "data_root": str(data_root), "corpus": _corpus_identity(data_root),
            "no_cache": req.no_cache, "pooled_cache": pooled, "test_utterances": len(examples["test"]),
            "versions": versions, "wall_time_s": round(time.time() - t_start, 1), "timing": timing,
            "peak_rss_mb": round(peak_mb, 1),
            "run_key": run_key, "dropped_utterances": getattr(task, "dropped", {}),
        }
        from .report import setting_id

        # runs measured differently (corpus, config, steps, version) never overwrite each other
        folder = out_dir / setting_id(record)
        stem = f"{spec.key}_seed{req.seed}"
        write_json(folder / f"{stem}.outcomes.json", outcomes)
        write_json(folder / f"{stem}.json", record)
        records.append(folder / f"{stem}.json")
    return records


def _finished_records(out_dir: Path, probes: list[ProbeSpec], seed: int, run_key: str, steps: int) -> list[Path] | None:
    """The record paths if every probe of this run already has a record at ``steps``."""
    found = []
    for spec in probes:
        hits = []
        for path in sorted(out_dir.glob(f"*/{spec.key}_seed{seed}.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if data.get("run_key") == run_key and data.get("steps") == steps and \
                    path.with_name(f"{spec.key}_seed{seed}.outcomes.json").exists():
                hits.append(path)
        if not hits:
            return None
        found.append(hits[0])
    return found


def _embedded_root() -> Path:
    from .cli import embedded_corpus_dir

    root = embedded_corpus_dir()
    if not (root / "corpus.json").exists():
        raise HarnessError(f"the embedded corpus is not built at {root}: run `harness corpus build` "
                           "(or pass --data-root)")
    return root


def _corpus_identity(root: Path) -> dict:
    meta = Path(root) / "corpus.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        manifest = Path(root) / "manifest.sha256"
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.exists() else None
        return {"kind": "harness-embedded", "profile": m.get("profile"), "seed": m.get("seed"), "manifest_sha256": digest}
    return {"kind": "external", "root": str(root)}
