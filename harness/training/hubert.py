"""HuBERT-style iterative pretraining of a small model on a harness corpus (``harness pretrain``).

Iteration 1 learns to predict, at masked frames, k-means clusters of MFCCs;
iteration n > 1 predicts k-means clusters of one layer (a recipe parameter) of
iteration n-1's final model (Hsu et al. 2021). The model is a HuggingFace ``HubertModel``,
so every checkpoint is a model directory that loads as the upstream ``hf:DIR``. Each
iteration is trained by the shared loop (`harness.training.loop.fit`) with `HubertObjective`.

Output folder::

    OUT/recipe.yaml            the resolved recipe (a different recipe refuses to resume here)
    OUT/log.jsonl              one line per logged step: iteration, step, loss, masked accuracy, lr
    OUT/itN/targets.npz        cluster id per frame and utterance, centroids, target quality
    OUT/itN/step_000300/ ...   checkpoints (config.json, model.safetensors, preprocessor_config.json,
                               pretrain.json with iteration/step/loss)
    OUT/itN/final/             the iteration's last model
    OUT/itN/state.pt           optimizer and prediction head for resuming (weights-only loadable)
    OUT/reused.json            with --reuse: the run whose finished iterations were copied

Determinism: batch grouping, crops, masks and dropout are drawn from generators seeded
by (seed, iteration, step), so a resumed run takes the same steps as an uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm
from transformers import HubertConfig, HubertModel

from harness.audio import SAMPLE_RATE
from harness.config import merge_config
from harness.errors import HarnessError
from harness.features.extract import iter_layers
from harness.fsutil import atomic_dir, atomic_path, write_text
from harness.training.data import (
    CONV_KERNEL,
    CONV_STRIDE,
    LABEL_RATE_HOP,
    Audio,
    StepBatches,
    load_train_audio,
    model_frames,
    random_crops,
    span_mask,
)
from harness.training.loop import Objective, fit
from harness.training.recipe import Recipe
from harness.training.runs import (
    packaged_recipe,
    prepare_run,
    read_log,
    save_checkpoint,
    write_log,
)
from harness.training.schedules import warmup_cosine
from harness.upstream import load_upstream


def default_recipe() -> dict:
    """The default recipe (``harness/training/hubert.yaml``): two iterations of 3600 steps."""
    return packaged_recipe("harness.training", "hubert.yaml")


# -------------------------------------------------------------------------- k-means
def kmeans_fit(x: torch.Tensor, k: int, iterations: int, seed: int) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007). x ``[N, D]``
    float32 -> centroids ``[k, D]``. Raises HarnessError with fewer than ``k`` rows."""
    if len(x) < k:
        raise HarnessError(f"k-means needs at least {k} frames, got {len(x)}")
    g = torch.Generator().manual_seed(seed)
    x = x.float()
    centroids = x[torch.randint(len(x), (1,), generator=g)]
    closest = ((x - centroids[0]) ** 2).sum(1)
    for _ in range(1, k):
        pick = torch.multinomial(closest / closest.sum(), 1, generator=g)
        centroids = torch.cat([centroids, x[pick]])
        closest = torch.minimum(closest, ((x - x[pick]) ** 2).sum(1))
    for _ in range(iterations):
        assign = kmeans_assign(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        filled = counts > 0  # an empty cluster keeps its old centroid
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


def kmeans_assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Nearest centroid of each row of x ``[N, D]`` -> ``[N]`` int64."""
    c2 = (centroids ** 2).sum(1)
    out = []
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].float()
        out.append(((part ** 2).sum(1, keepdim=True) - 2 * part @ centroids.T + c2).argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def target_quality(labels: dict[str, np.ndarray], phone_ctm: dict, clusters: int) -> dict[str, float]:
    """Phone purity and PNMI of cluster ids against the aligned phones (HuBERT paper, sec. 4.3).

    Frames are compared at the model's 50 Hz rate, the phone at each frame's centre.
    """
    pairs = []
    for utt, segs in phone_ctm.items():
        if utt not in labels:
            continue
        ids = labels[utt]
        centres = (np.arange(len(ids)) * LABEL_RATE_HOP + 200) / SAMPLE_RATE
        ends = np.array([s.start + s.duration for s in segs])
        idx = np.minimum(np.searchsorted(ends, centres, side="right"), len(segs) - 1)
        pairs += list(zip(ids.tolist(), [segs[i].label for i in idx]))
    if not pairs:
        return {}
    phones = sorted({p for _, p in pairs})
    joint = np.zeros((clusters, len(phones)))
    col = {p: j for j, p in enumerate(phones)}
    for c, p in pairs:
        joint[c, col[p]] += 1
    joint /= joint.sum()
    pc, pp = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = (joint[nz] * np.log(joint[nz] / (pc[:, None] * pp[None, :])[nz])).sum()
    h_phone = -(pp[pp > 0] * np.log(pp[pp > 0])).sum()
    purity = joint.max(1).sum()
    return {"phone_purity": float(purity), "pnmi": float(mi / h_phone), "frames": len(pairs)}


def make_targets(audio: Audio, spec: dict, previous: Path | None, recipe: dict, iteration: int,
                 progress: bool) -> tuple[dict[str, np.ndarray], torch.Tensor, dict]:
    """Cluster ids at 50 Hz for every utterance (utterance id -> ``[frames]`` int16), the
    centroids ``[clusters, D]`` and the targets' quality, from k-means on standardised MFCCs
    (``spec["targets"] == "mfcc"``) or on a layer of the model ``previous`` (``"layer"``).
    Raises HarnessError for another target kind, a layer out of range, or no previous model."""
    if spec["targets"] == "mfcc":
        upstream, layer, subsample = load_upstream("classic:mfcc"), 0, 2  # 100 Hz -> 50 Hz
        source = "mfcc"
    elif spec["targets"] == "layer":
        if previous is None:
            raise HarnessError("iteration 1 cannot take targets from a layer: there is no previous model")
        upstream = load_upstream(f"hf:{previous}")
        layer, subsample = int(spec["layer"]), 1
        if not 0 <= layer < upstream.num_layers:
            raise HarnessError(f"target layer {layer} out of range: the previous model has layers 0..{upstream.num_layers - 1}")
        source = f"layer {layer} of {previous.parent.name}"
    else:
        raise HarnessError(f"unknown target kind {spec['targets']!r}; use mfcc or layer")
    feats: list[torch.Tensor] = [None] * len(audio.waves)  # type: ignore[list-item]
    bar = tqdm(total=len(audio.waves), desc=f"it{iteration} targets: {source}", unit="utt", disable=not progress,
               leave=False)
    for i, layers in iter_layers(upstream, audio.waves):
        n = model_frames(len(audio.waves[i]))
        f = torch.from_numpy(layers[layer][::subsample][:n])
        if len(f) < n:
            raise HarnessError(f"{audio.ids[i]}: {len(f)} target frames for {n} model frames")
        feats[i] = f
        bar.update()
    bar.close()
    everything = torch.cat(feats)
    mean, std = everything.mean(0), everything.std(0).clamp_min(1e-5)  # standardise: c0/energy would dominate
    g = torch.Generator().manual_seed(recipe["seed"] * 1000 + iteration)
    fit_n = min(int(recipe["kmeans"]["fit_frames"]), len(everything))
    sample = everything[torch.randperm(len(everything), generator=g)[:fit_n]]
    centroids = kmeans_fit((sample - mean) / std, int(spec["clusters"]), int(recipe["kmeans"]["iterations"]),
                           recipe["seed"] * 1000 + iteration)
    labels = {audio.ids[i]: kmeans_assign((f - mean) / std, centroids).numpy().astype(np.int16)
              for i, f in enumerate(feats)}
    used = len(np.unique(np.concatenate(list(labels.values()))))
    quality = {"source": source, "clusters": int(spec["clusters"]), "clusters_used": used,
               **target_quality(labels, audio.phone_ctm, int(spec["clusters"]))}
    return labels, centroids, quality


# ----------------------------------------------------------------------------- model
class MaskedPredictionHead(nn.Module):
    """HuBERT's prediction: project, then cosine similarity to one embedding per cluster."""

    def __init__(self, hidden: int, code_dim: int, clusters: int, temperature: float) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, code_dim)
        self.codes = nn.Parameter(torch.empty(clusters, code_dim).uniform_(-1, 1))
        self.temperature = temperature

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden ``[N, H]`` -> logits ``[N, clusters]``."""
        p = nn.functional.normalize(self.proj(hidden), dim=-1)
        c = nn.functional.normalize(self.codes, dim=-1)
        return p @ c.T / self.temperature


def build_model(model_cfg: dict) -> HubertModel:
    """A randomly initialised ``HubertModel`` with the recipe's ``model`` config and HuBERT's CNN."""
    # mask_time_prob > 0 makes HF create masked_spec_embed; training always passes its own mask
    config = HubertConfig(**model_cfg, apply_spec_augment=True, mask_time_prob=0.05, do_stable_layer_norm=False,
                          conv_kernel=list(CONV_KERNEL), conv_stride=list(CONV_STRIDE), vocab_size=1)
    return HubertModel(config)


# ----------------------------------------------------------------------------- reuse
def shared_iterations(old: dict, new: dict) -> int:
    """How many leading iterations two recipes share: 0 unless everything outside
    ``iterations`` (model, data, seed, optimiser, ...) is equal, then the length of the
    common prefix of the iteration list. Iteration n's result depends only on these."""
    def rest(recipe: dict) -> dict:
        return {k: v for k, v in recipe.items() if k != "iterations"}

    if rest(old) != rest(new):
        return 0
    shared = 0
    for a, b in zip(old["iterations"], new["iterations"]):
        if a != b:
            break
        shared += 1
    return shared


