"""Similarity measures against their defining properties and a textbook computation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from harness.similarity import SimilarityError, cca_fit, linear_cka, pwcca

TOL = 1e-6


def _data(n=2000, d=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d))  # correlated features


def test_cca_is_one_for_identical_and_invertible_linear_maps():
    x = _data()
    rng = np.random.default_rng(1)
    a = rng.standard_normal((20, 20)) + 3 * np.eye(20)
    assert abs(pwcca(x, x) - 1) <= TOL
    assert abs(pwcca(x, x @ a + 5.0) - 1) <= TOL
    assert np.allclose(cca_fit(x, x @ a).rho.numpy(), 1.0, atol=TOL)


def test_cka_is_one_under_orthogonal_maps_and_isotropic_scaling():
    x = _data()
    q, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((20, 20)))
    for debiased in (False, True):
        assert abs(linear_cka(x, x, debiased) - 1) <= TOL
        assert abs(linear_cka(x, 3.7 * x @ q + 1.0, debiased) - 1) <= TOL


def test_cka_of_independent_noise_is_near_zero_and_debiasing_helps():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((300, 50)), rng.standard_normal((300, 50))
    biased, unbiased = linear_cka(x, y), linear_cka(x, y, debiased=True)
    assert biased < 0.25
    assert abs(unbiased) < biased and abs(unbiased) < 0.03


def test_debiased_cka_matches_the_gram_matrix_formula():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((60, 7)), rng.standard_normal((60, 5)) + rng.standard_normal((60, 1))

    def hsic_u(k, l):
        n = k.shape[0]
        k, l = k.copy(), l.copy()
        np.fill_diagonal(k, 0)
        np.fill_diagonal(l, 0)
        one = np.ones(n)
        return (np.trace(k @ l) + one @ k @ one * (one @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))

    xc, yc = x - x.mean(0), y - y.mean(0)
    k, l = xc @ xc.T, yc @ yc.T
    ref = hsic_u(k, l) / np.sqrt(hsic_u(k, k) * hsic_u(l, l))
    assert abs(linear_cka(x, y, debiased=True) - ref) <= 1e-9


def test_pwcca_matches_a_textbook_computation():
    """Canonical correlations from the generalised eigenproblem (scipy), variates, QR weights."""
    rng = np.random.default_rng(5)
    n, d1, d2 = 500, 8, 6
    z = rng.standard_normal((n, 4))
    x = np.hstack([z, rng.standard_normal((n, 4))]) @ rng.standard_normal((8, d1))
    y = np.hstack([z[:, :3] + 0.5 * rng.standard_normal((n, 3)), rng.standard_normal((n, 3))]) @ rng.standard_normal((6, d2))
    xc, yc = x - x.mean(0), y - y.mean(0)
    cxx, cyy, cxy = xc.T @ xc / (n - 1), yc.T @ yc / (n - 1), xc.T @ yc / (n - 1)
    vals, wx = scipy.linalg.eigh(cxy @ np.linalg.solve(cyy, cxy.T), cxx)
    order = np.argsort(vals)[::-1][:min(d1, d2)]
    rho_ref = np.sqrt(np.clip(vals[order], 0, 1))
    wx = wx[:, order]
    assert np.allclose(cca_fit(x, y).rho.numpy(), rho_ref, atol=TOL)
    u = xc @ wx
    q, _ = np.linalg.qr(u)
    alpha = np.abs(q.T @ xc).sum(1)
    ref = float((alpha / alpha.sum() * rho_ref).sum())
    assert abs(pwcca(x, y) - ref) <= TOL


def test_too_few_samples_is_refused():
    rng = np.random.default_rng(6)
    with pytest.raises(SimilarityError, match="more samples than dimensions"):
        pwcca(rng.standard_normal((30, 40)), rng.standard_normal((30, 5)))
    with pytest.raises(SimilarityError, match="at least 4"):
        linear_cka(rng.standard_normal((3, 2)), rng.standard_normal((3, 2)))
    with pytest.raises(SimilarityError, match="singular"):
        x = rng.standard_normal((100, 5))
        pwcca(np.hstack([x, x[:, :1]]), rng.standard_normal((100, 3)))


def test_held_out_samples_must_exceed_canonical_directions():
    from harness.similarity import pwcca_score

    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((400, 30)), rng.standard_normal((400, 20))
    fit = cca_fit(x, y, 1e-3)
    with pytest.raises(SimilarityError, match="held-out samples"):
        pwcca_score(fit, x[:15], y[:15])
