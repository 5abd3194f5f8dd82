"""Representation similarity measures: pure, typed functions behind a small registry.

All functions take ``x: [n, d1]`` and ``y: [n, d2]`` (n samples, e.g. frames or
segments, in the same order) as numpy arrays or torch tensors (CPU or GPU) and
compute in float64. Nothing here is silent about numerical failure: a singular
covariance raises :class:`SimilarityError`, and fewer samples than dimensions is
refused rather than returning a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


class SimilarityError(ValueError):
    """The measure is undefined for these inputs (too few samples, singular covariance)."""


def _t(a) -> torch.Tensor:
    t = torch.as_tensor(a)
    if not torch.is_floating_point(t):
        t = t.double()
    return t.to(torch.float64)


def _check(x: torch.Tensor, y: torch.Tensor, need_more_samples: bool) -> None:
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise SimilarityError(f"expected [n, d1] and [n, d2] with the same n, got {tuple(x.shape)} and {tuple(y.shape)}")
    n = x.shape[0]
    if n < 4:
        raise SimilarityError(f"{n} samples: at least 4 are needed")
    if need_more_samples and n <= max(x.shape[1], y.shape[1]):
        raise SimilarityError(f"{n} samples for {x.shape[1]} and {y.shape[1]} dimensions: CCA needs more samples "
                              "than dimensions (use more data or reduce dimensions)")


# ----------------------------------------------------------------------------- CKA


def linear_cka(x, y, debiased: bool = False) -> float:
    """Linear CKA in feature space (never forms the n x n Gram matrices).

    Biased: ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred X, Y.
    Debiased: the same ratio with the unbiased HSIC estimator (Song et al., 2012), whose
    Gram-matrix terms are rewritten with feature-space sums. x: [n, d1], y: [n, d2].
    """
    x, y = _t(x), _t(y)
    _check(x, y, need_more_samples=False)
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    if not debiased:
        xy = torch.linalg.matrix_norm(y.T @ x) ** 2
        xx = torch.linalg.matrix_norm(x.T @ x)
        yy = torch.linalg.matrix_norm(y.T @ y)
        if xx == 0 or yy == 0:
            raise SimilarityError("a representation is constant: CKA is undefined")
        return float(xy / (xx * yy))

    def hsic_u(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n = a.shape[0]
        na, nb = (a * a).sum(1), (b * b).sum(1)  # Gram diagonals
        trace = torch.linalg.matrix_norm(b.T @ a) ** 2 - (na * nb).sum()  # tr(K~ L~)
        sa, sb = a.sum(0), b.sum(0)
        ka1 = a @ sa - na  # K~ 1
        lb1 = b @ sb - nb  # L~ 1
        sum_k, sum_l = ka1.sum(), lb1.sum()
        return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (ka1 * lb1).sum()) / (n * (n - 3))

    xy, xx, yy = hsic_u(x, y), hsic_u(x, x), hsic_u(y, y)
    if xx <= 0 or yy <= 0:
        raise SimilarityError("a representation has no variance left after debiasing: CKA is undefined")
    return float(xy / torch.sqrt(xx * yy))


# ----------------------------------------------------------------------------- CCA


@dataclass
class CcaFit:
    """Canonical directions fitted on one set of samples (apply them to held-out ones)."""

    mean_x: torch.Tensor
    mean_y: torch.Tensor
    wx: torch.Tensor  # [d1, k]
    wy: torch.Tensor  # [d2, k]
    rho: torch.Tensor  # [k] canonical correlations on the fitting samples


def _inv_sqrt(c: torch.Tensor, what: str) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(c)
    if vals.min() <= 1e-12 * max(float(vals.max()), 1e-300):
        raise SimilarityError(f"the {what} covariance is singular; raise epsilon")
    return vecs @ torch.diag(vals.rsqrt()) @ vecs.T


def cca_fit(x, y, epsilon: float = 0.0) -> CcaFit:
    """Regularised CCA: whiten each side with (Sigma + epsilon * I)^-1/2, SVD the cross-covariance.

    epsilon is relative to the mean variance of each side, so one grid serves all scales.
    x: [n, d1], y: [n, d2] with n > d1, d2.
    """
    x, y = _t(x), _t(y)
    _check(x, y, need_more_samples=True)
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    n = x.shape[0]
    cxx, cyy, cxy = xc.T @ xc / (n - 1), yc.T @ yc / (n - 1), xc.T @ yc / (n - 1)
    cxx = cxx + epsilon * torch.diagonal(cxx).mean() * torch.eye(cxx.shape[0], dtype=cxx.dtype, device=cxx.device)
    cyy = cyy + epsilon * torch.diagonal(cyy).mean() * torch.eye(cyy.shape[0], dtype=cyy.dtype, device=cyy.device)
    ix, iy = _inv_sqrt(cxx, "first"), _inv_sqrt(cyy, "second")
    u, s, vt = torch.linalg.svd(ix @ cxy @ iy, full_matrices=False)
    return CcaFit(mx, my, ix @ u, iy @ vt.T, s.clamp(max=1.0))


def _corr_columns(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = torch.sqrt((a * a).sum(0) * (b * b).sum(0))
    return torch.where(den > 0, (a * b).sum(0) / den.clamp(min=1e-300), torch.zeros_like(den))


def pwcca_score(fit: CcaFit, x, y) -> float:
    """Projection-weighted CCA (Morcos et al., 2018) of ``fit`` on samples x, y.

    Canonical variates of x are orthonormalised; each canonical correlation is weighted
    by how much of x's neurons it accounts for (sum of |projections|), weights sum to 1.
    """
    x, y = _t(x), _t(y)
    if x.shape[0] <= fit.wx.shape[1]:
        raise SimilarityError(f"{x.shape[0]} held-out samples for {fit.wx.shape[1]} canonical directions: "
                              "PWCCA needs more samples than directions")
    u = (x - fit.mean_x) @ fit.wx  # [n, k]
    v = (y - fit.mean_y) @ fit.wy
    rho = _corr_columns(u, v)
    q, _ = torch.linalg.qr(u - u.mean(0))
    weights = (q.T @ (x - x.mean(0))).abs().sum(1)
    weights = weights / weights.sum()
    return float((weights * rho).sum())


def pwcca(x, y, epsilon: float = 0.0) -> float:
    """PWCCA of x and y fitted and scored on the same samples."""
    return pwcca_score(cca_fit(x, y, epsilon), x, y)


def mean_cca(x, y, epsilon: float = 0.0) -> float:
    """Mean canonical correlation (unweighted), fitted on the same samples."""
    return float(cca_fit(x, y, epsilon).rho.mean())


MEASURES: dict[str, Callable[..., float]] = {
    "cka": lambda x, y: linear_cka(x, y, debiased=False),
    "cka_debiased": lambda x, y: linear_cka(x, y, debiased=True),
    "pwcca": pwcca,
    "cca_mean": mean_cca,
}


def measure(name: str) -> Callable[..., float]:
    if name not in MEASURES:
        raise SimilarityError(f"unknown measure {name!r}; available: {', '.join(MEASURES)}")
    return MEASURES[name]