def reuse_finished(source: Path, out: Path, recipe: dict) -> int:
    """Copy into the new run folder ``out`` the finished iterations of the run ``source`` that
    ``recipe`` shares with it (folders and log rows), so only the changed iterations are
    trained. ``source`` is only read. Returns the number of iterations copied. Raises
    HarnessError when ``source`` is no run or shares no finished iteration."""
    saved = source / "recipe.yaml"
    if not saved.exists():
        raise HarnessError(f"--reuse {source}: not a pretraining run (no recipe.yaml)")
    shared = shared_iterations(yaml.safe_load(saved.read_text()), recipe)
    finished, shipped = 0, []
    while finished < shared:
        it = source / f"it{finished + 1}"
        if (it / "final" / "pretrain.json").exists():
            shipped.append(None)
        elif (last := shipped_final(it)) is not None:
            shipped.append(last)
        else:
            break
        finished += 1
    if finished == 0:
        raise HarnessError(f"--reuse {source}: no finished iteration of that run has the same recipe as this one "
                           "(model, data, seed and optimiser settings must be equal, and the iteration itself)")
    for n, last in enumerate(shipped, 1):
        if last is None:
            shutil.copytree(source / f"it{n}", out / f"it{n}")
        else:  # a shipped run keeps only checkpoints: its last one is the iteration's result
            shutil.copytree(last, out / f"it{n}" / last.name)
            shutil.copytree(last, out / f"it{n}" / "final")
    rows = [r for r in read_log(source / "log.jsonl") if r["iteration"] <= finished]
    write_log(out / "log.jsonl", rows)
    dtypes = sorted({json.loads((last / "pretrain.json").read_text())["stored_dtype"] for last in shipped if last})
    write_text(out / "reused.json", json.dumps({"source": str(source.resolve()), "iterations": finished,
                                                "from_shipped_checkpoints_stored_as": dtypes or None},
                                               indent=1) + "\n")
    return finished


