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

Output folder: as the HuBERT recipe's, with one iteration (``it1/step_NNNNNN``, ``it1/final``,
``it1/state.pt``), ``recipe.yaml`` and ``log.jsonl`` (loss, contrastive and diversity
losses, codeword perplexity, contrastive accuracy, Gumbel temperature, lr). Deterministic
and resumable like the HuBERT recipe (masks, distractors, Gumbel noise and dropout drawn
from generators seeded by (seed, step)).
"""

from __future__ import annotations

import math
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.audio import SAMPLE_RATE
from harness.errors import HarnessError
from harness.training.hubert import (
    CONV_KERNEL,
    CONV_STRIDE,
    LABEL_RATE_HOP,
    StepBatches,
    _read_log,
    _save_state,
    _write_log,
    load_train_audio,
    model_frames,
    prepare_run,
    save_checkpoint,
    span_mask,
)


def default_recipe() -> dict:
    import yaml

    return yaml.safe_load(resources.files("harness.training").joinpath("wav2vec2.yaml").read_text())


def build_model(recipe: dict):
    from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining

    q = recipe["quantizer"]
    config = Wav2Vec2Config(**recipe["model"], conv_kernel=list(CONV_KERNEL), conv_stride=list(CONV_STRIDE),
                            do_stable_layer_norm=False, apply_spec_augment=True, mask_time_prob=0.05,
                            num_codevector_groups=int(q["groups"]), num_codevectors_per_group=int(q["codewords"]),
                            codevector_dim=int(q["dim"]), proj_codevector_dim=int(q["dim"]),
                            num_negatives=int(recipe["contrastive"]["distractors"]),
                            contrastive_logits_temperature=float(recipe["contrastive"]["temperature"]),
                            diversity_loss_weight=float(recipe["contrastive"]["diversity_weight"]), vocab_size=1)
    return Wav2Vec2ForPreTraining(config)


def pretrain(corpus: Path, out: Path, recipe: dict, progress: bool = True, reuse: Path | None = None) -> list[Path]:
    if reuse is not None:
        raise HarnessError("--reuse applies to the iterative HuBERT recipe; the wav2vec2 recipe has one iteration")
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


def gumbel_temperature(recipe: dict, step: int) -> float:
    """Exponential decay from ``start`` to ``end`` over the run (then held)."""
    g = recipe["quantizer"]
    steps = int(recipe["steps"])
    start, end = float(g["temperature_start"]), float(g["temperature_end"])
    return max(end, start * (end / start) ** (step / max(1, steps)))


def train(audio, folder: Path, recipe: dict, log_path: Path, progress: bool) -> Path:
    from tqdm import tqdm
    from transformers.models.wav2vec2.modeling_wav2vec2 import _sample_negative_indices

    from harness.upstream import normalise_waveforms

    final = folder / "final"
    steps = int(recipe["steps"])
    if (final / "pretrain.json").exists():
        return final
    folder.mkdir(parents=True, exist_ok=True)
    seed = int(recipe["seed"])
    torch.manual_seed(seed * 1000 + 1)
    model = build_model(recipe)
    state_path = folder / "state.pt"
    start = 0
    state = None
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        start = int(state["step"])
    model.train()
    opt_cfg = recipe["optim"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt_cfg["lr"], betas=(0.9, 0.98), eps=1e-6,
                                  weight_decay=opt_cfg["weight_decay"])
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    warmup = int(opt_cfg["warmup_steps"])

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 0 (as the HuBERT recipe)
        if step < warmup:
            return opt_cfg["lr"] * (step + 1) / warmup
        return opt_cfg["lr"] * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    log = [r for r in _read_log(log_path) if r["iteration"] != 1 or r["step"] <= start]
    lengths = [len(w) for w in audio.waves]
    batches = StepBatches(lengths, recipe["data"]["batch_seconds"], recipe["data"]["max_crop_seconds"], seed * 100 + 1)
    every, log_every = int(recipe["checkpoint_every"]), int(recipe["log_every"])
    mask_cfg = recipe["mask"]
    window = {"loss": 0.0, "contrastive": 0.0, "diversity": 0.0, "perplexity": 0.0, "correct": 0, "masked": 0, "n": 0}
    t0 = time.time()
    bar = tqdm(total=steps, initial=start, desc="pretrain wav2vec2", unit="step", disable=not progress)

    def meta_at(done: int) -> dict:
        return {"iteration": 1, "step": done, "steps": steps, "seed": seed, "objective": "wav2vec2",
                "loss": log[-1]["loss"] if log else None}

    for step in range(start, steps):
        base = (seed * 1000 + 1) * 1_000_003 + step
        g = torch.Generator().manual_seed(base)
        torch.manual_seed(base)  # dropout and Gumbel noise
        np.random.seed(base % (2 ** 32))  # HF draws the distractors with numpy
        model.set_gumbel_temperature(gumbel_temperature(recipe, step))
        idx = batches[step]
        crop = min(min(lengths[i] for i in idx), int(recipe["data"]["max_crop_seconds"] * SAMPLE_RATE))
        frames = model_frames(crop)
        wavs = []
        for i in idx:
            first = int(torch.randint((lengths[i] - crop) // LABEL_RATE_HOP + 1, (1,), generator=g))
            wavs.append(torch.from_numpy(audio.waves[i][first * LABEL_RATE_HOP:first * LABEL_RATE_HOP + crop]))
        wav = normalise_waveforms(torch.stack(wavs), torch.full((len(idx),), crop))
        mask = span_mask(len(idx), frames, mask_cfg["start_prob"], mask_cfg["span"], g)
        negatives = torch.from_numpy(_sample_negative_indices((len(idx), frames), model.config.num_negatives,
                                                              mask.numpy()))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        out = model(input_values=wav, mask_time_indices=mask, sampled_negative_indices=negatives)
        masked = int(mask.sum())
        loss = out.loss / masked  # per masked frame
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), opt_cfg["grad_clip"])
        optimizer.step()
        with torch.no_grad():  # contrastive accuracy: the true quantised frame scores best among the distractors
            pos = torch.cosine_similarity(out.projected_states, out.projected_quantized_states, dim=-1)
            flat_q = out.projected_quantized_states.reshape(-1, out.projected_quantized_states.shape[-1])
            neg_q = flat_q[negatives.long().view(-1)].view(len(idx), frames, -1, flat_q.shape[-1])
            neg = torch.cosine_similarity(out.projected_states[:, :, None], neg_q, dim=-1)
            window["correct"] += int(((pos[:, :, None] > neg).all(-1) & mask).sum())
        window["loss"] += float(loss.detach())
        window["contrastive"] += float(out.contrastive_loss.detach()) / masked
        window["diversity"] += float(out.diversity_loss.detach()) / masked
        window["perplexity"] += float(out.codevector_perplexity.detach())
        window["masked"] += masked
        window["n"] += 1
        done = step + 1
        if done % log_every == 0 or done == steps:
            n = window["n"]
            row = {"iteration": 1, "step": done, "loss": round(window["loss"] / n, 5),
                   "contrastive": round(window["contrastive"] / n, 5), "diversity": round(window["diversity"] / n, 5),
                   "perplexity": round(window["perplexity"] / n, 2),
                   "masked_acc": round(window["correct"] / max(window["masked"], 1), 5),
                   "gumbel_temperature": round(gumbel_temperature(recipe, step), 4), "lr": round(lr_at(step), 8),
                   "batch": len(idx), "crop_s": round(crop / SAMPLE_RATE, 3), "seconds": round(time.time() - t0, 1)}
            log.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['masked_acc']:.3f}", ppl=f"{row['perplexity']:.0f}")
            window = {k: 0 if isinstance(v, int) else 0.0 for k, v in window.items()}
        bar.update()
        if done % every == 0 or done == steps:
            name = f"step_{done:06d}"
            save_checkpoint(model.wav2vec2, folder / name, meta_at(done))
            _save_state(state_path, {"step": done, "checkpoint": name, "model": model.state_dict(),
                                     "optimizer": optimizer.state_dict()})
            _write_log(log_path, log)
    bar.close()
    save_checkpoint(model.wav2vec2, final, meta_at(steps))
    return final
