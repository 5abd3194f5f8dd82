"""wav2vec 2.0-style pretraining (``harness pretrain --recipe wav2vec2``): the tiny architecture
of the HuBERT recipe, the same training audio, batches and step budget, another objective.

At masked frames the transformer output must pick the true quantised CNN feature among
distractors drawn from other masked frames of the same utterance (contrastive loss over
cosine similarities, temperature 0.1); the targets come from a Gumbel-softmax product
quantiser on the CNN features (G groups of V codewords, temperature annealed from 2 to 0.5
over the run), with the diversity loss that spreads codeword use (Baevski et al. 2020).
Losses are per masked frame. The model is HuggingFace's ``Wav2Vec2ForPreTraining``; every
checkpoint saves its encoder (``Wav2Vec2Model``) as a model directory, so it loads as
``hf:DIR`` like the HuBERT checkpoints.

Trained by the shared loop (`harness.training.loop.fit`) with `Wav2vec2Objective`.

Output folder: as the HuBERT recipe's, with one iteration (``it1/step_NNNNNN``, ``it1/final``,
``it1/state.pt``), ``recipe.yaml`` and ``log.jsonl`` (loss, contrastive and diversity
losses, codeword perplexity, contrastive accuracy, Gumbel temperature, lr). Deterministic
and resumable like the HuBERT recipe (masks, distractors, Gumbel noise and dropout drawn
from generators seeded by (seed, step)).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining
from transformers.models.wav2vec2.modeling_wav2vec2 import _sample_negative_indices

from harness.audio import SAMPLE_RATE
from harness.training.data import (
    CONV_KERNEL,
    CONV_STRIDE,
    Audio,
    StepBatches,
    random_crops,
    span_mask,
)
from harness.training.loop import Objective
from harness.training.recipe import SingleStageRecipe
from harness.training.runs import save_checkpoint
from harness.training.schedules import exponential_decay, warmup_cosine


def build_model(recipe: dict) -> Wav2Vec2ForPreTraining:
    """A randomly initialised ``Wav2Vec2ForPreTraining``: the recipe's ``model`` config with
    HuBERT's CNN, its ``quantizer`` and ``contrastive`` settings."""
    q = recipe["quantizer"]
    config = Wav2Vec2Config(**recipe["model"], conv_kernel=list(CONV_KERNEL), conv_stride=list(CONV_STRIDE),
                            do_stable_layer_norm=False, apply_spec_augment=True, mask_time_prob=0.05,
                            num_codevector_groups=int(q["groups"]), num_codevectors_per_group=int(q["codewords"]),
                            codevector_dim=int(q["dim"]), proj_codevector_dim=int(q["dim"]),
                            num_negatives=int(recipe["contrastive"]["distractors"]),
                            contrastive_logits_temperature=float(recipe["contrastive"]["temperature"]),
                            diversity_loss_weight=float(recipe["contrastive"]["diversity_weight"]), vocab_size=1)
    return Wav2Vec2ForPreTraining(config)


def gumbel_temperature(recipe: dict, step: int) -> float:
    """Exponential decay from ``start`` to ``end`` over the run (then held)."""
    g = recipe["quantizer"]
    return exponential_decay(step, float(g["temperature_start"]), float(g["temperature_end"]), int(recipe["steps"]))