def shipped_final(iteration_dir: Path) -> Path | None:
    """The last checkpoint of an iteration in a shipped folder (``harness pretrain --ship``) if it
    is the iteration's final step, else None. Shipped weights may be stored as float16: what
    is built on them starts from the rounded weights (loaded as float32)."""
    steps = sorted(iteration_dir.glob("step_*"))
    if not steps or not (steps[-1] / "pretrain.json").exists():
        return None
    meta = json.loads((steps[-1] / "pretrain.json").read_text())
    return steps[-1] if meta.get("step") == meta.get("steps") and "stored_dtype" in meta else None


# ------------------------------------------------------------------------- training
class HubertObjective(Objective):
    """One iteration of masked prediction: cross-entropy of `MaskedPredictionHead`'s logits
    against the frame's cluster id, at masked frames only (HuBERT's alpha = 1)."""

    def __init__(self, audio: Audio, labels: dict[str, np.ndarray], quality: dict, spec: dict,
                 previous: Path | None, recipe: dict, iteration: int) -> None:
        self.opt_cfg = {**recipe["optim"], **spec.get("optim", {})}  # an iteration may override (e.g. its own lr)
        super().__init__(recipe, steps=spec["steps"], grad_clip=self.opt_cfg["grad_clip"])
        self.audio, self.labels, self.quality, self.spec, self.previous = audio, labels, quality, spec, previous
        self.iteration, self.description = iteration, f"pretrain it{iteration}"
        self.batches = StepBatches([len(w) for w in audio.waves], recipe["data"]["batch_seconds"],
                                   recipe["data"]["max_crop_seconds"], self.seed * 100 + iteration)
        self.last: dict = {}

    def setup(self, resumed: dict | None, folder: Path) -> None:
        recipe = self.recipe
        torch.manual_seed(self.seed * 1000 + self.iteration)
        self.head = MaskedPredictionHead(recipe["model"]["hidden_size"], recipe["head"]["code_dim"],
                                         int(self.spec["clusters"]), recipe["head"]["temperature"])
        if resumed is not None:
            self.model = HubertModel.from_pretrained(folder / resumed["checkpoint"], dtype=torch.float32)
            self.head.load_state_dict(resumed["head"])
        else:
            self.model = build_model(recipe["model"])
            if self.spec.get("init") == "previous":  # warm start: the previous iteration's encoder, a fresh head
                if self.previous is None:
                    raise HarnessError("iteration 1 cannot start from a previous iteration (init: previous)")
                self.model = HubertModel.from_pretrained(self.previous, dtype=torch.float32)  # with its mask embedding
        self.model.train()
        self.params = list(self.model.parameters()) + list(self.head.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=self.opt_cfg["lr"], betas=(0.9, 0.98), eps=1e-6,
                                           weight_decay=self.opt_cfg["weight_decay"])
        if resumed is not None:
            self.optimizer.load_state_dict(resumed["optimizer"])

    def step_seed(self, step: int) -> int:
        return (self.seed * 1000 + self.iteration) * 1_000_003 + step

    def lr_at(self, step: int) -> float:
        return warmup_cosine(step, self.opt_cfg["lr"], int(self.opt_cfg["warmup_steps"]), self.steps)

    def compute_objectives(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        idx = self.batches[step]
        crops = random_crops(self.audio.waves, idx, self.recipe["data"]["max_crop_seconds"], generator)
        target = torch.stack([torch.from_numpy(self.labels[self.audio.ids[i]][first:first + crops.frames]
                                               .astype(np.int64)) for i, first in zip(idx, crops.starts)])
        mask_cfg = self.recipe["mask"]
        mask = span_mask(len(idx), crops.frames, mask_cfg["start_prob"], mask_cfg["span"], generator)
        hidden = self.model(input_values=crops.wav, mask_time_indices=mask).last_hidden_state
        logits = self.head(hidden[mask])
        loss = nn.functional.cross_entropy(logits, target[mask])
        self.last = {"batch": len(idx), "crop_s": round(crops.samples / SAMPLE_RATE, 3)}
        return loss, {"correct": int((logits.detach().argmax(1) == target[mask]).sum()), "masked": int(mask.sum())}

    def log_row(self, window: dict, step: int) -> dict:
        return {"masked_acc": round(window["correct"] / max(window["masked"], 1), 5), **self.last}

    def postfix(self, row: dict) -> dict:
        return {"loss": f"{row['loss']:.3f}", "acc": f"{row['masked_acc']:.3f}"}

    def meta(self, step: int, log: list[dict]) -> dict:
        return {"iteration": self.iteration, "step": step, "steps": self.steps, "seed": self.seed,
                "targets": self.quality, "loss": log[-1]["loss"] if log else None}

    def save(self, folder: Path, meta: dict) -> None:
        save_checkpoint(self.model, folder, meta)

    def state(self, step: int, checkpoint: str) -> dict:
        return {"step": step, "checkpoint": checkpoint, "head": self.head.state_dict(),
                "optimizer": self.optimizer.state_dict()}


def pretrain(corpus: Path, out: Path, recipe: dict, progress: bool = True, reuse: Path | None = None) -> list[Path]:
    """Run (or resume) every iteration of ``recipe``; return each iteration's final model dir.

    ``reuse``: an earlier run whose finished iterations this recipe shares are copied into
    the (new, empty) ``out`` instead of being trained again. Raises HarnessError for an
    unknown optimiser key or ``init`` of an iteration (before any work), a folder holding
    another run, or a ``reuse`` run sharing nothing."""
    out = Path(out)
    recipe_text = yaml.safe_dump(recipe, sort_keys=True)
    for n, spec in enumerate(recipe["iterations"], 1):  # before any work: a typo should not cost a k-means
        unknown = sorted(set(spec.get("optim", {})) - set(recipe["optim"]))
        if unknown:
            raise HarnessError(f"iteration {n}: unknown optim key(s) {unknown}; known: {sorted(recipe['optim'])}")
        if spec.get("init", "scratch") not in ("scratch", "previous"):
            raise HarnessError(f"iteration {n}: init must be scratch (HuBERT's protocol) or previous (warm start), "
                               f"got {spec['init']!r}")
    saved = out / "recipe.yaml"
    if reuse is not None and not saved.exists():
        if out.exists() and any(out.iterdir()):
            raise HarnessError(f"{out} is not empty and holds no pretraining run; choose another --out")
        with atomic_dir(out) as tmp:  # all copied or nothing: an interrupted copy leaves no half run
            reused = reuse_finished(Path(reuse), tmp, recipe)
            write_text(tmp / "recipe.yaml", recipe_text)
        if progress:
            print(f"reusing iterations 1..{reused} of {reuse}")
    prepare_run(out, recipe, shared_iterations)
    audio = load_train_audio(corpus, recipe["data"]["layouts"], progress)
    finals: list[Path] = []
    previous: Path | None = None
    for n, spec in enumerate(recipe["iterations"], 1):
        final = train_iteration(audio, out / f"it{n}", n, spec, previous, recipe, out / "log.jsonl", progress)
        finals.append(final)
        previous = final
    return finals


def train_iteration(audio: Audio, folder: Path, iteration: int, spec: dict, previous: Path | None, recipe: dict,
                    log_path: Path, progress: bool) -> Path:
    """Train (or resume, or find finished) one iteration in ``folder``: its targets first
    (``targets.npz``, made once), then `HubertObjective` through the shared loop. Returns
    ``folder/final``."""
    final = folder / "final"
    if (final / "pretrain.json").exists():
        return final
    folder.mkdir(parents=True, exist_ok=True)
    targets_path = folder / "targets.npz"
    if targets_path.exists():
        with np.load(targets_path, allow_pickle=False) as z:
            labels = {k[len("utt:"):]: z[k] for k in z.files if k.startswith("utt:")}
            quality = json.loads(str(z["quality"]))
    else:
        labels, centroids, quality = make_targets(audio, spec, previous, recipe, iteration, progress)
        with atomic_path(targets_path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, centroids=centroids.numpy(), quality=np.array(json.dumps(quality)),
                         **{f"utt:{k}": v for k, v in labels.items()})
    if progress:
        shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in quality.items())
        tqdm.write(f"it{iteration} targets: {shown}")
    return fit(HubertObjective(audio, labels, quality, spec, previous, recipe, iteration), folder, log_path, progress)


