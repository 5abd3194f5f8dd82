"""Benchmark: one layer's PWCCA protocol step (fit on a training fold for every epsilon pair,
score dev and test) done two ways side by side, plus CKA, on frame-scale data.

    python bench/analysis.py [--frames 20000] [--dim 768] [--prop-dim 80] [--layers 2]

- separate fits (the way before): for every (epsilon_x, epsilon_y) pair the covariances and
  both eigendecompositions are computed again (``cca_fit`` per pair);
- one factorisation (now): the covariances and one eigendecomposition per view are shared
  by every pair (``CcaProblem``), each pair then costs two small products and one SVD.
Both score the same held-out folds; the script prints both times, their ratio (goal >= 5x)
and the largest difference of the scores (goal <= 1e-6).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from harness.analysis.measures import CcaProblem, StreamingCKA, cca_fit, linear_cka, pwcca_score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--prop-dim", type=int, default=80)
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    prop = rng.standard_normal((args.frames, args.prop_dim))
    mix = rng.standard_normal((args.prop_dim, args.dim))
    epsilons = (1e-11, 1e-9, 1e-7, 1e-5)
    pairs = [(a, b) for a in epsilons for b in epsilons]
    n = args.frames
    folds = rng.permutation(n) % 10
    train, dev, test = folds >= 2, folds == 0, folds == 1
    print(f"{n} frames ({int(train.sum())} train / {int(dev.sum())} dev / {int(test.sum())} test), {args.dim}-dim "
          f"layers, {args.prop_dim}-dim property, {len(pairs)} epsilon pairs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    old_t, new_t, diffs = [], [], []
    for layer in range(args.layers):
        x = prop @ mix * (layer + 1) / args.layers + rng.standard_normal((n, args.dim))
        xt, yt = torch.as_tensor(x), torch.as_tensor(prop)
        t = time.perf_counter()
        old = []
        for ex, ey in pairs:
            fit = cca_fit(xt[train], yt[train], ex, ey)
            old.append((pwcca_score(fit, xt[dev], yt[dev]), pwcca_score(fit, xt[test], yt[test])))
        old_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        problem = CcaProblem(xt[train], yt[train])
        new = []
        for ex, ey in pairs:
            fit = problem.fit(ex, ey)
            new.append((pwcca_score(fit, xt[dev], yt[dev]), pwcca_score(fit, xt[test], yt[test])))
        new_t.append(time.perf_counter() - t)
        diffs.append(float(np.abs(np.array(old) - np.array(new)).max()))
        best = max(new, key=lambda s: s[0])
        print(f"layer {layer}: separate fits {old_t[-1]:.2f} s, one factorisation {new_t[-1]:.2f} s "
              f"({old_t[-1] / new_t[-1]:.1f}x); max |difference| {diffs[-1]:.1e}; test PWCCA at the dev-best pair "
              f"{best[1]:.4f}")
    print(f"mean per layer: {np.mean(old_t):.2f} s -> {np.mean(new_t):.2f} s, {np.mean(old_t) / np.mean(new_t):.1f}x "
          f"faster (goal >= 5x); largest score difference {max(diffs):.1e} (goal <= 1e-6)")

    x = prop @ mix + rng.standard_normal((n, args.dim))
    t = time.perf_counter()
    full = (linear_cka(x, prop), linear_cka(x, prop, debiased=True))
    t_full = time.perf_counter() - t
    t = time.perf_counter()
    acc = StreamingCKA()
    for start in range(0, n, 2048):
        acc.update(x[start:start + 2048], prop[start:start + 2048])
    streamed = (acc.value(), acc.value(debiased=True))
    t_stream = time.perf_counter() - t
    print(f"CKA (biased and debiased): in memory {t_full:.2f} s, streamed in 2048-frame batches {t_stream:.2f} s; "
          f"values {full[0]:.6f}/{full[1]:.6f} vs {streamed[0]:.6f}/{streamed[1]:.6f}")


if __name__ == "__main__":
    main()
