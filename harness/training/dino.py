"""DINO-style self-distillation for speakers (``harness pretrain --recipe dino``), no labels.

A student and a teacher (an exponential moving average of the student) see different crops
of the same utterance: two long "global" crops and several short "local" ones, each with its
own gain, additive noise and channel colouring. The teacher sees only the global crops; its
output is centred (a running mean of teacher outputs) and sharpened (a low temperature); the
student learns to match it on every other crop (cross-entropy), as in DINO (Caron et al.
2021) and its speaker-verification adaptations (e.g. Chen et al. 2022). Nothing but
audio is used: what the network comes to share across crops of one utterance is, on
speech, mostly the speaker and the channel.

Encoder: SpeechBrain's ECAPA-TDNN at CPU size (40 log-mel bins, 128 channels, 128-dim
embedding); projection head: MLP -> L2-normalised bottleneck -> weight-normalised prototypes.
Every checkpoint is the teacher's encoder in SpeechBrain's model-directory layout
(``hyperparams.yaml`` + ``embedding_model.ckpt``), so it loads as ``speechbrain:DIR`` with
every block a layer (block_0..3, mfa, embedding).

Output folder::

    OUT/recipe.yaml, OUT/log.jsonl     the recipe; loss, teacher entropy, centre norm, lr, momentum
    OUT/it1/step_NNNNNN/ , OUT/it1/final/   teacher encoders (SpeechBrain layout) + pretrain.json
    OUT/it1/state.pt                   student, teacher, head, centre, optimizer (weights-only)

Deterministic and resumable: crops, augmentations and dropout come from generators seeded
by (seed, step).
"""

from __future__ import annotations

import copy
import json
import math
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.audio import SAMPLE_RATE
from harness.errors import HarnessError
from harness.fsutil import atomic_dir
from harness.training.hubert import _read_log, _save_state, _write_log, load_train_audio, prepare_run

HYPERPARAMS = """\
# written by harness pretrain --recipe dino: a SpeechBrain speaker-embedding model directory
n_mels: {n_mels}
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: {channels}
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: {attention}
    lin_neurons: {embedding}
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
"""


def default_recipe() -> dict:
    import yaml

    return yaml.safe_load(resources.files("harness.training").joinpath("dino.yaml").read_text())


def hyperparams(recipe: dict) -> str:
    m = recipe["model"]
    c = int(m["channels"])
    return HYPERPARAMS.format(n_mels=int(m["n_mels"]), channels=[c, c, c, c, 3 * c],
                              attention=int(m["attention_channels"]), embedding=int(m["embedding"]))


class Encoder(nn.Module):
    """Fbank -> sentence mean normalisation -> ECAPA-TDNN embedding, as the SpeechBrain
    model directory defines it (built from the same hyperparams text)."""

    def __init__(self, recipe: dict) -> None:
        super().__init__()
        from hyperpyyaml import load_hyperpyyaml

        hp = load_hyperpyyaml(hyperparams(recipe))
        self.features, self.norm, self.model = hp["compute_features"], hp["mean_var_norm"], hp["embedding_model"]

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        """wavs ``[B, samples]`` (equal lengths) -> embeddings ``[B, E]``."""
        feats = self.features(wavs)
        feats = self.norm(feats, torch.ones(len(wavs)))
        return self.model(feats).squeeze(1)


class DinoHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> weight-normalised linear onto the prototypes."""

    def __init__(self, dim: int, hidden: int, bottleneck: int, prototypes: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, prototypes, bias=False))
        with torch.no_grad():
            self.last.parametrizations.weight.original0.fill_(1.0)  # DINO fixes the norm to 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(nn.functional.normalize(self.mlp(x), dim=-1))


def _crop(wave: np.ndarray, samples: int, g: torch.Generator) -> np.ndarray:
    """A random window of ``samples``; a shorter utterance is tiled to length first."""
    if len(wave) < samples:
        wave = np.tile(wave, int(math.ceil(samples / max(len(wave), 1))) + 1)
    start = int(torch.randint(len(wave) - samples + 1, (1,), generator=g))
    return wave[start:start + samples]


def _augment(x: torch.Tensor, aug: dict, g: torch.Generator) -> torch.Tensor:
    """Gain, a one-pole low-pass (a channel colour) and additive noise at a random SNR."""
    gain = 10 ** (float(torch.empty(1).uniform_(-aug["gain_db"], aug["gain_db"], generator=g)) / 20)
    x = x * gain
    a = float(torch.empty(1).uniform_(0.0, aug["lowpass_max"], generator=g))
    if a > 0:
        import torchaudio

        x = torchaudio.functional.lfilter(x[None], torch.tensor([1.0, -a]), torch.tensor([1.0 - a, 0.0]),
                                          clamp=False)[0]
    snr = float(torch.empty(1).uniform_(aug["snr_min_db"], aug["snr_max_db"], generator=g))
    power = x.pow(2).mean().clamp(min=1e-10)
    noise = torch.randn(x.shape, generator=g) * torch.sqrt(power / 10 ** (snr / 10))
    return x + noise


def dino_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor, t_student: float,
              t_teacher: float) -> torch.Tensor:
    """Mean over (teacher global crop i, student crop j != i) of
    ``H(softmax((t_i - c) / T_t), softmax(s_j / T_s))``."""
    total, terms = 0.0, 0
    targets = [torch.softmax((t - center) / t_teacher, dim=-1).detach() for t in teacher]
    logs = [torch.log_softmax(s / t_student, dim=-1) for s in student]
    for i, q in enumerate(targets):
        for j, logp in enumerate(logs):
            if i == j:  # the student's view i is the teacher's view i
                continue
            total = total + (-q * logp).sum(-1).mean()
            terms += 1
    return total / terms


def pretrain(corpus: Path, out: Path, recipe: dict, progress: bool = True, reuse: Path | None = None) -> list[Path]:
    if reuse is not None:
        raise HarnessError("--reuse applies to the iterative HuBERT recipe; the dino recipe has one stage")
    out = Path(out)
    prepare_run(out, recipe)
    audio = load_train_audio(corpus, recipe["data"]["layouts"], progress)
    # the backward pass of the distractor/crop gathers accumulates with threads: deterministic
    # kernels make a resumed run bit-identical to an uninterrupted one
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return [train(audio, out / "it1", recipe, out / "log.jsonl", progress)]
    finally:
        torch.use_deterministic_algorithms(previous)


def save_encoder(encoder: Encoder, folder: Path, recipe: dict, meta: dict) -> None:
    """The encoder in SpeechBrain's model-directory layout (an upstream: ``speechbrain:DIR``)."""
    with atomic_dir(folder) as tmp:
        (tmp / "hyperparams.yaml").write_text(hyperparams(recipe))
        state = {k: v.detach().clone().contiguous() for k, v in encoder.model.state_dict().items()}
        torch.save(state, tmp / "embedding_model.ckpt")
        (tmp / "pretrain.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def train(audio, folder: Path, recipe: dict, log_path: Path, progress: bool) -> Path:
    from tqdm import tqdm

    final = folder / "final"
    steps = int(recipe["steps"])
    if (final / "pretrain.json").exists():
        return final
    folder.mkdir(parents=True, exist_ok=True)
    seed = int(recipe["seed"])
    torch.manual_seed(seed * 1000 + 7)
    student = Encoder(recipe)
    h = recipe["head"]
    head = DinoHead(int(recipe["model"]["embedding"]), int(h["hidden"]), int(h["bottleneck"]), int(h["prototypes"]))
    teacher, teacher_head = copy.deepcopy(student), copy.deepcopy(head)
    for p in list(teacher.parameters()) + list(teacher_head.parameters()):
        p.requires_grad_(False)
    center = torch.zeros(int(h["prototypes"]))
    params = list(student.parameters()) + list(head.parameters())
    opt_cfg = recipe["optim"]
    optimizer = torch.optim.AdamW(params, lr=opt_cfg["lr"], weight_decay=opt_cfg["weight_decay"])
    state_path = folder / "state.pt"
    start = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        student.load_state_dict(state["student"])
        head.load_state_dict(state["head"])
        teacher.load_state_dict(state["teacher"])
        teacher_head.load_state_dict(state["teacher_head"])
        center = state["center"]
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
    warmup = int(opt_cfg["warmup_steps"])
    d = recipe["dino"]
    crops = recipe["crops"]

    def lr_at(step: int) -> float:
        if step < warmup:
            return opt_cfg["lr"] * (step + 1) / warmup
        return opt_cfg["lr"] * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    def momentum_at(step: int) -> float:  # teacher EMA: cosine from the start value to 1
        m0 = float(d["momentum"])
        return 1 - (1 - m0) * 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))

    log = [r for r in _read_log(log_path) if r["step"] <= start]
    every, log_every = int(recipe["checkpoint_every"]), int(recipe["log_every"])
    n_global, n_local = int(crops["global"]), int(crops["local"])
    g_len, l_len = int(crops["global_seconds"] * SAMPLE_RATE), int(crops["local_seconds"] * SAMPLE_RATE)
    window = {"loss": 0.0, "entropy": 0.0, "n": 0}
    t0 = time.time()
    bar = tqdm(total=steps, initial=start, desc="pretrain dino", unit="step", disable=not progress)

    def meta_at(done: int) -> dict:
        return {"iteration": 1, "step": done, "steps": steps, "seed": seed, "objective": "dino",
                "loss": log[-1]["loss"] if log else None}

    student.train()
    head.train()
    teacher.eval()
    teacher_head.eval()
    for step in range(start, steps):
        base = (seed * 1000 + 7) * 1_000_003 + step
        g = torch.Generator().manual_seed(base)
        torch.manual_seed(base)
        picks = torch.randperm(len(audio.waves), generator=g)[: int(recipe["data"]["batch_utterances"])].tolist()
        views = []  # view k: [B, samples]
        for k in range(n_global + n_local):
            length = g_len if k < n_global else l_len
            views.append(torch.stack([_augment(torch.from_numpy(_crop(audio.waves[i], length, g)).float(),
                                               recipe["augment"], g) for i in picks]))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        with torch.no_grad():
            t_out = [teacher_head(teacher(v)) for v in views[:n_global]]
        s_out = [head(student(v)) for v in views]
        loss = dino_loss(s_out, t_out, center, float(d["student_temperature"]), float(d["teacher_temperature"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, opt_cfg["grad_clip"])
        optimizer.step()
        with torch.no_grad():
            m = momentum_at(step)
            for pt, ps in zip(list(teacher.parameters()) + list(teacher_head.parameters()),
                              list(student.parameters()) + list(head.parameters())):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            for bt, bs in zip(teacher.buffers(), student.buffers()):  # batch-norm statistics follow the student
                bt.copy_(bs)
            batch_center = torch.cat(t_out).mean(0)
            center = center * float(d["center_momentum"]) + batch_center * (1 - float(d["center_momentum"]))
            q = torch.softmax((torch.cat(t_out) - center) / float(d["teacher_temperature"]), -1)
            entropy = float(-(q * q.clamp(min=1e-12).log()).sum(-1).mean())
        window["loss"] += float(loss.detach())
        window["entropy"] += entropy
        window["n"] += 1
        done = step + 1
        if done % log_every == 0 or done == steps:
            row = {"iteration": 1, "step": done, "loss": round(window["loss"] / window["n"], 5),
                   "teacher_entropy": round(window["entropy"] / window["n"], 4),
                   "center_norm": round(float(center.norm()), 4), "lr": round(lr_at(step), 8),
                   "momentum": round(momentum_at(step), 6), "seconds": round(time.time() - t0, 1)}
            log.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", H=f"{row['teacher_entropy']:.2f}")
            window = {"loss": 0.0, "entropy": 0.0, "n": 0}
        bar.update()
        if done % every == 0 or done == steps:
            name = f"step_{done:06d}"
            save_encoder(teacher, folder / name, recipe, meta_at(done))
            _save_state(state_path, {"step": done, "student": student.state_dict(), "head": head.state_dict(),
                                     "teacher": teacher.state_dict(), "teacher_head": teacher_head.state_dict(),
                                     "center": center, "optimizer": optimizer.state_dict()})
            _write_log(log_path, log)
    bar.close()
    save_encoder(teacher, final, recipe, meta_at(steps))
    return final
