"""Benchmark: per-layer PWCCA on frame-scale data (default 20,000 frames x 768 dims vs an
80-dim property), and feature-space CKA on the same frames; prints frames per second.

    python bench/analysis.py [--frames 20000] [--dim 768] [--layers 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from harness.similarity import cca_fit, linear_cka, pwcca_score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--prop-dim", type=int, default=80)
    ap.add_argument("--layers", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    prop = rng.standard_normal((args.frames, args.prop_dim))
    mix = rng.standard_normal((args.prop_dim, args.dim))
    print(f"{args.frames} frames, {args.dim}-dim layers, {args.prop_dim}-dim property, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    t_cca, t_cka = [], []
    for layer in range(args.layers):
        x = prop @ mix * (layer + 1) / args.layers + rng.standard_normal((args.frames, args.dim))
        t = time.perf_counter()
        fit = cca_fit(x, prop, epsilon=1e-4)
        score = pwcca_score(fit, x, prop)
        t_cca.append(time.perf_counter() - t)
        t = time.perf_counter()
        cka = linear_cka(x, prop)
        cka_u = linear_cka(x, prop, debiased=True)
        t_cka.append(time.perf_counter() - t)
        print(f"layer {layer}: PWCCA {score:.4f} in {t_cca[-1]:.2f} s ({args.frames / t_cca[-1]:,.0f} frames/s); "
              f"CKA {cka:.4f} / debiased {cka_u:.4f} in {t_cka[-1]:.2f} s")
    print(f"mean per layer: PWCCA {np.mean(t_cca):.2f} s = {args.frames / np.mean(t_cca):,.0f} frames/s; "
          f"CKA (both) {np.mean(t_cka):.2f} s = {args.frames / np.mean(t_cka):,.0f} frames/s")


if __name__ == "__main__":
    main()
