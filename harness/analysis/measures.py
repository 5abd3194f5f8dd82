"""Representation similarity measures: pure, typed functions and streaming accumulators.

All functions take ``x: [n, d1]`` and ``y: [n, d2]`` (n samples, e.g. frames or segments, in
the same order) as numpy arrays or torch tensors (CPU or GPU) and compute in float64. Nothing
here is silent about numerical failure: a singular covariance raises :class:`SimilarityError`,
and fewer samples than dimensions is refused rather than returning a number.

Layers: linear CKA (biased and debiased; exact streaming over batches; Nguyen et al.'s
mini-batch estimator), CCA with two regularisation conventions, PWCCA as published (Morcos
et al. 2018: canonical correlations weighted by how much of the view with fewer neurons each
canonical variate accounts for), mean CCA and SVCCA (Raghu et al. 2017). Neurons: MaxCorr,
MinCorr and LinReg (Wu et al. 2020), streaming. Attention maps: Jensen-Shannon similarity of
rows, Pearson correlation and Frobenius distance, with best-match head pairing.

Regularisation conventions for CCA (``convention=``):
- ``"reference"`` (the published code, svcca and the layer-wise analysis): each view's
  covariance is divided by its largest absolute entry (the cross-covariance by the geometric
  mean of the two), dimensions whose scaled variance is below that view's epsilon are
  dropped, and epsilon x I is added: an absolute ridge of epsilon x max|C| per view, with a
  separate epsilon for each view;
- ``"relative"``: no dimension is dropped; epsilon x (mean variance of the view) x I is added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

CONVENTIONS = ("reference", "relative")
WEIGHTINGS = ("smaller", "x", "y")


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
    """Linear CKA (Kornblith et al. 2019) in feature space (never forms the n x n Gram matrices).

    Biased: ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred X, Y.
    Debiased: the same ratio with the unbiased HSIC estimator (Song et al., 2012), whose
    Gram-matrix terms are rewritten with feature-space sums. x: [n, d1], y: [n, d2]; a
    value in [0, 1] (debiased: may dip below 0). Raises :class:`SimilarityError` for fewer
    than 4 samples, mismatched shapes or a constant representation.
    """
    x, y = _t(x), _t(y)
    _check(x, y, need_more_samples=False)
    acc = StreamingCKA()
    acc.update(x, y)
    return acc.value(debiased)


class StreamingCKA:
    """Linear CKA (biased and debiased) accumulated over batches of paired samples, exactly.

    Keeps only d x d sums, so 100k frames x 1024 dims never sit in memory at once; the value
    equals :func:`linear_cka` on the concatenated batches (tested). Debiased CKA needs the
    column sums, which are only known at the end, so every term that involves them is kept
    in a form that is linear in the samples (e.g. ``sum_i (x_i . s_x)(y_i . s_y) =
    s_x^T (X^T Y) s_y``)."""

    def __init__(self) -> None:
        self.n = 0
        self.shift_x = self.shift_y = None  # the first batch's means, subtracted from every batch
        self.sx = self.sy = None  # column sums [d]
        self.xx = self.yy = self.xy = None  # raw second moments X^T X, Y^T Y, X^T Y
        self.nx_ny = 0.0  # sum_i |x_i|^2 |y_i|^2
        self.nx_nx = 0.0
        self.ny_ny = 0.0
        self.x_ny = self.y_nx = self.x_nx = self.y_ny = None  # sum_i x_i |y_i|^2 etc. [d]

    def update(self, x, y) -> "StreamingCKA":
        """Add a batch of paired rows: ``x`` ``[n, dx]`` and ``y`` ``[n, dy]`` (float64 accumulators)."""
        x, y = _t(x), _t(y)
        if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
            raise SimilarityError(f"expected [n, d1] and [n, d2] with the same n, got {tuple(x.shape)} and "
                                  f"{tuple(y.shape)}")
        if self.shift_x is None:  # every estimate here is invariant to a constant shift; it keeps sums small
            self.shift_x, self.shift_y = x.mean(0), y.mean(0)
        x, y = x - self.shift_x, y - self.shift_y
        nx, ny = (x * x).sum(1), (y * y).sum(1)
        parts = {"sx": x.sum(0), "sy": y.sum(0), "xx": x.T @ x, "yy": y.T @ y, "xy": x.T @ y,
                 "x_ny": x.T @ ny, "y_nx": y.T @ nx, "x_nx": x.T @ nx, "y_ny": y.T @ ny}
        for key, value in parts.items():
            current = getattr(self, key)
            setattr(self, key, value if current is None else current + value)
        self.nx_ny += float((nx * ny).sum())
        self.nx_nx += float((nx * nx).sum())
        self.ny_ny += float((ny * ny).sum())
        self.n += x.shape[0]
        return self

    def _hsic_u(self, which: str) -> float:
        """Unbiased HSIC (Song et al. 2012) of the linear kernels, from the sums (uncentred data,
        as the estimator defines it: K~ = XX^T with its diagonal set to zero)."""
        n = self.n
        if which == "xy":
            cross, d_ab = self.xy, self.nx_ny
            ka1_lb1 = float(self.sx @ self.xy @ self.sy) - float(self.sx @ self.x_ny) - float(self.sy @ self.y_nx) \
                + self.nx_ny
            sum_k = float(self.sx @ self.sx) - float(torch.trace(self.xx))
            sum_l = float(self.sy @ self.sy) - float(torch.trace(self.yy))
        elif which == "xx":
            cross, d_ab = self.xx, self.nx_nx
            ka1_lb1 = float(self.sx @ self.xx @ self.sx) - 2 * float(self.sx @ self.x_nx) + self.nx_nx
            sum_k = sum_l = float(self.sx @ self.sx) - float(torch.trace(self.xx))
        else:
            cross, d_ab = self.yy, self.ny_ny
            ka1_lb1 = float(self.sy @ self.yy @ self.sy) - 2 * float(self.sy @ self.y_ny) + self.ny_ny
            sum_k = sum_l = float(self.sy @ self.sy) - float(torch.trace(self.yy))
        trace = float((cross * cross).sum()) - d_ab  # tr(K~ L~)
        return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * ka1_lb1) / (n * (n - 3))

    def value(self, debiased: bool = False) -> float:
        """Linear CKA of everything added so far (Kornblith et al. 2019, eq. 4, on centred Gram sums)."""
        if self.n < 4:
            raise SimilarityError(f"{self.n} samples: at least 4 are needed")
        if not debiased:
            xy = self.xy - torch.outer(self.sx, self.sy) / self.n
            xx = self.xx - torch.outer(self.sx, self.sx) / self.n
            yy = self.yy - torch.outer(self.sy, self.sy) / self.n
            nxx, nyy = torch.linalg.matrix_norm(xx), torch.linalg.matrix_norm(yy)
            if nxx <= 1e-300 or nyy <= 1e-300:
                raise SimilarityError("a representation is constant: CKA is undefined")
            return float(torch.linalg.matrix_norm(xy) ** 2 / (nxx * nyy))
        # the unbiased estimator is invariant to shifting the features, so shifted sums serve
        hxy, hxx, hyy = self._hsic_u("xy"), self._hsic_u("xx"), self._hsic_u("yy")
        if hxx <= 0 or hyy <= 0:
            raise SimilarityError("a representation has no variance left after debiasing: CKA is undefined")
        return float(hxy / np.sqrt(hxx * hyy))


def hsic_unbiased_gram(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC of two n x n Gram matrices (Song et al. 2012), diagonals zeroed."""
    n = k.shape[0]
    k = k - torch.diag(torch.diagonal(k))
    l = l - torch.diag(torch.diagonal(l))
    kl = k @ l
    return (torch.trace(kl) + k.sum() * l.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * kl.sum()) / (n * (n - 3))


