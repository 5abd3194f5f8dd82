"""HuBERT-style iterative pretraining of a small model on a harness corpus.

Iteration 1 learns to predict, at masked frames, k-means clusters of MFCCs;
iteration n > 1 predicts k-means clusters of one layer (a recipe parameter) of
iteration n-1's final model. The model is a HuggingFace ``HubertModel``, so every
checkpoint is a model directory that loads as the upstream ``hf:DIR``.

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
import math
import shutil
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from harness.audio import SAMPLE_RATE
from harness.errors import HarnessError
from harness.fsutil import atomic_dir, atomic_path, write_text

# HuBERT's waveform CNN: 400-sample receptive field, 320-sample hop (50 Hz frames)
CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)
LABEL_RATE_HOP = 320  # model frame hop in samples


def default_recipe() -> dict:
    import yaml

    return yaml.safe_load(resources.files("harness.training").joinpath("hubert.yaml").read_text())


# ----------------------------------------------------------------------------- data
@dataclass
class Audio:
    ids: list[str]
    waves: list[np.ndarray]  # float32 at 16 kHz
    phone_ctm: dict  # LibriSpeech train utterance -> CTM phone segments (target quality only)


def load_train_audio(corpus: Path, layouts: Sequence[str], progress: bool = True) -> Audio:
    """Every train-split utterance of the chosen layouts, in a fixed order."""
    from tqdm import tqdm

    from harness.audio import read_audio
    from harness.corpus.layout import CorpusPaths
    from harness.data.alignments import read_ctm
    from harness.data.fsc import read_fsc
    from harness.data.librispeech import SPLITS as LIBRI_SPLITS
    from harness.data.librispeech import read_librispeech
    from harness.data.voxceleb import read_voxceleb1

    paths = CorpusPaths(Path(corpus))
    items: list[tuple[str, Path]] = []
    phone_ctm: dict = {}
    for layout in layouts:
        if layout == "librispeech":
            utts = read_librispeech(paths.librispeech, LIBRI_SPLITS["train"])
            items += [(u.id, u.path) for u in utts]
            ctm = paths.ctm(LIBRI_SPLITS["train"], "phones")
            if ctm.exists():
                phone_ctm = read_ctm(ctm)
        elif layout == "fsc":
            items += [(f"fsc/{u.id}", u.path) for u in read_fsc(paths.fsc, "train")]
        elif layout == "voxceleb1":
            items += [(f"vox/{u.id}", u.path) for u in read_voxceleb1(paths.voxceleb1, "train")]
        else:
            raise HarnessError(f"unknown pretraining layout {layout!r}; choose from librispeech, fsc, voxceleb1")
    if not items:
        raise HarnessError(f"no training audio found in {corpus}")
    waves = [read_audio(p) for _, p in tqdm(items, desc="reading audio", unit="utt", disable=not progress,
                                              leave=False)]
    return Audio([i for i, _ in items], waves, phone_ctm)


def model_frames(samples: int) -> int:
    """Frames of the model's CNN for ``samples`` input samples."""
    from harness.upstream import conv_frames

    return int(conv_frames(torch.tensor([samples]), CONV_KERNEL, CONV_STRIDE)[0])


