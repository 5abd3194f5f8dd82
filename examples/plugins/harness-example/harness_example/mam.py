"""Recipe plugin example: masked acoustic modelling (``harness pretrain --recipe mam``).

A tiny encoder with wav2vec 2.0's architecture (HuggingFace ``Wav2Vec2Model``) learns to
reconstruct the log band energies of masked frames from their context: the L1 loss of
Mockingjay (Liu et al. 2020), with 8 log-spectral bands standing in for 80 mel bins and the
model's own 50 Hz frames (400-sample windows every 320 samples) as the reconstruction grid.

Registered as ``mam`` in the ``harness.recipes`` entry-point group. The shared loop
(``harness.training.loop.fit``) does the seeding, schedule, optimizer steps, log, checkpoints
and resuming; this file says what a step computes. Every checkpoint is a model directory
that loads as the upstream ``hf:OUT/it1/step_NNNNNN`` (or ``hf:OUT/it1/final``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from harness.training.data import CONV_KERNEL, CONV_STRIDE, Audio, StepBatches, random_crops, span_mask
from harness.training.loop import Objective
from harness.training.recipe import Recipe, pretrain_single_stage
from harness.training.runs import save_checkpoint
from harness.training.schedules import warmup_cosine

RECIPE = {  # the default; --config FILE and --set KEY=VALUE change it
    "seed": 0,
    "data": {"layouts": ["librispeech"], "batch_seconds": 8.0, "max_crop_seconds": 2.0},
    "model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
              "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
              "feat_extract_norm": "layer"},
    "bands": 8,
    "mask": {"start_prob": 0.065, "span": 5},
    "optim": {"lr": 2.0e-3, "warmup_steps": 10, "weight_decay": 0.01, "grad_clip": 5.0},
    "steps": 200,
    "checkpoint_every": 50,
    "log_every": 10,
}


def band_energies(wav: torch.Tensor, bands: int) -> torch.Tensor:
    """``[batch, samples]`` -> log power in ``bands`` equal-width bands ``[batch, frames, bands]``,
    one frame per 400-sample Hann window every 320 samples (the CNN's frames)."""
    power = torch.stft(wav, n_fft=400, hop_length=320, window=torch.hann_window(400), center=False,
                       return_complex=True).abs().pow(2)  # [batch, 201, frames]
    width = 200 // bands
    banded = power[:, 1:1 + width * bands].reshape(len(wav), bands, width, -1).mean(2)
    return banded.add(1e-6).log().transpose(1, 2)


class MaskedAcousticObjective(Objective):
    """L1 reconstruction of the masked frames' log band energies."""

    description = "pretrain mam"
    iteration = 1

    def __init__(self, audio: Audio, recipe: dict) -> None:
        super().__init__(recipe)  # seed, steps, checkpoint_every, log_every, optim.grad_clip
        self.audio = audio
        self.batches = StepBatches([len(w) for w in audio.waves], recipe["data"]["batch_seconds"],
                                   recipe["data"]["max_crop_seconds"], self.seed)

    def setup(self, resumed: dict | None, folder: Path) -> None:
        torch.manual_seed(self.seed)
        config = Wav2Vec2Config(**self.recipe["model"], conv_kernel=list(CONV_KERNEL), conv_stride=list(CONV_STRIDE),
                                apply_spec_augment=True, mask_time_prob=0.05, vocab_size=1)  # with a mask embedding
        self.model = Wav2Vec2Model(config)
        self.head = nn.Linear(config.hidden_size, int(self.recipe["bands"]))
        self.params = list(self.model.parameters()) + list(self.head.parameters())
        opt = self.recipe["optim"]
        self.optimizer = torch.optim.AdamW(self.params, lr=float(opt["lr"]), weight_decay=float(opt["weight_decay"]))
        if resumed is not None:
            self.model.load_state_dict(resumed["model"])
            self.head.load_state_dict(resumed["head"])
            self.optimizer.load_state_dict(resumed["optimizer"])
        self.model.train()

    def step_seed(self, step: int) -> int:
        return self.seed * 1_000_003 + step

    def lr_at(self, step: int) -> float:
        opt = self.recipe["optim"]
        return warmup_cosine(step, float(opt["lr"]), int(opt["warmup_steps"]), self.steps)

    def compute_objectives(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        crops = random_crops(self.audio.waves, self.batches[step], self.recipe["data"]["max_crop_seconds"], generator)
        target = band_energies(crops.wav, int(self.recipe["bands"]))[:, :crops.frames]
        mask = span_mask(len(crops.wav), crops.frames, self.recipe["mask"]["start_prob"], self.recipe["mask"]["span"],
                         generator)
        hidden = self.model(input_values=crops.wav, mask_time_indices=mask).last_hidden_state
        loss = (self.head(hidden[mask]) - target[mask]).abs().mean()
        return loss, {"masked": int(mask.sum())}

    def log_row(self, window: dict, step: int) -> dict:
        return {"masked_frames": window["masked"]}

    def meta(self, step: int, log: list[dict]) -> dict:
        return {"iteration": 1, "step": step, "steps": self.steps, "objective": "mam",
                "loss": log[-1]["loss"] if log else None}

    def save(self, folder: Path, meta: dict) -> None:
        save_checkpoint(self.model, folder, meta)

    def state(self, step: int, checkpoint: str) -> dict:
        return {"step": step, "model": self.model.state_dict(), "head": self.head.state_dict(),
                "optimizer": self.optimizer.state_dict()}


class MaskedAcousticRecipe(Recipe):
    name = "mam"
    backend = "hf"  # checkpoints are HuggingFace model directories

    def default_recipe(self) -> dict:
        return copy.deepcopy(RECIPE)

    def pretrain(self, corpus: Path, out: Path, recipe: dict, progress: bool = True,
                 reuse: Path | None = None) -> list[Path]:
        return pretrain_single_stage(self.name, MaskedAcousticObjective, corpus, out, recipe, progress, reuse)