def minibatch_cka(batches: Iterable[tuple]) -> float:
    """Mini-batch linear CKA (Nguyen, Raghu and Kornblith 2021): unbiased HSIC summed over
    mini-batches, ``sum_b HSIC(K_b, L_b) / sqrt(sum_b HSIC(K_b, K_b) sum_b HSIC(L_b, L_b))``.

    An estimator of its own (each batch is an independent sample); with one batch it is
    the debiased CKA of that batch. For the exact CKA of many frames use
    :class:`StreamingCKA`."""
    num = kk = ll = 0.0
    for x, y in batches:
        x, y = _t(x), _t(y)
        if x.shape[0] < 4:
            raise SimilarityError(f"a mini-batch of {x.shape[0]} samples: at least 4 are needed")
        k, l = x @ x.T, y @ y.T
        num += float(hsic_unbiased_gram(k, l))
        kk += float(hsic_unbiased_gram(k, k))
        ll += float(hsic_unbiased_gram(l, l))
    if kk <= 0 or ll <= 0:
        raise SimilarityError("a representation has no variance left after debiasing: CKA is undefined")
    return num / float(np.sqrt(kk * ll))


# ----------------------------------------------------------------------------- CCA


@dataclass
class CcaFit:
    """Canonical directions fitted on one set of samples (apply them to held-out ones)."""

    mean_x: torch.Tensor
    mean_y: torch.Tensor
    wx: torch.Tensor  # [d1, k]; rows of dropped dimensions are zero
    wy: torch.Tensor  # [d2, k]
    rho: torch.Tensor  # [k] canonical correlations on the fitting samples
    kept_x: torch.Tensor = field(default=None)  # [d1] bool: dimensions used
    kept_y: torch.Tensor = field(default=None)

    @property
    def directions(self) -> int:
        """The fitted canonical directions: (``wx`` ``[dx, k]``, ``wy`` ``[dy, k]``)."""
        return self.wx.shape[1]