# -------------------------------------------------------------------------- k-means
def kmeans_fit(x: torch.Tensor, k: int, iterations: int, seed: int) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding. x ``[N, D]`` float32 -> centroids ``[k, D]``."""
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
    """Cluster ids at 50 Hz for every utterance, from MFCCs or a layer of ``previous``."""
    from harness.features.extract import iter_layers
    from harness.upstream import load_upstream

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
    from tqdm import tqdm

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


def build_model(model_cfg: dict):
    from transformers import HubertConfig, HubertModel

    # mask_time_prob > 0 makes HF create masked_spec_embed; training always passes its own mask
    config = HubertConfig(**model_cfg, apply_spec_augment=True, mask_time_prob=0.05, do_stable_layer_norm=False,
                          conv_kernel=list(CONV_KERNEL), conv_stride=list(CONV_STRIDE), vocab_size=1)
    return HubertModel(config)


def span_mask(batch: int, frames: int, start_prob: float, span: int, g: torch.Generator) -> torch.Tensor:
    """``[batch, frames]`` bool: spans of ``span`` frames from ``round(start_prob * frames)`` random starts."""
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    starts_n = max(1, round(start_prob * frames))
    room = max(frames - span + 1, 1)
    for b in range(batch):
        starts = torch.randperm(room, generator=g)[:starts_n]
        for s in starts.tolist():
            mask[b, s:s + span] = True
    return mask


# ------------------------------------------------------------------------- batching
def epoch_batches(lengths: Sequence[int], batch_seconds: float, max_crop: float, seed: int, epoch: int,
                  ) -> list[list[int]]:
    """Utterances grouped by (jittered) length so cropping to the shortest wastes little;
    each batch holds at most ``batch_seconds`` of cropped audio. Order shuffled per epoch."""
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    jitter = 1.0 + 0.1 * (torch.rand(len(lengths), generator=g) - 0.5)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i] * float(jitter[i]), i))
    batches, current, shortest = [], [], 0
    for i in order:
        crop = min(shortest if current else lengths[i], lengths[i], int(max_crop * SAMPLE_RATE))
        if current and crop * (len(current) + 1) > batch_seconds * SAMPLE_RATE:
            batches.append(current)
            current = []
        shortest = min(shortest, lengths[i]) if current else lengths[i]
        current.append(i)
    if current:
        batches.append(current)
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[p] for p in perm]


class StepBatches:
    """Step number -> batch (utterance indices), stable across restarts."""

    def __init__(self, lengths: Sequence[int], batch_seconds: float, max_crop: float, seed: int) -> None:
        self.args = (list(lengths), batch_seconds, max_crop, seed)
        self.epochs: list[list[list[int]]] = []

    def __getitem__(self, step: int) -> list[int]:
        total = 0
        for batches in self._ensure(step):
            if step < total + len(batches):
                return batches[step - total]
            total += len(batches)
        raise AssertionError("unreachable")

    def _ensure(self, step: int) -> list[list[list[int]]]:
        while sum(len(b) for b in self.epochs) <= step:
            lengths, seconds, crop, seed = self.args
            self.epochs.append(epoch_batches(lengths, seconds, crop, seed, len(self.epochs)))
        return self.epochs


# ---------------------------------------------------------------------------- saving
def save_checkpoint(model, folder: Path, meta: dict) -> None:
    """Write a HuggingFace model directory atomically (temp dir + rename)."""
    from transformers import Wav2Vec2FeatureExtractor

    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
                                 return_attention_mask=True).save_pretrained(tmp)
        (tmp / "pretrain.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def _save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _write_log(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


# -------------------------------------------------------------------------- training
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
    trained. ``source`` is only read. Returns the number of iterations copied."""
    import yaml

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
    rows = [r for r in _read_log(source / "log.jsonl") if r["iteration"] <= finished]
    _write_log(out / "log.jsonl", rows)
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


def prepare_run(out: Path, recipe: dict, shared=None) -> None:
    """Claim ``out`` for this recipe: an empty or new folder, or one holding a run of the same
    recipe (resumed). Another recipe is refused (``shared(old, new)`` > 0 adds the --reuse hint)."""
    import yaml

    saved = out / "recipe.yaml"
    if saved.exists():
        previous = yaml.safe_load(saved.read_text())
        if previous != recipe:
            hint = f" and --reuse {out} to keep its iterations that this recipe shares" \
                if shared is not None and shared(previous, recipe) else ""
            raise HarnessError(f"{out} holds a pretraining run with another recipe; choose another --out{hint}")
    elif out.exists() and any(out.iterdir()):
        raise HarnessError(f"{out} is not empty and holds no pretraining run; choose another --out")
    write_text(saved, yaml.safe_dump(recipe, sort_keys=True))