class HubertRecipe(Recipe):
    """``harness pretrain --recipe hubert`` (the default): iterative masked prediction of
    k-means targets; checkpoints load as ``hf:DIR``; ``--reuse`` keeps the finished
    iterations an earlier run shares; ``--set iterations.N.KEY=VALUE`` edits iteration N."""

    name = "hubert"
    backend = "hf"
    supports_reuse = True

    def default_recipe(self) -> dict:
        return default_recipe()

    def apply_overrides(self, recipe: dict, overrides: dict) -> dict:
        """``iterations.N.KEY=VALUE`` changes iteration N (0-based) of the list: ``init`` and
        ``optim.KEY`` may be set though the iteration lacks them (``optim`` keys are checked
        against the recipe's at `pretrain`); everything else merges as usual. Raises
        HarnessError for N out of range or an unknown key."""
        recipe, overrides = dict(recipe), dict(overrides)
        if isinstance(overrides.get("iterations"), dict) and "iterations" in recipe:
            per_iteration = overrides.pop("iterations")
            iterations = [dict(it) for it in recipe["iterations"]]
            for index, body in per_iteration.items():
                if not isinstance(body, dict) or not str(index).isdigit() or int(index) >= len(iterations):
                    raise HarnessError(f"--set iterations.N.KEY=VALUE needs N in 0..{len(iterations) - 1}")
                current, body = iterations[int(index)], dict(body)
                if "init" in body and "init" not in current:  # optional: warm start or scratch
                    current["init"] = "scratch"
                if isinstance(body.get("optim"), dict):  # an iteration's own optimiser settings (names checked later)
                    current["optim"] = {**current.get("optim", {}), **body.pop("optim")}
                iterations[int(index)] = merge_config(current, body, f"iterations.{index}.")
            recipe["iterations"] = iterations
        return merge_config(recipe, overrides)

    def pretrain(self, corpus: Path, out: Path, recipe: dict, progress: bool = True,
                 reuse: Path | None = None) -> list[Path]:
        return pretrain(corpus, out, recipe, progress, reuse)