def _whitener(vals: torch.Tensor, vecs: torch.Tensor, ridge: float, what: str) -> torch.Tensor:
    """(C + ridge I)^-1/2 from C's eigendecomposition."""
    lifted = vals + ridge
    top = float(lifted.max()) if lifted.numel() else 0.0
    if lifted.numel() == 0 or float(lifted.min()) <= 1e-12 * max(top, 1e-300):
        raise SimilarityError(f"the {what} covariance is singular; raise epsilon")
    return (vecs * lifted.rsqrt()) @ vecs.T


class CcaProblem:
    """The covariances of one set of paired samples, factored once; :meth:`fit` then gives the
    canonical directions for any pair of epsilons at the price of two small products and
    one SVD (the eigendecompositions are shared by every epsilon that keeps the same
    dimensions)."""

    def __init__(self, x, y, convention: str = "reference") -> None:
        if convention not in CONVENTIONS:
            raise SimilarityError(f"unknown regularisation convention {convention!r}; use {' or '.join(CONVENTIONS)}")
        x, y = _t(x), _t(y)
        _check(x, y, need_more_samples=True)
        self.convention = convention
        n = x.shape[0]
        self.mean_x, self.mean_y = x.mean(0), y.mean(0)
        xc, yc = x - self.mean_x, y - self.mean_y
        self.cxx, self.cyy, self.cxy = xc.T @ xc / (n - 1), yc.T @ yc / (n - 1), xc.T @ yc / (n - 1)
        if convention == "reference":
            self.scale_x = float(self.cxx.abs().max())
            self.scale_y = float(self.cyy.abs().max())
        else:
            self.scale_x = float(torch.diagonal(self.cxx).mean())
            self.scale_y = float(torch.diagonal(self.cyy).mean())
        if self.scale_x <= 0 or self.scale_y <= 0:
            raise SimilarityError("a representation is constant: CCA is undefined")
        self._eig: dict[tuple, tuple] = {}

    def _kept(self, c: torch.Tensor, scale: float, epsilon: float) -> torch.Tensor:
        if self.convention == "reference":
            return torch.diagonal(c) / scale >= epsilon
        return torch.ones(c.shape[0], dtype=torch.bool, device=c.device)

    def _factor(self, side: str, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (side, tuple(kept.nonzero().flatten().tolist()))
        if key not in self._eig:
            c = (self.cxx if side == "x" else self.cyy)[kept][:, kept] / (self.scale_x if side == "x" else self.scale_y)
            self._eig[key] = torch.linalg.eigh(c)
        return self._eig[key]

    def fit(self, epsilon_x: float = 0.0, epsilon_y: float | None = None) -> CcaFit:
        """Fit CCA on the rows ``idx`` with regularisation ``(eps_x, eps_y)``; a :class:`CcaFit`."""
        epsilon_y = epsilon_x if epsilon_y is None else epsilon_y
        kx = self._kept(self.cxx, self.scale_x, epsilon_x)
        ky = self._kept(self.cyy, self.scale_y, epsilon_y)
        if not bool(kx.any()) or not bool(ky.any()):
            raise SimilarityError("every dimension of a view is below epsilon; lower epsilon")
        ix = _whitener(*self._factor("x", kx), epsilon_x, "first")  # of the scaled covariance
        iy = _whitener(*self._factor("y", ky), epsilon_y, "second")
        cxy = self.cxy[kx][:, ky] / np.sqrt(self.scale_x * self.scale_y)
        u, s, vt = torch.linalg.svd(ix @ cxy @ iy, full_matrices=False)
        wx = torch.zeros(self.cxx.shape[0], s.shape[0], dtype=s.dtype, device=s.device)
        wy = torch.zeros(self.cyy.shape[0], s.shape[0], dtype=s.dtype, device=s.device)
        wx[kx] = ix @ u / np.sqrt(self.scale_x)  # directions for unscaled data
        wy[ky] = iy @ vt.T / np.sqrt(self.scale_y)
        return CcaFit(self.mean_x, self.mean_y, wx, wy, s.clamp(max=1.0), kx, ky)


def cca_fit(x, y, epsilon: float = 0.0, epsilon_y: float | None = None, convention: str = "reference") -> CcaFit:
    """Regularised CCA of x [n, d1] and y [n, d2] (n > d1, d2); see the module docstring for
    the conventions. ``epsilon_y`` defaults to ``epsilon``. Raises :class:`SimilarityError`
    for too few samples, a constant view or a covariance singular at that epsilon."""
    return CcaProblem(x, y, convention).fit(epsilon, epsilon_y)


def _corr_columns(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = torch.sqrt((a * a).sum(0) * (b * b).sum(0))
    return torch.where(den > 0, (a * b).sum(0) / den.clamp(min=1e-300), torch.zeros_like(den))


def pwcca_weights(variates: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
    """Projection weights (Morcos et al. 2018): ``alpha_i = sum_j |<h_i, z_j>|`` with h_i the
    orthonormalised (centred) canonical variates and z_j the centred activations of the
    view's neurons; normalised to sum to 1. variates: [n, k], neurons: [n, d]."""
    q, _ = torch.linalg.qr(variates - variates.mean(0))
    w = (q.T @ (neurons - neurons.mean(0))).abs().sum(1)
    return w / w.sum()


def pwcca_score(fit: CcaFit, x, y, weights: str = "smaller") -> float:
    """Projection-weighted CCA (Morcos et al. 2018) of ``fit`` on samples x, y.

    ``weights``: from the view with fewer (kept) neurons, as published ("smaller"; on a tie
    the first view, as in the original code), or always from "x" or "y". x: [n, d1], y:
    [n, d2] (held-out samples or the fitting ones); a value in [0, 1]. Raises
    :class:`SimilarityError` when n is not above the number of canonical directions."""
    if weights not in WEIGHTINGS:
        raise SimilarityError(f"unknown PWCCA weighting {weights!r}; use {', '.join(WEIGHTINGS)}")
    x, y = _t(x), _t(y)
    if x.shape[0] <= fit.directions:
        raise SimilarityError(f"{x.shape[0]} held-out samples for {fit.directions} canonical directions: "
                              "PWCCA needs more samples than directions")
    u = (x - fit.mean_x) @ fit.wx  # [n, k]
    v = (y - fit.mean_y) @ fit.wy
    rho = _corr_columns(u, v)
    kx = int(fit.kept_x.sum()) if fit.kept_x is not None else x.shape[1]
    ky = int(fit.kept_y.sum()) if fit.kept_y is not None else y.shape[1]
    side = weights if weights != "smaller" else ("x" if kx <= ky else "y")
    if side == "x":
        alpha = pwcca_weights(u, x[:, fit.kept_x] if fit.kept_x is not None else x)
    else:
        alpha = pwcca_weights(v, y[:, fit.kept_y] if fit.kept_y is not None else y)
    return float((alpha * rho).sum())


def pwcca(x, y, epsilon: float = 0.0, convention: str = "reference", weights: str = "smaller") -> float:
    """PWCCA of x and y fitted and scored on the same samples."""
    return pwcca_score(cca_fit(x, y, epsilon, convention=convention), x, y, weights)


def mean_cca(x, y, epsilon: float = 0.0, convention: str = "reference") -> float:
    """Mean canonical correlation (unweighted), fitted on the same samples."""
    return float(cca_fit(x, y, epsilon, convention=convention).rho.mean())


@dataclass
class SvdReduction:
    """Projection onto the top singular directions keeping ``keep`` of a view's variance."""

    mean: torch.Tensor
    basis: torch.Tensor  # [d, r]

    @classmethod
    def fit(cls, x, keep: float = 0.99) -> "SvdReduction":
        """Keep the top singular directions explaining ``variance`` of ``x`` ``[n, d]`` (SVCCA's first step, Raghu et al. 2017)."""
        if not 0 < keep <= 1:
            raise SimilarityError(f"the variance to keep must be in (0, 1], got {keep}")
        x = _t(x)
        mean = x.mean(0)
        _, s, vt = torch.linalg.svd(x - mean, full_matrices=False)
        var = s * s
        if float(var.sum()) <= 0:
            raise SimilarityError("a representation is constant: SVCCA is undefined")
        share = torch.cumsum(var, 0) / var.sum()
        r = int(torch.searchsorted(share, torch.tensor(keep, dtype=share.dtype) - 1e-12)) + 1
        return cls(mean, vt[:r].T)

    def __call__(self, x) -> torch.Tensor:
        return (_t(x) - self.mean) @ self.basis


def svcca(x, y, keep: float = 0.99, epsilon: float = 0.0) -> float:
    """SVCCA (Raghu et al. 2017): each view reduced by SVD to ``keep`` of its variance, then
    the mean canonical correlation of the reduced views (fitted on the same samples).
    x: [n, d1], y: [n, d2]; a value in [0, 1]. Raises :class:`SimilarityError` for a
    constant view or too few samples for the kept directions."""
    rx, ry = SvdReduction.fit(x, keep), SvdReduction.fit(y, keep)
    return mean_cca(rx(x), ry(y), epsilon)


# -------------------------------------------------------------------------- neurons


class NeuronStats:
    """Sums over paired samples, accumulated batch by batch, from which neuron-level measures
    between two representations follow exactly: the d1 x d2 correlation matrix (MaxCorr,
    MinCorr) and ordinary least squares in both directions (LinReg)."""

    def __init__(self) -> None:
        self.n = 0
        self.sx = self.sy = self.xx = self.yy = self.xy = None

    def update(self, x, y) -> "NeuronStats":
        """Add a batch of paired activations (``[n, units]`` each) to the running sums."""
        x, y = _t(x), _t(y)
        if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
            raise SimilarityError(f"expected [n, d1] and [n, d2] with the same n, got {tuple(x.shape)} and "
                                  f"{tuple(y.shape)}")
        for key, value in (("sx", x.sum(0)), ("sy", y.sum(0)), ("xx", x.T @ x), ("yy", y.T @ y), ("xy", x.T @ y)):
            current = getattr(self, key)
            setattr(self, key, value if current is None else current + value)
        self.n += x.shape[0]
        return self

    def _cov(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.n < 4:
            raise SimilarityError(f"{self.n} samples: at least 4 are needed")
        n = self.n
        cxx = (self.xx - torch.outer(self.sx, self.sx) / n) / (n - 1)
        cyy = (self.yy - torch.outer(self.sy, self.sy) / n) / (n - 1)
        cxy = (self.xy - torch.outer(self.sx, self.sy) / n) / (n - 1)
        return cxx, cyy, cxy

    def correlation(self) -> torch.Tensor:
        """Pearson correlation of every neuron pair, ``[d1, d2]`` (0 for a constant neuron)."""
        cxx, cyy, cxy = self._cov()
        sx, sy = torch.diagonal(cxx).clamp(min=0).sqrt(), torch.diagonal(cyy).clamp(min=0).sqrt()
        den = torch.outer(sx, sy)
        return torch.where(den > 0, cxy / den.clamp(min=1e-300), torch.zeros_like(den))

    def max_correlations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each neuron's best absolute correlation with any neuron of the other side: (for x's
        neurons [d1], for y's neurons [d2])."""
        c = self.correlation().abs()
        return c.max(1).values, c.max(0).values

    def linreg_r2(self, ridge: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
        """Share of each neuron's variance a linear regression from the other side explains:
        (y's neurons from x [d2], x's neurons from y [d1]). ``ridge`` x mean variance
        stabilises collinear predictors."""
        cxx, cyy, cxy = self._cov()

        def r2(c_pp: torch.Tensor, c_pt: torch.Tensor, c_tt: torch.Tensor) -> torch.Tensor:
            lift = ridge * float(torch.diagonal(c_pp).mean().clamp(min=1e-300))
            coef = torch.linalg.solve(c_pp + lift * torch.eye(c_pp.shape[0], dtype=c_pp.dtype, device=c_pp.device),
                                      c_pt)
            explained = (c_pt * coef).sum(0)
            var = torch.diagonal(c_tt)
            return torch.where(var > 0, explained / var.clamp(min=1e-300), torch.zeros_like(var)).clamp(0, 1)

        return r2(cxx, cxy, cyy), r2(cyy, cxy.T, cxx)


@dataclass
class NeuronSimilarity:
    """Neuron-level similarity of x to y (Wu et al. 2020): for x's neurons, the best absolute
    correlation with any neuron of y; MaxCorr = their mean, MinCorr = their minimum (the
    least shared neuron); LinReg = the mean share of x's neurons' variance that a linear
    regression from y explains."""

    maxcorr: float
    mincorr: float
    linreg: float
    per_neuron_max: list[float]
    per_neuron_r2: list[float]


def neuron_similarity(stats: NeuronStats) -> tuple[NeuronSimilarity, NeuronSimilarity]:
    """(x against y, y against x) from accumulated :class:`NeuronStats`."""
    mx, my = stats.max_correlations()
    r2_y_from_x, r2_x_from_y = stats.linreg_r2()
    return (NeuronSimilarity(float(mx.mean()), float(mx.min()), float(r2_x_from_y.mean()), mx.tolist(),
                             r2_x_from_y.tolist()),
            NeuronSimilarity(float(my.mean()), float(my.min()), float(r2_y_from_x.mean()), my.tolist(),
                             r2_y_from_x.tolist()))


def maxcorr(x, y) -> NeuronSimilarity:
    """Neuron-level similarity of x to y on samples that fit in memory."""
    return neuron_similarity(NeuronStats().update(x, y))[0]


# ------------------------------------------------------------------------ attention


def attention_js_similarity(a, b, eps: float = 1e-12) -> float:
    """1 - mean Jensen-Shannon divergence (base 2, so in [0, 1]) between corresponding rows of
    two attention maps ``[T, T]`` (each row a distribution over the keys)."""
    a, b = _t(a).clamp(min=0), _t(b).clamp(min=0)
    if a.shape != b.shape or a.dim() != 2:
        raise SimilarityError(f"attention maps must be [T, T] of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a / a.sum(1, keepdim=True).clamp(min=eps)
    b = b / b.sum(1, keepdim=True).clamp(min=eps)
    m = 0.5 * (a + b)

    def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return torch.where(p > 0, p * (torch.log2(p.clamp(min=eps)) - torch.log2(q.clamp(min=eps))), 0.0).sum(1)

    js = 0.5 * kl(a, m) + 0.5 * kl(b, m)
    return float(1.0 - js.mean())


def attention_pearson(a, b) -> float:
    """Pearson correlation of two attention maps, flattened."""
    a, b = _t(a).flatten(), _t(b).flatten()
    if a.shape != b.shape:
        raise SimilarityError("attention maps of different shapes")
    return float(_corr_columns(a[:, None], b[:, None])[0])


def attention_frobenius(a, b) -> float:
    """Frobenius norm of the difference of two attention maps (a distance: 0 is identical)."""
    a, b = _t(a), _t(b)
    if a.shape != b.shape:
        raise SimilarityError("attention maps of different shapes")
    return float(torch.linalg.matrix_norm(a - b))


ATTENTION_MEASURES: dict[str, tuple[Callable[..., float], bool]] = {  # name -> (function, higher is more similar)
    "js": (attention_js_similarity, True),
    "pearson": (attention_pearson, True),
    "frobenius": (attention_frobenius, False),
}


def head_scores(maps_a: Sequence[torch.Tensor], maps_b: Sequence[torch.Tensor], measure: str) -> np.ndarray:
    """``[heads_a, heads_b]`` mean score over utterances; ``maps_*[u]``: ``[heads, T, T]``."""
    fn, _ = ATTENTION_MEASURES[measure]
    ha, hb = maps_a[0].shape[0], maps_b[0].shape[0]
    out = np.zeros((ha, hb))
    for a, b in zip(maps_a, maps_b):
        for i in range(ha):
            for j in range(hb):
                out[i, j] += fn(a[i], b[j])
    return out / len(maps_a)


def best_match(scores: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """For each row (a head of model A), the best score over the columns (heads of model B)."""
    return scores.max(1) if higher_is_better else scores.min(1)


MEASURES: dict[str, Callable[..., float]] = {
    "cka": lambda x, y: linear_cka(x, y, debiased=False),
    "cka_debiased": lambda x, y: linear_cka(x, y, debiased=True),
    "pwcca": pwcca,
    "cca_mean": mean_cca,
    "svcca": svcca,
    "maxcorr": lambda x, y: maxcorr(x, y).maxcorr,
}


def measure(name: str) -> Callable[..., float]:
    """The similarity measure registered under ``name`` (:data:`MEASURES`); SimilarityError otherwise."""
    if name not in MEASURES:
        raise SimilarityError(f"unknown measure {name!r}; available: {', '.join(MEASURES)}")
    return MEASURES[name]