def pretrain(corpus: Path, out: Path, recipe: dict, progress: bool = True, reuse: Path | None = None) -> list[Path]:
    """Run (or resume) every iteration of ``recipe``; return each iteration's final model dir.

    ``reuse``: an earlier run whose finished iterations this recipe shares are copied into
    the (new, empty) ``out`` instead of being trained again."""
    import yaml

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
    from tqdm import tqdm
    from transformers import HubertModel

    from harness.upstream import normalise_waveforms

    final = folder / "final"
    steps = int(spec["steps"])
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

    seed = int(recipe["seed"])
    torch.manual_seed(seed * 1000 + iteration)
    state_path = folder / "state.pt"
    head = MaskedPredictionHead(recipe["model"]["hidden_size"], recipe["head"]["code_dim"], int(spec["clusters"]),
                                recipe["head"]["temperature"])
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        model = HubertModel.from_pretrained(folder / state["checkpoint"], dtype=torch.float32)
        head.load_state_dict(state["head"])
        start = int(state["step"])
    else:
        model, state, start = build_model(recipe["model"]), None, 0
        if spec.get("init") == "previous":  # warm start: the previous iteration's encoder, a fresh prediction head
            if previous is None:
                raise HarnessError("iteration 1 cannot start from a previous iteration (init: previous)")
            model = HubertModel.from_pretrained(previous, dtype=torch.float32)  # with its mask embedding
    model.train()
    params = list(model.parameters()) + list(head.parameters())
    opt_cfg = {**recipe["optim"], **spec.get("optim", {})}  # an iteration may override (e.g. its own lr)
    optimizer = torch.optim.AdamW(params, lr=opt_cfg["lr"], betas=(0.9, 0.98), eps=1e-6,
                                  weight_decay=opt_cfg["weight_decay"])
    warmup = int(opt_cfg["warmup_steps"])

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 0
        if step < warmup:
            return opt_cfg["lr"] * (step + 1) / warmup
        return opt_cfg["lr"] * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    # earlier iterations' rows, and this one's up to the resumed point
    log = [r for r in _read_log(log_path) if r["iteration"] != iteration or r["step"] <= start]
    lengths = [len(w) for w in audio.waves]
    batches = StepBatches(lengths, recipe["data"]["batch_seconds"], recipe["data"]["max_crop_seconds"],
                          seed * 100 + iteration)
    every, log_every = int(recipe["checkpoint_every"]), int(recipe["log_every"])

    def meta_at(done: int) -> dict:  # pretrain.json of a checkpoint
        return {"iteration": iteration, "step": done, "steps": steps, "seed": seed, "targets": quality,
                "loss": log[-1]["loss"] if log else None}

    mask_cfg = recipe["mask"]
    window = {"loss": 0.0, "correct": 0, "masked": 0, "n": 0}
    t0 = time.time()
    bar = tqdm(total=steps, initial=start, desc=f"pretrain it{iteration}", unit="step", disable=not progress)
    for step in range(start, steps):
        g = torch.Generator().manual_seed((seed * 1000 + iteration) * 1_000_003 + step)
        torch.manual_seed((seed * 1000 + iteration) * 1_000_003 + step)  # dropout
        idx = batches[step]
        crop = min(min(lengths[i] for i in idx), int(recipe["data"]["max_crop_seconds"] * SAMPLE_RATE))
        frames = model_frames(crop)
        wavs, targets = [], []
        for i in idx:
            first = int(torch.randint((lengths[i] - crop) // LABEL_RATE_HOP + 1, (1,), generator=g))
            wavs.append(torch.from_numpy(audio.waves[i][first * LABEL_RATE_HOP:first * LABEL_RATE_HOP + crop]))
            targets.append(torch.from_numpy(labels[audio.ids[i]][first:first + frames].astype(np.int64)))
        wav = torch.stack(wavs)
        wav = normalise_waveforms(wav, torch.full((len(idx),), crop))
        target = torch.stack(targets)
        mask = span_mask(len(idx), frames, mask_cfg["start_prob"], mask_cfg["span"], g)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        hidden = model(input_values=wav, mask_time_indices=mask).last_hidden_state
        logits = head(hidden[mask])
        loss = nn.functional.cross_entropy(logits, target[mask])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, opt_cfg["grad_clip"])
        optimizer.step()
        window["loss"] += float(loss.detach())
        window["correct"] += int((logits.detach().argmax(1) == target[mask]).sum())
        window["masked"] += int(mask.sum())
        window["n"] += 1
        done = step + 1
        if done % log_every == 0 or done == steps:
            row = {"iteration": iteration, "step": done, "loss": round(window["loss"] / window["n"], 5),
                   "masked_acc": round(window["correct"] / max(window["masked"], 1), 5),
                   "lr": round(lr_at(step), 8), "batch": len(idx), "crop_s": round(crop / SAMPLE_RATE, 3),
                   "seconds": round(time.time() - t0, 1)}
            log.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['masked_acc']:.3f}")
            window = {"loss": 0.0, "correct": 0, "masked": 0, "n": 0}
        bar.update()
        if done % every == 0 or done == steps:
            name = f"step_{done:06d}"
            save_checkpoint(model, folder / name, meta_at(done))
            _save_state(state_path, {"step": done, "checkpoint": name, "head": head.state_dict(),
                                     "optimizer": optimizer.state_dict()})
            _write_log(log_path, log)
    bar.close()
    save_checkpoint(model, final, meta_at(steps))
    return final