class Wav2vec2Objective(Objective):
    """Contrastive loss plus the weighted diversity loss, per masked frame."""

    description = "pretrain wav2vec2"
    iteration = 1

    def __init__(self, audio: Audio, recipe: dict) -> None:
        super().__init__(recipe)
        self.audio = audio
        self.batches = StepBatches([len(w) for w in audio.waves], recipe["data"]["batch_seconds"],
                                   recipe["data"]["max_crop_seconds"], self.seed * 100 + 1)
        self.last: dict = {}

    def setup(self, resumed: dict | None, folder: Path) -> None:
        opt_cfg = self.recipe["optim"]
        torch.manual_seed(self.seed * 1000 + 1)
        self.model = build_model(self.recipe)
        if resumed is not None:
            self.model.load_state_dict(resumed["model"])
        self.model.train()
        self.params = list(self.model.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=opt_cfg["lr"], betas=(0.9, 0.98), eps=1e-6,
                                           weight_decay=opt_cfg["weight_decay"])
        if resumed is not None:
            self.optimizer.load_state_dict(resumed["optimizer"])

    def step_seed(self, step: int) -> int:
        return (self.seed * 1000 + 1) * 1_000_003 + step

    def lr_at(self, step: int) -> float:
        opt_cfg = self.recipe["optim"]
        return warmup_cosine(step, opt_cfg["lr"], int(opt_cfg["warmup_steps"]), self.steps)

    def compute_objectives(self, step: int, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        model = self.model
        model.set_gumbel_temperature(gumbel_temperature(self.recipe, step))
        idx = self.batches[step]
        crops = random_crops(self.audio.waves, idx, self.recipe["data"]["max_crop_seconds"], generator)
        mask_cfg = self.recipe["mask"]
        mask = span_mask(len(idx), crops.frames, mask_cfg["start_prob"], mask_cfg["span"], generator)
        # HF draws the distractors with numpy (seeded by the loop)
        negatives = torch.from_numpy(_sample_negative_indices((len(idx), crops.frames), model.config.num_negatives,
                                                              mask.numpy()))
        out = model(input_values=crops.wav, mask_time_indices=mask, sampled_negative_indices=negatives)
        masked = int(mask.sum())
        with torch.no_grad():  # contrastive accuracy: the true quantised frame scores best among the distractors
            pos = torch.cosine_similarity(out.projected_states, out.projected_quantized_states, dim=-1)
            flat_q = out.projected_quantized_states.reshape(-1, out.projected_quantized_states.shape[-1])
            neg_q = flat_q[negatives.long().view(-1)].view(len(idx), crops.frames, -1, flat_q.shape[-1])
            neg = torch.cosine_similarity(out.projected_states[:, :, None], neg_q, dim=-1)
            correct = int(((pos[:, :, None] > neg).all(-1) & mask).sum())
        self.last = {"batch": len(idx), "crop_s": round(crops.samples / SAMPLE_RATE, 3)}
        return out.loss / masked, {  # per masked frame
            "contrastive": float(out.contrastive_loss.detach()) / masked,
            "diversity": float(out.diversity_loss.detach()) / masked,
            "perplexity": float(out.codevector_perplexity.detach()), "correct": correct, "masked": masked}

    def log_row(self, window: dict, step: int) -> dict:
        n = window["n"]
        return {"contrastive": round(window["contrastive"] / n, 5), "diversity": round(window["diversity"] / n, 5),
                "perplexity": round(window["perplexity"] / n, 2),
                "masked_acc": round(window["correct"] / max(window["masked"], 1), 5),
                "gumbel_temperature": round(gumbel_temperature(self.recipe, step), 4), **self.last}

    def postfix(self, row: dict) -> dict:
        return {"loss": f"{row['loss']:.3f}", "acc": f"{row['masked_acc']:.3f}", "ppl": f"{row['perplexity']:.0f}"}

    def meta(self, step: int, log: list[dict]) -> dict:
        return {"iteration": 1, "step": step, "steps": self.steps, "seed": self.seed, "objective": "wav2vec2",
                "loss": log[-1]["loss"] if log else None}

    def save(self, folder: Path, meta: dict) -> None:
        save_checkpoint(self.model.wav2vec2, folder, meta)

    def state(self, step: int, checkpoint: str) -> dict:
        return {"step": step, "checkpoint": checkpoint, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict()}


class Wav2vec2Recipe(SingleStageRecipe):
    """``harness pretrain --recipe wav2vec2``: contrastive masked prediction, checkpoints as ``hf:DIR``."""

    name, backend, objective = "wav2vec2", "hf", Wav2vec2Objective
    defaults = ("harness.training", "wav2vec2.yaml")


default_recipe = Wav2vec2Recipe().default_recipe  # the recipe of harness/training/wav2vec2.yaml
pretrain = Wav2vec2Recipe().pretrain  # (corpus, out, recipe, progress=True) -> [out/it1/final]
