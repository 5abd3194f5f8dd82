"""Learning-rate and momentum schedules of the training recipes, written once.

Each function maps an optimizer step (0-based: the step about to be taken) to a value. The
arithmetic is written in one fixed order, so a recipe gets the same floating-point values
on every run (and the same as the closures these replaced).
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 0 at ``total``.

    ``lr(s) = peak * (s + 1) / warmup`` for ``s < warmup``, else
    ``peak * 0.5 * (1 + cos(pi * (s - warmup) / max(1, total - warmup)))``.
    The warm-up of Goyal et al. 2017 ("Accurate, large minibatch SGD") before the cosine
    annealing of Loshchilov & Hutter 2017 (SGDR, without restarts); the pretraining recipes
    (HuBERT, wav2vec 2.0, DINO) use it. ``peak`` in the optimizer's units (lr per step).
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def warmup_linear(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then linear decay to 0 at ``total``.

    ``lr(s) = peak * (s + 1) / warmup`` for ``s < warmup``, else
    ``peak * max(0, (total - s) / max(1, total - warmup))``. The fine-tuning schedule of
    BERT (Devlin et al. 2019) and HuggingFace's ``get_linear_schedule_with_warmup`` (which
    starts its warm-up at 0 instead of ``peak / warmup``); used by CTC fine-tuning.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


def cosine_to_one(step: int, start: float, total: int) -> float:
    """A momentum rising from ``start`` at step 0 to 1 at ``total`` along a half cosine:
    ``1 - (1 - start) * 0.5 * (1 + cos(pi * s / max(1, total)))``. DINO's teacher EMA
    momentum (Caron et al. 2021, sec. 3.1 and appendix: 0.996 -> 1)."""
    return 1 - (1 - start) * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))


def exponential_decay(step: int, start: float, end: float, total: int) -> float:
    """``start * (end / start) ** (s / max(1, total))``, held at ``end`` once reached: the
    Gumbel-softmax temperature annealing of wav2vec 2.0 (Baevski et al. 2020, sec. 4.2,
    which decays by a constant factor per update down to a floor)."""
    return max(end, start * (end / start) ** (step / max(1, total)))