# --------------------------------------------------------------------------- shipping
def ship(run: Path, dest: Path, every: int | Sequence[int] | None = None,
         dtype: torch.dtype = torch.float16, steps: Sequence[int] | None = None) -> list[Path]:
    """Copy the checkpoints of a finished run whose step is a multiple of ``every`` (default:
    every saved one; a sequence gives one interval per iteration) and each iteration's last
    step into ``dest``, weights cast to ``dtype`` (float16 halves the size; the hf backend
    loads them as float32), with recipe and log. ``steps`` instead lists the steps to keep
    (each iteration's last is always kept). ``dest`` is replaced as a whole, so no
    checkpoint of an earlier run is left behind in it."""
    from safetensors.torch import load_file, save_file

    run, dest = Path(run), Path(dest)
    iterations = sorted(p for p in run.glob("it*") if (p / "final" / "pretrain.json").exists())
    if not iterations:
        raise HarnessError(f"{run} holds no finished pretraining iteration")
    intervals = list(every) if isinstance(every, Sequence) else [every] * len(iterations)
    if len(intervals) != len(iterations):
        raise HarnessError(f"--ship-every: {len(intervals)} intervals for {len(iterations)} finished iterations")
    shipped = []
    with atomic_dir(dest) as tmp_dest:
        for it, interval in zip(iterations, intervals):
            saved = sorted(it.glob("step_*"))
            last = saved[-1].name
            if steps is not None and (missing := sorted(set(steps) - {int(c.name.split("_")[1]) for c in saved})):
                raise HarnessError(f"{it.name} has no checkpoint at step(s) {missing}")
            for ck in saved:
                step = int(ck.name.split("_")[1])
                if ck.name != last and ((steps is not None and step not in steps)
                                        or (steps is None and interval and step % interval)):
                    continue
                target = tmp_dest / it.name / ck.name
                target.mkdir(parents=True)
                for f in ck.iterdir():
                    if f.name == "model.safetensors":
                        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in load_file(f).items()}
                        save_file(tensors, target / f.name, metadata={"format": "pt"})
                    elif f.name == "embedding_model.ckpt":  # a SpeechBrain encoder (the dino recipe)
                        state = torch.load(f, map_location="cpu", weights_only=True)
                        torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()},
                                   target / f.name)
                    elif f.name == "pretrain.json":
                        meta = json.loads(f.read_text())
                        meta["stored_dtype"] = str(dtype).replace("torch.", "")
                        (target / f.name).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
                    else:
                        shutil.copyfile(f, target / f.name)
                shipped.append(dest / it.name / ck.name)
        for name in ("recipe.yaml", "log.jsonl"):
            shutil.copyfile(run / name, tmp_dest / name)
    return shipped
