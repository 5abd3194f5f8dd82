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

Trained by the shared loop (`harness.training.loop.fit`) with `DinoObjective`.

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
from pathlib import Path

import numpy as np
import torch
import torchaudio
from hyperpyyaml import load_hyperpyyaml
from torch import nn

from harness.audio import SAMPLE_RATE
from harness.fsutil import atomic_dir
from harness.training.data import Audio
from harness.training.loop import Objective
from harness.training.recipe import SingleStageRecipe
from harness.training.schedules import cosine_to_one, warmup_cosine

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


def hyperparams(recipe: dict) -> str:
    """The SpeechBrain ``hyperparams.yaml`` of the recipe's encoder."""
    m = recipe["model"]
    c = int(m["channels"])
    return HYPERPARAMS.format(n_mels=int(m["n_mels"]), channels=[c, c, c, c, 3 * c],
                              attention=int(m["attention_channels"]), embedding=int(m["embedding"]))


class Encoder(nn.Module):
    """Fbank -> sentence mean normalisation -> ECAPA-TDNN embedding, as the SpeechBrain
    model directory defines it (built from the same hyperparams text)."""

    def __init__(self, recipe: dict) -> None:
        super().__init__()
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
        """x ``[B, dim]`` -> logits over the prototypes ``[B, prototypes]``."""
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


def save_encoder(encoder: Encoder, folder: Path, recipe: dict, meta: dict) -> None:
    """The encoder in SpeechBrain's model-directory layout (an upstream: ``speechbrain:DIR``)."""
    with atomic_dir(folder) as tmp:
        (tmp / "hyperparams.yaml").write_text(hyperparams(recipe))
        state = {k: v.detach().clone().contiguous() for k, v in encoder.model.state_dict().items()}
        torch.save(state, tmp / "embedding_model.ckpt")
        (tmp / "pretrain.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


class DinoObjective(Objective):
    """DINO self-distillation: the student matches the centred, sharpened teacher on every
    other crop (`dino_loss`); after each step the teacher follows the student (EMA) and
    the centre follows the teacher's outputs."""

    description = "pretrain dino"
    iteration = 1

    def __init__(self, audio: Audio, recipe: dict) -> None:
        super().__init__(recipe)
        self.audio = audio
        self.dino, crops = recipe["dino"], recipe["crops"]
        self.n_global, self.n_local = int(crops["global"]), int(crops["local"])
        self.lengths = (int(crops["global_seconds"] * SAMPLE_RATE), int(crops["local_seconds"] * SAMPLE_RATE))

    def setup(self, resumed: dict | None, folder: Path) -> None:
        recipe, h, opt_cfg = self.recipe, self.recipe["head"], self.recipe["optim"]
        torch.manual_seed(self.seed * 1000 + 7)
        self.student = Encoder(recipe)
        self.head = DinoHead(int(recipe["model"]["embedding"]), int(h["hidden"]), int(h["bottleneck"]),
                             int(h["prototypes"]))
        self.teacher, self.teacher_head = copy.deepcopy(self.student), copy.deepcopy(self.head)
        for p in list(self.teacher.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad_(False)
        self.center = torch.zeros(int(h["prototypes"]))
        self.params = list(self.student.parameters()) + list(self.head.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=opt_cfg["lr"], weight_decay=opt_cfg["weight_decay"])
        if resumed is not None:
            self.student.load_state_dict(resumed["student"])
            self.head.load_state_dict(resumed["head"])
            self.teacher.load_state_dict(resumed["teacher"])
            self.teacher_head.load_state_dict(resumed["teacher_head"])
            self.center = resumed["center"]
            self.optimizer.load_state_dict(resumed["optimizer"])
        self.student.train()
        self.head.train()
        self.teacher.eval()
        self.teacher_head.eval()

    def step_seed(self, step: int) -> int:
        return (self.seed * 1000 + 7) * 1_000_003 + step

    def lr_at(self, step: int) -> float:
        opt_cfg = self.recipe["optim"]
        return warmup_cosine(step, opt_cfg["lr"], int(opt_cfg["warmup_steps"]), self.steps)

    def momentum_at(self, step: int) -> float:
        """The teacher's EMA momentum at ``step``: a cosine from the recipe's value to 1."""
        return cosine_to_one(step, float(self.dino["momentum"]), self.steps)

    def compute_objectives(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        waves, d = self.audio.waves, self.dino
        picks = torch.randperm(len(waves), generator=generator)[: int(self.recipe["data"]["batch_utterances"])].tolist()
        views = []  # view k: [B, samples]
        for k in range(self.n_global + self.n_local):
            length = self.lengths[0] if k < self.n_global else self.lengths[1]
            views.append(torch.stack([_augment(torch.from_numpy(_crop(waves[i], length, generator)).float(),
                                               self.recipe["augment"], generator) for i in picks]))
        with torch.no_grad():
            self.t_out = [self.teacher_head(self.teacher(v)) for v in views[:self.n_global]]
        s_out = [self.head(self.student(v)) for v in views]
        loss = dino_loss(s_out, self.t_out, self.center, float(d["student_temperature"]),
                         float(d["teacher_temperature"]))
        return loss, {}

    def on_step_end(self, step: int) -> dict:
        d = self.dino
        with torch.no_grad():
            m = self.momentum_at(step)
            for pt, ps in zip(list(self.teacher.parameters()) + list(self.teacher_head.parameters()),
                              list(self.student.parameters()) + list(self.head.parameters())):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            for bt, bs in zip(self.teacher.buffers(), self.student.buffers()):  # batch-norm statistics: the student's
                bt.copy_(bs)
            batch_center = torch.cat(self.t_out).mean(0)
            self.center = self.center * float(d["center_momentum"]) + batch_center * (1 - float(d["center_momentum"]))
            q = torch.softmax((torch.cat(self.t_out) - self.center) / float(d["teacher_temperature"]), -1)
            entropy = float(-(q * q.clamp(min=1e-12).log()).sum(-1).mean())
        return {"entropy": entropy}

    def log_row(self, window: dict, step: int) -> dict:
        return {"teacher_entropy": round(window["entropy"] / window["n"], 4),
                "center_norm": round(float(self.center.norm()), 4), "momentum": round(self.momentum_at(step), 6)}

    def postfix(self, row: dict) -> dict:
        return {"loss": f"{row['loss']:.3f}", "H": f"{row['teacher_entropy']:.2f}"}

    def meta(self, step: int, log: list[dict]) -> dict:
        return {"iteration": 1, "step": step, "steps": self.steps, "seed": self.seed, "objective": "dino",
                "loss": log[-1]["loss"] if log else None}

    def save(self, folder: Path, meta: dict) -> None:
        save_encoder(self.teacher, folder, self.recipe, meta)

    def state(self, step: int, checkpoint: str) -> dict:
        return {"step": step, "student": self.student.state_dict(), "head": self.head.state_dict(),
                "teacher": self.teacher.state_dict(), "teacher_head": self.teacher_head.state_dict(),
                "center": self.center, "optimizer": self.optimizer.state_dict()}


class DinoRecipe(SingleStageRecipe):
    """``harness pretrain --recipe dino``: speaker self-distillation, checkpoints as ``speechbrain:DIR``."""

    name, backend, objective = "dino", "speechbrain", DinoObjective
    defaults = ("harness.training", "dino.yaml")


default_recipe = DinoRecipe().default_recipe  # the recipe of harness/training/dino.yaml
pretrain = DinoRecipe().pretrain  # (corpus, out, recipe, progress=True) -> [out/it1/final]
